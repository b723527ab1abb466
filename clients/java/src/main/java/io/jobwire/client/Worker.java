package io.jobwire.client;

import io.grpc.Status;
import java.lang.System.Logger.Level;
import java.time.Duration;
import java.util.ArrayList;
import java.util.ArrayDeque;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import jobwire.v1.Jobwire.GetJobRequest;
import jobwire.v1.Jobwire.Revoke;
import jobwire.v1.Jobwire.WorkAck;
import jobwire.v1.Jobwire.WorkOpen;

/**
 * A worker: one worker stream to the server, running the handler of each job's type on an
 * executor, and answering each job with its outcome.
 *
 * <pre>{@code
 * Worker worker = Worker.builder(client)
 *     .queues("emails")
 *     .concurrency(8)
 *     .handle("welcome", job -> { send(job.text()); return "{\"sent\":true}".getBytes(UTF_8); })
 *     .build();
 * worker.installShutdownHook();   // SIGTERM / Ctrl-C: stop gracefully
 * worker.run();                   // until stopped
 * }</pre>
 *
 * <ul>
 *   <li><b>Protocol.</b> By default a {@code Work} stream ({@link Protocol#WORK}) carries the jobs
 *       and the acks, several per message; {@link Protocol#UNARY} uses {@code GetJob} and one
 *       call per ack.
 *   <li><b>Concurrency is the credit.</b> At most {@code concurrency} handlers run at once; the
 *       server sends no more than that, plus {@code prefetch} jobs that wait here in delivery
 *       order for a free handler (leased from delivery: their deadlines run while they wait).
 *   <li><b>Revoke</b> (cancel, timeout, lease lost) interrupts the handler's thread; once it
 *       returns, the delivery is answered with a failure (the server refuses it as stale, or
 *       records it for a cancelled job) and its credit comes back. A revoked job that had not
 *       started is answered at once.
 *   <li><b>Drain</b> (the server is going away): nothing new starts, prefetched jobs are handed
 *       back, running ones finish and are answered; then the worker reconnects, which behind a
 *       load balancer lands on another instance.
 *   <li><b>A broken stream</b> is reopened with backoff (100 ms doubling to 5 s). Its running
 *       handlers are interrupted and their outcomes dropped: the server already gave those jobs
 *       back. An ack answered UNAVAILABLE is sent again while its stream lives.
 *   <li><b>Stopping</b> ({@link #close()}, or the shutdown hook): nothing new starts; waiting and
 *       newly arriving jobs are handed back ({@code ReturnJob}: neither an attempt nor a lost
 *       delivery); running handlers finish and are answered, for up to the stop timeout, after
 *       which they are interrupted and the stream is cancelled (their jobs go back as lost
 *       deliveries).
 * </ul>
 *
 * <p>Close the worker before its client: they share its connection and timer, and closing the
 * client stops its workers at once (their running jobs go back as lost deliveries).
 */
public final class Worker implements AutoCloseable {
  private static final System.Logger LOG = System.getLogger(Worker.class.getName());
  /** Refusals of a stream's opening that no retry can mend: the worker ends with them. */
  private static final Set<Status.Code> FATAL =
      Set.of(
          Status.Code.INVALID_ARGUMENT,
          Status.Code.UNAUTHENTICATED,
          Status.Code.PERMISSION_DENIED,
          Status.Code.UNIMPLEMENTED);

  private final JobwireClient client;
  private final List<String> queues;
  private final int concurrency;
  private final int prefetch;
  private final Protocol protocol;
  private final String workerId;
  private final Map<String, String> labels;
  private final Map<String, JobHandler> handlers;
  private final JobHandler fallback;
  private final Executor executor;
  private final ExecutorService ownExecutor;
  private final Duration stopTimeout;
  private final long firstReconnectMs;
  private final long longestReconnectMs;

  private final Object lock = new Object();
  private final ArrayDeque<Delivery> queued = new ArrayDeque<>();
  private final CompletableFuture<Void> terminated = new CompletableFuture<>();
  private int running;
  private boolean started;
  private boolean stopping;
  private WorkerStream current;
  private ScheduledFuture<?> reconnect;
  private long reconnectWaitMs;

  Worker(WorkerBuilder b) {
    this.client = b.client;
    this.queues = List.copyOf(b.queues);
    this.concurrency = b.concurrency;
    this.prefetch = b.prefetch;
    this.protocol = b.protocol;
    this.workerId = b.workerId;
    this.labels = Map.copyOf(b.labels);
    this.handlers = Map.copyOf(b.handlers);
    this.fallback = b.fallback;
    this.stopTimeout = b.stopTimeout;
    this.firstReconnectMs = b.firstReconnect.toMillis();
    this.longestReconnectMs = b.longestReconnect.toMillis();
    this.reconnectWaitMs = firstReconnectMs;
    if (b.executor != null) {
      this.executor = b.executor;
      this.ownExecutor = null;
    } else {
      AtomicInteger n = new AtomicInteger();
      this.ownExecutor =
          Executors.newFixedThreadPool(
              concurrency,
              r -> {
                Thread t = new Thread(r, "jobwire-handler-" + n.incrementAndGet());
                t.setDaemon(true);
                return t;
              });
      this.executor = ownExecutor;
    }
    terminated.whenComplete(
        (v, e) -> {
          if (ownExecutor != null) {
            ownExecutor.shutdown();
          }
        });
    client.onClose(this::abandon);
  }

  /**
   * A builder for a worker over this client's connection.
   *
   * @param client the client
   * @return the builder
   */
  public static WorkerBuilder builder(JobwireClient client) {
    return new WorkerBuilder(client);
  }

  /**
   * Opens the worker stream and starts working; returns at once. Idempotent.
   *
   * @return this worker
   */
  public Worker start() {
    synchronized (lock) {
      if (started) {
        return this;
      }
      started = true;
    }
    open();
    return this;
  }

  /**
   * Starts (if not yet) and blocks until the worker has stopped: after {@link #close()} from
   * another thread or the shutdown hook. An interrupt of the calling thread stops the worker.
   *
   * @throws JobwireException when the server refused the stream for good (an invalid queue
   *     name, no valid token...)
   */
  public void run() {
    start();
    try {
      terminated.get();
    } catch (InterruptedException e) {
      close();
      Thread.currentThread().interrupt();
    } catch (ExecutionException e) {
      throw Errors.from(e, protocol == Protocol.WORK ? "Work" : "GetJob");
    }
  }

  /**
   * Completes once the worker has stopped; exceptionally when the server refused its stream for
   * good.
   *
   * @return the worker's end
   */
  public CompletableFuture<Void> terminated() {
    return terminated;
  }

  /**
   * Handlers running now.
   *
   * @return the count
   */
  public int running() {
    synchronized (lock) {
      return running;
    }
  }

  /** Stops the worker gracefully when the JVM is asked to exit (SIGTERM, SIGINT). */
  public void installShutdownHook() {
    Runtime.getRuntime().addShutdownHook(new Thread(this::close, "jobwire-worker-stop"));
  }

  /**
   * Stops gracefully and waits: nothing new starts, jobs not started are handed back, running
   * ones finish and are answered, then the stream closes. After the stop timeout, running
   * handlers are interrupted and the stream is cancelled.
   */
  @Override
  public void close() {
    stop();
    try {
      terminated.get(stopTimeout.toMillis(), TimeUnit.MILLISECONDS);
      return;
    } catch (TimeoutException e) {
      LOG.log(Level.WARNING, "handlers still running after the stop timeout: interrupting them");
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (ExecutionException e) {
      return;
    }
    abandon();
  }

  private void stop() {
    WorkerStream finishing = null;
    List<Delivery> handBack;
    synchronized (lock) {
      if (stopping) {
        return;
      }
      stopping = true;
      if (reconnect != null) {
        reconnect.cancel(false);
      }
      if (current == null) {
        terminated.complete(null);
        return;
      }
      current.leaving = true;
      handBack = takeQueuedLocked(current);
      if (readyToFinishLocked(current)) {
        finishing = current;
      }
    }
    handBack.forEach(d -> answer(d, Outcomes.giveBack(d, true)));
    if (finishing != null) {
      finishing.link.finish();
    }
  }

  /**
   * Past the stop timeout, or when the client closes: interrupts what still runs and cancels the
   * stream (the server takes its jobs back).
   */
  private void abandon() {
    WorkerStream stream;
    synchronized (lock) {
      stopping = true;
      if (reconnect != null) {
        reconnect.cancel(false);
      }
      stream = current;
      if (stream != null) {
        for (Delivery d : stream.deliveries.values()) {
          if (d.thread != null) {
            d.thread.interrupt();
          }
        }
      }
    }
    if (stream != null) {
      stream.link.abort();
    }
    terminated.complete(null);
  }

  private void open() {
    WorkerStream stream;
    synchronized (lock) {
      if (stopping) {
        return;
      }
      stream = new WorkerStream(newLink(), client.calls().timer());
      current = stream;
    }
    // After a server went away, reconnect now rather than after grpc-java's own backoff.
    client.calls().channel().resetConnectBackoff();
    stream.link.open(new StreamEvents(stream));
  }

  private Link newLink() {
    if (protocol == Protocol.UNARY) {
      GetJobRequest open =
          GetJobRequest.newBuilder()
              .setWorkerId(workerId)
              .putAllLabels(labels)
              .addAllQueues(queues)
              .setMaxInFlight(concurrency)
              .build();
      return new UnaryLink(client.calls(), open);
    }
    WorkOpen open =
        WorkOpen.newBuilder()
            .setWorkerId(workerId)
            .putAllLabels(labels)
            .addAllQueues(queues)
            .setMaxInFlight(concurrency)
            .setPrefetch(prefetch)
            .build();
    return new WorkLink(client.calls(), open);
  }

  /** What arrives on one stream, turned into the worker's moves. */
  private final class StreamEvents implements Link.Events {
    private final WorkerStream stream;

    StreamEvents(WorkerStream stream) {
      this.stream = stream;
    }

    @Override
    public void alive() {
      stream.alive = true;
    }

    @Override
    public void jobs(List<jobwire.v1.Jobwire.Job> jobs) {
      List<Delivery> handBack = new ArrayList<>();
      List<Delivery> start;
      synchronized (lock) {
        for (jobwire.v1.Jobwire.Job job : jobs) {
          Delivery d = new Delivery(job, stream);
          stream.deliveries.put(job.getLeaseToken(), d);
          if (stream.leaving) {
            d.state = Delivery.State.ANSWERING;
            handBack.add(d);
          } else {
            queued.add(d);
          }
        }
        start = pumpLocked();
      }
      handBack.forEach(d -> answer(d, Outcomes.giveBack(d, true)));
      startAll(start);
    }

    @Override
    public void revoke(Revoke revoke) {
      Delivery answerNow = null;
      synchronized (lock) {
        Delivery d = stream.deliveries.get(revoke.getLeaseToken());
        if (d == null) {
          return;
        }
        d.revoked = revoke.getReason();
        if (d.state == Delivery.State.QUEUED) {
          queued.remove(d);
          d.state = Delivery.State.ANSWERING;
          answerNow = d;
        } else if (d.thread != null) {
          d.thread.interrupt();
        }
      }
      LOG.log(Level.DEBUG, "job {0} revoked ({1})", revoke.getJobId(), revoke.getReason());
      if (answerNow != null) {
        answer(answerNow, Outcomes.revoked(answerNow));
      }
    }

    @Override
    public void drain() {
      LOG.log(Level.DEBUG, "the server drains this stream; reconnecting once it is answered");
      List<Delivery> handBack;
      boolean finish;
      synchronized (lock) {
        stream.leaving = true;
        handBack = takeQueuedLocked(stream);
        finish = readyToFinishLocked(stream);
      }
      handBack.forEach(d -> answer(d, Outcomes.giveBack(d, true)));
      if (finish) {
        stream.link.finish();
      }
    }

    @Override
    public void ended(Throwable error) {
      boolean fatal;
      synchronized (lock) {
        stream.ended = true;
        for (Delivery d : stream.deliveries.values()) {
          if (d.state == Delivery.State.QUEUED) {
            queued.remove(d);
          }
          d.lost = true;
          if (d.thread != null) {
            d.thread.interrupt();
          }
        }
        stream.deliveries.clear();
        if (current == stream) {
          current = null;
        }
        Status.Code code = error == null ? Status.Code.OK : Status.fromThrowable(error).getCode();
        fatal = !stream.finishing && !stream.alive && FATAL.contains(code);
        if (fatal || stopping) {
          stopping = true;
        } else {
          long wait = stream.alive ? firstReconnectMs : reconnectWaitMs;
          reconnectWaitMs = Math.min(wait * 2, longestReconnectMs);
          if (error != null && !stream.finishing) {
            LOG.log(Level.DEBUG, "worker stream ended ({0}); reopening in {1} ms", code, wait);
          }
          try {
            reconnect =
                client.calls().timer().schedule(Worker.this::open, wait, TimeUnit.MILLISECONDS);
            return;
          } catch (RejectedExecutionException e) {
            stopping = true; // the client was closed under the worker: nothing to reconnect with
          }
        }
      }
      if (fatal) {
        terminated.completeExceptionally(
            Errors.from(error, protocol == Protocol.WORK ? "Work" : "GetJob"));
      } else {
        terminated.complete(null);
      }
    }
  }

  /** The stream's queued deliveries, taken out of the queue, to hand back. */
  private List<Delivery> takeQueuedLocked(WorkerStream stream) {
    List<Delivery> taken = new ArrayList<>();
    queued.removeIf(
        d -> {
          if (d.stream != stream) {
            return false;
          }
          d.state = Delivery.State.ANSWERING;
          taken.add(d);
          return true;
        });
    return taken;
  }

  /** Marks the stream finishing when it is leaving and holds nothing more; true if so. */
  private boolean readyToFinishLocked(WorkerStream stream) {
    if (stream.leaving && !stream.finishing && !stream.ended && stream.deliveries.isEmpty()) {
      stream.finishing = true;
      return true;
    }
    return false;
  }

  /** Takes queued deliveries into free handler slots; returns them, to start outside the lock. */
  private List<Delivery> pumpLocked() {
    List<Delivery> start = new ArrayList<>();
    while (running < concurrency && !queued.isEmpty()) {
      Delivery d = queued.poll();
      d.state = Delivery.State.RUNNING;
      running++;
      start.add(d);
    }
    return start;
  }

  private void startAll(List<Delivery> deliveries) {
    for (Delivery d : deliveries) {
      d.stream.link.started(d.job.getLeaseToken());
      try {
        executor.execute(() -> runHandler(d));
      } catch (RejectedExecutionException e) {
        List<Delivery> next;
        synchronized (lock) {
          running--;
          d.state = Delivery.State.ANSWERING;
          next = pumpLocked();
        }
        answer(d, Outcomes.giveBack(d, true));
        startAll(next);
      }
    }
  }

  private void runHandler(Delivery d) {
    boolean skip;
    synchronized (lock) {
      // Revoked, or its stream gone, before a thread took it: the handler need not run.
      skip = d.revoked != null || d.lost;
      d.thread = Thread.currentThread();
    }
    WorkAck.Builder outcome = null;
    try {
      if (!skip) {
        outcome = Outcomes.of(d, handlers.getOrDefault(d.job.getType(), fallback));
      }
    } finally {
      synchronized (lock) {
        d.thread = null;
      }
      // An interrupt meant for this job must not reach the executor's next task.
      Thread.interrupted();
    }
    List<Delivery> next;
    boolean lost;
    synchronized (lock) {
      running--;
      d.state = Delivery.State.ANSWERING;
      lost = d.lost;
      next = pumpLocked();
    }
    startAll(next);
    if (lost) {
      return; // the stream ended: the server already gave the job back
    }
    answer(d, d.revoked != null ? Outcomes.revoked(d) : outcome);
  }

  /**
   * Sends a delivery's final ack until answered. A completion refused ABORTED (its session
   * changed while it ran) becomes a failed attempt, so the job runs again with the fresh state.
   */
  private void answer(Delivery d, WorkAck.Builder ack) {
    d.stream
        .untilAnswered(ack)
        .thenAccept(
            answer -> {
              if (ack.hasComplete() && answer.getCode() == Status.Code.ABORTED.value()) {
                answer(d, Outcomes.failure(d, "the session changed while the job ran: " + answer.getMessage(), true, null));
                return;
              }
              if (answer.getCode() != 0 && !d.stream.ended && d.revoked == null) {
                LOG.log(
                    Level.WARNING,
                    "ack of job {0} refused: {1}: {2}",
                    d.job.getId(),
                    Status.fromCodeValue(answer.getCode()).getCode(),
                    answer.getMessage());
              }
              settle(d);
            });
  }

  /** The delivery is answered for good: its stream may finish if it is leaving. */
  private void settle(Delivery d) {
    boolean finish;
    synchronized (lock) {
      d.stream.deliveries.remove(d.job.getLeaseToken());
      finish = readyToFinishLocked(d.stream);
    }
    if (finish) {
      d.stream.link.finish();
    }
  }
}
