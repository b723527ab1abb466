package io.jobwire.client;

import io.grpc.Status;

/** OUT_OF_RANGE: a Subscribe cursor points before the oldest event still kept; events would be skipped, so the subscription is refused. */
public class OutOfRangeException extends JobwireException {
  private static final long serialVersionUID = 1L;

  /**
   * The refusal, as the server gave it.
   *
   * @param message the server's message (it names the field or id)
   * @param code the gRPC status code
   * @param rpc the RPC that was refused
   * @param cause the underlying gRPC exception
   */
  public OutOfRangeException(String message, Status.Code code, String rpc, Throwable cause) {
    super(message, code, rpc, cause);
  }
}
