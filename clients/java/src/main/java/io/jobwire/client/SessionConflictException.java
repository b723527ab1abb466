package io.jobwire.client;

import io.grpc.Status;

/** The session is not at the version the call expected, and nothing was written: ABORTED from a completion that writes session state (the session changed while the job ran; the worker retries the job against the fresh state), or FAILED_PRECONDITION from {@code UpdateSession} with an expected version. Read the session again and retry. */
public class SessionConflictException extends JobwireException {
  private static final long serialVersionUID = 1L;

  /**
   * The refusal, as the server gave it.
   *
   * @param message the server's message (it names the field or id)
   * @param code the gRPC status code
   * @param rpc the RPC that was refused
   * @param cause the underlying gRPC exception
   */
  public SessionConflictException(String message, Status.Code code, String rpc, Throwable cause) {
    super(message, code, rpc, cause);
  }
}
