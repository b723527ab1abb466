package jobwire_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

func TestAddAndInfo(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 10*time.Second)
	q := uniqueQueue(t)
	added, err := c.Add(ctx, jobwire.NewJob{
		Queue: q, Type: "report", Payload: []byte(`{"month":"2024-05"}`), Headers: map[string]string{"x-team": "ops"},
		Priority: 2, MaxAttempts: 7, Timeout: time.Minute,
		Backoff: &jobwire.Backoff{Kind: jobwire.BackoffFixed, Base: time.Second, Jitter: jobwire.Ptr(0.0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(added.ID, q+"/") || added.Duplicate {
		t.Fatalf("Add = %+v", added)
	}
	info, err := c.Info(ctx, added.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != jobwire.StateWaiting || info.Type != "report" || string(info.Payload) != `{"month":"2024-05"}` ||
		info.Headers["x-team"] != "ops" || info.Priority != 2 || info.MaxAttempts != 7 || info.Attempts != 0 ||
		info.CreatedAt.IsZero() || !strings.HasPrefix(info.IdempotencyKey, "auto-") {
		t.Fatalf("Info = %+v", info)
	}

	delayed := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "later", Delay: time.Hour})
	at := time.Now().Add(2 * time.Hour)
	scheduled := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "later", RunAt: at})
	for id, due := range map[string]time.Time{delayed: time.Now().Add(time.Hour), scheduled: at} {
		info, err := c.Info(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.State != jobwire.StateDelayed || info.RunAt.Sub(due).Abs() > 5*time.Second {
			t.Fatalf("job %s: state %s run at %s, want delayed until about %s", id, info.State, info.RunAt, due)
		}
	}
	stats, err := c.Stats(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Waiting != 1 || stats.Delayed != 2 {
		t.Fatalf("Stats = %+v", stats)
	}
}

func TestIdempotencyKeys(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 10*time.Second)
	q := uniqueQueue(t)
	first, err := c.Add(ctx, jobwire.NewJob{Queue: q, Type: "t", IdempotencyKey: "order-42"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Add(ctx, jobwire.NewJob{Queue: q, Type: "t", IdempotencyKey: "order-42"})
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !again.Duplicate || again.ID != first.ID {
		t.Fatalf("first %+v, repeat %+v: want the repeat to be a duplicate of the first", first, again)
	}
	// Without a key, each add is its own job (the client's made-up keys differ).
	a, b := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "t"}), mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "t"})
	if a == b {
		t.Fatalf("two adds without a key gave one job %s", a)
	}
}

func TestAddManyAnswersEachEntry(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 30*time.Second)
	q := uniqueQueue(t)
	jobs := make([]jobwire.NewJob, 1500) // two AddJobs calls
	for i := range jobs {
		jobs[i] = jobwire.NewJob{Queue: q, Type: "n", Payload: []byte(fmt.Sprint(i))}
	}
	jobs[1].Priority = 9 // out of range: refused alone
	jobs[1200].IdempotencyKey = "dup"
	jobs[1300].IdempotencyKey = "dup"
	results, err := c.AddMany(ctx, jobs)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(jobs) {
		t.Fatalf("%d results for %d jobs", len(results), len(jobs))
	}
	var refused *jobwire.Error
	if !errors.Is(results[1].Err, jobwire.ErrInvalidArgument) || !errors.As(results[1].Err, &refused) ||
		refused.Method != "AddJob" || !strings.Contains(refused.Message, "priority") {
		t.Fatalf("entry 1: %+v, want INVALID_ARGUMENT naming priority", results[1])
	}
	if !results[1300].Duplicate || results[1300].ID != results[1200].ID || results[1200].Duplicate {
		t.Fatalf("entries 1200 and 1300: %+v %+v, want the second a duplicate of the first", results[1200], results[1300])
	}
	for i, r := range results {
		if i != 1 && (r.Err != nil || !strings.HasPrefix(r.ID, q+"/")) {
			t.Fatalf("entry %d: %+v", i, r)
		}
	}
	stats, err := c.Stats(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Waiting != 1498 {
		t.Fatalf("waiting %d, want 1498 (1500 less a refused entry and a duplicate)", stats.Waiting)
	}
}

func TestErrorsAreTestable(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 10*time.Second)
	q := uniqueQueue(t)

	_, err := c.Info(ctx, q+"/01JD0000000000000000000000")
	var rpc *jobwire.Error
	if !errors.Is(err, jobwire.ErrNotFound) || status.Code(err) != codes.NotFound || !errors.As(err, &rpc) || rpc.Method != "GetJobInfo" {
		t.Fatalf("Info of an unknown job: %v", err)
	}
	if _, err := c.Add(ctx, jobwire.NewJob{Queue: "no spaces allowed", Type: "t"}); !errors.Is(err, jobwire.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "queue") {
		t.Fatalf("Add to a bad queue name: %v", err)
	}
	// Cancelling twice: the second finds the job finished.
	id := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "t"})
	if err := c.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(ctx, id); !errors.Is(err, jobwire.ErrFailedPrecondition) || errors.Is(err, jobwire.ErrStaleLease) {
		t.Fatalf("second Cancel: %v, want FAILED_PRECONDITION (not a stale lease)", err)
	}
	if _, err := c.Wait(ctx, id); !errors.Is(err, jobwire.ErrJobCancelled) {
		t.Fatalf("Wait on a cancelled job: %v", err)
	}
	// A context that ends is the context's error.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := c.Wait(short, mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "never-run"})); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its context's deadline: %v", err)
	}
	if _, err := c.Wait(ctx, q+"/01JD0000000000000000000000"); !errors.Is(err, jobwire.ErrNotFound) {
		t.Fatalf("Wait on an unknown job: %v", err)
	}
}

func TestLimitKeysReachTheServer(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 10*time.Second)
	q := uniqueQueue(t)
	if _, err := c.Add(ctx, jobwire.NewJob{Queue: q, Type: "call", RateKey: "api.example", ConcurrencyKey: "tenant-7"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Add(ctx, jobwire.NewJob{Queue: q, Type: "call", ConcurrencyKey: "a\x01b"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "concurrency_key") {
		t.Fatalf("a key with a control character: %v", err)
	}
}
