package jobwire_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

// A handler's RateLimited answer delays the job without spending an attempt, on both protocols;
// the error is testable with errors.Is and errors.As.
func TestRateLimitedAnswerDelaysWithoutSpendingAnAttempt(t *testing.T) {
	upstream := errors.New("429 from the API")
	err := jobwire.RateLimited(time.Second, true, upstream)
	var limited *jobwire.RateLimitedError
	if !errors.Is(err, jobwire.ErrRateLimited) || !errors.Is(err, upstream) || !errors.As(err, &limited) ||
		limited.RetryAfter != time.Second || !limited.HoldKey {
		t.Fatalf("RateLimited: %v", err)
	}
	for name, protocol := range protocols {
		t.Run(name, func(t *testing.T) {
			c := newClient(t, shared.server.addr)
			ctx := testCtx(t, 20*time.Second)
			q := uniqueQueue(t)
			const wait = 300 * time.Millisecond
			var first atomic.Int64
			type call struct {
				attempt uint32
				after   time.Duration
			}
			second := make(chan call, 1)
			w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Protocol: protocol})
			w.Handle("call", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
				if first.CompareAndSwap(0, time.Now().UnixNano()) {
					return nil, jobwire.RateLimited(wait, false, upstream)
				}
				second <- call{job.Attempt, time.Since(time.Unix(0, first.Load()))}
				return []byte("done"), nil
			})
			startWorker(t, w)
			id := mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "call", MaxAttempts: 1, RateKey: "api.example"})
			if result, err := c.Wait(ctx, id); err != nil || string(result) != "done" {
				t.Fatalf("a job with one attempt, rate limited once: %q %v", result, err)
			}
			got := <-second
			info, err := c.Info(ctx, id)
			if err != nil || got.attempt != 1 || got.after < wait-50*time.Millisecond || info.Attempts != 1 || info.LostDeliveries != 0 {
				t.Fatalf("ran again as attempt %d after %s (asked %s); %+v %v", got.attempt, got.after, wait, info, err)
			}
		})
	}
}

// Rate, KeyRate and KeyConcurrency are set, read back, enforced (Stats counts the held jobs)
// and cleared.
func TestRateAndKeySettingsAndTheirStats(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 20*time.Second)
	q := uniqueQueue(t)
	set, err := c.SetQueueSettings(ctx, q, jobwire.QueueSettings{
		Rate:           &jobwire.RateLimit{Count: 100, Period: time.Second, Burst: 10},
		KeyRate:        &jobwire.RateLimit{Count: 5, Period: time.Minute},
		KeyConcurrency: jobwire.Ptr[uint32](1),
	})
	if err != nil || *set.Settings.Rate != (jobwire.RateLimit{Count: 100, Period: time.Second, Burst: 10}) ||
		set.Settings.KeyRate.Count != 5 || set.Settings.KeyRate.Period != time.Minute || *set.Effective.KeyConcurrency != 1 {
		t.Fatalf("SetQueueSettings: %+v %v", set, err)
	}

	release := make(chan struct{})
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}, Concurrency: 4})
	w.Handle("t", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	startWorker(t, w)
	defer close(release)
	for range 3 {
		mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "t", ConcurrencyKey: "tenant-1"})
	}
	eventually(t, "one job of the key active, two held", 10*time.Second, func() bool {
		s, err := c.Stats(ctx, q)
		return err == nil && s.Active == 1 && s.HeldByKeyConcurrency == 2 && s.WaitingKeys == 1
	})

	cleared, err := c.SetQueueSettings(ctx, q, jobwire.QueueSettings{},
		jobwire.SettingRate, jobwire.SettingKeyRate, jobwire.SettingKeyConcurrency)
	if err != nil || cleared.Settings.Rate != nil || cleared.Settings.KeyRate != nil || cleared.Settings.KeyConcurrency != nil {
		t.Fatalf("cleared: %+v %v", cleared, err)
	}
}

// The shard count is set once and read back; a change is FAILED_PRECONDITION.
func TestTheShardCountIsASettingSetOnce(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 10*time.Second)
	q := uniqueQueue(t)
	set, err := c.SetQueueSettings(ctx, q, jobwire.QueueSettings{Shards: jobwire.Ptr[uint32](3)})
	if err != nil || set.Settings.Shards == nil || *set.Settings.Shards != 3 || *set.Effective.Shards != 3 {
		t.Fatalf("SetQueueSettings: %+v %v", set, err)
	}
	got, err := c.GetQueueSettings(ctx, q)
	if err != nil || got.Settings.Shards == nil || *got.Settings.Shards != 3 {
		t.Fatalf("GetQueueSettings: %+v %v", got, err)
	}
	_, err = c.SetQueueSettings(ctx, q, jobwire.QueueSettings{Shards: jobwire.Ptr[uint32](4)})
	if !errors.Is(err, jobwire.ErrFailedPrecondition) {
		t.Fatalf("a change of the count: %v", err)
	}
}
