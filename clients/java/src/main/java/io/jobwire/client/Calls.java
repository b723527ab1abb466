package io.jobwire.client;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.Deadline;
import io.grpc.ManagedChannel;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.function.BiConsumer;

/**
 * Unary calls as {@link CompletableFuture}s, each within one deadline (the client's call timeout,
 * retries included), failing with this client's exception kinds.
 *
 * <p>A call marked retryable is sent again after UNAVAILABLE (the server or its Redis away for a
 * moment, a server restarting): again and again while the deadline allows, 100 ms doubling to
 * 2 s between tries with jitter. Before each try the channel is told to reconnect at once
 * ({@code resetConnectBackoff}): otherwise, after a server went away, grpc-java fails every call
 * fast for as long as its own reconnect backoff lasts, however soon the server is back. Only calls whose repeat cannot do harm are marked so: reads,
 * pause/resume, and adds, which carry an idempotency key.
 */
final class Calls {
  private static final long FIRST_WAIT_MS = 100;
  private static final long LONGEST_WAIT_MS = 2_000;

  private final ManagedChannel channel;
  private final ScheduledExecutorService timer;
  private final Duration timeout;

  Calls(ManagedChannel channel, ScheduledExecutorService timer, Duration timeout) {
    this.channel = channel;
    this.timer = timer;
    this.timeout = timeout;
  }

  ManagedChannel channel() {
    return channel;
  }

  ScheduledExecutorService timer() {
    return timer;
  }

  /** One call, not retried. */
  <Q, R> CompletableFuture<R> once(MethodDescriptor<Q, R> method, Q request) {
    return call(method, request, false);
  }

  /** One call, retried after UNAVAILABLE within the deadline. */
  <Q, R> CompletableFuture<R> retried(MethodDescriptor<Q, R> method, Q request) {
    return call(method, request, true);
  }

  private <Q, R> CompletableFuture<R> call(MethodDescriptor<Q, R> method, Q request, boolean retry) {
    CompletableFuture<R> result = new CompletableFuture<>();
    Deadline deadline = Deadline.after(timeout.toNanos(), TimeUnit.NANOSECONDS);
    attempt(method, request, retry, FIRST_WAIT_MS, deadline, result);
    return result;
  }

  private <Q, R> void attempt(
      MethodDescriptor<Q, R> method,
      Q request,
      boolean retry,
      long waitMs,
      Deadline deadline,
      CompletableFuture<R> result) {
    String rpc = method.getBareMethodName();
    call(
        channel,
        method,
        CallOptions.DEFAULT.withDeadline(deadline),
        request,
        (answer, failure) -> {
          if (failure == null) {
            result.complete(answer);
            return;
          }
          Status.Code code = Status.fromThrowable(failure).getCode();
          long jittered = waitMs / 2 + ThreadLocalRandom.current().nextLong(waitMs / 2 + 1);
          if (code == Status.Code.UNAVAILABLE
              && retry
              && deadline.timeRemaining(TimeUnit.MILLISECONDS) > jittered) {
            long next = Math.min(waitMs * 2, LONGEST_WAIT_MS);
            try {
              timer.schedule(
                  () -> {
                    channel.resetConnectBackoff();
                    attempt(method, request, true, next, deadline, result);
                  },
                  jittered,
                  TimeUnit.MILLISECONDS);
            } catch (RejectedExecutionException closed) {
              result.completeExceptionally(Errors.from(failure, rpc)); // the client was closed
            }
          } else {
            result.completeExceptionally(Errors.from(failure, rpc));
          }
        });
  }

  /** One unary call on `channel`; `done` gets its answer or its failure (a gRPC status). */
  static <Q, R> void call(
      Channel channel,
      MethodDescriptor<Q, R> method,
      CallOptions options,
      Q request,
      BiConsumer<R, Throwable> done) {
    StreamObserver<R> observer =
        new StreamObserver<>() {
          private R answer;

          @Override
          public void onNext(R value) {
            answer = value;
          }

          @Override
          public void onError(Throwable t) {
            done.accept(null, t);
          }

          @Override
          public void onCompleted() {
            done.accept(answer, null);
          }
        };
    ClientCalls.asyncUnaryCall(channel.newCall(method, options), request, observer);
  }
}
