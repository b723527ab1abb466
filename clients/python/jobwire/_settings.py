"""A queue's settings (``SetQueueSettings`` / ``GetQueueSettings``): limits and job defaults
changed at run time, no restart, and stored in Redis with the queue so every instance applies
them (what Redis enforces, from the next call; new jobs' defaults, within a second).

In what a queue holds, ``None`` means "not set: the server's flag applies"; in what is in
effect, ``None`` means "no limit".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from google.protobuf import duration_pb2

from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._types import Backoff, Seconds, to_duration

# The Python names whose proto field is named otherwise (the rest are the same).
_PROTO_NAMES = {"attempt_timeout": "timeout"}
_COUNTS = (
    "max_waiting",
    "max_attempts",
    "completed_max",
    "dead_max",
    "concurrency",
    "key_concurrency",
    "shards",
)
_DURATIONS = ("attempt_timeout", "completed_retention", "dead_retention")
_RATES = ("rate", "key_rate")


@dataclass(frozen=True)
class RateLimit:
    """A rate: at most ``count`` jobs per ``period`` (1 ms to 24 h; default 1 s), in bursts of
    at most ``burst`` (``None``: the jobs of a tenth of the period, at least 1). Enforced inside
    each lease with GCRA."""

    count: int
    period: Seconds = 1.0
    burst: int | None = None

    def to_proto(self, field: str) -> pb.RateLimit:
        message = pb.RateLimit(count=self.count, burst=self.burst or 0)
        message.period.CopyFrom(to_duration(self.period, f"{field}.period"))
        return message

    @classmethod
    def from_proto(cls, m: pb.RateLimit) -> RateLimit:
        period = m.period.ToTimedelta() if m.HasField("period") else timedelta(seconds=1)
        return cls(count=m.count, period=period, burst=m.burst or None)


@dataclass(frozen=True)
class QueueSettings:
    """Settings of one queue; in a :meth:`jobwire.Client.set_queue_settings` call, the fields
    left ``None`` are left as they are."""

    max_waiting: int | None = None
    """The most jobs waiting (ready, delayed, retrying, pending in a session): an add past it
    raises :class:`jobwire.TooLarge`. Falls back to ``--max-waiting``."""
    max_attempts: int | None = None
    """The attempts of a job added without ``max_attempts`` (1 to 1,000)."""
    attempt_timeout: Seconds | None = None
    """The attempt timeout of a job added without one (10 ms to 24 h)."""
    backoff: Backoff | None = None
    """The backoff of a job added without one."""
    completed_retention: Seconds | None = None
    """How long completed and cancelled jobs are kept (0 to 365 days)."""
    completed_max: int | None = None
    """How many completed and cancelled jobs are kept."""
    dead_retention: Seconds | None = None
    """How long dead jobs are kept."""
    dead_max: int | None = None
    """How many dead jobs are kept."""
    concurrency: int | None = None
    """The most jobs of the queue active at once, every instance and worker together."""
    rate: RateLimit | None = None
    """The most jobs of the queue that may start per period, all keys together."""
    key_rate: RateLimit | None = None
    """The rate limit of each ``rate_key``, every key on its own: a key out of budget is
    skipped without holding back other keys."""
    key_concurrency: int | None = None
    """The most jobs of one ``concurrency_key`` active at once, every instance and worker
    together."""
    shards: int | None = None
    """How many shards the queue is spread over (1 to 16), each its own Redis Cluster slot; set
    once, best before the first add (a change raises; FIFO holds within a shard). ``None`` in
    what a queue holds: one; in what is in effect, always the count."""

    def to_proto(self) -> pb.QueueSettings:
        message = pb.QueueSettings()
        for name in _COUNTS:
            value = getattr(self, name)
            if value is not None:
                setattr(message, name, value)
        for name in _DURATIONS:
            value = getattr(self, name)
            if value is not None:
                proto_name = _PROTO_NAMES.get(name, name)
                getattr(message, proto_name).CopyFrom(to_duration(value, name))
        for name in _RATES:
            rate: RateLimit | None = getattr(self, name)
            if rate is not None:
                getattr(message, name).CopyFrom(rate.to_proto(name))
        if self.backoff is not None:
            message.backoff.CopyFrom(self.backoff.to_proto())
        return message

    @classmethod
    def from_proto(cls, m: pb.QueueSettings) -> QueueSettings:
        def duration(present: bool, value: duration_pb2.Duration) -> timedelta | None:
            return value.ToTimedelta() if present else None

        return cls(
            max_waiting=m.max_waiting if m.HasField("max_waiting") else None,
            max_attempts=m.max_attempts if m.HasField("max_attempts") else None,
            attempt_timeout=duration(m.HasField("timeout"), m.timeout),
            backoff=Backoff.from_proto(m.backoff) if m.HasField("backoff") else None,
            completed_retention=duration(m.HasField("completed_retention"), m.completed_retention),
            completed_max=m.completed_max if m.HasField("completed_max") else None,
            dead_retention=duration(m.HasField("dead_retention"), m.dead_retention),
            dead_max=m.dead_max if m.HasField("dead_max") else None,
            concurrency=m.concurrency if m.HasField("concurrency") else None,
            rate=RateLimit.from_proto(m.rate) if m.HasField("rate") else None,
            key_rate=RateLimit.from_proto(m.key_rate) if m.HasField("key_rate") else None,
            key_concurrency=m.key_concurrency if m.HasField("key_concurrency") else None,
            shards=m.shards if m.HasField("shards") else None,
        )


def proto_field_names(names: Iterable[str]) -> list[str]:
    """The proto names of settings to clear, given by their :class:`QueueSettings` names (a name
    that is neither goes as it is: the server refuses it, naming it)."""
    return [_PROTO_NAMES.get(name, name) for name in names]


@dataclass(frozen=True)
class QueueSettingsView:
    """A queue's settings as the server answers them: those it holds (``settings``) and those
    in effect (``effective``: ``settings``, the server's flags for the rest)."""

    settings: QueueSettings
    effective: QueueSettings

    @classmethod
    def from_proto(
        cls, m: pb.GetQueueSettingsResponse | pb.SetQueueSettingsResponse
    ) -> QueueSettingsView:
        return cls(
            settings=QueueSettings.from_proto(m.settings),
            effective=QueueSettings.from_proto(m.effective),
        )
