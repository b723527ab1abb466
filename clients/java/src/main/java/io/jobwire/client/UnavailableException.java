package io.jobwire.client;

import io.grpc.Status;

/** UNAVAILABLE: the server, or its Redis, cannot be reached right now. Safe to retry; the client already retried the calls where that is safe. */
public class UnavailableException extends JobwireException {
  private static final long serialVersionUID = 1L;

  /**
   * The refusal, as the server gave it.
   *
   * @param message the server's message (it names the field or id)
   * @param code the gRPC status code
   * @param rpc the RPC that was refused
   * @param cause the underlying gRPC exception
   */
  public UnavailableException(String message, Status.Code code, String rpc, Throwable cause) {
    super(message, code, rpc, cause);
  }
}
