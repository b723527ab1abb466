package io.jobwire.client;

import io.grpc.Status;

/** NOT_FOUND: the job, session or queue is unknown, or the job is no longer retained. */
public class NotFoundException extends JobwireException {
  private static final long serialVersionUID = 1L;

  /**
   * The refusal, as the server gave it.
   *
   * @param message the server's message (it names the field or id)
   * @param code the gRPC status code
   * @param rpc the RPC that was refused
   * @param cause the underlying gRPC exception
   */
  public NotFoundException(String message, Status.Code code, String rpc, Throwable cause) {
    super(message, code, rpc, cause);
  }
}
