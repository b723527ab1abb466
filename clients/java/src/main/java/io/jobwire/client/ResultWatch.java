package io.jobwire.client;

import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import jobwire.v1.Jobwire.WatchJobRequest;
import jobwire.v1.Jobwire.WatchJobResponse;

/**
 * Awaits one job's result with WatchJob: the stream's first event is the job's state when the
 * watch began, then one per transition, so a reopened watch misses nothing that matters here (it
 * only looks for the final state). The wait's end fails the result with {@link
 * WaitTimeoutException} and cancels the stream.
 */
final class ResultWatch extends Reopening<WatchJobRequest, WatchJobResponse, byte[]> {
  private final String jobId;
  private final Duration wait;

  ResultWatch(Calls calls, String jobId, Duration wait) {
    super(calls, Rpc.WATCH_JOB);
    this.jobId = jobId;
    this.wait = wait;
  }

  CompletableFuture<byte[]> start() {
    done.orTimeout(wait.toNanos(), TimeUnit.NANOSECONDS);
    CompletableFuture<byte[]> result =
        done.exceptionallyCompose(
            e ->
                CompletableFuture.failedFuture(
                    Errors.unwrap(e) instanceof java.util.concurrent.TimeoutException
                        ? new WaitTimeoutException(jobId)
                        : Errors.unwrap(e)));
    open();
    return result;
  }

  @Override
  WatchJobRequest request() {
    return WatchJobRequest.newBuilder().setJobId(jobId).build();
  }

  @Override
  void onMessage(WatchJobResponse message) {
    switch (message.getEvent().getType()) {
      case JOB_EVENT_TYPE_COMPLETED:
        done.complete(message.getEvent().getResult().toByteArray());
        break;
      case JOB_EVENT_TYPE_DEAD:
        done.completeExceptionally(new JobDeadException(jobId, message.getEvent().getError()));
        break;
      case JOB_EVENT_TYPE_CANCELLED:
        done.completeExceptionally(new JobCancelledException(jobId));
        break;
      default:
        break;
    }
  }
}
