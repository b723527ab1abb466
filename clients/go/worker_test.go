package jobwire_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	jobwire "github.com/jobwire/jobwire/clients/go"
	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

var protocols = map[string]jobwire.Protocol{"work": jobwire.ProtocolWork, "unary": jobwire.ProtocolUnary}

func TestRunAddsAndAwaits(t *testing.T) {
	for name, protocol := range protocols {
		t.Run(name, func(t *testing.T) {
			c := newClient(t, shared.server.addr)
			q := uniqueQueue(t)
			w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Concurrency: 4, Protocol: protocol})
			w.Handle("upper", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
				var in struct{ Text string }
				if err := job.JSON(&in); err != nil {
					return nil, jobwire.Permanent(err)
				}
				return json.Marshal(map[string]any{"text": strings.ToUpper(in.Text), "attempt": job.Attempt, "queue": job.Queue})
			})
			w.Handle("other", func(ctx context.Context, job *jobwire.Job) ([]byte, error) { return []byte("other"), nil })
			startWorker(t, w)
			ctx := testCtx(t, 20*time.Second)
			for i := range 5 {
				result, err := c.Run(ctx, jobwire.NewJob{Queue: q, Type: "upper", Payload: []byte(fmt.Sprintf(`{"text":"hi %d"}`, i))})
				if err != nil {
					t.Fatal(err)
				}
				want := fmt.Sprintf(`{"attempt":1,"queue":%q,"text":"HI %d"}`, q, i)
				if string(result) != want {
					t.Fatalf("result %s, want %s", result, want)
				}
			}
			if result, err := c.Run(ctx, jobwire.NewJob{Queue: q, Type: "other"}); err != nil || string(result) != "other" {
				t.Fatalf("other: %q %v", result, err)
			}
			// A type without a handler fails its attempts, then goes dead with why.
			_, err := c.Run(ctx, jobwire.NewJob{Queue: q, Type: "unknown", MaxAttempts: 1})
			var ended *jobwire.JobEndedError
			if !errors.Is(err, jobwire.ErrJobDead) || !errors.As(err, &ended) || !strings.Contains(ended.LastError, `no handler for job type "unknown"`) {
				t.Fatalf("job of an unknown type: %v", err)
			}
		})
	}
}

// gate holds handlers until released, counting how many run at once.
type gate struct {
	release chan struct{}
	now     atomic.Int32
	most    atomic.Int32
	started atomic.Int32
}

func newGate() *gate { return &gate{release: make(chan struct{})} }

func (g *gate) handler(ctx context.Context, job *jobwire.Job) ([]byte, error) {
	n := g.now.Add(1)
	defer g.now.Add(-1)
	g.started.Add(1)
	for {
		most := g.most.Load()
		if n <= most || g.most.CompareAndSwap(most, n) {
			break
		}
	}
	select {
	case <-g.release:
		return []byte("done"), nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// hangRecordingCause is a handler that waits for its context to end and reports why.
func hangRecordingCause(causes chan<- error) jobwire.HandlerFunc {
	return func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return nil, ctx.Err()
	}
}

func TestConcurrencyIsTheCredit(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 30*time.Second)
	q := uniqueQueue(t)
	g := newGate()
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Concurrency: 3})
	w.Handle("hold", g.handler)
	startWorker(t, w)
	var ids []string
	for range 9 {
		ids = append(ids, mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "hold"}))
	}
	eventually(t, "3 handlers running", 10*time.Second, func() bool { return g.now.Load() == 3 })
	stats, err := c.Stats(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Active != 3 || stats.Waiting != 6 {
		t.Fatalf("Stats = %+v, want 3 active (the credit) and 6 waiting", stats)
	}
	close(g.release)
	for _, id := range ids {
		if _, err := c.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if most := g.most.Load(); most != 3 {
		t.Fatalf("%d handlers ran at once, want 3", most)
	}
}

func TestPrefetchHoldsJobsReady(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 30*time.Second)
	q := uniqueQueue(t)
	g := newGate()
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Concurrency: 1, Prefetch: 2})
	w.Handle("hold", g.handler)
	startWorker(t, w)
	var ids []string
	for range 4 {
		ids = append(ids, mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "hold"}))
	}
	eventually(t, "1 running and 2 prefetched", 10*time.Second, func() bool {
		stats, err := c.Stats(ctx, q)
		return err == nil && stats.Active == 3 && stats.Waiting == 1 && g.now.Load() == 1
	})
	close(g.release)
	for _, id := range ids {
		if _, err := c.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
		if info, err := c.Info(ctx, id); err != nil || info.Attempts != 1 || info.LostDeliveries != 0 {
			t.Fatalf("job %s: %+v %v", id, info, err)
		}
	}
	if g.most.Load() != 1 {
		t.Fatalf("%d handlers ran at once with concurrency 1", g.most.Load())
	}
}

func TestFailuresRetriesAndPanics(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 30*time.Second)
	q := uniqueQueue(t)
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Concurrency: 4})
	w.Handle("flaky", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		if job.Attempt == 1 {
			return nil, errors.New("first try fails")
		}
		return []byte(fmt.Sprintf("attempt %d", job.Attempt)), nil
	})
	w.Handle("bad-input", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		return nil, jobwire.Permanent(errors.New("no such customer"))
	})
	w.Handle("later", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		if job.Attempt == 1 {
			return nil, jobwire.RetryAfter(time.Hour, errors.New("rate limited"))
		}
		return nil, nil
	})
	w.Handle("panics", func(ctx context.Context, job *jobwire.Job) ([]byte, error) { panic("boom") })
	startWorker(t, w)
	fast := &jobwire.Backoff{Kind: jobwire.BackoffFixed, Base: 10 * time.Millisecond}

	result, err := c.Run(ctx, jobwire.NewJob{Queue: q, Type: "flaky", Backoff: fast})
	if err != nil || string(result) != "attempt 2" {
		t.Fatalf("flaky: %q %v", result, err)
	}

	_, err = c.Run(ctx, jobwire.NewJob{Queue: q, Type: "bad-input", MaxAttempts: 5, Backoff: fast})
	var ended *jobwire.JobEndedError
	if !errors.As(err, &ended) || ended.State != jobwire.StateDead || ended.LastError != "no such customer" {
		t.Fatalf("permanent failure: %v", err)
	}
	if info, _ := c.Info(ctx, ended.JobID); info == nil || info.Attempts != 1 {
		t.Fatalf("a permanent failure used more than one attempt: %+v", info)
	}

	later := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "later", Backoff: fast})
	info := waitState(t, c, later, jobwire.StateRetrying)
	if wait := time.Until(info.RunAt); wait < 50*time.Minute || info.LastError != "rate limited" {
		t.Fatalf("RetryAfter(1h): runs again in %s (last error %q)", wait, info.LastError)
	}

	_, err = c.Run(ctx, jobwire.NewJob{Queue: q, Type: "panics", MaxAttempts: 1})
	if !errors.As(err, &ended) || !strings.Contains(ended.LastError, "handler panicked: boom") {
		t.Fatalf("a panicking handler: %v", err)
	}
}

func TestProgressAndExtend(t *testing.T) {
	for name, protocol := range protocols {
		t.Run(name, func(t *testing.T) {
			c := newClient(t, shared.server.addr)
			ctx := testCtx(t, 20*time.Second)
			q := uniqueQueue(t)
			w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Protocol: protocol})
			w.Handle("long", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
				if err := job.Progress(ctx, []byte(`{"pct":50}`)); err != nil {
					return nil, err
				}
				deadline, err := job.Extend(ctx, time.Hour)
				if err != nil {
					return nil, err
				}
				return []byte(fmt.Sprintf("%t", deadline.After(job.Deadline.Add(30*time.Minute)))), nil
			})
			startWorker(t, w)
			id := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "long", Timeout: time.Minute})
			result, err := c.Wait(ctx, id)
			if err != nil || string(result) != "true" {
				t.Fatalf("extended by an hour past a one-minute deadline: %q %v", result, err)
			}
			info, err := c.Info(ctx, id)
			if err != nil || string(info.Progress) != `{"pct":50}` {
				t.Fatalf("progress: %+v %v", info, err)
			}
		})
	}
}

func TestRevokeOnCancelCancelsTheHandler(t *testing.T) {
	for name, protocol := range protocols {
		t.Run(name, func(t *testing.T) {
			c := newClient(t, shared.server.addr)
			ctx := testCtx(t, 20*time.Second)
			q := uniqueQueue(t)
			causes := make(chan error, 1)
			w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Protocol: protocol})
			w.Handle("hang", hangRecordingCause(causes))
			startWorker(t, w)
			id := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "hang"})
			waitState(t, c, id, jobwire.StateActive)
			if err := c.Cancel(ctx, id); err != nil {
				t.Fatal(err)
			}
			var revoked *jobwire.RevokedError
			select {
			case cause := <-causes:
				if !errors.As(cause, &revoked) || revoked.Reason != jobwire.RevokeCancelled || revoked.JobID != id {
					t.Fatalf("the handler's context ended with %v, want a revoke for the cancel", cause)
				}
			case <-ctx.Done():
				t.Fatal("the handler's context was not cancelled")
			}
			if _, err := c.Wait(ctx, id); !errors.Is(err, jobwire.ErrJobCancelled) {
				t.Fatalf("Wait: %v", err)
			}
			// The slot is free again: the next job runs.
			w.Handle("quick", func(context.Context, *jobwire.Job) ([]byte, error) { return []byte("ok"), nil })
			if _, err := c.Run(ctx, jobwire.NewJob{Queue: q, Type: "quick"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestTimeoutRevokesAndStaleTokensAreFenced(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 30*time.Second)
	q := uniqueQueue(t)
	type firstTry struct {
		cause    error
		token    string
		progress error
	}
	first := make(chan firstTry, 1)
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}})
	w.Handle("slow", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		if job.Attempt > 1 {
			return []byte("second attempt"), nil
		}
		<-ctx.Done() // revoked when the 300 ms attempt timeout passes
		// Still working on a lease that is gone: every ack of this delivery is refused.
		err := job.Progress(context.Background(), []byte("late"))
		first <- firstTry{cause: context.Cause(ctx), token: job.LeaseToken, progress: err}
		return []byte("first attempt, too late"), nil
	})
	startWorker(t, w)
	id := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "slow", Timeout: 300 * time.Millisecond, MaxAttempts: 2,
		Backoff: &jobwire.Backoff{Kind: jobwire.BackoffFixed, Base: 10 * time.Millisecond}})
	var try firstTry
	select {
	case try = <-first:
	case <-ctx.Done():
		t.Fatal("the first attempt was never revoked")
	}
	var revoked *jobwire.RevokedError
	if !errors.As(try.cause, &revoked) || revoked.Reason != jobwire.RevokeTimeout {
		t.Fatalf("the handler's context ended with %v, want a timeout revoke", try.cause)
	}
	if !errors.Is(try.progress, jobwire.ErrStaleLease) {
		t.Fatalf("Progress on a timed-out lease: %v, want ErrStaleLease", try.progress)
	}
	result, err := c.Wait(ctx, id)
	if err != nil || string(result) != "second attempt" {
		t.Fatalf("result %q %v: the revoked attempt's result must not count", result, err)
	}
	// The first delivery's token completes nothing, even now.
	_, err = c.Raw().CompleteJob(ctx, &pb.CompleteJobRequest{JobId: id, LeaseToken: try.token, Result: []byte("stale")})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("CompleteJob with the first token: %v, want FAILED_PRECONDITION", err)
	}
	if info, err := c.Info(ctx, id); err != nil || info.Attempts != 2 || !bytes.Equal(info.Result, []byte("second attempt")) {
		t.Fatalf("Info = %+v %v", info, err)
	}
}

func TestStopFinishesRunningAndHandsBackTheRest(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 30*time.Second)
	q := uniqueQueue(t)
	g := newGate()
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Concurrency: 1, Prefetch: 1})
	w.Handle("hold", g.handler)
	r := startWorker(t, w)
	running := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "hold"})
	eventually(t, "the first job running", 10*time.Second, func() bool { return g.now.Load() == 1 })
	prefetched := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "hold"})
	eventually(t, "the second job prefetched", 10*time.Second, func() bool {
		stats, err := c.Stats(ctx, q)
		return err == nil && stats.Active == 2
	})
	r.cancel()
	// The prefetched job goes back at once, unstarted; the running one goes on.
	info := waitState(t, c, prefetched, jobwire.StateWaiting)
	if info.LostDeliveries != 0 {
		t.Fatalf("the handed-back job counts a lost delivery: %+v", info)
	}
	if info, err := c.Info(ctx, running); err != nil || info.State != jobwire.StateActive {
		t.Fatalf("the running job: %+v %v", info, err)
	}
	close(g.release)
	r.stop(t)
	if info, err := c.Info(ctx, running); err != nil || info.State != jobwire.StateCompleted || string(info.Result) != "done" {
		t.Fatalf("the running job after the stop: %+v %v", info, err)
	}
	if g.started.Load() != 1 {
		t.Fatalf("%d handlers started, want 1", g.started.Load())
	}
}

func TestStopTimeoutHandsBackWhatDidNotFinish(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 30*time.Second)
	q := uniqueQueue(t)
	causes := make(chan error, 1)
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, StopTimeout: 200 * time.Millisecond})
	w.Handle("hang", hangRecordingCause(causes))
	r := startWorker(t, w)
	id := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "hang"})
	waitState(t, c, id, jobwire.StateActive)
	r.stop(t)
	if cause := <-causes; !errors.Is(cause, jobwire.ErrWorkerStopping) {
		t.Fatalf("cause %v, want ErrWorkerStopping", cause)
	}
	info, err := c.Info(ctx, id)
	if err != nil || info.State != jobwire.StateWaiting || info.LostDeliveries != 0 || info.LastError != "" {
		t.Fatalf("a job cut short by the stop should be back, unharmed: %+v %v", info, err)
	}
}

func TestWorkerOptionsAreChecked(t *testing.T) {
	c := newClient(t, shared.server.addr)
	noop := func(context.Context, *jobwire.Job) ([]byte, error) { return nil, nil }
	cases := map[string]jobwire.WorkerOptions{
		"no queue":           {},
		"concurrency":        {Queues: []string{"q"}, Concurrency: 1001},
		"unary prefetch":     {Queues: []string{"q"}, Prefetch: 1, Protocol: jobwire.ProtocolUnary},
		"bad queue (server)": {Queues: []string{"not a queue"}},
	}
	for name, opts := range cases {
		w := jobwire.NewWorker(c, opts)
		w.Handle("t", noop)
		if err := w.Run(testCtx(t, 10*time.Second)); err == nil {
			t.Errorf("%s: Run returned nil", name)
		} else if name == "bad queue (server)" && !errors.Is(err, jobwire.ErrInvalidArgument) {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if err := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{"q"}}).Run(context.Background()); err == nil {
		t.Error("Run without a handler returned nil")
	}
}

func TestListWorkersShowsTheStream(t *testing.T) {
	c := newClient(t, shared.server.addr)
	q := uniqueQueue(t)
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Concurrency: 2, WorkerID: "w-7", Labels: map[string]string{"zone": "a"}})
	w.Handle("t", func(context.Context, *jobwire.Job) ([]byte, error) { return nil, nil })
	startWorker(t, w)
	var got []jobwire.WorkerInfo
	var mu sync.Mutex
	eventually(t, "the worker listed", 10*time.Second, func() bool {
		ws, err := c.ListWorkers(context.Background(), q)
		mu.Lock()
		defer mu.Unlock()
		got = ws
		return err == nil && len(ws) == 1
	})
	if w := got[0]; w.WorkerID != "w-7" || w.Labels["zone"] != "a" || w.Labels["client"] != "go" || w.Queues[0] != q || w.MaxInFlight < 2 {
		t.Fatalf("ListWorkers = %+v", w)
	}
}

func TestRunEndsWhenTheClientIsClosed(t *testing.T) {
	c, err := jobwire.NewClient(shared.server.addr, jobwire.WithLogger(testLogger))
	if err != nil {
		t.Fatal(err)
	}
	q := uniqueQueue(t)
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}})
	w.Handle("t", func(context.Context, *jobwire.Job) ([]byte, error) { return nil, nil })
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	waitForWorker(t, newClient(t, shared.server.addr), q)
	_ = c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil on a closed client")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run goes on with a closed client")
	}
}
