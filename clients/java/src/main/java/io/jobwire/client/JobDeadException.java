package io.jobwire.client;

/** An awaited job went dead: its attempts ran out, or a handler failed it for good. */
public class JobDeadException extends JobwireException {
  private static final long serialVersionUID = 1L;

  private final String jobId;
  private final String lastError;

  /**
   * The job and why it died.
   *
   * @param jobId the job
   * @param lastError the error of its last attempt
   */
  public JobDeadException(String jobId, String lastError) {
    super("job " + jobId + " is dead: " + lastError, null, null, null);
    this.jobId = jobId;
    this.lastError = lastError;
  }

  /**
   * The job that died.
   *
   * @return its id
   */
  public String jobId() {
    return jobId;
  }

  /**
   * The error of its last attempt (a handler's message, {@code timeout} or {@code lost}).
   *
   * @return the error
   */
  public String lastError() {
    return lastError;
  }
}
