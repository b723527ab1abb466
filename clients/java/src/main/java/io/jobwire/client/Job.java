package io.jobwire.client;

import com.google.protobuf.ByteString;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import jobwire.v1.Jobwire.ExtendLeaseRequest;
import jobwire.v1.Jobwire.ReportProgressRequest;
import jobwire.v1.Jobwire.RevokeReason;
import jobwire.v1.Jobwire.SessionSnapshot;
import jobwire.v1.Jobwire.WorkAck;
import jobwire.v1.Jobwire.WorkAnswer;

/**
 * A delivered job, as a {@link JobHandler} sees it: what was added, where this delivery stands,
 * and the calls its lease allows (extend, progress, the session state to write on completion).
 */
public final class Job {
  private final Delivery delivery;
  private final jobwire.v1.Jobwire.Job job;

  Job(Delivery delivery) {
    this.delivery = delivery;
    this.job = delivery.job;
  }

  /**
   * The job's id.
   *
   * @return {@code <queue>/<ULID>}
   */
  public String id() {
    return job.getId();
  }

  /**
   * The queue it came from.
   *
   * @return the queue
   */
  public String queue() {
    return job.getQueue();
  }

  /**
   * Its handler name.
   *
   * @return the type
   */
  public String type() {
    return job.getType();
  }

  /**
   * The payload, as added.
   *
   * @return a copy of the bytes
   */
  public byte[] payload() {
    return job.getPayload().toByteArray();
  }

  /**
   * The payload as UTF-8 text (JSON by convention).
   *
   * @return the text
   */
  public String text() {
    return job.getPayload().toStringUtf8();
  }

  /**
   * The headers given at add.
   *
   * @return the headers
   */
  public Map<String, String> headers() {
    return job.getHeadersMap();
  }

  /**
   * The priority given at add.
   *
   * @return -5 to 5
   */
  public int priority() {
    return job.getPriority();
  }

  /**
   * This attempt's number, from 1 (lost deliveries do not use up attempts).
   *
   * @return the attempt
   */
  public int attempt() {
    return job.getAttempt();
  }

  /**
   * The job's max attempts.
   *
   * @return the max
   */
  public int maxAttempts() {
    return job.getMaxAttempts();
  }

  /**
   * How many earlier deliveries were lost (their stream ended without an ack).
   *
   * @return the count
   */
  public int lostDeliveries() {
    return job.getLostDeliveries();
  }

  /**
   * When this attempt times out unless extended (Redis server clock).
   *
   * @return the deadline
   */
  public Instant deadline() {
    return Protos.instant(job.getDeadline());
  }

  /**
   * When the job was added.
   *
   * @return the time
   */
  public Instant createdAt() {
    return Protos.instant(job.getCreatedAt());
  }

  /**
   * The lease token of this delivery (what fences its acks).
   *
   * @return the token
   */
  public String leaseToken() {
    return job.getLeaseToken();
  }

  /**
   * For a job of a session: the session's id, state (JSON) and version at delivery.
   *
   * @return the snapshot, empty for a job without a session
   */
  public Optional<SessionSnapshot> session() {
    return job.hasSession() ? Optional.of(job.getSession()) : Optional.empty();
  }

  /**
   * For a job of a session: the state to write when this job completes, in the same atomic
   * step, provided the session is still at the version delivered. If it moved on meanwhile, the
   * completion is refused (ABORTED), nothing is written, and the worker fails the attempt so that
   * the job runs again against the fresh state.
   *
   * @param json the new state (at most 256 KiB)
   */
  public void setSessionState(String json) {
    delivery.newSessionState = json;
  }

  /**
   * Whether the server revoked this delivery (cancelled, timed out, lease lost): the handler's
   * thread was interrupted, and what it returns now is not reported.
   *
   * @return true once revoked
   */
  public boolean isRevoked() {
    return revokeReason().isPresent();
  }

  /**
   * Why the server revoked this delivery.
   *
   * @return the reason, empty while not revoked
   */
  public Optional<RevokeReason> revokeReason() {
    return Optional.ofNullable(delivery.revoked);
  }

  /**
   * Pushes this attempt's deadline to now + {@code by} (1 ms to 24 h), for long jobs.
   *
   * @param by the extension
   * @return the new deadline; {@link StaleLeaseException} when the lease is gone
   */
  public CompletableFuture<Instant> extend(Duration by) {
    ExtendLeaseRequest request =
        ExtendLeaseRequest.newBuilder()
            .setJobId(id())
            .setLeaseToken(leaseToken())
            .setExtendBy(Protos.duration(by))
            .build();
    return call(WorkAck.newBuilder().setExtend(request), "ExtendLease")
        .thenApply(answer -> Protos.instant(answer.getExtend().getDeadline()));
  }

  /**
   * Reports progress (free-form, JSON by convention, at most 64 KiB): kept on the job, shown by
   * {@code info}, and sent to whoever watches or subscribes.
   *
   * @param progress the progress
   * @return done when stored; {@link StaleLeaseException} when the lease is gone
   */
  public CompletableFuture<Void> progress(String progress) {
    ReportProgressRequest request =
        ReportProgressRequest.newBuilder()
            .setJobId(id())
            .setLeaseToken(leaseToken())
            .setProgress(ByteString.copyFrom(progress, StandardCharsets.UTF_8))
            .build();
    return call(WorkAck.newBuilder().setProgress(request), "ReportProgress").thenApply(a -> null);
  }

  /**
   * The job as delivered, in the generated type.
   *
   * @return the delivered message
   */
  public jobwire.v1.Jobwire.Job raw() {
    return job;
  }

  private CompletableFuture<WorkAnswer> call(WorkAck.Builder ack, String rpc) {
    return delivery.stream
        .untilAnswered(ack)
        .thenCompose(
            answer ->
                answer.getCode() == 0
                    ? CompletableFuture.completedFuture(answer)
                    : CompletableFuture.failedFuture(
                        Errors.of(
                            io.grpc.Status.fromCodeValue(answer.getCode()).getCode(),
                            answer.getMessage(),
                            rpc,
                            null)));
  }
}
