package io.jobwire.client;

import io.grpc.Status;

/** FAILED_PRECONDITION: the call is not allowed in the job's current state (cancelling a finished job, deleting an active one). Lease and session refusals have subclasses of their own: {@link StaleLeaseException}, and {@link SessionConflictException} (which is not a subclass: it also stands for ABORTED). */
public class FailedPreconditionException extends JobwireException {
  private static final long serialVersionUID = 1L;

  /**
   * The refusal, as the server gave it.
   *
   * @param message the server's message (it names the field or id)
   * @param code the gRPC status code
   * @param rpc the RPC that was refused
   * @param cause the underlying gRPC exception
   */
  public FailedPreconditionException(String message, Status.Code code, String rpc, Throwable cause) {
    super(message, code, rpc, cause);
  }
}
