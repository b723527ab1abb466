package io.jobwire.client;

import java.time.Duration;

/**
 * Thrown by a {@link JobHandler} to say how the attempt failed: for good, or to be retried
 * after a given wait. (Any other exception retries per the job's backoff.)
 */
public final class JobFailure extends Exception {
  private static final long serialVersionUID = 1L;

  private final boolean retryable;
  private final transient Duration retryAfter;

  private JobFailure(String message, boolean retryable, Duration retryAfter) {
    super(message);
    this.retryable = retryable;
    this.retryAfter = retryAfter;
  }

  /**
   * The job goes dead now, whatever attempts remain.
   *
   * @param message the error kept on the job
   * @return the failure to throw
   */
  public static JobFailure permanent(String message) {
    return new JobFailure(message, false, null);
  }

  /**
   * The job retries per its backoff while attempts remain.
   *
   * @param message the error kept on the job
   * @return the failure to throw
   */
  public static JobFailure retry(String message) {
    return new JobFailure(message, true, null);
  }

  /**
   * The job runs again after exactly {@code wait} (0 to 7 days), attempts permitting.
   *
   * @param wait the wait
   * @param message the error kept on the job
   * @return the failure to throw
   */
  public static JobFailure retryAfter(Duration wait, String message) {
    return new JobFailure(message, true, wait);
  }

  /**
   * Whether the job may run again.
   *
   * @return false when the job goes dead now
   */
  public boolean retryable() {
    return retryable;
  }

  /**
   * The wait before the retry, or null to follow the job's backoff.
   *
   * @return the wait
   */
  public Duration retryAfter() {
    return retryAfter;
  }
}
