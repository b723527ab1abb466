package jobwire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
)

// HandlerFunc runs one job. The bytes it returns become the job's result; an error fails the
// attempt, which is retried per the job's backoff (wrap it with Permanent to go dead at once,
// or RetryAfter to pick the wait; return RateLimited to run it again later without spending
// an attempt). ctx is cancelled when the worker must stop working on the
// job: context.Cause(ctx) is a *RevokedError (timeout, lost lease, cancelled job),
// ErrStreamLost, or ErrWorkerStopping. A panic fails the attempt like an error.
type HandlerFunc func(ctx context.Context, job *Job) ([]byte, error)

// Protocol is how a Worker talks to the server.
type Protocol int

const (
	// ProtocolWork is one bidirectional Work stream carrying the jobs one way and the acks,
	// several per message, the other: no call per ack. The default.
	ProtocolWork Protocol = iota
	// ProtocolUnary is a GetJob stream for the jobs and one unary call per ack (CompleteJob,
	// FailJob...), for a server or proxy without Work. No prefetch.
	ProtocolUnary
)

// WorkerOptions configure a Worker. Queues is required.
type WorkerOptions struct {
	// The queues to serve, 1 to 32, in strict order: a ready job of an earlier queue is always
	// delivered before one of a later queue.
	Queues []string
	// Handlers running at once, 1 to 1,000 (default 1): the stream's credit, so the server
	// never sends more than that (plus Prefetch).
	Concurrency int
	// Jobs held beyond Concurrency, waiting for a free handler, so the next job is already here
	// when a handler returns (0 to 1,000; default 0; ProtocolWork only). They are leased from
	// delivery: their deadlines run while they wait. On stop or drain they are handed back.
	Prefetch int
	// ProtocolWork (default) or ProtocolUnary.
	Protocol Protocol
	// Shown to operators (ListWorkers); default "go-<hostname>-<pid>".
	WorkerID string
	// Free-form labels shown to operators (at most 32).
	Labels map[string]string
	// How long Run waits, once its context ends, for running handlers to return before it
	// cancels their contexts (cause ErrWorkerStopping). 0: as long as they take.
	StopTimeout time.Duration
	// The wait before reconnecting after a stream ended, doubling (with jitter) per failed try
	// up to MaxReconnectDelay. Defaults 100 ms and 5 s.
	ReconnectDelay, MaxReconnectDelay time.Duration
}

// Worker runs handlers for the jobs of its queues: one worker stream, reopened with backoff
// when it breaks. Register handlers with Handle, then call Run.
type Worker struct {
	client   *Client
	opts     WorkerOptions
	log      *slog.Logger
	mu       sync.RWMutex
	handlers map[string]HandlerFunc
	running  atomic.Bool
}

// NewWorker makes a worker over client's connection (its token and TLS included).
func NewWorker(client *Client, opts WorkerOptions) *Worker {
	if opts.Concurrency == 0 {
		opts.Concurrency = 1
	}
	if opts.WorkerID == "" {
		host, _ := os.Hostname()
		opts.WorkerID = fmt.Sprintf("go-%s-%d", host, os.Getpid())
	}
	if opts.ReconnectDelay <= 0 {
		opts.ReconnectDelay = 100 * time.Millisecond
	}
	if opts.MaxReconnectDelay <= 0 {
		opts.MaxReconnectDelay = 5 * time.Second
	}
	labels := map[string]string{"client": "go"}
	for k, v := range opts.Labels {
		labels[k] = v
	}
	opts.Labels = labels
	return &Worker{client: client, opts: opts, log: client.logger, handlers: map[string]HandlerFunc{}}
}

// Handle runs h for jobs of jobType. A job of a type without a handler fails its attempt.
func (w *Worker) Handle(jobType string, h HandlerFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handlers[jobType] = h
}

func (w *Worker) handler(jobType string) HandlerFunc {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.handlers[jobType]
}

// Run works until ctx ends, then stops gracefully: no new job is started, jobs delivered but
// not started are handed back (neither an attempt nor a lost delivery), running handlers finish
// (see StopTimeout) and are acknowledged, then Run returns nil. A broken stream (server gone,
// network cut, drain) is reopened with backoff. Run returns an error only for what retrying
// cannot mend: invalid options or queues, a refused token, a server without the protocol.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.validate(); err != nil {
		return err
	}
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("jobwire: Worker.Run is already running")
	}
	defer w.running.Store(false)
	failures := 0
	for ctx.Err() == nil {
		outcome := w.serve(ctx)
		if ctx.Err() != nil {
			break
		}
		if outcome.fatal != nil {
			return outcome.fatal
		}
		if outcome.healthy {
			failures = 0
		}
		failures++
		delay := w.reconnectDelay(failures)
		w.log.Debug("jobwire: worker stream ended; reconnecting", "after", delay, "drained", outcome.drained, "error", outcome.err)
		if sleep(ctx, delay) != nil {
			break
		}
	}
	return nil
}

func (w *Worker) validate() error {
	o := w.opts
	switch {
	case len(o.Queues) == 0:
		return errors.New("jobwire: WorkerOptions.Queues: at least one queue")
	case o.Concurrency < 1 || o.Concurrency > 1000:
		return fmt.Errorf("jobwire: WorkerOptions.Concurrency: 1 to 1,000, not %d", o.Concurrency)
	case o.Prefetch < 0 || o.Prefetch > 1000:
		return fmt.Errorf("jobwire: WorkerOptions.Prefetch: 0 to 1,000, not %d", o.Prefetch)
	case o.Prefetch > 0 && o.Protocol == ProtocolUnary:
		return errors.New("jobwire: WorkerOptions.Prefetch needs ProtocolWork")
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if len(w.handlers) == 0 {
		return errors.New("jobwire: Worker.Run: no handler registered (Handle)")
	}
	return nil
}

// reconnectDelay is the wait before the n-th try in a row (from 1): ReconnectDelay doubling up
// to MaxReconnectDelay, each a random time between half of it and all of it.
func (w *Worker) reconnectDelay(n int) time.Duration {
	d := w.opts.ReconnectDelay
	for i := 1; i < n && d < w.opts.MaxReconnectDelay; i++ {
		d *= 2
	}
	d = min(d, w.opts.MaxReconnectDelay)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// fatalOpen: refusals of a stream that no reconnect can mend (CANCELLED: the client's
// connection was closed).
func fatalOpen(err error) bool {
	switch codeOf(err) {
	case codes.InvalidArgument, codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented, codes.Canceled:
		return true
	}
	return false
}

// callHandler calls the handler of t's job type, turning a panic into an error.
func (w *Worker) callHandler(t *task) (result []byte, err error) {
	h := w.handler(t.job.Type)
	if h == nil {
		return nil, fmt.Errorf("no handler for job type %q on this worker", t.job.Type)
	}
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("jobwire: handler panicked", "job", t.job.ID, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return h(t.ctx, t.job)
}
