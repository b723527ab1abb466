package io.jobwire.client;

/**
 * Thrown by a {@link JobHandler} that will not run the job now: the job goes back to the head of
 * its queue unprocessed ({@code ReturnJob}), neither a failed attempt nor a lost delivery, and
 * may be delivered again at once (to this worker too).
 */
public final class HandBackException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /**
   * Hands the job back.
   *
   * @param why for logs
   */
  public HandBackException(String why) {
    super(why);
  }
}
