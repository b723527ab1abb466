package io.jobwire.client;

import io.grpc.CallOptions;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.ClientResponseObserver;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import jobwire.v1.Jobwire.GetJobRequest;
import jobwire.v1.Jobwire.GetJobResponse;
import jobwire.v1.Jobwire.WorkAck;
import jobwire.v1.Jobwire.WorkAnswer;

/**
 * A worker stream on {@code GetJob}, with one unary call per ack ({@link Protocol#UNARY}). Each
 * call's outcome is turned into the {@link WorkAnswer} the Work protocol would have given, so the
 * worker handles both protocols alike. No prefetch, so nothing is reported started.
 */
final class UnaryLink extends Link {
  /** The deadline of one ack call. */
  private static final long ACK_DEADLINE_SECONDS = 30;

  private final Calls calls;
  private final GetJobRequest open;
  private volatile ClientCallStreamObserver<GetJobRequest> call;

  UnaryLink(Calls calls, GetJobRequest open) {
    this.calls = calls;
    this.open = open;
  }

  @Override
  void open(Events events) {
    ClientResponseObserver<GetJobRequest, GetJobResponse> observer =
        new ClientResponseObserver<>() {
          @Override
          public void beforeStart(ClientCallStreamObserver<GetJobRequest> stream) {
            call = stream;
          }

          @Override
          public void onNext(GetJobResponse message) {
            events.alive();
            switch (message.getMessageCase()) {
              case JOB:
                events.jobs(List.of(message.getJob()));
                break;
              case REVOKE:
                events.revoke(message.getRevoke());
                break;
              case DRAIN:
                events.drain();
                break;
              default:
                break;
            }
          }

          @Override
          public void onError(Throwable t) {
            events.ended(t);
          }

          @Override
          public void onCompleted() {
            events.ended(null);
          }
        };
    ClientCalls.asyncServerStreamingCall(
        calls.channel().newCall(Rpc.GET_JOB, CallOptions.DEFAULT), open, observer);
  }

  @Override
  CompletableFuture<WorkAnswer> send(WorkAck.Builder ack) {
    switch (ack.getAckCase()) {
      case COMPLETE:
        return unary(Rpc.COMPLETE_JOB, ack.getComplete(), r -> null);
      case FAIL:
        return unary(Rpc.FAIL_JOB, ack.getFail(), r -> WorkAnswer.newBuilder().setFail(r));
      case PROGRESS:
        return unary(Rpc.REPORT_PROGRESS, ack.getProgress(), r -> null);
      case EXTEND:
        return unary(Rpc.EXTEND_LEASE, ack.getExtend(), r -> WorkAnswer.newBuilder().setExtend(r));
      case GIVE_BACK:
        return unary(Rpc.RETURN_JOB, ack.getGiveBack(), r -> null);
      default:
        throw new IllegalArgumentException("an ack must be set");
    }
  }

  private <Q, R> CompletableFuture<WorkAnswer> unary(
      MethodDescriptor<Q, R> method, Q request, Function<R, WorkAnswer.Builder> result) {
    CompletableFuture<WorkAnswer> answer = new CompletableFuture<>();
    CallOptions options = CallOptions.DEFAULT.withDeadlineAfter(ACK_DEADLINE_SECONDS, TimeUnit.SECONDS);
    Calls.call(
        calls.channel(),
        method,
        options,
        request,
        (response, failure) -> {
          if (failure != null) {
            Status status = Status.fromThrowable(failure);
            String message = status.getDescription() == null ? "" : status.getDescription();
            answer.complete(
                WorkAnswer.newBuilder().setCode(status.getCode().value()).setMessage(message).build());
          } else {
            WorkAnswer.Builder ok = result.apply(response);
            answer.complete((ok == null ? WorkAnswer.newBuilder() : ok).build());
          }
        });
    return answer;
  }

  @Override
  void started(String leaseToken) {}

  @Override
  void finish() {
    abort();
  }

  @Override
  void abort() {
    ClientCallStreamObserver<GetJobRequest> stream = call;
    if (stream != null) {
      stream.cancel("the worker stopped", null);
    }
  }
}
