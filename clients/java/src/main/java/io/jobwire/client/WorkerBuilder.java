package io.jobwire.client;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.Executor;

/** How a {@link Worker} is set up: {@link Worker#builder(JobwireClient)}, options, {@link #build()}. */
public final class WorkerBuilder {
  final JobwireClient client;
  final List<String> queues = new ArrayList<>();
  int concurrency = 1;
  int prefetch;
  Protocol protocol = Protocol.WORK;
  String workerId = "java-" + ProcessHandle.current().pid();
  final Map<String, String> labels = new LinkedHashMap<>(Map.of("client", "java"));
  final Map<String, JobHandler> handlers = new HashMap<>();
  JobHandler fallback;
  Executor executor;
  Duration stopTimeout = Duration.ofSeconds(30);
  Duration firstReconnect = Duration.ofMillis(100);
  Duration longestReconnect = Duration.ofSeconds(5);

  WorkerBuilder(JobwireClient client) {
    this.client = Objects.requireNonNull(client, "client");
  }

  /**
   * The queues to serve, 1 to 32, earlier ones strictly first.
   *
   * @param queues the queues
   * @return this builder
   */
  public WorkerBuilder queues(String... queues) {
    this.queues.addAll(List.of(queues));
    return this;
  }

  /**
   * Handlers running at once, the stream's credit: 1 to 1,000 (default 1).
   *
   * @param n the concurrency
   * @return this builder
   */
  public WorkerBuilder concurrency(int n) {
    this.concurrency = n;
    return this;
  }

  /**
   * Jobs held beyond the concurrency, waiting for a free handler, so the next job is already
   * here when one returns: 0 (default) to 1,000. They are leased from delivery, so their
   * deadlines run while they wait. Work protocol only.
   *
   * @param n the prefetch
   * @return this builder
   */
  public WorkerBuilder prefetch(int n) {
    this.prefetch = n;
    return this;
  }

  /**
   * The protocol (default {@link Protocol#WORK}).
   *
   * @param protocol the protocol
   * @return this builder
   */
  public WorkerBuilder protocol(Protocol protocol) {
    this.protocol = Objects.requireNonNull(protocol, "protocol");
    return this;
  }

  /**
   * The id operators see for this worker (default {@code java-<pid>}).
   *
   * @param id the id
   * @return this builder
   */
  public WorkerBuilder workerId(String id) {
    this.workerId = Objects.requireNonNull(id, "id");
    return this;
  }

  /**
   * A label operators see (host, version...); {@code client=java} is there already.
   *
   * @param key the label
   * @param value its value
   * @return this builder
   */
  public WorkerBuilder label(String key, String value) {
    this.labels.put(key, value);
    return this;
  }

  /**
   * The executor handlers run on (default: a pool of {@code concurrency} daemon threads,
   * shut down with the worker). One you pass is not shut down by the worker.
   *
   * @param executor the executor
   * @return this builder
   */
  public WorkerBuilder executor(Executor executor) {
    this.executor = Objects.requireNonNull(executor, "executor");
    return this;
  }

  /**
   * How long {@link Worker#close()} waits for running handlers before interrupting them
   * (default 30 s).
   *
   * @param timeout the timeout
   * @return this builder
   */
  public WorkerBuilder stopTimeout(Duration timeout) {
    this.stopTimeout = Objects.requireNonNull(timeout, "timeout");
    return this;
  }

  /**
   * The wait before reopening a stream that ended (server gone, drained, network cut): {@code
   * first} after a stream that had been open, doubling per failed try up to {@code longest}
   * (defaults 100 ms and 5 s).
   *
   * @param first the first wait
   * @param longest the longest wait
   * @return this builder
   */
  public WorkerBuilder reconnect(Duration first, Duration longest) {
    if (first.isNegative() || longest.compareTo(first) < 0) {
      throw new IllegalArgumentException("reconnect: need 0 <= first <= longest");
    }
    this.firstReconnect = first;
    this.longestReconnect = longest;
    return this;
  }

  /**
   * Runs {@code handler} for jobs of {@code type}.
   *
   * @param type the job type
   * @param handler the handler
   * @return this builder
   */
  public WorkerBuilder handle(String type, JobHandler handler) {
    this.handlers.put(type, Objects.requireNonNull(handler, "handler"));
    return this;
  }

  /**
   * Runs {@code handler} for every job type without a handler of its own. (Without one, such
   * jobs fail their attempt with "no handler for job type".)
   *
   * @param handler the handler
   * @return this builder
   */
  public WorkerBuilder handleAny(JobHandler handler) {
    this.fallback = Objects.requireNonNull(handler, "handler");
    return this;
  }

  /**
   * The worker, not started yet.
   *
   * @return the worker
   * @throws IllegalArgumentException when no queue is given, concurrency is below 1, prefetch
   *     is negative, or prefetch is asked of the unary protocol
   */
  public Worker build() {
    if (queues.isEmpty()) {
      throw new IllegalArgumentException("queues: at least one queue is needed");
    }
    if (concurrency < 1) {
      throw new IllegalArgumentException("concurrency: at least 1, got " + concurrency);
    }
    if (prefetch < 0 || (prefetch > 0 && protocol == Protocol.UNARY)) {
      throw new IllegalArgumentException(
          "prefetch: 0 to 1,000, and only with Protocol.WORK; got " + prefetch);
    }
    return new Worker(this);
  }
}
