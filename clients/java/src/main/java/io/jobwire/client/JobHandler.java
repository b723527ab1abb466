package io.jobwire.client;

/**
 * The code that runs a job, on the worker's executor. What it returns is the job's result (null:
 * empty); what it throws fails the attempt:
 *
 * <ul>
 *   <li>{@link JobFailure#permanent}: the job goes dead now, whatever attempts remain;
 *   <li>{@link JobFailure#retryAfter}: it runs again after exactly that wait;
 *   <li>{@link HandBackException}: it goes back to the head of its queue unprocessed, neither an
 *       attempt nor a lost delivery;
 *   <li>{@link RateLimitedException}: it runs again after the given wait, delayed meanwhile,
 *       without spending an attempt (and holds back the other jobs of its rate key, if asked);
 *   <li>anything else: it retries per its backoff while attempts remain, with {@code
 *       ClassName: message} as its error.
 * </ul>
 *
 * <p>When the job is revoked (cancelled, timed out, lease lost), the worker stream ends or the
 * worker's stop timeout passes, the handler's thread is interrupted: blocking calls throw {@link
 * InterruptedException}, and long loops should check {@link Job#isRevoked()} or {@link
 * Thread#isInterrupted()}.
 */
@FunctionalInterface
public interface JobHandler {
  /**
   * Runs one job.
   *
   * @param job the delivered job
   * @return the result (at most the server's {@code --max-result}, 1 MiB by default), or null
   * @throws Exception to fail the attempt, as above
   */
  byte[] handle(Job job) throws Exception;
}
