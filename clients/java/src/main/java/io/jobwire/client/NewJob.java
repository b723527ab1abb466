package io.jobwire.client;

import com.google.protobuf.ByteString;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import jobwire.v1.Jobwire.AddJobRequest;
import jobwire.v1.Jobwire.Backoff;
import jobwire.v1.Jobwire.BackoffKind;

/**
 * A job to add, built fluently: {@code NewJob.of("emails", "welcome").payload("{\"to\":\"a@b.c\"}")}.
 * Every option left unset takes the server's default (see the proto's {@code AddJobRequest}).
 * Instances are immutable; each setter returns a new one.
 */
public final class NewJob {
  private final AddJobRequest request;

  private NewJob(AddJobRequest request) {
    this.request = request;
  }

  /**
   * A job of {@code type} (the handler name workers dispatch on) for {@code queue}, with an empty
   * payload.
   *
   * @param queue the queue: 1 to 128 characters of {@code A-Z a-z 0-9 _ . : -}
   * @param type the handler name
   * @return the job
   */
  public static NewJob of(String queue, String type) {
    return new NewJob(AddJobRequest.newBuilder().setQueue(queue).setType(type).build());
  }

  /**
   * A job of {@code type} in a session: its queue is the session's ({@code <queue>/<name>}), and
   * it runs in the session's order, with its state.
   *
   * @param sessionId the session
   * @param type the handler name
   * @return the job
   */
  public static NewJob inSession(String sessionId, String type) {
    int slash = sessionId.indexOf('/');
    if (slash <= 0) {
      throw new IllegalArgumentException("session id " + sessionId + ": expected <queue>/<name>");
    }
    return of(sessionId.substring(0, slash), type).session(sessionId);
  }

  /**
   * A job from a request built with the generated classes, for options this builder lacks.
   *
   * @param request the request
   * @return the job
   */
  public static NewJob fromRequest(AddJobRequest request) {
    return new NewJob(request);
  }

  private NewJob with(java.util.function.Consumer<AddJobRequest.Builder> change) {
    AddJobRequest.Builder builder = request.toBuilder();
    change.accept(builder);
    return new NewJob(builder.build());
  }

  /**
   * The payload, as opaque bytes.
   *
   * @param bytes the payload (at most the server's {@code --max-payload}, 1 MiB by default)
   * @return the changed job
   */
  public NewJob payload(byte[] bytes) {
    return with(b -> b.setPayload(ByteString.copyFrom(bytes)));
  }

  /**
   * The payload as UTF-8 text: by convention a JSON document, e.g. {@code "{\"to\":\"a@b.c\"}"}.
   *
   * @param text the payload
   * @return the changed job
   */
  public NewJob payload(String text) {
    return with(b -> b.setPayload(ByteString.copyFrom(text, StandardCharsets.UTF_8)));
  }

  /**
   * Adds (or replaces) a header delivered with the job, such as a W3C {@code traceparent}.
   *
   * @param key the header's name
   * @param value its value
   * @return the changed job
   */
  public NewJob header(String key, String value) {
    return with(b -> b.putHeaders(key, value));
  }

  /**
   * Adds (or replaces) headers delivered with the job.
   *
   * @param headers the headers
   * @return the changed job
   */
  public NewJob headers(Map<String, String> headers) {
    return with(b -> b.putAllHeaders(headers));
  }

  /**
   * The priority, -5 to 5 (default 0): higher runs first, FIFO within one level.
   *
   * @param priority the priority
   * @return the changed job
   */
  public NewJob priority(int priority) {
    return with(b -> b.setPriority(priority));
  }

  /**
   * Runs the job no earlier than {@code delay} after the server accepts it (0 to 365 days).
   *
   * @param delay the delay
   * @return the changed job
   */
  public NewJob delay(Duration delay) {
    return with(b -> b.setDelay(Protos.duration(delay)));
  }

  /**
   * Runs the job no earlier than {@code when} (on the Redis server's clock; a past time is now).
   *
   * @param when the time
   * @return the changed job
   */
  public NewJob runAt(Instant when) {
    return with(b -> b.setRunAt(Protos.timestamp(when)));
  }

  /**
   * Attempts before the job goes dead, counting the first: 1 to 1,000 (default 3).
   *
   * @param attempts the attempts
   * @return the changed job
   */
  public NewJob maxAttempts(int attempts) {
    return with(b -> b.setMaxAttempts(attempts));
  }

  /**
   * How long one attempt may run before it is revoked and counted failed ({@code timeout}):
   * 10 ms to 24 h (default 30 min). A handler can push it back with {@link Job#extend}.
   *
   * @param timeout the per-attempt timeout
   * @return the changed job
   */
  public NewJob timeout(Duration timeout) {
    return with(b -> b.setTimeout(Protos.duration(timeout)));
  }

  /**
   * Waits exactly {@code wait} before each retry, instead of the default exponential backoff.
   *
   * @param wait the wait (0 to 24 h)
   * @return the changed job
   */
  public NewJob fixedBackoff(Duration wait) {
    Backoff backoff =
        Backoff.newBuilder().setKind(BackoffKind.BACKOFF_KIND_FIXED).setBase(Protos.duration(wait)).build();
    return with(b -> b.setBackoff(backoff));
  }

  /**
   * Exponential backoff: {@code base * factor^(attempt - 1)}, capped at {@code max}, each wait
   * randomized by {@code jitter} (0 to 1).
   *
   * @param base the first wait
   * @param factor the growth per attempt, 1 to 100
   * @param max the longest wait
   * @param jitter the randomized fraction of each wait
   * @return the changed job
   */
  public NewJob exponentialBackoff(Duration base, double factor, Duration max, double jitter) {
    Backoff backoff =
        Backoff.newBuilder()
            .setKind(BackoffKind.BACKOFF_KIND_EXPONENTIAL)
            .setBase(Protos.duration(base))
            .setFactor(factor)
            .setMax(Protos.duration(max))
            .setJitter(jitter)
            .build();
    return with(b -> b.setBackoff(backoff));
  }

  /**
   * A key that makes the add idempotent: a repeat with the same key on the same queue within the
   * server's window (24 h by default) adds nothing and returns the first job's id. Without one,
   * {@link JobwireClient#add} makes one up, so that its own retries never add the job twice.
   *
   * @param key at most 256 bytes
   * @return the changed job
   */
  public NewJob idempotencyKey(String key) {
    return with(b -> b.setIdempotencyKey(key));
  }

  /**
   * The key whose rate limit the job counts against (a customer, an API host...): the queue's
   * {@code key_rate} setting limits how fast the jobs of each key start.
   *
   * @param key 1 to 128 bytes
   * @return the changed job
   */
  public NewJob rateKey(String key) {
    return with(b -> b.setRateKey(key));
  }

  /**
   * The key whose concurrency cap the job counts against: the queue's {@code key_concurrency}
   * setting caps how many jobs of each key are active at once. It may differ from the rate key.
   *
   * @param key 1 to 128 bytes
   * @return the changed job
   */
  public NewJob concurrencyKey(String key) {
    return with(b -> b.setConcurrencyKey(key));
  }

  /**
   * Runs the job in a session ({@code <queue>/<name>}, of this job's queue): in the session's
   * order, with its state.
   *
   * @param sessionId the session
   * @return the changed job
   */
  public NewJob session(String sessionId) {
    return with(b -> b.setSessionId(sessionId));
  }

  /**
   * The request this builds.
   *
   * @return the {@code AddJob} request
   */
  public AddJobRequest toRequest() {
    return request;
  }
}
