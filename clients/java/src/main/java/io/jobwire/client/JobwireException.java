package io.jobwire.client;

import io.grpc.Status;

/**
 * What every call of this client fails with. Unchecked, so that it passes through a
 * {@link java.util.concurrent.CompletableFuture} unchanged; catch the subclass of the kind you can
 * act on:
 *
 * <table>
 *   <caption>The kinds</caption>
 *   <tr><th>class</th><th>gRPC status</th><th>meaning</th></tr>
 *   <tr><td>{@link InvalidArgumentException}</td><td>INVALID_ARGUMENT</td><td>a field is malformed or out of range; the message names it; nothing was written</td></tr>
 *   <tr><td>{@link NotFoundException}</td><td>NOT_FOUND</td><td>unknown job or session, or no longer retained</td></tr>
 *   <tr><td>{@link AlreadyExistsException}</td><td>ALREADY_EXISTS</td><td>a session with that id exists</td></tr>
 *   <tr><td>{@link StaleLeaseException}</td><td>FAILED_PRECONDITION</td><td>an ack, extend or progress with a lease token that no longer holds the job</td></tr>
 *   <tr><td>{@link SessionConflictException}</td><td>ABORTED, or FAILED_PRECONDITION of UpdateSession</td><td>the session's version is not the one expected; nothing was written</td></tr>
 *   <tr><td>{@link FailedPreconditionException}</td><td>FAILED_PRECONDITION</td><td>any other call not allowed in the job's state (cancel a finished job...)</td></tr>
 *   <tr><td>{@link ResourceExhaustedException}</td><td>RESOURCE_EXHAUSTED</td><td>a request larger than the server accepts</td></tr>
 *   <tr><td>{@link OutOfRangeException}</td><td>OUT_OF_RANGE</td><td>a Subscribe cursor older than the events still kept</td></tr>
 *   <tr><td>{@link UnavailableException}</td><td>UNAVAILABLE</td><td>the server or its Redis cannot be reached now; safe to retry</td></tr>
 *   <tr><td>{@link DeadlineExceededException}</td><td>DEADLINE_EXCEEDED</td><td>the call's deadline passed</td></tr>
 *   <tr><td>{@link UnauthenticatedException}, {@link PermissionDeniedException}</td><td>UNAUTHENTICATED, PERMISSION_DENIED</td><td>no valid token, or one without the right</td></tr>
 *   <tr><td>{@link JobDeadException}, {@link JobCancelledException}, {@link WaitTimeoutException}</td><td>none</td><td>an awaited job went dead, was cancelled, or did not finish in time</td></tr>
 * </table>
 *
 * <p>Any other status is a plain {@code JobwireException}; {@link #code()} tells which.
 */
public class JobwireException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final transient Status.Code code;
  private final String rpc;

  /**
   * An error of the given status.
   *
   * @param message what went wrong, as the server said it
   * @param code the gRPC status code, or null for an error that is not a refused call
   * @param rpc the RPC that failed (e.g. {@code AddJob}), or null
   * @param cause the underlying exception, or null
   */
  public JobwireException(String message, Status.Code code, String rpc, Throwable cause) {
    super(message, cause);
    this.code = code;
    this.rpc = rpc;
  }

  /**
   * The gRPC status code of the refusal; null for errors that are not a refused call (a dead
   * or cancelled job that was awaited, a wait that ran out).
   *
   * @return the code, or null
   */
  public Status.Code code() {
    return code;
  }

  /**
   * The RPC that failed, e.g. {@code CompleteJob}; null when no RPC failed.
   *
   * @return the RPC's name, or null
   */
  public String rpc() {
    return rpc;
  }
}
