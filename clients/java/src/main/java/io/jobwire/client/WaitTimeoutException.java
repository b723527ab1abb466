package io.jobwire.client;

/** An awaited job did not finish within the wait. It may still finish later. */
public class WaitTimeoutException extends JobwireException {
  private static final long serialVersionUID = 1L;

  private final String jobId;

  /**
   * The job that did not finish within the wait.
   *
   * @param jobId its id
   */
  public WaitTimeoutException(String jobId) {
    super("job " + jobId + " did not finish within the wait", null, null, null);
    this.jobId = jobId;
  }

  /**
   * The awaited job.
   *
   * @return its id
   */
  public String jobId() {
    return jobId;
  }
}
