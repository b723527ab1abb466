package io.jobwire.client;

import io.grpc.Status;

/**
 * The outcome of one entry of {@link JobwireClient#addMany}: accepted (added or duplicate) or
 * refused on its own, without the other entries.
 *
 * @param id the job's id when accepted; empty when refused
 * @param duplicate as in {@link AddResult#duplicate()}
 * @param code OK when accepted, else the status {@code AddJob} would have refused it with
 * @param message why it was refused (naming the field); empty when accepted
 */
public record AddOutcome(String id, boolean duplicate, Status.Code code, String message) {
  /**
   * Whether the entry was accepted.
   *
   * @return true when added or a duplicate
   */
  public boolean ok() {
    return code == Status.Code.OK;
  }

  /**
   * The refusal as the exception {@code AddJob} would have thrown.
   *
   * @return the exception, or null when accepted
   */
  public JobwireException error() {
    return ok() ? null : Errors.of(code, message, "AddJobs", null);
  }
}
