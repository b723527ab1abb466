package jobwire

// What a stream tells the server about each job once its handler has returned: a completion
// (with the session write and its conflict reruns), a failure, a hand-back, a postponement (the
// handler was rate limited), or the answer that only gives a revoked job's credit back.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// How often a completion whose session write conflicts runs the handler again on the fresh
// state, within one attempt, before failing the attempt.
const maxSessionReruns = 5

// How long the one CompleteJob offered after a stream loss may take.
const afterLossTimeout = 10 * time.Second

// send sends an ack and waits for its answer; UNAVAILABLE (Redis or the server away for a
// moment) is sent again, 50 ms doubling to 1 s apart, for as long as the stream lives and ctx
// lasts: dropped, it would leave the job leased to a live stream until its timeout.
func (s *stream) send(ctx context.Context, ack *pb.WorkAck) (*pb.WorkAnswer, error) {
	wait := 50 * time.Millisecond
	for {
		answer, err := s.acker.send(ctx, ack)
		if err == nil || codeOf(err) != codes.Unavailable || isStreamEnded(err) {
			return answer, err
		}
		s.w.log.Debug("jobwire: ack answered UNAVAILABLE; sending it again", "method", ackMethod(ack), "error", err)
		if sleep(ctx, wait) != nil {
			return nil, err
		}
		wait = min(2*wait, time.Second)
	}
}

// answer sends an ack that ends t's lease and logs a refusal (expected ones at Debug).
func (s *stream) answer(t *task, ack *pb.WorkAck, expectStale bool) error {
	_, err := s.send(s.ctx, ack)
	code := codeOf(err)
	switch {
	case err == nil || isStreamEnded(err):
	case expectStale && (code == codes.FailedPrecondition || code == codes.NotFound):
		s.w.log.Debug("jobwire: answer refused: the lease was already gone, as expected", "job", t.job.ID)
	case code == codes.FailedPrecondition || code == codes.NotFound:
		s.w.log.Warn("jobwire: the lease was gone before the answer; the job runs again", "job", t.job.ID, "answer", ackMethod(ack), "error", err)
	default:
		s.w.log.Warn("jobwire: answer refused", "job", t.job.ID, "error", err)
	}
	return err
}

func (s *stream) completeRequest(t *task, result []byte) *pb.CompleteJobRequest {
	req := &pb.CompleteJobRequest{JobId: t.job.ID, LeaseToken: t.job.LeaseToken, Result: result}
	if state := t.job.takeSessionState(); state != nil && t.job.Session != nil {
		req.SessionState = proto.String(string(state))
		req.ExpectedSessionVersion = proto.Uint64(t.job.Session.Version)
	}
	return req
}

// complete reports a result. A session write that conflicts (ABORTED: someone wrote the session
// since delivery; the lease still holds) reads the session again and runs the handler again on
// it, up to maxSessionReruns times.
func (s *stream) complete(t *task, result []byte) {
	for reruns := 0; ; reruns++ {
		req := s.completeRequest(t, result)
		_, err := s.send(s.ctx, &pb.WorkAck{Ack: &pb.WorkAck_Complete{Complete: req}})
		code := codeOf(err)
		switch {
		case err == nil:
			return
		case isStreamEnded(err):
			s.completeAfterLoss(t, req)
			return
		case code == codes.Aborted && req.SessionState != nil:
			if reruns == maxSessionReruns || t.ctx.Err() != nil {
				s.fail(t, fmt.Errorf("the session kept changing while the job ran: %w", err))
				return
			}
			fresh, readErr := s.w.client.GetSession(s.ctx, t.job.Session.ID)
			if readErr != nil {
				s.fail(t, fmt.Errorf("the session changed while the job ran, and reading it again failed: %w", readErr))
				return
			}
			s.w.log.Debug("jobwire: the session changed under the completion; running the handler again on its fresh state",
				"job", t.job.ID, "session", fresh.ID, "version", fresh.Version)
			t.job.Session = &SessionSnapshot{ID: fresh.ID, State: fresh.State, Version: fresh.Version}
			var handlerErr error
			if result, handlerErr = s.w.callHandler(t); handlerErr != nil {
				s.fail(t, handlerErr)
				return
			}
		case code == codes.FailedPrecondition || code == codes.NotFound:
			s.w.log.Warn("jobwire: the lease was gone before the completion; the job runs again", "job", t.job.ID, "error", err)
			return
		default:
			// Refused (a result over the limit...): the job is still leased to this stream, and
			// failing the attempt is what frees it.
			s.fail(t, fmt.Errorf("the completion was refused: %w", err))
			return
		}
	}
}

// completeAfterLoss offers a result that came after its stream ended, once, by CompleteJob: it
// is accepted when the lease survived (the instance died and has not been reaped yet), and
// refused as stale when the server already gave the job back. It waits (afterLossTimeout at
// most) for a connection, so a server restarting in place gets the result.
func (s *stream) completeAfterLoss(t *task, req *pb.CompleteJobRequest) {
	ctx, cancel := context.WithTimeout(s.ctx, afterLossTimeout)
	defer cancel()
	// Waiting for the connection: the server that died may be back within moments.
	if _, err := s.w.client.queue.CompleteJob(ctx, req, grpc.WaitForReady(true)); err != nil {
		s.w.log.Debug("jobwire: a result that came after its stream ended was refused", "job", t.job.ID, "error", rpcError("CompleteJob", err))
		return
	}
	s.w.log.Info("jobwire: completed a job after its stream ended (its lease had survived)", "job", t.job.ID)
}

// fail reports a failed attempt: retried per the job's backoff, at once dead for a
// PermanentError, after its Delay for a RetryAfterError.
func (s *stream) fail(t *task, handlerErr error) {
	s.w.log.Info("jobwire: job failed", "job", t.job.ID, "type", t.job.Type, "attempt", t.job.Attempt, "error", handlerErr)
	req := &pb.FailJobRequest{JobId: t.job.ID, LeaseToken: t.job.LeaseToken, Error: handlerErr.Error()}
	var permanent *PermanentError
	var later *RetryAfterError
	switch {
	case errors.As(handlerErr, &permanent):
		req.Retryable = proto.Bool(false)
	case errors.As(handlerErr, &later):
		req.RetryAfter = durationpb.New(later.Delay)
	}
	err := s.answer(t, &pb.WorkAck{Ack: &pb.WorkAck_Fail{Fail: req}}, false)
	if codeOf(err) == codes.InvalidArgument && req.RetryAfter != nil {
		// A delay out of range must not leave the job leased: fail it with its own backoff.
		req.RetryAfter = nil
		_ = s.answer(t, &pb.WorkAck{Ack: &pb.WorkAck_Fail{Fail: req}}, false)
	}
}

// postpone answers a handler's RateLimitedError: the job delayed by its RetryAfter without
// spending an attempt (ReturnJob with retry_after). A delay the server refuses must not leave the
// job leased: the attempt fails instead, with the job's own backoff.
func (s *stream) postpone(t *task, limited *RateLimitedError) {
	s.w.log.Info("jobwire: job rate limited; it runs again later", "job", t.job.ID, "type", t.job.Type, "retry_after", limited.RetryAfter)
	req := &pb.ReturnJobRequest{
		JobId: t.job.ID, LeaseToken: t.job.LeaseToken,
		RetryAfter: durationpb.New(limited.RetryAfter), HoldKey: limited.HoldKey,
	}
	err := s.answer(t, &pb.WorkAck{Ack: &pb.WorkAck_GiveBack{GiveBack: req}}, false)
	if codeOf(err) == codes.InvalidArgument {
		failure := &pb.FailJobRequest{JobId: t.job.ID, LeaseToken: t.job.LeaseToken, Error: limited.Error()}
		_ = s.answer(t, &pb.WorkAck{Ack: &pb.WorkAck_Fail{Fail: failure}}, false)
	}
}

// answerRevoked answers a revoked delivery. After a timeout or a lost lease the server refuses
// it (the lease is gone) but takes the credit back; after a cancel it is accepted and the job
// ends cancelled.
func (s *stream) answerRevoked(t *task, why string) {
	req := &pb.FailJobRequest{JobId: t.job.ID, LeaseToken: t.job.LeaseToken, Error: why}
	_ = s.answer(t, &pb.WorkAck{Ack: &pb.WorkAck_Fail{Fail: req}}, true)
}

// handBackAfterStop returns a job whose handler the StopTimeout cut short: not an attempt, not
// a lost delivery; it runs again elsewhere.
func (s *stream) handBackAfterStop(t *task) {
	req := &pb.ReturnJobRequest{JobId: t.job.ID, LeaseToken: t.job.LeaseToken, StopStream: true}
	_ = s.answer(t, &pb.WorkAck{Ack: &pb.WorkAck_GiveBack{GiveBack: req}}, false)
}
