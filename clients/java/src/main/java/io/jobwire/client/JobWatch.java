package io.jobwire.client;

import java.util.concurrent.CompletableFuture;
import java.util.function.Consumer;
import jobwire.v1.Jobwire.JobEvent;
import jobwire.v1.Jobwire.JobEventType;
import jobwire.v1.Jobwire.WatchJobRequest;
import jobwire.v1.Jobwire.WatchJobResponse;

/**
 * The transitions of one job as they happen ({@link JobwireClient#watch}): first an event for its
 * state when the watch opens (with the result once completed), then one per transition, until a
 * final one (completed, dead, cancelled). A broken stream is reopened, and a reopened watch
 * starts again with the job's current state, so the final state is never missed (a transition
 * in between may be).
 */
public final class JobWatch implements AutoCloseable {
  private final Stream stream;

  private JobWatch(Stream stream) {
    this.stream = stream;
  }

  static JobWatch start(Calls calls, String jobId, Consumer<JobEvent> onEvent) {
    Stream stream = new Stream(calls, jobId, onEvent);
    stream.open();
    return new JobWatch(stream);
  }

  /**
   * Completes with the final event once the job has ended (after the listener had it), or with
   * null once {@link #close()} is called; exceptionally when the watch ends otherwise: {@link
   * NotFoundException} for an unknown job, the listener's own exception if it threw one.
   *
   * @return the watch's end
   */
  public CompletableFuture<JobEvent> done() {
    return stream.done;
  }

  /** Ends the watch; no event is handed over after this returns. */
  @Override
  public void close() {
    stream.close();
  }

  private static final class Stream extends Reopening<WatchJobRequest, WatchJobResponse, JobEvent> {
    private final String jobId;
    private final Consumer<JobEvent> onEvent;

    Stream(Calls calls, String jobId, Consumer<JobEvent> onEvent) {
      super(calls, Rpc.WATCH_JOB);
      this.jobId = jobId;
      this.onEvent = onEvent;
    }

    @Override
    WatchJobRequest request() {
      return WatchJobRequest.newBuilder().setJobId(jobId).build();
    }

    @Override
    void onMessage(WatchJobResponse message) {
      JobEvent event = message.getEvent();
      handOver(() -> onEvent.accept(event));
      JobEventType type = event.getType();
      if (type == JobEventType.JOB_EVENT_TYPE_COMPLETED
          || type == JobEventType.JOB_EVENT_TYPE_DEAD
          || type == JobEventType.JOB_EVENT_TYPE_CANCELLED) {
        done.complete(event);
      }
    }
  }
}
