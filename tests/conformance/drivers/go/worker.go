package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

// call is one handler call as wait_handler reports it.
type call struct {
	Attempt        uint32  `json:"attempt"`
	LostDeliveries uint32  `json:"lost_deliveries"`
	Token          string  `json:"token"`
	SessionState   *string `json:"session_state"`
	SessionVersion *uint64 `json:"session_version"`
	Ended          *string `json:"ended"`
}

// calls records every handler call per job and holds the releases of blocked ones.
type calls struct {
	mu       sync.Mutex
	byJob    map[string][]*call
	releases map[string]chan struct{}
}

func (c *calls) begin(jobID string, rec *call) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byJob[jobID] = append(c.byJob[jobID], rec)
	return len(c.byJob[jobID])
}

func (c *calls) end(rec *call, how string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec.Ended = &how
}

// releaseOf is the job's release channel: one value frees one blocked call, now or later.
func (c *calls) releaseOf(jobID string) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.releases[jobID]
	if !ok {
		ch = make(chan struct{}, 64)
		c.releases[jobID] = ch
	}
	return ch
}

func (c *calls) release(jobID string) {
	select {
	case c.releaseOf(jobID) <- struct{}{}:
	default:
	}
}

// waitFor answers wait_handler: polls the record (every 10 ms) until the call is there.
func (c *calls) waitFor(r *request) reply {
	n := max(r.Invocation, 1)
	deadline := time.Now().Add(r.wait())
	for {
		c.mu.Lock()
		list := c.byJob[r.Job]
		reached := len(list) >= n && (r.Until != "ended" || list[n-1].Ended != nil)
		var snapshot []call
		if reached {
			for _, rec := range list {
				snapshot = append(snapshot, *rec)
			}
		}
		c.mu.Unlock()
		if reached {
			return reply{"invocations": snapshot}
		}
		if time.Now().After(deadline) {
			return failure(codes.DeadlineExceeded, fmt.Sprintf("call %d of %s not %s", n, r.Job, r.Until))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// instructions is what the conformance handler reads from a payload.
type instructions struct {
	Block         json.RawMessage `json:"block"`
	Progress      json.RawMessage `json:"progress"`
	FailAttempts  uint32          `json:"fail_attempts"`
	RateLimitedMs int64           `json:"rate_limited_ms"`
	Permanent     string          `json:"permanent"`
	Append        *string         `json:"append"`
	Calc          *struct {
		N    int64  `json:"n"`
		Text string `json:"text"`
	} `json:"calc"`
}

// blocks: block is true, or a list holding this call's number.
func (in *instructions) blocks(invocation int) bool {
	var all bool
	if json.Unmarshal(in.Block, &all) == nil {
		return all
	}
	var which []int
	if json.Unmarshal(in.Block, &which) == nil {
		for _, n := range which {
			if n == invocation {
				return true
			}
		}
	}
	return false
}

type workerActor struct {
	calls  *calls
	cancel context.CancelFunc
	done   chan error
}

func (d *driver) workerStart(r *request) reply {
	if d.worker != nil {
		return failure(codes.FailedPrecondition, "a worker runs already")
	}
	w := jobwire.NewWorker(d.client, jobwire.WorkerOptions{
		Queues: r.Queues, Concurrency: max(r.Concurrency, 1), WorkerID: "conformance-go-" + os.Getenv("CONFORMANCE_ACTOR"),
		ReconnectDelay: 100 * time.Millisecond, MaxReconnectDelay: time.Second,
	})
	actor := &workerActor{
		calls: &calls{byJob: map[string][]*call{}, releases: map[string]chan struct{}{}},
		done:  make(chan error, 1),
	}
	hold := r.Hold
	w.Handle("conf", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		return d.handle(ctx, job, actor.calls, hold)
	})
	ctx, cancel := context.WithCancel(context.Background())
	actor.cancel = cancel
	go func() { actor.done <- w.Run(ctx) }()
	d.worker = actor
	return reply{}
}

// stop ends Run's context (a graceful stop: running handlers finish) and waits for it.
func (w *workerActor) stop() error {
	w.cancel()
	err := <-w.done
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// handle is the conformance handler (README: "Worker ops").
func (d *driver) handle(ctx context.Context, job *jobwire.Job, calls *calls, hold bool) ([]byte, error) {
	var in instructions
	if err := job.JSON(&in); err != nil {
		return nil, jobwire.Permanent(err)
	}
	rec := &call{Attempt: job.Attempt, LostDeliveries: job.LostDeliveries, Token: job.LeaseToken}
	var seen []string
	if s := job.Session; s != nil {
		state, version := string(s.State), s.Version
		rec.SessionState, rec.SessionVersion = &state, &version
		var doc struct {
			Seen []string `json:"seen"`
		}
		if err := json.Unmarshal(s.State, &doc); err != nil {
			return nil, jobwire.Permanent(err)
		}
		seen = append([]string{}, doc.Seen...)
	}
	invocation := calls.begin(job.ID, rec)
	ended := "returned"
	defer func() { calls.end(rec, ended) }()

	if hold || in.blocks(invocation) {
		select {
		case <-calls.releaseOf(job.ID):
		case <-ctx.Done():
			ended = "cancelled"
			return nil, context.Cause(ctx)
		}
	}
	if invocation == 1 && in.RateLimitedMs > 0 {
		ended = "rate_limited"
		return nil, jobwire.RateLimited(time.Duration(in.RateLimitedMs)*time.Millisecond, false, nil)
	}
	if len(in.Progress) > 0 {
		if err := job.Progress(ctx, in.Progress); err != nil {
			ended = "failed"
			return nil, err
		}
	}
	if in.FailAttempts > 0 && job.Attempt <= in.FailAttempts {
		ended = "failed"
		return nil, fmt.Errorf("failed attempt %d", job.Attempt)
	}
	if in.Permanent != "" {
		ended = "failed"
		return nil, jobwire.Permanent(errors.New(in.Permanent))
	}
	if in.Append != nil {
		state, err := json.Marshal(map[string]any{"seen": append(append([]string{}, seen...), *in.Append)})
		if err != nil {
			return nil, err
		}
		job.SetSessionState(state)
	}
	header := job.Headers["x-conformance"]
	result := map[string]any{
		"lang": d.lang, "job_id": job.ID, "type": job.Type, "attempt": job.Attempt,
		"lost_deliveries": job.LostDeliveries, "header": header, "seen": nil,
	}
	if job.Session != nil {
		result["seen"] = seen
	}
	if c := in.Calc; c != nil {
		runes := []rune(c.Text)
		for i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {
			runes[i], runes[j] = runes[j], runes[i]
		}
		result["square"] = c.N * c.N
		result["reversed"] = string(runes)
		result["utf8_bytes"] = len(c.Text)
	}
	return json.Marshal(result)
}
