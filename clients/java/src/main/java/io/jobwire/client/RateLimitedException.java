package io.jobwire.client;

import java.time.Duration;

/**
 * Thrown by a {@link JobHandler} when what the job calls said "rate limited, retry after X" (an
 * HTTP 429 with {@code Retry-After}): the job runs again after {@code retryAfter}, delayed
 * meanwhile, without spending an attempt or counting a lost delivery ({@code ReturnJob} with
 * {@code retry_after}). With {@code holdKey}, no other job of its rate key starts before then
 * either (needs the queue's {@code key_rate}; nothing for a job without a rate key).
 *
 * <pre>{@code
 * throw new RateLimitedException(Duration.ofSeconds(30), true);
 * }</pre>
 */
public final class RateLimitedException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final transient Duration retryAfter;
  private final boolean holdKey;

  /**
   * The job runs again after {@code retryAfter}; its rate key is not held.
   *
   * @param retryAfter the wait, 0 to 7 days
   */
  public RateLimitedException(Duration retryAfter) {
    this(retryAfter, false);
  }

  /**
   * The job runs again after {@code retryAfter}.
   *
   * @param retryAfter the wait, 0 to 7 days
   * @param holdKey also hold back the other jobs of its rate key as long
   */
  public RateLimitedException(Duration retryAfter, boolean holdKey) {
    super("rate limited, retry after " + retryAfter);
    if (retryAfter == null || retryAfter.isNegative()) {
      throw new IllegalArgumentException("RateLimitedException: retryAfter must be zero or more");
    }
    this.retryAfter = retryAfter;
    this.holdKey = holdKey;
  }

  /**
   * How long the job waits before it runs again.
   *
   * @return the wait
   */
  public Duration retryAfter() {
    return retryAfter;
  }

  /**
   * Whether the other jobs of the job's rate key wait as long.
   *
   * @return true when they do
   */
  public boolean holdKey() {
    return holdKey;
  }
}
