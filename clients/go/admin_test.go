package jobwire_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

func TestPauseAndResume(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 20*time.Second)
	q := uniqueQueue(t)
	if err := c.PauseQueue(ctx, q); err != nil {
		t.Fatal(err)
	}
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}})
	w.Handle("t", func(context.Context, *jobwire.Job) ([]byte, error) { return []byte("ran"), nil })
	startWorker(t, w)
	waitForWorker(t, c, q)
	id := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "t"})
	stats, err := c.Stats(ctx, q)
	if err != nil || !stats.Paused || stats.Waiting != 1 {
		t.Fatalf("a paused queue with a worker: %+v %v", stats, err)
	}
	if err := c.ResumeQueue(ctx, q); err != nil {
		t.Fatal(err)
	}
	if result, err := c.Wait(ctx, id); err != nil || string(result) != "ran" {
		t.Fatalf("after ResumeQueue: %q %v", result, err)
	}
}

func TestDeadLettersListRetryDeleteAndPurge(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 30*time.Second)
	q := uniqueQueue(t)
	var healed atomic.Bool
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Concurrency: 3})
	w.Handle("t", func(context.Context, *jobwire.Job) ([]byte, error) {
		if !healed.Load() {
			return nil, jobwire.Permanent(errors.New("not yet"))
		}
		return []byte("healed"), nil
	})
	startWorker(t, w)
	var dead []string
	for range 3 {
		id := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "t"})
		if _, err := c.Wait(ctx, id); !errors.Is(err, jobwire.ErrJobDead) {
			t.Fatalf("Wait: %v", err)
		}
		dead = append(dead, id)
	}

	listed := map[string]bool{}
	first, err := c.ListJobs(ctx, q, jobwire.StateDead, jobwire.Page{Size: 2})
	if err != nil || len(first.Jobs) != 2 || first.NextPageToken == "" {
		t.Fatalf("first page of dead jobs: %+v %v", first, err)
	}
	second, err := c.ListJobs(ctx, q, jobwire.StateDead, jobwire.Page{Size: 2, Token: first.NextPageToken})
	if err != nil || len(second.Jobs) != 1 || second.NextPageToken != "" {
		t.Fatalf("second page of dead jobs: %+v %v", second, err)
	}
	for _, j := range append(first.Jobs, second.Jobs...) {
		if j.State != jobwire.StateDead || j.LastError != "not yet" {
			t.Fatalf("listed %+v", j)
		}
		listed[j.ID] = true
	}
	if len(listed) != 3 {
		t.Fatalf("listed %v, want the 3 dead jobs", listed)
	}
	queues, err := c.ListQueues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range queues {
		found = found || (s.Queue == q && s.Dead == 3)
	}
	if !found {
		t.Fatalf("ListQueues has no %s with 3 dead jobs", q)
	}

	healed.Store(true)
	if err := c.RetryJob(ctx, dead[0]); err != nil {
		t.Fatal(err)
	}
	if result, err := c.Wait(ctx, dead[0]); err != nil || string(result) != "healed" {
		t.Fatalf("after RetryJob: %q %v", result, err)
	}
	if err := c.RetryJob(ctx, dead[0]); !errors.Is(err, jobwire.ErrFailedPrecondition) {
		t.Fatalf("RetryJob of a job that is not dead: %v", err)
	}
	if n, err := c.RetryDeadJobs(ctx, q, 10); err != nil || n != 2 {
		t.Fatalf("RetryDeadJobs: %d %v", n, err)
	}
	for _, id := range dead[1:] {
		if info, err := c.Info(ctx, id); err != nil || info.Attempts > 1 {
			t.Fatalf("a retried job keeps its old attempts: %+v %v", info, err)
		}
		if _, err := c.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
	}

	later := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "t", Delay: time.Hour})
	if err := c.DeleteJob(ctx, later); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Info(ctx, later); !errors.Is(err, jobwire.ErrNotFound) {
		t.Fatalf("Info after DeleteJob: %v", err)
	}
	mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "t", Delay: time.Hour})
	mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "t", Delay: time.Hour})
	if n, err := c.PurgeQueue(ctx, q, jobwire.StateDelayed, jobwire.StateCompleted); err != nil || n != 5 {
		t.Fatalf("PurgeQueue of 2 delayed and 3 completed jobs: %d %v", n, err)
	}
	if stats, err := c.Stats(ctx, q); err != nil || stats.Delayed+stats.Completed+stats.Dead != 0 {
		t.Fatalf("after PurgeQueue: %+v %v", stats, err)
	}
}
