package io.jobwire.client;

import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import jobwire.v1.Jobwire.WorkAck;
import jobwire.v1.Jobwire.WorkAnswer;

/**
 * One worker stream of a {@link Worker}: its link, the deliveries it holds (by lease token) and
 * where it stands. The fields other than the link are guarded by the worker's lock.
 */
final class WorkerStream {
  private static final long FIRST_RESEND_MS = 50;
  private static final long LONGEST_RESEND_MS = 1_000;

  final Link link;
  private final ScheduledExecutorService timer;

  /** Deliveries of this stream not yet answered for good, by lease token. */
  final Map<String, Delivery> deliveries = new HashMap<>();
  /** Drained or stopping: start nothing more, hand back what has not started. */
  boolean leaving;
  /** This side was closed (everything held was answered). */
  boolean finishing;
  /** A message arrived on it: it was really open. */
  volatile boolean alive;
  /** It ended; what it held went back to the server. */
  volatile boolean ended;

  WorkerStream(Link link, ScheduledExecutorService timer) {
    this.link = link;
    this.timer = timer;
  }

  /**
   * Sends an ack, and again while it is answered UNAVAILABLE (Redis or the server away for a
   * moment), 50 ms doubling to 1 s apart, for as long as the stream lives: a dropped ack would
   * leave its job leased to a live stream until the job's timeout. Once the stream ended, the
   * answer is UNAVAILABLE (its jobs already went back).
   */
  CompletableFuture<WorkAnswer> untilAnswered(WorkAck.Builder ack) {
    CompletableFuture<WorkAnswer> answer = new CompletableFuture<>();
    send(ack, FIRST_RESEND_MS, answer);
    return answer;
  }

  private void send(WorkAck.Builder ack, long waitMs, CompletableFuture<WorkAnswer> answer) {
    link.send(ack.clone())
        .thenAccept(
            a -> {
              if (a.getCode() == Link.UNAVAILABLE && !ended) {
                long next = Math.min(waitMs * 2, LONGEST_RESEND_MS);
                try {
                  timer.schedule(() -> send(ack, next, answer), waitMs, TimeUnit.MILLISECONDS);
                } catch (RejectedExecutionException closed) {
                  answer.complete(a); // the client was closed: no more tries
                }
              } else {
                answer.complete(a);
              }
            });
  }
}
