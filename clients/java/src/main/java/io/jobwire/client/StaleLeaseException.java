package io.jobwire.client;

import io.grpc.Status;

/** FAILED_PRECONDITION of a lease holder's call (complete, fail, extend, progress, return): the lease token no longer holds the job (it was re-delivered, timed out or finished). Nothing was changed. */
public class StaleLeaseException extends FailedPreconditionException {
  private static final long serialVersionUID = 1L;

  /**
   * The refusal, as the server gave it.
   *
   * @param message the server's message (it names the field or id)
   * @param code the gRPC status code
   * @param rpc the RPC that was refused
   * @param cause the underlying gRPC exception
   */
  public StaleLeaseException(String message, Status.Code code, String rpc, Throwable cause) {
    super(message, code, rpc, cause);
  }
}
