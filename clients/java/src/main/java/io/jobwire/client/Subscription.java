package io.jobwire.client;

import java.util.concurrent.CompletableFuture;
import java.util.function.Consumer;
import jobwire.v1.Jobwire.JobEvent;
import jobwire.v1.Jobwire.SubscribeRequest;
import jobwire.v1.Jobwire.SubscribeResponse;

/**
 * A live subscription to a queue's events ({@link JobwireClient#subscribe}). It keeps the cursor
 * of the last event it handed over and, when the stream breaks, resumes right after it: no gap,
 * no duplicate. (A subscription that started without a cursor and broke before its first event
 * resumes with the next event.)
 */
public final class Subscription implements AutoCloseable {
  private final Stream stream;

  private Subscription(Stream stream) {
    this.stream = stream;
  }

  static Subscription start(
      Calls calls, String queue, String cursor, Consumer<JobEvent> onEvent) {
    Stream stream = new Stream(calls, queue, cursor, onEvent);
    stream.open();
    return new Subscription(stream);
  }

  /**
   * The cursor of the last event handed to the listener (the starting cursor before the first):
   * subscribe again with it to resume after that event.
   *
   * @return the cursor
   */
  public String cursor() {
    return stream.cursor;
  }

  /**
   * Completes normally once {@link #close()} is called, exceptionally when the subscription ends
   * by itself: {@link OutOfRangeException} for a cursor older than the events kept, the
   * listener's own exception if it threw one, or another refusal.
   *
   * @return the subscription's end
   */
  public CompletableFuture<Void> done() {
    return stream.done;
  }

  /** Ends the subscription; no event is handed over after this returns. */
  @Override
  public void close() {
    stream.close();
  }

  private static final class Stream extends Reopening<SubscribeRequest, SubscribeResponse, Void> {
    private final String queue;
    private final Consumer<JobEvent> onEvent;
    private volatile String cursor;

    Stream(Calls calls, String queue, String cursor, Consumer<JobEvent> onEvent) {
      super(calls, Rpc.SUBSCRIBE);
      this.queue = queue;
      this.cursor = cursor;
      this.onEvent = onEvent;
    }

    @Override
    SubscribeRequest request() {
      return SubscribeRequest.newBuilder().setQueue(queue).setCursor(cursor).build();
    }

    @Override
    void onMessage(SubscribeResponse message) {
      handOver(
          () -> {
            onEvent.accept(message.getEvent());
            cursor = message.getEvent().getCursor();
          });
    }
  }
}
