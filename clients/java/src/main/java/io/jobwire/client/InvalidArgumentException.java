package io.jobwire.client;

import io.grpc.Status;

/** INVALID_ARGUMENT: a field is malformed or out of range (the message names it); nothing was written. */
public class InvalidArgumentException extends JobwireException {
  private static final long serialVersionUID = 1L;

  /**
   * The refusal, as the server gave it.
   *
   * @param message the server's message (it names the field or id)
   * @param code the gRPC status code
   * @param rpc the RPC that was refused
   * @param cause the underlying gRPC exception
   */
  public InvalidArgumentException(String message, Status.Code code, String rpc, Throwable cause) {
    super(message, code, rpc, cause);
  }
}
