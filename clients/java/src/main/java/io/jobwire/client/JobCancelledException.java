package io.jobwire.client;

/** An awaited job was cancelled. */
public class JobCancelledException extends JobwireException {
  private static final long serialVersionUID = 1L;

  private final String jobId;

  /**
   * The job that was cancelled.
   *
   * @param jobId its id
   */
  public JobCancelledException(String jobId) {
    super("job " + jobId + " was cancelled", null, null, null);
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
