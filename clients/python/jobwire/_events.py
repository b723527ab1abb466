"""Following jobs: one job's transitions (``WatchJob``), a queue's events (``Subscribe``).

Both are async iterators that outlive a broken stream. When the server goes away (drain,
restart, UNAVAILABLE) or ends the stream early, the call is opened again with jittered backoff:
``watch`` from the job's current state (each WatchJob starts with it, so a final state reached
meanwhile is not missed), ``subscribe`` from the cursor of the last event it yielded (the
server resumes right after it, no gap and no duplicate). Other errors end the iteration by
raising them (:class:`jobwire.NotFound` for an unknown job, :class:`jobwire.OutOfRange` for a
cursor older than the queue's oldest kept event).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc

from ._calls import Calls
from ._errors import from_rpc_error
from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._types import decode_json, from_timestamp

log = logging.getLogger("jobwire.events")

REOPEN_FIRST = 0.1
REOPEN_MAX = 2.0
"""Waits between reopening a broken stream: ``REOPEN_FIRST`` doubling up to ``REOPEN_MAX``,
jittered, back to the first once an event came through."""


class EventType(enum.IntEnum):
    """What happened to a job (``jobwire.v1.JobEventType``)."""

    UNSPECIFIED = 0
    WAITING = 1
    DELAYED = 2
    ACTIVE = 3
    PROGRESS = 4
    RETRYING = 5
    COMPLETED = 6
    DEAD = 7
    CANCELLED = 8

    @classmethod
    def of(cls, value: int) -> EventType:
        try:
            return cls(value)
        except ValueError:  # a type added to the proto after this client was built
            return cls.UNSPECIFIED

    @property
    def final(self) -> bool:
        """The job will not change again."""
        return self in (EventType.COMPLETED, EventType.DEAD, EventType.CANCELLED)


@dataclass(frozen=True)
class JobEvent:
    """One transition of one job."""

    cursor: str
    """Opaque resume point: ``subscribe(queue, cursor=...)`` continues right after this event."""
    job_id: str
    type: EventType
    attempt: int
    error: str
    """For RETRYING and DEAD: why."""
    next_run_at: datetime | None
    """For DELAYED and RETRYING: when the job becomes ready."""
    progress: bytes
    """For PROGRESS."""
    result: bytes
    """For COMPLETED, in ``watch`` (while the job is retained)."""
    time: datetime | None

    def result_json(self) -> Any:
        """The result decoded as JSON (``None`` when empty)."""
        return decode_json(self.result)

    def progress_json(self) -> Any:
        """The progress decoded as JSON (``None`` when empty)."""
        return decode_json(self.progress)

    @classmethod
    def from_proto(cls, m: pb.JobEvent) -> JobEvent:
        return cls(
            cursor=m.cursor,
            job_id=m.job_id,
            type=EventType.of(m.type),
            attempt=m.attempt,
            error=m.error,
            next_run_at=from_timestamp(m.next_run_at) if m.HasField("next_run_at") else None,
            progress=m.progress,
            result=m.result,
            time=from_timestamp(m.time) if m.HasField("time") else None,
        )


def _reopen_wait(failures: int) -> float:
    ceiling = min(REOPEN_FIRST * 2 ** max(failures - 1, 0), REOPEN_MAX)
    return random.uniform(ceiling / 2, ceiling)


class EventCalls(Calls):
    """The following calls of :class:`jobwire.Client`."""

    def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The transitions of one job: first an event for its current state (with the result
        when it has completed), then one per transition, ending after a final one (COMPLETED,
        DEAD, CANCELLED).

        >>> async for event in client.watch(job_id):
        ...     print(event.type.name, event.attempt)
        """
        request = pb.WatchJobRequest(job_id=job_id)
        return self._follow(
            lambda _: self.stub.WatchJob(request, metadata=self.metadata), ends=True
        )

    def subscribe(self, queue: str, cursor: str = "") -> AsyncIterator[JobEvent]:
        """Every event of ``queue``, live, for as long as you iterate: from the next one, or
        right after ``cursor`` (an event's :attr:`JobEvent.cursor`; save it to resume later).

        >>> async for event in client.subscribe("emails", cursor=saved):
        ...     handle(event)
        ...     saved = event.cursor
        """

        def open_from(last: str) -> grpc.aio.UnaryStreamCall[Any, Any]:
            request = pb.SubscribeRequest(queue=queue, cursor=last or cursor)
            return self.stub.Subscribe(request, metadata=self.metadata)

        return self._follow(open_from, ends=False)

    async def _follow(
        self,
        open_from: Callable[[str], grpc.aio.UnaryStreamCall[Any, Any]],
        *,
        ends: bool,
    ) -> AsyncIterator[JobEvent]:
        """Yields the events of a stream, opened again (``open_from(last cursor)``) when it
        breaks; ``ends``: a final event ends the iteration (WatchJob)."""
        last = ""
        failures = 0
        while True:
            call = open_from(last)
            try:
                async for response in call:
                    event = JobEvent.from_proto(response.event)
                    failures = 0
                    last = event.cursor or last
                    yield event
                    if ends and event.type.final:
                        return
                why = "the stream ended"
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise from_rpc_error(e) from e
                why = f"UNAVAILABLE: {e.details()}"
            finally:
                call.cancel()
            failures += 1
            wait = _reopen_wait(failures)
            log.debug("%s; opening it again in %.2fs", why, wait)
            await asyncio.sleep(wait)
