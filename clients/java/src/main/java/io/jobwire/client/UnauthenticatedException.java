package io.jobwire.client;

import io.grpc.Status;

/** UNAUTHENTICATED: the server wants a token and got none, or an invalid one. */
public class UnauthenticatedException extends JobwireException {
  private static final long serialVersionUID = 1L;

  /**
   * The refusal, as the server gave it.
   *
   * @param message the server's message (it names the field or id)
   * @param code the gRPC status code
   * @param rpc the RPC that was refused
   * @param cause the underlying gRPC exception
   */
  public UnauthenticatedException(String message, Status.Code code, String rpc, Throwable cause) {
    super(message, code, rpc, cause);
  }
}
