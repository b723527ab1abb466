package jobwire_test

// Processes killed, stopped and frozen: a worker killed mid-job, a server drained by SIGTERM or
// killed and restarted in place, Redis frozen under an add.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

// The test binary run with this variable set is a worker process (see helperMain).
const helperEnv = "JOBWIRE_GO_TEST_HELPER"

// helperMain is a worker in a process of its own, to be killed: it serves crash-me jobs by
// writing the job's id to $JOBWIRE_GO_TEST_HELPER (renamed into place whole) and hanging.
func helperMain() int {
	c, err := jobwire.NewClient(os.Getenv("JOBWIRE_GO_TEST_ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	marker := os.Getenv(helperEnv)
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{os.Getenv("JOBWIRE_GO_TEST_QUEUE")}})
	w.Handle("crash-me", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		if err := os.WriteFile(marker+".tmp", []byte(job.ID), 0o600); err != nil {
			return nil, err
		}
		if err := os.Rename(marker+".tmp", marker); err != nil {
			return nil, err
		}
		select {} // until killed
	})
	if err := w.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestWorkerKilledMidJobIsFinishedByAnother(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 30*time.Second)
	q := uniqueQueue(t)
	marker := filepath.Join(t.TempDir(), "holding")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+marker, "JOBWIRE_GO_TEST_ADDR="+shared.server.addr, "JOBWIRE_GO_TEST_QUEUE="+q)
	victim, err := spawnCmd("victim", nil, cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.kill()
	id := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "crash-me"})
	eventually(t, "the victim holding the job", 20*time.Second, func() bool {
		held, err := os.ReadFile(marker)
		return err == nil && string(held) == id
	})
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}})
	w.Handle("crash-me", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		return []byte(fmt.Sprintf("rescued: attempt %d, lost deliveries %d", job.Attempt, job.LostDeliveries)), nil
	})
	startWorker(t, w)
	victim.kill()
	result, err := c.Wait(ctx, id)
	if err != nil || string(result) != "rescued: attempt 1, lost deliveries 1" {
		t.Fatalf("after the kill: %q %v\n%s", result, err, victim.log.tail(20))
	}
}

func TestAddRetriesWhileRedisIsFrozenAndAddsOnce(t *testing.T) {
	st := ownStack(t, "--redis-timeout", "300ms")
	var mu sync.Mutex
	var answers []codes.Code
	record := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoke(ctx, method, req, reply, cc, opts...)
		if strings.HasSuffix(method, "/AddJob") {
			mu.Lock()
			answers = append(answers, status.Code(err))
			mu.Unlock()
		}
		return err
	})
	retry := jobwire.RetryPolicy{Attempts: 50, Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond, Multiplier: 2}
	c := newClient(t, st.server.addr, jobwire.WithRetry(retry), jobwire.WithDialOptions(record))
	ctx := testCtx(t, 30*time.Second)
	q := uniqueQueue(t)
	if _, err := c.Stats(ctx, q); err != nil {
		t.Fatal(err)
	}
	st.redis.signal(syscall.SIGSTOP)
	frozen := true
	defer func() {
		if frozen {
			st.redis.signal(syscall.SIGCONT)
		}
	}()
	type outcome struct {
		added jobwire.Added
		err   error
	}
	done := make(chan outcome, 1)
	go func() {
		added, err := c.Add(ctx, jobwire.NewJob{Queue: q, Type: "t", Payload: []byte(`{"n":1}`)})
		done <- outcome{added, err}
	}()
	eventually(t, "an AddJob answered UNAVAILABLE", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(answers) > 0 && answers[0] == codes.Unavailable
	})
	st.redis.signal(syscall.SIGCONT)
	frozen = false
	got := <-done
	if got.err != nil || got.added.Duplicate {
		t.Fatalf("Add = %+v, %v", got.added, got.err)
	}
	stats, err := c.Stats(ctx, q)
	if err != nil || stats.Waiting != 1 {
		t.Fatalf("after %d tries (%v): Stats = %+v %v, want exactly one job", len(answers), answers, stats, err)
	}
}

func TestDrainOnSigtermThenReconnect(t *testing.T) {
	st := ownStack(t, "--drain-grace", "10s")
	addr := st.server.addr
	c := newClient(t, addr)
	ctx := testCtx(t, 60*time.Second)
	q := uniqueQueue(t)
	g := newGate()
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, ReconnectDelay: 50 * time.Millisecond, MaxReconnectDelay: 200 * time.Millisecond})
	w.Handle("hold", g.handler)
	startWorker(t, w)
	id := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "hold"})
	eventually(t, "the job running", 10*time.Second, func() bool { return g.now.Load() == 1 })

	health, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer health.Close()
	st.server.signal(syscall.SIGTERM)
	eventually(t, "the server NOT_SERVING", 10*time.Second, func() bool {
		r, err := healthpb.NewHealthClient(health).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING
	})
	close(g.release) // answered within the drain grace, on the drained stream
	if !st.server.waitExit(15 * time.Second) {
		t.Fatal("the server did not exit after SIGTERM")
	}
	if st.server.err != nil {
		t.Fatalf("the drained server exited with %v", st.server.err)
	}
	if _, err := st.startServer(addr); err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx, id)
	if err != nil || info.State != jobwire.StateCompleted || info.Attempts != 1 || info.LostDeliveries != 0 {
		t.Fatalf("the job answered during the drain: %+v %v", info, err)
	}
	// The worker reconnected by itself.
	if result, err := c.Run(ctx, jobwire.NewJob{Queue: q, Type: "hold"}); err != nil || string(result) != "done" {
		t.Fatalf("a job after the restart: %q %v", result, err)
	}
}

func TestReconnectAfterServerRestart(t *testing.T) {
	st := ownStack(t)
	addr := st.server.addr
	c := newClient(t, addr)
	ctx := testCtx(t, 60*time.Second)
	q := uniqueQueue(t)
	release := make(chan struct{})
	causes := make(chan error, 1)
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Concurrency: 2, ReconnectDelay: 50 * time.Millisecond, MaxReconnectDelay: 200 * time.Millisecond})
	var runs atomic.Int32
	w.Handle("slow", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		if runs.Add(1) == 1 {
			<-ctx.Done()
			causes <- context.Cause(ctx)
			<-release // a handler that finishes its work anyway
		}
		return []byte("finished"), nil
	})
	w.Handle("quick", func(context.Context, *jobwire.Job) ([]byte, error) { return []byte("quick"), nil })
	startWorker(t, w)
	id := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "slow"})
	waitState(t, c, id, jobwire.StateActive)
	waited := make(chan error, 1)
	go func() {
		result, err := c.Wait(ctx, id)
		if err == nil && string(result) != "finished" {
			err = fmt.Errorf("result %q", result)
		}
		waited <- err
	}()

	st.server.kill()
	if cause := <-causes; !errors.Is(cause, jobwire.ErrStreamLost) {
		t.Fatalf("the handler's context ended with %v, want ErrStreamLost", cause)
	}
	if _, err := st.startServer(addr); err != nil {
		t.Fatal(err)
	}
	close(release)
	// Whether the result got in on its surviving lease or the job was reaped and ran again,
	// it completes, and the Wait begun before the kill sees it through a new watch.
	if err := <-waited; err != nil {
		t.Fatalf("Wait across the restart: %v", err)
	}
	if result, err := c.Run(ctx, jobwire.NewJob{Queue: q, Type: "quick"}); err != nil || string(result) != "quick" {
		t.Fatalf("a job after the restart: %q %v", result, err)
	}
}

func TestAddsInFlightWhenTheServerIsKilledEachGoInOnce(t *testing.T) {
	st := ownStack(t)
	addr := st.server.addr
	retry := jobwire.RetryPolicy{Attempts: 60, Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond, Multiplier: 2}
	c := newClient(t, addr, jobwire.WithRetry(retry))
	ctx := testCtx(t, 60*time.Second)
	q := uniqueQueue(t)
	// Twenty producers adding one job after another while the server is killed (no drain) and
	// started again on its address: every add goes in, each job once.
	var mu sync.Mutex
	ids := map[string]bool{}
	errs := make(chan error, 20)
	for p := 0; p < 20; p++ {
		go func() {
			for n := 0; n < 100; n++ {
				added, err := c.Add(ctx, jobwire.NewJob{Queue: q, Type: "t", Payload: []byte(fmt.Sprintf(`{"n":%d}`, p*100+n))})
				if err != nil {
					errs <- fmt.Errorf("add %d of producer %d: %w", n, p, err)
					return
				}
				mu.Lock()
				ids[added.ID] = true
				mu.Unlock()
			}
			errs <- nil
		}()
	}
	eventually(t, "300 adds before the kill", 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ids) >= 300
	})
	st.server.kill()
	if _, err := st.startServer(addr); err != nil {
		t.Fatal(err)
	}
	for p := 0; p < 20; p++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if len(ids) != 2000 {
		t.Fatalf("%d distinct ids answered, want 2000 (a job of its own per add)", len(ids))
	}
	stats, err := c.Stats(ctx, q)
	if err != nil || stats.Waiting != 2000 {
		t.Fatalf("Stats = %+v %v, want each job once", stats, err)
	}
}
