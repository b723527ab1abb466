"""Plain Python values for what travels over the wire, and their conversions to and from the
generated protobuf messages. Nothing here does I/O.

Payload and result convention (both directions): ``bytes``-like values travel as they are,
``None`` as empty bytes, anything else as compact UTF-8 JSON. Reading JSON back, empty bytes read
as ``None``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._gen.jobwire.v1 import schedules_pb2 as spb

Seconds: TypeAlias = float | int | timedelta
"""A duration: seconds as a number, or a ``timedelta``."""


def to_seconds(value: Seconds) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def to_duration(value: Seconds, name: str) -> duration_pb2.Duration:
    seconds = to_seconds(value)
    if seconds < 0:
        raise ValueError(f"{name}: must not be negative")
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A naive datetime is taken as local time, as ``datetime.timestamp`` does."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(value.timestamp() * 1e9))
    return stamp


def from_timestamp(stamp: timestamp_pb2.Timestamp) -> datetime:
    return datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, tz=UTC)


def encode(value: object) -> bytes:
    """Bytes-like as is, ``None`` as empty, anything else as JSON."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def decode_json(data: bytes) -> Any:
    """JSON bytes to a Python value; empty bytes read as ``None``."""
    if not data:
        return None
    return json.loads(data)


class JobState(enum.IntEnum):
    """Where a job is in its life (``jobwire.v1.JobState``)."""

    UNSPECIFIED = 0
    WAITING = 1
    DELAYED = 2
    ACTIVE = 3
    RETRYING = 4
    COMPLETED = 5
    DEAD = 6
    CANCELLED = 7

    @classmethod
    def of(cls, value: int) -> JobState:
        try:
            return cls(value)
        except ValueError:  # a state added to the proto after this client was built
            return cls.UNSPECIFIED

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)


@dataclass(frozen=True)
class Backoff:
    """The wait before a job's retries. Unset fields take the server's defaults: exponential,
    base 1 s, factor 2, max 1 h, jitter 0.5 (0 for fixed)."""

    kind: Literal["exponential", "fixed"] = "exponential"
    base: Seconds | None = None
    factor: float | None = None
    max: Seconds | None = None
    jitter: float | None = None

    @classmethod
    def fixed(cls, every: Seconds, *, jitter: float | None = None) -> Backoff:
        """Always wait ``every``."""
        return cls(kind="fixed", base=every, jitter=jitter)

    @classmethod
    def exponential(
        cls,
        base: Seconds | None = None,
        *,
        factor: float | None = None,
        max: Seconds | None = None,
        jitter: float | None = None,
    ) -> Backoff:
        """Wait ``base * factor ** (attempt - 1)``, capped at ``max``."""
        return cls(kind="exponential", base=base, factor=factor, max=max, jitter=jitter)

    def to_proto(self) -> pb.Backoff:
        message = pb.Backoff(
            kind=pb.BACKOFF_KIND_FIXED if self.kind == "fixed" else pb.BACKOFF_KIND_EXPONENTIAL
        )
        if self.base is not None:
            message.base.CopyFrom(to_duration(self.base, "backoff.base"))
        if self.factor is not None:
            message.factor = self.factor
        if self.max is not None:
            message.max.CopyFrom(to_duration(self.max, "backoff.max"))
        if self.jitter is not None:
            message.jitter = self.jitter
        return message

    @classmethod
    def from_proto(cls, m: pb.Backoff) -> Backoff:
        """A backoff as the server reports it (in a schedule's template or queue settings)."""
        return cls(
            kind="fixed" if m.kind == pb.BACKOFF_KIND_FIXED else "exponential",
            base=m.base.ToTimedelta() if m.HasField("base") else None,
            factor=m.factor if m.HasField("factor") else None,
            max=m.max.ToTimedelta() if m.HasField("max") else None,
            jitter=m.jitter if m.HasField("jitter") else None,
        )


@dataclass(frozen=True)
class NewJob:
    """One job to add (the arguments of :meth:`jobwire.Client.add`, for ``add_many``).

    ``payload``: bytes as is, anything else JSON-encoded. ``delay`` and ``run_at`` are exclusive.
    ``attempt_timeout`` is how long one attempt may run before it is revoked (server default
    30 min). ``idempotency_key``: when unset the client makes one per job, so a retried add never
    adds twice (remembered for the server's retry window; a key given here, for its idempotency
    window). ``session_id``: run the job in that session (``<queue>/<name>``, of this queue), in
    the order of its adds, with the session's state handed to the handler. ``rate_key`` and
    ``concurrency_key``: the keys whose rate limit (the queue's ``key_rate``) and concurrency
    cap (``key_concurrency``) the job counts against.
    """

    queue: str
    type: str
    payload: object = None
    headers: Mapping[str, str] | None = None
    priority: int = 0
    delay: Seconds | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    backoff: Backoff | None = None
    attempt_timeout: Seconds | None = None
    idempotency_key: str | None = None
    session_id: str | None = None
    rate_key: str | None = None
    concurrency_key: str | None = None

    def to_proto(self, idempotency_key: str | None, key_generated: bool) -> pb.AddJobRequest:
        """The request; ``key_generated`` marks a key the client made up for its own retries."""
        if self.delay is not None and self.run_at is not None:
            raise ValueError("delay and run_at are exclusive: give at most one")
        message = pb.AddJobRequest(
            queue=self.queue,
            type=self.type,
            payload=encode(self.payload),
            headers=dict(self.headers or {}),
            priority=self.priority,
            idempotency_key=idempotency_key or "",
            idempotency_key_generated=key_generated and bool(idempotency_key),
            session_id=self.session_id or "",
            rate_key=self.rate_key or "",
            concurrency_key=self.concurrency_key or "",
        )
        if self.delay is not None:
            message.delay.CopyFrom(to_duration(self.delay, "delay"))
        if self.run_at is not None:
            message.run_at.CopyFrom(to_timestamp(self.run_at))
        set_attempt_options(message, self.max_attempts, self.backoff, self.attempt_timeout)
        return message


def set_attempt_options(
    message: pb.AddJobRequest | spb.JobTemplate,
    max_attempts: int | None,
    backoff: Backoff | None,
    attempt_timeout: Seconds | None,
) -> None:
    """Sets the options of a job's attempts that are given (an add's, or a schedule's
    template's: the same three fields)."""
    if max_attempts is not None:
        message.max_attempts = max_attempts
    if backoff is not None:
        message.backoff.CopyFrom(backoff.to_proto())
    if attempt_timeout is not None:
        message.timeout.CopyFrom(to_duration(attempt_timeout, "attempt_timeout"))


@dataclass(frozen=True)
class Added:
    """An accepted add: the job's id, and whether the idempotency key had been seen (then no job
    was added and ``id`` is the first job's)."""

    id: str
    duplicate: bool = False


@dataclass(frozen=True)
class Rejected:
    """An entry of ``add_many`` the server refused (nothing was added for it). ``error`` is the
    exception :meth:`jobwire.Client.add` would have raised for it."""

    index: int
    error: Exception


def _optional_time(message: Any, name: str) -> datetime | None:
    return from_timestamp(getattr(message, name)) if message.HasField(name) else None


@dataclass(frozen=True)
class JobInfo:
    """Everything known about one job (``jobwire.v1.JobInfo``)."""

    id: str
    queue: str
    type: str
    state: JobState
    payload: bytes
    headers: dict[str, str]
    priority: int
    attempts: int
    max_attempts: int
    lost_deliveries: int
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    run_at: datetime | None
    last_error: str
    result: bytes
    idempotency_key: str
    progress: bytes = b""
    """The last progress its worker reported (:meth:`jobwire.Job.progress`)."""
    session_id: str = ""
    """The job's session (empty when none)."""

    def json(self) -> Any:
        """The payload decoded as JSON (``None`` when empty)."""
        return decode_json(self.payload)

    def result_json(self) -> Any:
        """The result decoded as JSON (``None`` when empty)."""
        return decode_json(self.result)

    @classmethod
    def from_proto(cls, m: pb.JobInfo) -> JobInfo:
        return cls(
            id=m.id,
            queue=m.queue,
            type=m.type,
            state=JobState.of(m.state),
            payload=m.payload,
            headers=dict(m.headers),
            priority=m.priority,
            attempts=m.attempts,
            max_attempts=m.max_attempts,
            lost_deliveries=m.lost_deliveries,
            created_at=_optional_time(m, "created_at"),
            started_at=_optional_time(m, "started_at"),
            finished_at=_optional_time(m, "finished_at"),
            run_at=_optional_time(m, "run_at"),
            last_error=m.last_error,
            result=m.result,
            idempotency_key=m.idempotency_key,
            progress=m.progress,
            session_id=m.session_id,
        )


@dataclass(frozen=True)
class QueueStats:
    """The figures of one queue, read in one snapshot."""

    queue: str
    waiting: int
    delayed: int
    active: int
    completed: int
    dead: int
    dead_evicted: int
    paused: bool
    oldest_waiting_age: timedelta = field(default=timedelta(0))
    cancelled: int = 0
    sessions: int = 0
    session_pending: int = 0
    """Jobs waiting inside their session, not yet released to the queue (not in ``waiting``)."""
    held_by_rate: int = 0
    """Ready jobs held back by a rate limit (the queue's ``rate``, or their key's ``key_rate``)."""
    held_by_key_concurrency: int = 0
    """Ready jobs held back because their ``concurrency_key`` is at ``key_concurrency``."""
    waiting_keys: int = 0
    """Keys with jobs waiting: each pair of ``rate_key`` and ``concurrency_key`` jobs carry."""

    @classmethod
    def from_proto(cls, m: pb.QueueStats) -> QueueStats:
        return cls(
            queue=m.queue,
            waiting=m.waiting,
            delayed=m.delayed,
            active=m.active,
            completed=m.completed,
            dead=m.dead,
            dead_evicted=m.dead_evicted,
            paused=m.paused,
            oldest_waiting_age=m.oldest_waiting_age.ToTimedelta(),
            cancelled=m.cancelled,
            sessions=m.sessions,
            session_pending=m.session_pending,
            held_by_rate=m.held_by_rate,
            held_by_key_concurrency=m.held_by_key_concurrency,
            waiting_keys=m.waiting_keys,
        )


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; pass ``next_page_token`` back for the next (empty: the last)."""

    items: list[T]
    next_page_token: str

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class WorkerInfo:
    """One connected worker stream (:meth:`jobwire.Client.list_workers`)."""

    instance: str
    worker_id: str
    labels: dict[str, str]
    queues: list[str]
    max_in_flight: int
    in_flight: int
    connected_at: datetime | None

    @classmethod
    def from_proto(cls, m: pb.WorkerInfo) -> WorkerInfo:
        return cls(
            instance=m.instance,
            worker_id=m.worker_id,
            labels=dict(m.labels),
            queues=list(m.queues),
            max_in_flight=m.max_in_flight,
            in_flight=m.in_flight,
            connected_at=_optional_time(m, "connected_at"),
        )


def status_code(value: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a numeric code (as in ``AddJobsResult.code``)."""
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
