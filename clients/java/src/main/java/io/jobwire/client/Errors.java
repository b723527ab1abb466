package io.jobwire.client;

import io.grpc.Status;
import io.grpc.StatusException;
import io.grpc.StatusRuntimeException;
import java.util.Set;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;

/**
 * The one mapping from a gRPC status to the exception kinds of this client. Which kind a
 * FAILED_PRECONDITION is depends on the RPC: for the lease holder's calls it is a stale lease,
 * for UpdateSession a version conflict, elsewhere a state that does not allow the call.
 */
final class Errors {
  /** The calls fenced by a lease token: FAILED_PRECONDITION from them means a stale lease. */
  private static final Set<String> LEASE_RPCS =
      Set.of("CompleteJob", "FailJob", "ExtendLease", "ReportProgress", "ReturnJob");

  private Errors() {}

  /** The exception of a refusal with this code and message from this RPC. */
  static JobwireException of(Status.Code code, String message, String rpc, Throwable cause) {
    String text = rpc + ": " + code + ": " + message;
    switch (code) {
      case INVALID_ARGUMENT:
        return new InvalidArgumentException(text, code, rpc, cause);
      case NOT_FOUND:
        return new NotFoundException(text, code, rpc, cause);
      case ALREADY_EXISTS:
        return new AlreadyExistsException(text, code, rpc, cause);
      case FAILED_PRECONDITION:
        if (LEASE_RPCS.contains(rpc)) {
          return new StaleLeaseException(text, code, rpc, cause);
        }
        if ("UpdateSession".equals(rpc)) {
          return new SessionConflictException(text, code, rpc, cause);
        }
        return new FailedPreconditionException(text, code, rpc, cause);
      case ABORTED:
        return new SessionConflictException(text, code, rpc, cause);
      case RESOURCE_EXHAUSTED:
        return new ResourceExhaustedException(text, code, rpc, cause);
      case OUT_OF_RANGE:
        return new OutOfRangeException(text, code, rpc, cause);
      case UNAVAILABLE:
        return new UnavailableException(text, code, rpc, cause);
      case DEADLINE_EXCEEDED:
        return new DeadlineExceededException(text, code, rpc, cause);
      case UNAUTHENTICATED:
        return new UnauthenticatedException(text, code, rpc, cause);
      case PERMISSION_DENIED:
        return new PermissionDeniedException(text, code, rpc, cause);
      default:
        return new JobwireException(text, code, rpc, cause);
    }
  }

  /** Any failure of a call of `rpc` as this client's exception (unwrapping future wrappers). */
  static JobwireException from(Throwable failure, String rpc) {
    Throwable t = unwrap(failure);
    if (t instanceof JobwireException) {
      return (JobwireException) t;
    }
    Status status = null;
    if (t instanceof StatusRuntimeException) {
      status = ((StatusRuntimeException) t).getStatus();
    } else if (t instanceof StatusException) {
      status = ((StatusException) t).getStatus();
    }
    if (status == null) {
      status = Status.fromThrowable(t);
    }
    String message = status.getDescription() != null ? status.getDescription() : String.valueOf(t);
    return of(status.getCode(), message, rpc, t);
  }

  /** The cause a CompletionException or ExecutionException carries. */
  static Throwable unwrap(Throwable failure) {
    Throwable t = failure;
    while ((t instanceof CompletionException || t instanceof ExecutionException)
        && t.getCause() != null) {
      t = t.getCause();
    }
    return t;
  }

  /** The gRPC code of a failure, UNKNOWN when it carries none. */
  static Status.Code code(Throwable failure) {
    Throwable t = unwrap(failure);
    if (t instanceof JobwireException && ((JobwireException) t).code() != null) {
      return ((JobwireException) t).code();
    }
    return Status.fromThrowable(t).getCode();
  }
}
