package io.jobwire.client;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ChannelCredentials;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.TlsChannelCredentials;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import jobwire.v1.Jobwire.AddJobRequest;
import jobwire.v1.Jobwire.AddJobsRequest;
import jobwire.v1.Jobwire.AddJobsResult;
import jobwire.v1.Jobwire.CancelJobRequest;
import jobwire.v1.Jobwire.GetJobInfoRequest;
import jobwire.v1.Jobwire.JobEvent;
import jobwire.v1.Jobwire.JobInfo;

/**
 * The producer side of jobwire, and the connection every other part shares: adds jobs, awaits
 * their results, follows a queue's events; {@link #sessions()}, {@link #schedules()} and {@link
 * #admin()} hold the rest of the API, and {@link Worker#builder(JobwireClient)} runs handlers over the same connection.
 *
 * <pre>{@code
 * try (JobwireClient client = JobwireClient.builder().target("127.0.0.1:50051").build()) {
 *   byte[] result = Blocking.get(client.run(NewJob.of("emails", "welcome").payload("{}"), Duration.ofSeconds(30)));
 * }
 * }</pre>
 *
 * <p>Every call is asynchronous and returns a {@link CompletableFuture} that fails with a
 * {@link JobwireException} of the refusal's kind ({@link Blocking#get} waits and throws it as
 * is). Each unary call has one deadline, the call timeout (30 s by default, connecting included), retries included.
 * Thread-safe; one client (one HTTP/2 connection) serves a whole process. {@link #close()} ends
 * it.
 */
public final class JobwireClient implements AutoCloseable {
  private static final int MAX_BATCH = 1_000;

  private final ManagedChannel channel;
  private final ScheduledExecutorService timer;
  private final Calls calls;
  private final Sessions sessions;
  private final Schedules schedules;
  private final Admin admin;
  private final java.util.Set<Runnable> closeHooks = java.util.concurrent.ConcurrentHashMap.newKeySet();

  private JobwireClient(ManagedChannel channel, Duration callTimeout) {
    this.channel = channel;
    this.timer =
        Executors.newSingleThreadScheduledExecutor(
            r -> {
              Thread t = new Thread(r, "jobwire-client-timer");
              t.setDaemon(true);
              return t;
            });
    this.calls = new Calls(channel, timer, callTimeout);
    this.sessions = new Sessions(calls);
    this.schedules = new Schedules(calls);
    this.admin = new Admin(calls);
  }

  /**
   * A builder; with nothing set it connects to {@code $JOBWIRE_ADDR}, else {@code
   * 127.0.0.1:50051}, in plaintext.
   *
   * @return the builder
   */
  public static Builder builder() {
    return new Builder();
  }

  /**
   * Adds one job. A job without an idempotency key gets a random one first, so the retries after
   * UNAVAILABLE (again and again within the call timeout) can never add it twice: a repeat that
   * reaches the server answers the first job's id.
   *
   * @param job the job
   * @return its id, and whether it was a duplicate of an earlier add with the same key
   */
  public CompletableFuture<AddResult> add(NewJob job) {
    return calls
        .retried(Rpc.ADD_JOB, withKey(job.toRequest()))
        .thenApply(r -> new AddResult(r.getJobId(), r.getDuplicate()));
  }

  /**
   * Adds any number of jobs, 1,000 per request, each accepted or refused on its own. Like
   * {@link #add}, each gets an idempotency key first and requests are retried after UNAVAILABLE.
   *
   * @param jobs the jobs
   * @return one outcome per job, in order
   */
  public CompletableFuture<List<AddOutcome>> addMany(List<NewJob> jobs) {
    CompletableFuture<List<AddOutcome>> all = CompletableFuture.completedFuture(new ArrayList<>());
    for (int start = 0; start < jobs.size(); start += MAX_BATCH) {
      AddJobsRequest.Builder batch = AddJobsRequest.newBuilder();
      for (NewJob job : jobs.subList(start, Math.min(start + MAX_BATCH, jobs.size()))) {
        batch.addJobs(withKey(job.toRequest()));
      }
      AddJobsRequest request = batch.build();
      all =
          all.thenCompose(
              outcomes ->
                  calls
                      .retried(Rpc.ADD_JOBS, request)
                      .thenApply(
                          response -> {
                            for (AddJobsResult r : response.getResultsList()) {
                              outcomes.add(
                                  new AddOutcome(
                                      r.getJobId(),
                                      r.getDuplicate(),
                                      Status.fromCodeValue(r.getCode()).getCode(),
                                      r.getMessage()));
                            }
                            return outcomes;
                          }));
    }
    return all;
  }

  private static AddJobRequest withKey(AddJobRequest request) {
    if (!request.getIdempotencyKey().isEmpty()) {
      return request;
    }
    return request.toBuilder().setIdempotencyKey("auto-" + UUID.randomUUID()).build();
  }

  /**
   * Waits for a job's result, following it with {@code WatchJob} (no polling). If the watch
   * breaks (the server restarts, a network blip), it is opened again until the wait runs out.
   *
   * @param jobId the job
   * @param wait how long to wait at most
   * @return its result once it completed; fails with {@link JobDeadException}, {@link
   *     JobCancelledException}, {@link WaitTimeoutException} or {@link NotFoundException}
   */
  public CompletableFuture<byte[]> awaitResult(String jobId, Duration wait) {
    return new ResultWatch(calls, jobId, wait).start();
  }

  /**
   * Adds a job and waits for its result: {@link #add}, then {@link #awaitResult}.
   *
   * @param job the job
   * @param wait how long to wait for the result at most, after the add
   * @return the result
   */
  public CompletableFuture<byte[]> run(NewJob job, Duration wait) {
    return add(job).thenCompose(added -> awaitResult(added.id(), wait));
  }

  /**
   * Cancels a job: a waiting or delayed one is removed; a running one is revoked on its worker
   * (its handler is interrupted) and ends cancelled. A finished job: {@link
   * FailedPreconditionException}.
   *
   * @param jobId the job
   * @return done when cancelled
   */
  public CompletableFuture<Void> cancel(String jobId) {
    return calls
        .once(Rpc.CANCEL_JOB, CancelJobRequest.newBuilder().setJobId(jobId).build())
        .thenApply(r -> null);
  }

  /**
   * Everything the server knows of one job: state, attempts, times, last error, progress, and
   * its result while retained.
   *
   * @param jobId the job
   * @return the job
   */
  public CompletableFuture<JobInfo> info(String jobId) {
    return calls
        .retried(Rpc.GET_JOB_INFO, GetJobInfoRequest.newBuilder().setJobId(jobId).build())
        .thenApply(r -> r.getJob());
  }

  /**
   * Follows every event of a queue, live, calling {@code onEvent} for each in order (on a gRPC
   * thread: hand slow work off). With the cursor of the last event seen it resumes right after
   * that event with no gap and no duplicate; an empty cursor starts with the next event. When
   * the stream breaks it is reopened from the last cursor seen, so no event is missed; a cursor
   * older than the events the server keeps ends the subscription with {@link
   * OutOfRangeException}.
   *
   * @param queue the queue
   * @param cursor resume after this event's cursor; empty for the next event
   * @param onEvent called with each event
   * @return the subscription: its {@link Subscription#cursor()}, {@link Subscription#close()}
   */
  public Subscription subscribe(String queue, String cursor, Consumer<JobEvent> onEvent) {
    return Subscription.start(calls, queue, cursor, onEvent);
  }

  /**
   * Follows one job's transitions, live, calling {@code onEvent} for each in order (on a gRPC
   * thread: hand slow work off): first its state now, then each change, until it ends. For just
   * the result, {@link #awaitResult} is simpler.
   *
   * @param jobId the job
   * @param onEvent called with each event
   * @return the watch: {@link JobWatch#done()} (the final event), {@link JobWatch#close()}
   */
  public JobWatch watch(String jobId, Consumer<JobEvent> onEvent) {
    return JobWatch.start(calls, jobId, onEvent);
  }

  /**
   * Sessions: state documents with their own ordered line of jobs.
   *
   * @return the session calls
   */
  public Sessions sessions() {
    return sessions;
  }

  /**
   * Schedules: jobs the servers add on a cron expression or a fixed interval.
   *
   * @return the schedule calls
   */
  public Schedules schedules() {
    return schedules;
  }

  /**
   * Operators' calls: stats, listings, retries, pause and resume, queue settings.
   *
   * @return the admin calls
   */
  public Admin admin() {
    return admin;
  }

  /**
   * The channel, with the token and TLS settings of this client, for calls this client does not
   * wrap.
   *
   * @return the channel
   */
  public Channel channel() {
    return channel;
  }

  Calls calls() {
    return calls;
  }

  /** Runs `hook` when this client closes (workers over it stop then). */
  void onClose(Runnable hook) {
    closeHooks.add(hook);
  }

  /**
   * Closes the connection; calls still running fail with UNAVAILABLE or CANCELLED, and workers
   * over this client stop at once (their running jobs go back as lost deliveries: close workers
   * first to stop them gracefully).
   */
  @Override
  public void close() {
    closeHooks.forEach(Runnable::run);
    channel.shutdownNow();
    timer.shutdownNow();
    try {
      channel.awaitTermination(5, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  /** How to connect: the server's address, a token, TLS. */
  public static final class Builder {
    private String target;
    private String token;
    private boolean tls;
    private Path caFile;
    private Path certChain;
    private Path privateKey;
    private String serverName;
    private Duration callTimeout = Duration.ofSeconds(30);

    private Builder() {
      String fromEnv = System.getenv("JOBWIRE_ADDR");
      target = fromEnv != null && !fromEnv.isEmpty() ? fromEnv : "127.0.0.1:50051";
    }

    /**
     * The server: {@code host:port}, or any grpc-java target ({@code dns:///host:port}).
     *
     * @param target the target
     * @return this builder
     */
    public Builder target(String target) {
      this.target = Objects.requireNonNull(target, "target");
      return this;
    }

    /**
     * A bearer token, sent with every call as {@code authorization: Bearer <token>}. Over
     * plaintext it travels in clear: use TLS off loopback.
     *
     * @param token the token
     * @return this builder
     */
    public Builder token(String token) {
      this.token = Objects.requireNonNull(token, "token");
      return this;
    }

    /**
     * TLS with the system's trusted roots (on by itself when a CA file or client certificate is
     * given).
     *
     * @return this builder
     */
    public Builder tls() {
      this.tls = true;
      return this;
    }

    /**
     * TLS, trusting the CA certificates in this PEM file instead of the system's roots.
     *
     * @param caFile the PEM file
     * @return this builder
     */
    public Builder caFile(Path caFile) {
      this.caFile = Objects.requireNonNull(caFile, "caFile");
      this.tls = true;
      return this;
    }

    /**
     * TLS with a client certificate (mutual TLS).
     *
     * @param certChain the certificate chain, PEM
     * @param privateKey its private key, PEM (PKCS#8)
     * @return this builder
     */
    public Builder clientCertificate(Path certChain, Path privateKey) {
      this.certChain = Objects.requireNonNull(certChain, "certChain");
      this.privateKey = Objects.requireNonNull(privateKey, "privateKey");
      this.tls = true;
      return this;
    }

    /**
     * The name to expect in the server's certificate (and to send as the authority), when it is
     * not the target's host, e.g. for an address that is an IP.
     *
     * @param serverName the name
     * @return this builder
     */
    public Builder serverNameOverride(String serverName) {
      this.serverName = Objects.requireNonNull(serverName, "serverName");
      return this;
    }

    /**
     * The deadline of each unary call, its retries and the connection setup included (default 30 s: a cold JVM on a busy machine can take seconds to connect).
     *
     * @param timeout the deadline
     * @return this builder
     */
    public Builder callTimeout(Duration timeout) {
      this.callTimeout = Objects.requireNonNull(timeout, "timeout");
      return this;
    }

    /**
     * Connects (lazily: the first call opens the connection).
     *
     * @return the client
     * @throws UncheckedIOException when a CA, certificate or key file cannot be read
     */
    public JobwireClient build() {
      ManagedChannelBuilder<?> builder = Grpc.newChannelBuilder(target, credentials());
      if (serverName != null) {
        builder.overrideAuthority(serverName);
      }
      builder
          .userAgent("jobwire-java")
          .maxInboundMessageSize(64 << 20)
          .keepAliveTime(20, TimeUnit.SECONDS)
          .keepAliveTimeout(10, TimeUnit.SECONDS);
      if (token != null) {
        builder.intercept(new BearerToken(token));
      }
      return new JobwireClient(builder.build(), callTimeout);
    }

    private ChannelCredentials credentials() {
      if (!tls) {
        return InsecureChannelCredentials.create();
      }
      TlsChannelCredentials.Builder creds = TlsChannelCredentials.newBuilder();
      try {
        if (caFile != null) {
          creds.trustManager(caFile.toFile());
        }
        if (certChain != null) {
          creds.keyManager(certChain.toFile(), privateKey.toFile());
        }
      } catch (IOException e) {
        throw new UncheckedIOException("cannot read the TLS files: " + e.getMessage(), e);
      }
      return creds.build();
    }
  }

  /** Puts {@code authorization: Bearer <token>} on every call. */
  private static final class BearerToken implements ClientInterceptor {
    private static final Metadata.Key<String> AUTHORIZATION =
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
    private final String value;

    BearerToken(String token) {
      this.value = "Bearer " + token;
    }

    @Override
    public <Q, R> ClientCall<Q, R> interceptCall(
        MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
      return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
        @Override
        public void start(Listener<R> listener, Metadata headers) {
          headers.put(AUTHORIZATION, value);
          super.start(listener, headers);
        }
      };
    }
  }
}
