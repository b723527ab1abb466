package jobwire

import (
	"context"
	"crypto/rand"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// The most jobs one AddJobs call takes; AddMany sends more in several calls.
const maxBatch = 1000

// NewJob is a job to add. Queue and Type are required; every other field left zero takes the
// server's default.
type NewJob struct {
	// 1 to 128 characters of A-Z a-z 0-9 _ . : - ; created on first use.
	Queue string
	// The handler name workers dispatch on.
	Type string
	// Opaque bytes for the worker; JSON by convention (at most 1 MiB by default).
	Payload []byte
	// Delivered with the job (a W3C traceparent travels here).
	Headers map[string]string
	// -5 to 5, higher first; FIFO within one priority.
	Priority int32
	// Run after this long, or at RunAt (the Redis server's clock); set at most one.
	Delay time.Duration
	RunAt time.Time
	// Attempts before the job goes dead, counting the first (server default 3).
	MaxAttempts uint32
	// The wait before each retry (server default: exponential, 1 s, x2, up to 1 h, jitter 0.5).
	Backoff *Backoff
	// How long one attempt may run before it is revoked and fails (server default 30 min).
	Timeout time.Duration
	// A repeat add with this key on the same queue within the idempotency window (24 h by
	// default) adds nothing and returns the first job's id with Duplicate set. Empty: the
	// client makes one up for this add, so its own retries never add the job twice.
	IdempotencyKey string
	// Runs the job in this session ("<queue>/<name>", of this queue).
	SessionID string
	// The key whose rate limit (the queue's key_rate setting) the job counts against.
	RateKey string
	// The key whose concurrency cap (the queue's key_concurrency setting) the job counts against.
	ConcurrencyKey string
}

// BackoffKind is how the wait before a retry grows.
type BackoffKind int32

// The kinds of backoff.
const (
	// Base * Factor^(attempt-1), capped at Max (the default).
	BackoffExponential BackoffKind = BackoffKind(pb.BackoffKind_BACKOFF_KIND_EXPONENTIAL)
	// Always Base.
	BackoffFixed BackoffKind = BackoffKind(pb.BackoffKind_BACKOFF_KIND_FIXED)
)

// Backoff is the wait between a failed attempt and the next. Zero fields take the server's
// defaults.
type Backoff struct {
	Kind BackoffKind
	// The first wait (exponential) or every wait (fixed); default 1 s.
	Base time.Duration
	// The longest wait; default 1 h.
	Max time.Duration
	// Growth per attempt (exponential), 1 to 100; 0: the default, 2.
	Factor float64
	// The randomized fraction of each wait, 0 to 1; nil: 0.5 for exponential, 0 for fixed.
	Jitter *float64
}

func (j *NewJob) request() *pb.AddJobRequest {
	req := &pb.AddJobRequest{
		Queue: j.Queue, Type: j.Type, Payload: j.Payload, Headers: j.Headers, Priority: j.Priority,
		IdempotencyKey: j.IdempotencyKey, SessionId: j.SessionID,
		RateKey: j.RateKey, ConcurrencyKey: j.ConcurrencyKey,
	}
	switch {
	case !j.RunAt.IsZero():
		req.Schedule = &pb.AddJobRequest_RunAt{RunAt: timestamppb.New(j.RunAt)}
	case j.Delay > 0:
		req.Schedule = &pb.AddJobRequest_Delay{Delay: durationpb.New(j.Delay)}
	}
	if j.MaxAttempts > 0 {
		req.MaxAttempts = proto.Uint32(j.MaxAttempts)
	}
	if j.Timeout > 0 {
		req.Timeout = durationpb.New(j.Timeout)
	}
	req.Backoff = j.Backoff.proto()
	return req
}

// proto is the backoff as sent; nil stays nil (the server's default).
func (b *Backoff) proto() *pb.Backoff {
	if b == nil {
		return nil
	}
	out := &pb.Backoff{Kind: pb.BackoffKind(b.Kind)}
	if b.Jitter != nil {
		out.Jitter = proto.Float64(*b.Jitter)
	}
	if b.Base > 0 {
		out.Base = durationpb.New(b.Base)
	}
	if b.Max > 0 {
		out.Max = durationpb.New(b.Max)
	}
	if b.Factor != 0 {
		out.Factor = proto.Float64(b.Factor)
	}
	return out
}

// backoffOf is a backoff as the server reports it (a schedule's template, a queue's
// settings); nil stays nil.
func backoffOf(b *pb.Backoff) *Backoff {
	if b == nil {
		return nil
	}
	out := &Backoff{Kind: BackoffKind(b.GetKind()), Base: durationOf(b.GetBase()), Max: durationOf(b.GetMax()), Factor: b.GetFactor()}
	if b.Jitter != nil {
		out.Jitter = Ptr(b.GetJitter())
	}
	return out
}

// Added is the outcome of an add.
type Added struct {
	// "<queue>/<ULID>": unique, and sortable by creation time.
	ID string
	// Your IdempotencyKey was seen within the window: no job was added, ID is the first one's.
	// (Never set for a key the client made up: a repeat of that is its own retry.)
	Duplicate bool
}

// autoKey is an idempotency key for one logical add.
func autoKey() string { return "auto-" + rand.Text() }

// Add adds one job. UNAVAILABLE is retried (see RetryPolicy): the job carries an idempotency
// key (yours, or one made up for this add) so a retry whose first try went through returns the
// same job instead of adding a second.
func (c *Client) Add(ctx context.Context, job NewJob) (Added, error) {
	req := job.request()
	auto := req.IdempotencyKey == ""
	if auto {
		req.IdempotencyKey = autoKey()
	}
	resp, err := unary(ctx, c, "AddJob", true, c.queue.AddJob, req)
	if err != nil {
		return Added{}, err
	}
	return Added{ID: resp.GetJobId(), Duplicate: resp.GetDuplicate() && !auto}, nil
}

// AddToSession adds job to the session sessionID ("<queue>/<name>"); an empty job.Queue is
// taken from the id. Its jobs start in the order they were added, each delivered with the
// session's state.
func (c *Client) AddToSession(ctx context.Context, sessionID string, job NewJob) (Added, error) {
	job.SessionID = sessionID
	if queue, _, ok := strings.Cut(sessionID, "/"); ok && job.Queue == "" {
		job.Queue = queue
	}
	return c.Add(ctx, job)
}

// AddResult is the outcome of one entry of AddMany: Err is nil when it was added (or was a
// duplicate), else why it was refused (an *Error naming the field, e.g. ErrInvalidArgument).
type AddResult struct {
	Added
	Err error
}

// AddMany adds jobs in calls of at most 1,000; each entry is added or refused on its own, and
// the results are in the order of jobs. Like Add, every entry carries an idempotency key, so
// a call answered UNAVAILABLE, or entries answered UNAVAILABLE, are sent again safely. The
// error is for a call that failed as a whole; the entries it did not add have it as their Err.
func (c *Client) AddMany(ctx context.Context, jobs []NewJob) ([]AddResult, error) {
	results := make([]AddResult, len(jobs))
	reqs := make([]*pb.AddJobRequest, len(jobs))
	auto := make([]bool, len(jobs))
	for i := range jobs {
		reqs[i] = jobs[i].request()
		if auto[i] = reqs[i].IdempotencyKey == ""; auto[i] {
			reqs[i].IdempotencyKey = autoKey()
		}
	}
	for start := 0; start < len(jobs); start += maxBatch {
		pending := make([]int, 0, maxBatch)
		for i := start; i < min(start+maxBatch, len(jobs)); i++ {
			pending = append(pending, i)
		}
		for attempt := 1; len(pending) > 0; attempt++ {
			batch := &pb.AddJobsRequest{Jobs: make([]*pb.AddJobRequest, len(pending))}
			for k, i := range pending {
				batch.Jobs[k] = reqs[i]
			}
			resp, err := unary(ctx, c, "AddJobs", true, c.queue.AddJobs, batch)
			if err == nil && len(resp.GetResults()) != len(pending) {
				err = &Error{Method: "AddJobs", Code: codes.Internal, Message: "the answer does not have one result per job"}
			}
			if err != nil {
				for _, i := range pending {
					results[i].Err = err
				}
				for i := pending[len(pending)-1] + 1; i < len(jobs); i++ {
					results[i].Err = err
				}
				return results, err
			}
			var again []int
			for k, r := range resp.GetResults() {
				i := pending[k]
				code := codes.Code(r.GetCode())
				switch {
				case code == codes.OK:
					results[i] = AddResult{Added: Added{ID: r.GetJobId(), Duplicate: r.GetDuplicate() && !auto[i]}}
				case code == codes.Unavailable && attempt < c.retry.Attempts:
					again = append(again, i)
				default:
					results[i].Err = &Error{Method: "AddJob", Code: code, Message: r.GetMessage()}
				}
			}
			pending = again
			if len(pending) > 0 {
				if err := sleep(ctx, c.retry.wait(attempt)); err != nil {
					for _, i := range pending {
						results[i].Err = rpcError("AddJob", err)
					}
					pending = nil
				}
			}
		}
	}
	return results, nil
}

// Info is everything the server knows of one job: state, attempts, times, last error, and its
// result or progress. An unknown (or no longer retained) job: ErrNotFound.
func (c *Client) Info(ctx context.Context, jobID string) (*JobInfo, error) {
	resp, err := unary(ctx, c, "GetJobInfo", true, c.queue.GetJobInfo, &pb.GetJobInfoRequest{JobId: jobID})
	if err != nil {
		return nil, err
	}
	return jobInfoOf(resp.GetJob()), nil
}

// Cancel cancels a job: a waiting or delayed one is removed; a running one is revoked on its
// worker (its handler's context is cancelled) and ends cancelled. A job that has already
// finished: ErrFailedPrecondition. Not retried (a repeat would find it finished).
func (c *Client) Cancel(ctx context.Context, jobID string) error {
	_, err := unary(ctx, c, "CancelJob", false, c.queue.CancelJob, &pb.CancelJobRequest{JobId: jobID})
	return err
}

// Run adds job and waits for its result (see Wait).
func (c *Client) Run(ctx context.Context, job NewJob) ([]byte, error) {
	added, err := c.Add(ctx, job)
	if err != nil {
		return nil, err
	}
	return c.Wait(ctx, added.ID)
}
