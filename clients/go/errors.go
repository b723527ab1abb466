package jobwire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinels for errors.Is. Each matches every *Error of its status code, whatever the call; see
// the proto's "Status codes used throughout" for what the server means by each.
var (
	ErrInvalidArgument    = &codeSentinel{codes.InvalidArgument, "invalid argument"}
	ErrNotFound           = &codeSentinel{codes.NotFound, "not found"}
	ErrAlreadyExists      = &codeSentinel{codes.AlreadyExists, "already exists"}
	ErrFailedPrecondition = &codeSentinel{codes.FailedPrecondition, "failed precondition"}
	ErrResourceExhausted  = &codeSentinel{codes.ResourceExhausted, "resource exhausted"}
	ErrOutOfRange         = &codeSentinel{codes.OutOfRange, "out of range"}
	ErrUnavailable        = &codeSentinel{codes.Unavailable, "unavailable"}
	ErrUnauthenticated    = &codeSentinel{codes.Unauthenticated, "unauthenticated"}
	ErrPermissionDenied   = &codeSentinel{codes.PermissionDenied, "permission denied"}
	ErrUnimplemented      = &codeSentinel{codes.Unimplemented, "unimplemented"}
)

// Sentinels that say what a status means for the call that got it.
var (
	// ErrStaleLease: an ack (CompleteJob, FailJob, ExtendLease, ReturnJob, ReportProgress, or a
	// Job's Extend/Progress) was refused with FAILED_PRECONDITION because the lease token is no
	// longer the job's: it timed out, was revoked, re-delivered or has finished. Nothing changed.
	ErrStaleLease = errors.New("jobwire: stale lease token")
	// ErrConflict: a compare-and-set on a session failed: UpdateSession with an expected
	// version the session is no longer at (FAILED_PRECONDITION), or a completion writing a
	// session state after the session changed (ABORTED). Nothing was written; read and retry.
	ErrConflict = errors.New("jobwire: session changed (version conflict)")
	// ErrJobDead matches a *JobEndedError for a job that went dead.
	ErrJobDead = errors.New("jobwire: job is dead")
	// ErrJobCancelled matches a *JobEndedError for a job that was cancelled.
	ErrJobCancelled = errors.New("jobwire: job was cancelled")
	// ErrStreamLost is the cause of a handler's context when the worker stream its job came on
	// ended (server gone, network cut): the server has given the job to another worker.
	ErrStreamLost = errors.New("jobwire: the worker stream ended; the job runs elsewhere")
	// ErrWorkerStopping is the cause of a handler's context when the worker's StopTimeout
	// passed before the handler returned: its job is handed back unless it returns a result.
	ErrWorkerStopping = errors.New("jobwire: the worker is stopping")
)

// codeSentinel is an error value that an *Error of its code matches with errors.Is.
type codeSentinel struct {
	code codes.Code
	text string
}

func (s *codeSentinel) Error() string { return "jobwire: " + s.text }

// Error is a call the server (or the transport) refused. Test it with errors.Is against the
// sentinels above (ErrNotFound, ErrStaleLease...), read Code and Message with errors.As, or
// hand it to status.Code / status.FromError: it carries its gRPC status.
type Error struct {
	// The RPC, e.g. "AddJob" or "CompleteJob" (for an ack, the unary RPC it stands for).
	Method string
	// The gRPC status code.
	Code codes.Code
	// The server's message; it names the offending field.
	Message string
	// An ack that got no answer because its worker stream ended (UNAVAILABLE).
	streamEnded bool
}

func (e *Error) Error() string {
	return fmt.Sprintf("jobwire: %s: %s: %s", e.Method, codeName(e.Code), e.Message)
}

// GRPCStatus makes status.FromError and status.Code see the original status.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// Is reports whether target is a sentinel this error stands for.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrStaleLease:
		return e.Code == codes.FailedPrecondition && ackMethods[e.Method]
	case ErrConflict:
		return e.Code == codes.Aborted || (e.Code == codes.FailedPrecondition && e.Method == "UpdateSession")
	case context.DeadlineExceeded:
		return e.Code == codes.DeadlineExceeded
	case context.Canceled:
		return e.Code == codes.Canceled
	}
	s, ok := target.(*codeSentinel)
	return ok && s.code == e.Code
}

// The RPCs whose FAILED_PRECONDITION means a stale lease token.
var ackMethods = map[string]bool{
	"CompleteJob": true, "FailJob": true, "ExtendLease": true, "ReturnJob": true, "ReportProgress": true,
}

// codeNames are the codes as the proto spells them (FAILED_PRECONDITION), not grpc-go's
// CamelCase.
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL",
	codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

func codeName(c codes.Code) string {
	if name, ok := codeNames[c]; ok {
		return name
	}
	return c.String()
}

// rpcError turns what a generated stub returned into an *Error naming method (nil stays nil).
func rpcError(method string, err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	s, _ := status.FromError(err) // a non-status error reads as UNKNOWN with its text
	return &Error{Method: method, Code: s.Code(), Message: s.Message()}
}

// streamEndedError is the UNAVAILABLE of an ack whose worker stream ended before its answer.
func streamEndedError(method string) error {
	return &Error{Method: method, Code: codes.Unavailable, Message: "the worker stream ended before the answer", streamEnded: true}
}

func isStreamEnded(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.streamEnded
}

// codeOf is the gRPC status code an error carries (Unknown for one that carries none).
func codeOf(err error) codes.Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return status.Code(err)
}

// JobEndedError is what Client.Wait and Client.Run return for a job that ended without a
// result. errors.Is(err, ErrJobDead) or errors.Is(err, ErrJobCancelled) tells which.
type JobEndedError struct {
	// The job.
	JobID string
	// StateDead or StateCancelled.
	State JobState
	// Why it went dead (its last error); empty for a cancelled job.
	LastError string
}

func (e *JobEndedError) Error() string {
	if e.State == StateDead {
		return fmt.Sprintf("jobwire: job %s is dead: %s", e.JobID, e.LastError)
	}
	return fmt.Sprintf("jobwire: job %s ended %s", e.JobID, e.State)
}

// Is matches ErrJobDead or ErrJobCancelled, after the job's final state.
func (e *JobEndedError) Is(target error) bool {
	return (target == ErrJobDead && e.State == StateDead) || (target == ErrJobCancelled && e.State == StateCancelled)
}

// RevokedError is the cause (context.Cause) of a handler's context when the server revoked its
// job: the attempt timed out, the lease was lost, or the job was cancelled.
type RevokedError struct {
	// The job.
	JobID string
	// Why.
	Reason RevokeReason
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("jobwire: job %s revoked (%s)", e.JobID, e.Reason)
}

// PermanentError fails a job without retrying: returned by a handler (see Permanent), the job
// goes dead at once, whatever attempts remain.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err so that the worker fails the job for good: `return nil,
// jobwire.Permanent(err)`. A nil err stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// RetryAfterError fails this attempt and asks for the next one after Delay instead of the
// job's backoff (see RetryAfter). The retry still uses an attempt.
type RetryAfterError struct {
	Err   error
	Delay time.Duration
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter marks err so that the job is retried after delay (0 to 7 days): `return nil,
// jobwire.RetryAfter(time.Minute, err)`. A nil err stays nil.
func RetryAfter(delay time.Duration, err error) error {
	if err == nil {
		return nil
	}
	return &RetryAfterError{Err: err, Delay: delay}
}

// ErrRateLimited matches every *RateLimitedError (errors.Is).
var ErrRateLimited = errors.New("jobwire: rate limited")

// RateLimitedError is a handler's "rate limited upstream, retry after X" (an API that answered
// 429 with Retry-After; see RateLimited): the job runs again after RetryAfter, delayed
// meanwhile, without spending an attempt or counting a lost delivery. With HoldKey, no other
// job of its NewJob.RateKey starts before then either (needs the queue's KeyRate setting).
type RateLimitedError struct {
	// What the upstream said, for logs; may be nil.
	Err error
	// How long the job waits: 0 to 7 days.
	RetryAfter time.Duration
	// Hold back the other jobs of the job's rate key as long.
	HoldKey bool
}

func (e *RateLimitedError) Error() string {
	text := fmt.Sprintf("jobwire: rate limited, retry after %s", e.RetryAfter)
	if e.Err != nil {
		text += ": " + e.Err.Error()
	}
	return text
}

func (e *RateLimitedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitedError) Is(target error) bool { return target == ErrRateLimited }

// RateLimited is a handler's answer when what the job calls is rate limited: `return nil,
// jobwire.RateLimited(30*time.Second, false, err)`. The job runs again after retryAfter without
// spending an attempt; holdKey also holds back the other jobs of its rate key. err (what the
// upstream said) may be nil.
func RateLimited(retryAfter time.Duration, holdKey bool, err error) error {
	return &RateLimitedError{Err: err, RetryAfter: retryAfter, HoldKey: holdKey}
}
