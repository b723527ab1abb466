"""Exceptions: the ones the client raises, and the ones a handler raises to steer a failure.

Every RPC failure becomes a subclass of :class:`Error` named after what it means in jobwire (the
proto's "Status codes used throughout"), so callers write ``except jobwire.NotFound`` rather than
comparing gRPC codes. The original ``grpc.aio.AioRpcError`` stays reachable as ``__cause__``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from ._types import JobInfo


class Error(Exception):
    """An RPC to jobwire failed. ``code`` is the gRPC status code, ``details`` the server's
    message (it names the offending field)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}" if details else code.name)
        self.code = code
        self.details = details


class InvalidArgument(Error):
    """A field is malformed or out of range; nothing was written."""


class NotFound(Error):
    """The job id (or queue) is unknown, or the job is no longer retained."""


class FailedPrecondition(Error):
    """FAILED_PRECONDITION: the call does not fit the job's state (cancelling or retrying a job
    that has finished, or is not dead); nothing was changed."""


class LeaseLost(FailedPrecondition):
    """FAILED_PRECONDITION from an ack: the lease token is stale (the job timed out, was
    re-delivered or has finished); the job was not changed."""


class Conflict(Error):
    """A session compare-and-set failed: :meth:`jobwire.Client.update_session` with a stale
    ``expected_version`` (FAILED_PRECONDITION), or a completion's session write against a
    session written since delivery (ABORTED). Nothing was written."""


class AlreadyExists(Error):
    """ALREADY_EXISTS: a session of that id exists already."""


class TooLarge(Error):
    """RESOURCE_EXHAUSTED (over a limit of the server's) or OUT_OF_RANGE (over what its transport
    decodes at all): the request is larger than the server accepts."""


class OutOfRange(TooLarge):
    """OUT_OF_RANGE: a value past what the server keeps or decodes, e.g. a
    :meth:`jobwire.Client.subscribe` cursor older than the queue's oldest kept event."""


class Unavailable(Error):
    """jobwire or its Redis cannot be reached right now (already retried where that is safe)."""


class Unauthenticated(Error):
    """The server needs a token (``--auth-tokens``) and none was sent, or the one sent is not
    known (revoked, or from another token file): give ``token=`` or ``$JOBWIRE_TOKEN``."""


class PermissionDenied(Error):
    """The token's role does not allow this call, or its scope does not cover the queue named;
    the message says which."""


class DeadlineExceeded(Error, TimeoutError):
    """The call's ``timeout`` passed before the server answered."""


_BY_CODE: dict[grpc.StatusCode, type[Error]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: LeaseLost,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TooLarge,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def from_rpc_error(
    error: grpc.aio.AioRpcError, failed_precondition: type[Error] = LeaseLost
) -> Error:
    """The :class:`Error` subclass for a failed call (raise it ``from error``).
    ``failed_precondition``: what FAILED_PRECONDITION means for this call (a stale lease for
    acks, the default; a version conflict for a session compare-and-set...)."""
    code = error.code()
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return failed_precondition(code, error.details() or "")
    return _BY_CODE.get(code, Error)(code, error.details() or "")


def error_for(code: grpc.StatusCode, details: str) -> Error:
    """The :class:`Error` subclass for a status code given as data (AddJobs entries)."""
    return _BY_CODE.get(code, Error)(code, details)


class JobDead(Exception):
    """Raised by :meth:`jobwire.Client.wait` when the job ended without completing: it went to
    the dead-letter set (or reached an end state newer than this client). ``info`` is the job as
    last read, with ``state`` and ``last_error``. :class:`JobCancelled` is the cancelled case."""

    def __init__(self, info: JobInfo) -> None:
        why = info.last_error or "no error recorded"
        super().__init__(f"job {info.id} ended {info.state.name}: {why}")
        self.info = info


class JobCancelled(JobDead):
    """Raised by :meth:`jobwire.Client.wait` when the job was cancelled (:meth:`Client.cancel`,
    or its session was deleted)."""


class Permanent(Exception):
    """Raise from a handler to fail the job without retrying: it goes dead at once.

    >>> raise jobwire.Permanent("unknown customer 42")
    """


class Retry(Exception):
    """Raise from a handler to fail this attempt with exactly this message as the job's error (no
    exception type, no traceback), retried per the job's backoff like any failure.

    >>> raise jobwire.Retry("the mail server said 451")
    """


class RateLimited(Exception):
    """Raise from a handler when what the job calls is rate limited (a 429 with Retry-After): not
    a failure. The job goes back to run again after ``delay`` (seconds or a ``timedelta``, 0 to 7
    days) without spending an attempt; with ``hold_key``, no other job of its ``rate_key`` starts
    before then either (under the queue's ``key_rate``).

    >>> raise jobwire.RateLimited(30, hold_key=True)
    """

    def __init__(self, delay: float | timedelta, *, hold_key: bool = False) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ValueError("RateLimited: delay must not be negative")
        super().__init__(f"rate limited, retry after {seconds:g}s")
        self.delay = seconds
        self.hold_key = hold_key


class RetryAfter(Exception):
    """Raise from a handler to fail this attempt and retry after ``delay`` (seconds or a
    ``timedelta``, 0 to 7 days) instead of the job's backoff. A retry still uses an attempt: when
    none is left the job goes dead."""

    def __init__(self, delay: float | timedelta, message: str = "") -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ValueError("RetryAfter: delay must not be negative")
        super().__init__(message or f"retry after {seconds:g}s")
        self.delay = seconds
