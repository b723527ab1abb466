package jobwire_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

func TestSessionCalls(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 10*time.Second)
	q := uniqueQueue(t)
	s, err := c.CreateSession(ctx, jobwire.NewSession{Queue: q, Name: "user-7", State: []byte(`{"turns":0}`), TTL: time.Hour, MaxConcurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != q+"/user-7" || string(s.State) != `{"turns":0}` || s.Version != 1 || s.TTL != time.Hour || s.MaxConcurrency != 2 {
		t.Fatalf("CreateSession = %+v", s)
	}
	if _, err := c.CreateSession(ctx, jobwire.NewSession{Queue: q, Name: "user-7"}); !errors.Is(err, jobwire.ErrAlreadyExists) {
		t.Fatalf("a second session of that name: %v", err)
	}
	generated, err := c.CreateSession(ctx, jobwire.NewSession{Queue: q})
	if err != nil || generated.ID == "" || string(generated.State) != "{}" {
		t.Fatalf("a session with a generated name: %+v %v", generated, err)
	}

	// Compare-and-set, both ways.
	v, err := c.UpdateSession(ctx, s.ID, jobwire.SessionUpdate{State: []byte(`{"turns":1}`), ExpectedVersion: jobwire.Ptr[uint64](1)})
	if err != nil || v != 2 {
		t.Fatalf("UpdateSession at the expected version: %d %v", v, err)
	}
	_, err = c.UpdateSession(ctx, s.ID, jobwire.SessionUpdate{State: []byte(`{"turns":99}`), ExpectedVersion: jobwire.Ptr[uint64](1)})
	if !errors.Is(err, jobwire.ErrConflict) || !errors.Is(err, jobwire.ErrFailedPrecondition) {
		t.Fatalf("UpdateSession at a stale version: %v, want ErrConflict", err)
	}
	if v, err = c.UpdateSession(ctx, s.ID, jobwire.SessionUpdate{MergePatch: []byte(`{"name":"Ada"}`)}); err != nil || v != 3 {
		t.Fatalf("merge patch: %d %v", v, err)
	}
	if _, err := c.UpdateSession(ctx, s.ID, jobwire.SessionUpdate{}); !errors.Is(err, jobwire.ErrInvalidArgument) {
		t.Fatalf("an update with nothing in it: %v", err)
	}
	got, err := c.GetSession(ctx, s.ID)
	if err != nil || !sameJSON(got.State, `{"name":"Ada","turns":1}`) || got.Version != 3 {
		t.Fatalf("GetSession = %+v %v", got, err)
	}

	listed := map[string]bool{}
	for page := (jobwire.Page{Size: 1}); ; {
		got, err := c.ListSessions(ctx, q, page)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range got.Sessions {
			listed[s.ID] = true
		}
		if page.Token = got.NextPageToken; page.Token == "" {
			break
		}
	}
	if len(listed) != 2 || !listed[s.ID] || !listed[generated.ID] {
		t.Fatalf("ListSessions, page by page: %v", listed)
	}

	// Three jobs, none running: the session releases one to the queue, the others wait inside it.
	var added []string
	for i := 0; i < 3; i++ {
		a, err := c.AddToSession(ctx, s.ID, jobwire.NewJob{Type: "step"})
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, a.ID)
	}
	var pending []string
	for page := (jobwire.Page{Size: 1}); ; {
		got, err := c.ListSessionJobs(ctx, s.ID, page)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range got.Jobs {
			pending = append(pending, j.ID)
		}
		if page.Token = got.NextPageToken; page.Token == "" {
			break
		}
	}
	if !reflect.DeepEqual(pending, added[1:]) {
		t.Fatalf("ListSessionJobs = %v, want %v", pending, added[1:])
	}
	if _, err := c.ListSessionJobs(ctx, q+"/nobody", jobwire.Page{}); !errors.Is(err, jobwire.ErrNotFound) {
		t.Fatalf("ListSessionJobs of an unknown session: %v", err)
	}

	if err := c.DeleteSession(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSession(ctx, s.ID); !errors.Is(err, jobwire.ErrNotFound) {
		t.Fatalf("GetSession after DeleteSession: %v", err)
	}
}

// sameJSON: a and b are the same JSON value (whatever the order of keys).
func sameJSON(a []byte, b string) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

type turns struct {
	Turns    int  `json:"turns"`
	External bool `json:"external,omitempty"`
}

// countTurns is a session handler: it reads the state it was delivered with, counts one more
// turn and writes that with its completion.
func countTurns(ctx context.Context, job *jobwire.Job) ([]byte, error) {
	var state turns
	if err := json.Unmarshal(job.Session.State, &state); err != nil {
		return nil, jobwire.Permanent(err)
	}
	state.Turns++
	next, err := json.Marshal(state)
	if err != nil {
		return nil, err
	}
	job.SetSessionState(next)
	return next, nil
}

func TestSessionJobsReadAndWriteTheState(t *testing.T) {
	for name, protocol := range protocols {
		t.Run(name, func(t *testing.T) {
			c := newClient(t, shared.server.addr)
			ctx := testCtx(t, 20*time.Second)
			q := uniqueQueue(t)
			s, err := c.CreateSession(ctx, jobwire.NewSession{Queue: q, State: []byte(`{"turns":0}`)})
			if err != nil {
				t.Fatal(err)
			}
			w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Concurrency: 4, Protocol: protocol})
			w.Handle("turn", countTurns)
			startWorker(t, w)
			var ids []string
			for range 3 {
				added, err := c.AddToSession(ctx, s.ID, jobwire.NewJob{Type: "turn"})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, added.ID)
			}
			for i, id := range ids { // in order, each on the state the one before wrote
				result, err := c.Wait(ctx, id)
				if err != nil || string(result) != `{"turns":`+string(rune('1'+i))+`}` {
					t.Fatalf("job %d: %s %v", i, result, err)
				}
			}
			got, err := c.GetSession(ctx, s.ID)
			if err != nil || string(got.State) != `{"turns":3}` || got.Version != 4 {
				t.Fatalf("the session after three turns: %+v %v", got, err)
			}
		})
	}
}

func TestSessionConflictRunsTheHandlerAgainOnTheFreshState(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 20*time.Second)
	q := uniqueQueue(t)
	s, err := c.CreateSession(ctx, jobwire.NewSession{Queue: q, State: []byte(`{"turns":0}`)})
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	firstRun := make(chan struct{})
	written := make(chan struct{})
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}})
	w.Handle("turn", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		if runs.Add(1) == 1 {
			close(firstRun)
			<-written // someone else writes the session while this run works
		}
		return countTurns(ctx, job)
	})
	startWorker(t, w)
	added, err := c.AddToSession(ctx, s.ID, jobwire.NewJob{Type: "turn"})
	if err != nil {
		t.Fatal(err)
	}
	<-firstRun
	if _, err := c.UpdateSession(ctx, s.ID, jobwire.SessionUpdate{MergePatch: []byte(`{"external":true}`)}); err != nil {
		t.Fatal(err)
	}
	close(written)
	result, err := c.Wait(ctx, added.ID)
	if err != nil || !sameJSON(result, `{"turns":1,"external":true}`) {
		t.Fatalf("result %s %v: want the turn counted on the state as the other writer left it", result, err)
	}
	if runs.Load() != 2 {
		t.Fatalf("the handler ran %d times, want 2 (once more after the conflict)", runs.Load())
	}
	info, err := c.Info(ctx, added.ID)
	if err != nil || info.Attempts != 1 {
		t.Fatalf("the rerun is within the same attempt: %+v %v", info, err)
	}
	got, err := c.GetSession(ctx, s.ID)
	if err != nil || !sameJSON(got.State, `{"external":true,"turns":1}`) || got.Version != 3 {
		t.Fatalf("the session: %+v %v", got, err)
	}
}
