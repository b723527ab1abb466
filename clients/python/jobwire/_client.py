"""The producer side (and the unary calls the worker makes): add jobs, read them, await results,
cancel them. Sessions, schedules, events and admin calls come from the groups :class:`Client` is made of
(``_sessions``, ``_schedules``, ``_events``, ``_admin``).

One :class:`Client` owns one ``grpc.aio`` channel (or borrows one given to it). Every call takes
``timeout`` (seconds for the whole call, retries included; the client's default when omitted) and
raises :class:`jobwire.Error` subclasses.

Awaiting a result follows the job with ``WatchJob`` (no polling): the stream says at once when
the job ends, and one ``GetJobInfo`` then reads it.

Adds are retried on UNAVAILABLE only because each one carries an idempotency key: the caller's,
or one the client makes per logical add (a UUID), reused by every retry of that add. So a retry
after a lost answer gets the first job's id back (``duplicate=True``) instead of adding twice.
"""

from __future__ import annotations

import asyncio
import enum
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._admin import AdminCalls
from ._calls import UNSET
from ._errors import (
    FailedPrecondition,
    JobCancelled,
    JobDead,
    Unavailable,
    error_for,
    from_rpc_error,
)
from ._events import EventCalls
from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._gen.jobwire.v1 import jobwire_pb2_grpc as pb_grpc
from ._gen.jobwire.v1 import schedules_pb2_grpc as spb_grpc
from ._retry import DEFAULT_RETRY, RetryPolicy
from ._schedules import ScheduleCalls
from ._sessions import SessionCalls, state_text
from ._tls import Tls, channel_security
from ._types import (
    Added,
    Backoff,
    JobInfo,
    JobState,
    NewJob,
    Rejected,
    Seconds,
    encode,
    from_timestamp,
    status_code,
    to_duration,
    to_seconds,
)

DEFAULT_TARGET = "127.0.0.1:50051"
"""Where the client connects when neither ``target`` nor ``JOBWIRE_TARGET`` says otherwise."""

SERVICE_NAME = "jobwire.v1.QueueService"

MAX_BATCH = 1000
"""The most jobs one AddJobs call takes; ``add_many`` splits longer lists."""


class ServingStatus(enum.IntEnum):
    """``grpc.health.v1.HealthCheckResponse.ServingStatus``."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3


def default_target() -> str:
    return os.environ.get("JOBWIRE_TARGET") or DEFAULT_TARGET


def call_metadata(
    metadata: Sequence[tuple[str, str]], token: str | None
) -> Sequence[tuple[str, str]]:
    """``metadata`` plus ``authorization: Bearer <token>`` (``token``, else ``$JOBWIRE_TOKEN``),
    unless ``metadata`` already carries an ``authorization``."""
    token = token if token is not None else os.environ.get("JOBWIRE_TOKEN")
    if not token or any(key.lower() == "authorization" for key, _ in metadata):
        return metadata
    return [*metadata, ("authorization", f"Bearer {token}")]


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]],
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None,
) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


class Client(SessionCalls, ScheduleCalls, EventCalls, AdminCalls):
    """A connection to jobwire for producers (and the worker's acks).

    >>> async with jobwire.Client("127.0.0.1:50051") as client:
    ...     added = await client.add("emails", "welcome", payload={"to": "ada@example.com"})
    ...     info = await client.wait(added.id, timeout=30)

    ``target``: ``host:port`` (default ``$JOBWIRE_TARGET``, else ``127.0.0.1:50051``), or pass an
    existing ``channel`` (the client then does not close it). ``tls``: reach a TLS server
    (:class:`jobwire.Tls`: CA, client certificate, server name); ``credentials`` are the raw
    ``grpc.ChannelCredentials`` alternative.
    ``token``: the bearer token of a server with ``--auth-tokens`` (default ``$JOBWIRE_TOKEN``),
    sent with every call as ``authorization: Bearer <token>``.
    ``timeout``: the default of every call's ``timeout`` (``None``: no deadline). ``retry``: how
    UNAVAILABLE is retried. ``metadata``: sent with every call (e.g. an authorization header).
    ``auto_idempotency_key``: make a key per add when none is given (on by default; off means an
    add without a key is never retried). Such a key is sent marked as generated, so the server
    remembers it only for its retry window (10 min by default), not the day a chosen key gets.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        tls: Tls | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
        timeout: float | None = 10.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        metadata: Sequence[tuple[str, str]] = (),
        token: str | None = None,
        auto_idempotency_key: bool = True,
    ) -> None:
        if channel is not None and (target or tls or credentials or options or interceptors):
            raise ValueError("give either channel or target/tls/credentials/options/interceptors")
        self.target = target or default_target()
        self._owns_channel = channel is None
        if channel is None:
            credentials, options = channel_security(tls, credentials, tuple(options))
            channel = open_channel(self.target, credentials, options, interceptors)
        self.channel: grpc.aio.Channel = channel
        self.stub = pb_grpc.QueueServiceStub(self.channel)
        self.sessions_stub = pb_grpc.SessionServiceStub(self.channel)
        self.schedules_stub = spb_grpc.ScheduleServiceStub(self.channel)
        self.timeout = timeout
        self.retry = retry
        metadata = call_metadata(metadata, token)
        self.metadata = grpc.aio.Metadata(*metadata) if metadata else None
        self.auto_idempotency_key = auto_idempotency_key

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel if this client opened it."""
        if self._owns_channel:
            await self.channel.close()

    def _key(self, given: str | None) -> tuple[str | None, bool]:
        """The idempotency key to send, and whether this client generated it for its retries."""
        if given:
            return given, False
        if not self.auto_idempotency_key:
            return None, False
        return secrets.token_urlsafe(16), True

    # ---- producing ----------------------------------------------------------------------------

    async def add(
        self,
        queue: str,
        type: str,
        payload: object = None,
        *,
        headers: Mapping[str, str] | None = None,
        priority: int = 0,
        delay: Seconds | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        attempt_timeout: Seconds | None = None,
        idempotency_key: str | None = None,
        session_id: str | None = None,
        rate_key: str | None = None,
        concurrency_key: str | None = None,
        timeout: float | None = UNSET,
    ) -> Added:
        """Adds one job to ``queue`` for handlers of ``type``; see :class:`jobwire.NewJob` for
        the fields. Returns its id (``duplicate=True`` when the idempotency key was seen)."""
        job = NewJob(
            queue=queue,
            type=type,
            payload=payload,
            headers=headers,
            priority=priority,
            delay=delay,
            run_at=run_at,
            max_attempts=max_attempts,
            backoff=backoff,
            attempt_timeout=attempt_timeout,
            idempotency_key=idempotency_key,
            session_id=session_id,
            rate_key=rate_key,
            concurrency_key=concurrency_key,
        )
        key, generated = self._key(job.idempotency_key)
        response = await self._unary(
            self.stub.AddJob, job.to_proto(key, generated), timeout, retry=key is not None
        )
        return Added(id=response.job_id, duplicate=response.duplicate)

    async def add_to_session(
        self, session_id: str, type: str, payload: object = None, **options: Any
    ) -> Added:
        """Adds a job to a session (``<queue>/<name>``), in its queue: it starts after the jobs
        added to the session before it. ``options`` are those of :meth:`add`."""
        queue, slash, _ = session_id.partition("/")
        if not slash:
            raise ValueError(f"session_id {session_id!r}: expected <queue>/<name>")
        added: Added = await self.add(queue, type, payload, session_id=session_id, **options)
        return added

    async def add_many(
        self, jobs: Iterable[NewJob], *, timeout: float | None = UNSET
    ) -> list[Added | Rejected]:
        """Adds many jobs, up to 1,000 per AddJobs call. Returns one outcome per job, in order:
        :class:`Added`, or :class:`Rejected` for an entry the server refused (the others are still
        added). ``timeout`` applies to each AddJobs call."""
        requests: list[pb.AddJobRequest] = []
        retryable = True
        for job in jobs:
            key, generated = self._key(job.idempotency_key)
            retryable = retryable and key is not None
            requests.append(job.to_proto(key, generated))
        outcomes: list[Added | Rejected] = []
        for start in range(0, len(requests), MAX_BATCH):
            chunk = requests[start : start + MAX_BATCH]
            response = await self._unary(
                self.stub.AddJobs, pb.AddJobsRequest(jobs=chunk), timeout, retry=retryable
            )
            for i, result in enumerate(response.results):
                if result.code == 0:
                    outcomes.append(Added(id=result.job_id, duplicate=result.duplicate))
                else:
                    error = error_for(status_code(result.code), result.message)
                    outcomes.append(Rejected(index=start + i, error=error))
        return outcomes

    # ---- reading ------------------------------------------------------------------------------

    async def get(self, job_id: str, *, timeout: float | None = UNSET) -> JobInfo:
        """Reads one job (``NotFound`` when unknown or no longer retained)."""
        response = await self._unary(
            self.stub.GetJobInfo, pb.GetJobInfoRequest(job_id=job_id), timeout
        )
        return JobInfo.from_proto(response.job)

    async def wait(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """Waits until the job finishes and returns it: its ``result`` (bytes) and
        ``result_json()``. Raises :class:`jobwire.JobDead` when it went dead,
        :class:`jobwire.JobCancelled` when it was cancelled, ``TimeoutError`` after ``timeout``
        seconds (``None``: as long as it takes). Follows the job with WatchJob, so it returns
        the moment the job ends."""
        async with asyncio.timeout(timeout):
            async for event in self.watch(job_id):
                if event.type.final:
                    break
            info = await self.get(job_id)
        if info.state is JobState.CANCELLED:
            raise JobCancelled(info)
        if info.state is not JobState.COMPLETED:
            raise JobDead(info)
        return info

    async def run(
        self,
        queue: str,
        type: str,
        payload: object = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> JobInfo:
        """:meth:`add` then :meth:`wait`: runs a job and returns it once completed (raising as
        :meth:`wait` does). ``timeout`` bounds the whole; ``options`` are those of :meth:`add`."""
        async with asyncio.timeout(timeout):
            added = await self.add(queue, type, payload, **options)
            return await self.wait(added.id)

    async def cancel(self, job_id: str, *, timeout: float | None = UNSET) -> None:
        """Cancels a job: a waiting or delayed job is removed at once; a running one is revoked
        on its worker (its handler is cancelled) and ends cancelled. A finished job (cancelled
        ones included) raises :class:`jobwire.FailedPrecondition`. Retried on UNAVAILABLE: a
        retry that finds the job cancelled succeeds, since the try whose answer was lost may
        have cancelled it."""
        request = pb.CancelJobRequest(job_id=job_id)
        budget = self._timeout(timeout)
        deadline = None if budget is None else time.monotonic() + budget

        def remaining() -> float | None:
            return None if deadline is None else max(deadline - time.monotonic(), 0.0)

        try:
            await self._unary(
                self.stub.CancelJob,
                request,
                remaining(),
                retry=False,
                failed_precondition=FailedPrecondition,
            )
            return
        except Unavailable:
            pass  # the answer may be what was lost: try again
        try:
            await self._unary(
                self.stub.CancelJob, request, remaining(), failed_precondition=FailedPrecondition
            )
        except FailedPrecondition:
            if (await self.get(job_id, timeout=remaining())).state is not JobState.CANCELLED:
                raise

    async def health(
        self, service: str = SERVICE_NAME, *, timeout: float | None = UNSET
    ) -> ServingStatus:
        """The standard gRPC health check (grpcio-health-checking): a :class:`ServingStatus`
        value. jobwire reports SERVING while its Redis answers. ``service=""`` asks about the
        server as a whole. Not retried: it tells how things are now."""
        stub: Any = health_pb2_grpc.HealthStub(self.channel)
        timeout = self._timeout(timeout)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=timeout,
                metadata=self.metadata,
            )
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from e
        try:
            return ServingStatus(response.status)
        except ValueError:
            return ServingStatus.UNKNOWN

    # ---- acknowledging (used by the worker; for custom workers) -----------------------------

    async def complete(
        self,
        job_id: str,
        lease_token: str,
        result: object = None,
        *,
        session_state: object = None,
        expected_session_version: int | None = None,
        timeout: float | None = UNSET,
    ) -> None:
        """Marks a delivered job done with ``result`` (bytes as is, else JSON). For a job of a
        session, ``session_state`` (bytes as JSON text, else JSON-encoded; ``None``: leave the
        state as it is) is written in the same atomic step; with ``expected_session_version``,
        only if the session is still at that version (else :class:`jobwire.Conflict`, nothing
        written, and the job stays leased)."""
        write = None if session_state is None else state_text(session_state)
        await self._unary(
            self.stub.CompleteJob,
            complete_request(job_id, lease_token, encode(result), write, expected_session_version),
            timeout,
        )

    async def fail(
        self,
        job_id: str,
        lease_token: str,
        error: str,
        *,
        retryable: bool = True,
        retry_after: Seconds | None = None,
        timeout: float | None = UNSET,
    ) -> JobState:
        """Reports a failed attempt; returns the job's new state (RETRYING, WAITING or DEAD)."""
        response = await self._unary(
            self.stub.FailJob,
            fail_request(job_id, lease_token, error, retryable, retry_after),
            timeout,
        )
        return JobState.of(response.state)

    async def return_job(
        self,
        job_id: str,
        lease_token: str,
        *,
        stop_stream: bool = False,
        retry_after: Seconds | None = None,
        hold_key: bool = False,
        timeout: float | None = UNSET,
    ) -> None:
        """Hands a delivered job back unprocessed, to the head of its queue: neither a failed
        attempt nor a lost delivery (for a worker that will not start it). ``stop_stream``: the
        stream that received it gets no more jobs (its worker is stopping). ``retry_after``:
        "rate limited upstream", the job runs again after that long instead (``hold_key``: its
        ``rate_key`` waits as long too)."""
        await self._unary(
            self.stub.ReturnJob,
            return_request(job_id, lease_token, stop_stream, retry_after, hold_key),
            timeout,
        )

    async def report_progress(
        self, job_id: str, lease_token: str, progress: object, *, timeout: float | None = UNSET
    ) -> None:
        """Stores ``progress`` (bytes as is, else JSON; at most 64 KiB) on a held job."""
        await self._unary(
            self.stub.ReportProgress,
            pb.ReportProgressRequest(
                job_id=job_id, lease_token=lease_token, progress=encode(progress)
            ),
            timeout,
        )

    async def extend(
        self, job_id: str, lease_token: str, by: Seconds, *, timeout: float | None = UNSET
    ) -> datetime:
        """Moves the attempt's deadline to now + ``by``; returns the new deadline."""
        response = await self._unary(
            self.stub.ExtendLease,
            extend_request(job_id, lease_token, by),
            timeout,
        )
        return from_timestamp(response.deadline)


def complete_request(
    job_id: str,
    lease_token: str,
    result: bytes,
    session_state: str | None,
    expected_session_version: int | None,
) -> pb.CompleteJobRequest:
    """The CompleteJob request of :meth:`Client.complete` (also sent as a Work ack)."""
    request = pb.CompleteJobRequest(job_id=job_id, lease_token=lease_token, result=result)
    if session_state is not None:
        request.session_state = session_state
        if expected_session_version is not None:
            request.expected_session_version = expected_session_version
    return request


def return_request(
    job_id: str, lease_token: str, stop_stream: bool, retry_after: Seconds | None, hold_key: bool
) -> pb.ReturnJobRequest:
    """A ReturnJobRequest; with ``retry_after``, the "rate limited upstream" answer."""
    request = pb.ReturnJobRequest(
        job_id=job_id, lease_token=lease_token, stop_stream=stop_stream, hold_key=hold_key
    )
    if retry_after is not None:
        request.retry_after.CopyFrom(to_duration(retry_after, "retry_after"))
    return request


def fail_request(
    job_id: str, lease_token: str, error: str, retryable: bool, retry_after: Seconds | None
) -> pb.FailJobRequest:
    """The FailJob request of :meth:`Client.fail` (also sent as a Work ack)."""
    request = pb.FailJobRequest(
        job_id=job_id, lease_token=lease_token, error=error, retryable=retryable
    )
    if retry_after is not None:
        request.retry_after.CopyFrom(to_duration(retry_after, "retry_after"))
    return request


def extend_request(job_id: str, lease_token: str, by: Seconds) -> pb.ExtendLeaseRequest:
    """The ExtendLease request of :meth:`Client.extend` (also sent as a Work ack)."""
    if to_seconds(by) <= 0:
        raise ValueError("extend: by must be positive")
    return pb.ExtendLeaseRequest(
        job_id=job_id, lease_token=lease_token, extend_by=to_duration(by, "by")
    )
