package io.jobwire.client;

import com.google.protobuf.ByteString;
import java.time.Duration;
import jobwire.v1.Jobwire.CompleteJobRequest;
import jobwire.v1.Jobwire.FailJobRequest;
import jobwire.v1.Jobwire.ReturnJobRequest;
import jobwire.v1.Jobwire.WorkAck;

/**
 * What a {@link Worker} answers for a delivery: the handler's outcome as an ack (complete with
 * the result and the new session state, fail, give back, or postpone when rate limited), and the acks of revokes and
 * hand-backs.
 */
final class Outcomes {
  private Outcomes() {}

  /** Runs `handler` (null: none for the job's type) and turns what it did into the ack. */
  static WorkAck.Builder of(Delivery d, JobHandler handler) {
    if (handler == null) {
      return failure(d, "no handler for job type \"" + d.job.getType() + "\" on this worker", true, null);
    }
    try {
      byte[] result = handler.handle(d.view);
      CompleteJobRequest.Builder complete =
          CompleteJobRequest.newBuilder()
              .setJobId(d.job.getId())
              .setLeaseToken(d.job.getLeaseToken())
              .setResult(result == null ? ByteString.EMPTY : ByteString.copyFrom(result));
      String state = d.newSessionState;
      if (state != null) {
        complete.setSessionState(state);
        if (d.job.hasSession()) {
          complete.setExpectedSessionVersion(d.job.getSession().getVersion());
        }
      }
      return WorkAck.newBuilder().setComplete(complete);
    } catch (JobFailure f) {
      return failure(d, f.getMessage(), f.retryable(), f.retryAfter());
    } catch (HandBackException e) {
      return giveBack(d, false);
    } catch (RateLimitedException e) {
      return postpone(d, e.retryAfter(), e.holdKey());
    } catch (Exception | LinkageError | AssertionError e) {
      return failure(d, e.getClass().getSimpleName() + ": " + e.getMessage(), true, null);
    }
  }

  /** A failed attempt: retried per the backoff (or after `retryAfter`), or dead if not retryable. */
  static WorkAck.Builder failure(
      Delivery d, String error, boolean retryable, Duration retryAfter) {
    FailJobRequest.Builder fail =
        FailJobRequest.newBuilder()
            .setJobId(d.job.getId())
            .setLeaseToken(d.job.getLeaseToken())
            .setError(error == null ? "" : error)
            .setRetryable(retryable);
    if (retryAfter != null) {
      fail.setRetryAfter(Protos.duration(retryAfter));
    }
    return WorkAck.newBuilder().setFail(fail);
  }

  /** The answer to a revoked delivery: a failure, refused as stale or recorded for a cancel. */
  static WorkAck.Builder revoked(Delivery d) {
    return failure(d, "revoked (" + d.revoked + ")", true, null);
  }

  /** "Rate limited, retry after": the job delayed `retryAfter`, no attempt spent. */
  static WorkAck.Builder postpone(Delivery d, Duration retryAfter, boolean holdKey) {
    return WorkAck.newBuilder()
        .setGiveBack(
            ReturnJobRequest.newBuilder()
                .setJobId(d.job.getId())
                .setLeaseToken(d.job.getLeaseToken())
                .setRetryAfter(Protos.duration(retryAfter))
                .setHoldKey(holdKey));
  }

  /** The job back to the head of its queue; `stopStream`: and send nothing more on this stream. */
  static WorkAck.Builder giveBack(Delivery d, boolean stopStream) {
    return WorkAck.newBuilder()
        .setGiveBack(
            ReturnJobRequest.newBuilder()
                .setJobId(d.job.getId())
                .setLeaseToken(d.job.getLeaseToken())
                .setStopStream(stopStream));
  }
}
