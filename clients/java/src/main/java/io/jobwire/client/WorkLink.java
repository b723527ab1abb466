package io.jobwire.client;

import io.grpc.CallOptions;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.ClientResponseObserver;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import jobwire.v1.Jobwire.WorkAck;
import jobwire.v1.Jobwire.WorkAcks;
import jobwire.v1.Jobwire.WorkAnswer;
import jobwire.v1.Jobwire.WorkOpen;
import jobwire.v1.Jobwire.WorkRequest;
import jobwire.v1.Jobwire.WorkResponse;

/**
 * A worker stream on the {@code Work} RPC: jobs come down, acks go up on the same call.
 *
 * <p>Acks and {@code started} marks wait in a queue and go out gathered into one {@code
 * WorkAcks} message: a flush is scheduled when the first item arrives and takes everything that
 * arrived by the time it runs, so a lone ack goes out at once and acks that pile up while the
 * transport is busy (not {@code isReady}) go out together when it is ready again. Each ack's
 * caller waits for the answer with its {@code ack_id}; when the stream ends, the acks still
 * waiting are answered UNAVAILABLE here (the server has given their jobs back).
 */
final class WorkLink extends Link {
  private final Calls calls;
  private final WorkOpen open;
  private final boolean reportStarted;
  private final AtomicLong nextAckId = new AtomicLong(1);
  private final Map<Long, CompletableFuture<WorkAnswer>> waiting = new ConcurrentHashMap<>();
  private final ConcurrentLinkedQueue<Object> outbox = new ConcurrentLinkedQueue<>();
  private final AtomicBoolean flushScheduled = new AtomicBoolean();
  private final Object sendLock = new Object();
  private volatile ClientCallStreamObserver<WorkRequest> requests;
  private volatile boolean ended;
  private boolean halfClosed;

  WorkLink(Calls calls, WorkOpen open) {
    this.calls = calls;
    this.open = open;
    this.reportStarted = open.getPrefetch() > 0;
  }

  @Override
  void open(Events events) {
    ClientResponseObserver<WorkRequest, WorkResponse> observer =
        new ClientResponseObserver<>() {
          @Override
          public void beforeStart(ClientCallStreamObserver<WorkRequest> stream) {
            requests = stream;
            stream.setOnReadyHandler(WorkLink.this::scheduleFlush);
          }

          @Override
          public void onNext(WorkResponse message) {
            events.alive();
            switch (message.getMessageCase()) {
              case JOBS:
                events.jobs(message.getJobs().getJobsList());
                break;
              case REVOKE:
                events.revoke(message.getRevoke());
                break;
              case DRAIN:
                events.drain();
                break;
              case ANSWERS:
                for (WorkAnswer answer : message.getAnswers().getAnswersList()) {
                  CompletableFuture<WorkAnswer> caller = waiting.remove(answer.getAckId());
                  if (caller != null) {
                    caller.complete(answer);
                  }
                }
                break;
              default:
                break;
            }
          }

          @Override
          public void onError(Throwable t) {
            end();
            events.ended(t);
          }

          @Override
          public void onCompleted() {
            end();
            events.ended(null);
          }
        };
    ClientCalls.asyncBidiStreamingCall(
            calls.channel().newCall(Rpc.WORK, CallOptions.DEFAULT), observer)
        .onNext(WorkRequest.newBuilder().setOpen(open).build());
  }

  private void end() {
    ended = true;
    for (Long id : waiting.keySet()) {
      CompletableFuture<WorkAnswer> caller = waiting.remove(id);
      if (caller != null) {
        caller.complete(unanswered("the work stream ended before the answer"));
      }
    }
  }

  @Override
  CompletableFuture<WorkAnswer> send(WorkAck.Builder ack) {
    long id = nextAckId.getAndIncrement();
    CompletableFuture<WorkAnswer> answer = new CompletableFuture<>();
    waiting.put(id, answer);
    if (ended) {
      waiting.remove(id);
      answer.complete(unanswered("the work stream ended"));
      return answer;
    }
    outbox.add(ack.setAckId(id).build());
    scheduleFlush();
    return answer;
  }

  @Override
  void started(String leaseToken) {
    if (reportStarted && !ended) {
      outbox.add(leaseToken);
      scheduleFlush();
    }
  }

  @Override
  void finish() {
    synchronized (sendLock) {
      flushLocked();
      if (!halfClosed && !ended) {
        halfClosed = true;
        requests.onCompleted();
      }
    }
  }

  @Override
  void abort() {
    ClientCallStreamObserver<WorkRequest> stream = requests;
    if (stream != null) {
      stream.cancel("the worker stopped", null);
    }
  }

  private void scheduleFlush() {
    if (flushScheduled.compareAndSet(false, true)) {
      try {
        calls.timer().execute(this::flush);
      } catch (RejectedExecutionException closed) {
        flushScheduled.set(false); // the client was closed: its channel ends this call too
      }
    }
  }

  private void flush() {
    flushScheduled.set(false);
    synchronized (sendLock) {
      flushLocked();
    }
  }

  private void flushLocked() {
    ClientCallStreamObserver<WorkRequest> stream = requests;
    if (stream == null || ended || halfClosed || outbox.isEmpty() || !stream.isReady()) {
      return; // not ready: the stream's onReady handler flushes again
    }
    WorkAcks.Builder acks = WorkAcks.newBuilder();
    for (Object item = outbox.poll(); item != null; item = outbox.poll()) {
      if (item instanceof WorkAck) {
        acks.addAcks((WorkAck) item);
      } else {
        acks.addStarted((String) item);
      }
    }
    try {
      stream.onNext(WorkRequest.newBuilder().setAcks(acks).build());
    } catch (IllegalStateException e) {
      // The call was cancelled meanwhile: its onError follows and answers the waiting acks.
    }
  }
}
