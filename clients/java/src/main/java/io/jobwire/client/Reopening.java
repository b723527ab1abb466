package io.jobwire.client;

import io.grpc.CallOptions;
import io.grpc.ClientCall;
import io.grpc.Status;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.StreamObserver;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;

/**
 * A server stream that is opened again when it breaks: on UNAVAILABLE (the server restarting,
 * a network blip) or when it ends before its owner is done, after a wait of 100 ms doubling to
 * 2 s (back to 100 ms once a message arrives). Any other error ends it. {@link #done} completes
 * when the owner decides (or exceptionally on an error), and its completion cancels the call.
 *
 * <p>Shared by {@link ResultWatch} and {@link JobWatch} (WatchJob) and {@link Subscription}
 * (Subscribe): each says which request to open with, now, and what a message means.
 */
abstract class Reopening<Q, R, T> {
  private static final long FIRST_WAIT_MS = 100;
  private static final long LONGEST_WAIT_MS = 2_000;

  final CompletableFuture<T> done = new CompletableFuture<>();
  private final Calls calls;
  private final io.grpc.MethodDescriptor<Q, R> method;
  private volatile ClientCall<Q, R> current;
  private long waitMs = FIRST_WAIT_MS;
  private boolean closed;

  Reopening(Calls calls, io.grpc.MethodDescriptor<Q, R> method) {
    this.calls = calls;
    this.method = method;
    done.whenComplete((value, error) -> cancelCurrent());
  }

  /**
   * Ends the stream for its owner: {@link #done} completes with null, and no message is handed
   * over (through {@link #handOver}) after this returns.
   */
  final void close() {
    synchronized (this) {
      closed = true;
    }
    done.complete(null);
  }

  /** Runs {@code delivery} (handing a message to the owner's listener) unless closed. */
  final synchronized void handOver(Runnable delivery) {
    if (!closed) {
      delivery.run();
    }
  }

  /** The request to open (or reopen) the stream with. */
  abstract Q request();

  /** One message; may complete {@link #done}. */
  abstract void onMessage(R message);

  final void open() {
    if (done.isDone()) {
      return;
    }
    ClientCall<Q, R> call = calls.channel().newCall(method, CallOptions.DEFAULT);
    current = call;
    ClientCalls.asyncServerStreamingCall(call, request(), new Observer());
    if (done.isDone()) {
      cancelCurrent();
    }
  }

  private void cancelCurrent() {
    ClientCall<Q, R> call = current;
    if (call != null) {
      call.cancel("no longer needed", null);
    }
  }

  private void reopenLater() {
    long wait = waitMs;
    waitMs = Math.min(waitMs * 2, LONGEST_WAIT_MS);
    try {
      calls.timer().schedule(
          () -> {
            calls.channel().resetConnectBackoff(); // reconnect now, not after grpc's own backoff
            open();
          },
          wait,
          TimeUnit.MILLISECONDS);
    } catch (RejectedExecutionException e) {
      done.completeExceptionally(new UnavailableException("the client is closed", Status.Code.UNAVAILABLE, null, e));
    }
  }

  private final class Observer implements StreamObserver<R> {
    @Override
    public void onNext(R message) {
      waitMs = FIRST_WAIT_MS;
      try {
        onMessage(message);
      } catch (RuntimeException e) {
        done.completeExceptionally(e);
      }
    }

    @Override
    public void onError(Throwable t) {
      if (done.isDone()) {
        return;
      }
      if (Status.fromThrowable(t).getCode() == Status.Code.UNAVAILABLE) {
        reopenLater();
      } else {
        done.completeExceptionally(Errors.from(t, method.getBareMethodName()));
      }
    }

    @Override
    public void onCompleted() {
      if (!done.isDone()) {
        reopenLater();
      }
    }
  }
}
