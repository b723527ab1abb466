package jobwire

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStatusesMatchTheirSentinels(t *testing.T) {
	cases := []struct {
		method string
		code   codes.Code
		is     []error
		isNot  []error
	}{
		{"GetJobInfo", codes.NotFound, []error{ErrNotFound}, []error{ErrStaleLease, ErrInvalidArgument}},
		{"CompleteJob", codes.FailedPrecondition, []error{ErrStaleLease, ErrFailedPrecondition}, []error{ErrConflict}},
		{"ExtendLease", codes.FailedPrecondition, []error{ErrStaleLease}, nil},
		{"CancelJob", codes.FailedPrecondition, []error{ErrFailedPrecondition}, []error{ErrStaleLease, ErrConflict}},
		{"UpdateSession", codes.FailedPrecondition, []error{ErrConflict, ErrFailedPrecondition}, []error{ErrStaleLease}},
		{"CompleteJob", codes.Aborted, []error{ErrConflict}, []error{ErrStaleLease, ErrFailedPrecondition}},
		{"AddJob", codes.Unavailable, []error{ErrUnavailable}, nil},
		{"AddJob", codes.ResourceExhausted, []error{ErrResourceExhausted}, nil},
		{"Subscribe", codes.OutOfRange, []error{ErrOutOfRange}, nil},
		{"Stats", codes.Unauthenticated, []error{ErrUnauthenticated}, []error{ErrPermissionDenied}},
		{"Stats", codes.DeadlineExceeded, []error{context.DeadlineExceeded}, []error{context.Canceled}},
		{"Stats", codes.Canceled, []error{context.Canceled}, nil},
	}
	for _, c := range cases {
		err := rpcError(c.method, status.Error(c.code, "why, naming the field"))
		for _, target := range c.is {
			if !errors.Is(err, target) {
				t.Errorf("%s %s: not errors.Is %v", c.method, c.code, target)
			}
		}
		for _, target := range c.isNot {
			if errors.Is(err, target) {
				t.Errorf("%s %s: errors.Is %v", c.method, c.code, target)
			}
		}
		if s, ok := status.FromError(err); !ok || s.Code() != c.code || s.Message() != "why, naming the field" {
			t.Errorf("%s %s: status.FromError gives %v", c.method, c.code, s)
		}
	}
	wrapped := rpcError("Outer", rpcError("Inner", status.Error(codes.NotFound, "x")))
	var e *Error
	if !errors.As(wrapped, &e) || e.Method != "Inner" {
		t.Errorf("an *Error mapped again keeps its method: %v", wrapped)
	}
	if got := rpcError("Stats", status.Error(codes.FailedPrecondition, "m")).Error(); got != "jobwire: Stats: FAILED_PRECONDITION: m" {
		t.Errorf("Error() = %q", got)
	}
}

func TestJobEndedAndHandlerErrors(t *testing.T) {
	dead := &JobEndedError{JobID: "q/1", State: StateDead, LastError: "boom"}
	if !errors.Is(dead, ErrJobDead) || errors.Is(dead, ErrJobCancelled) {
		t.Error("a dead job's error")
	}
	if cancelled := (&JobEndedError{JobID: "q/1", State: StateCancelled}); !errors.Is(cancelled, ErrJobCancelled) || errors.Is(cancelled, ErrJobDead) {
		t.Error("a cancelled job's error")
	}
	cause := errors.New("bad input")
	var permanent *PermanentError
	if err := Permanent(cause); !errors.As(err, &permanent) || !errors.Is(err, cause) || err.Error() != "bad input" {
		t.Errorf("Permanent: %v", err)
	}
	var later *RetryAfterError
	if err := RetryAfter(time.Minute, cause); !errors.As(err, &later) || later.Delay != time.Minute || !errors.Is(err, cause) {
		t.Errorf("RetryAfter: %v", err)
	}
	if Permanent(nil) != nil || RetryAfter(time.Second, nil) != nil {
		t.Error("a nil error marked stays nil")
	}
	if StateDead.String() != "dead" || EventProgress.String() != "progress" || RevokeLeaseLost.String() != "lease_lost" {
		t.Error("enum names")
	}
}

func TestRetryWaitsGrowWithinBounds(t *testing.T) {
	p := RetryPolicy{Attempts: 10, Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2}
	for n, ceiling := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 9: time.Second} {
		for range 50 {
			if w := p.wait(n); w < ceiling/2 || w > ceiling {
				t.Fatalf("wait(%d) = %s, want within [%s, %s]", n, w, ceiling/2, ceiling)
			}
		}
	}
}
