"""Schedules (``ScheduleService``): jobs the servers add on a timetable, a cron expression or a
fixed interval, with no leader among them (each due time adds exactly one job).

A schedule is named within its queue: ``(queue, name)`` is its identity. Retries: reads, pause
and resume (setting a state twice is harmless) are retried on UNAVAILABLE; upserts, deletes and
triggers are not (a repeat would answer differently, and a repeated trigger adds a second job).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ._calls import UNSET, Calls
from ._errors import FailedPrecondition
from ._gen.jobwire.v1 import schedules_pb2 as spb
from ._types import (
    Backoff,
    Seconds,
    decode_json,
    encode,
    set_attempt_options,
    to_duration,
    to_timestamp,
)
from ._types import _optional_time as optional_time


class MissedFires(enum.IntEnum):
    """What due times that passed without a fire do (every instance down, or the schedule
    paused): ``SKIP`` (the default) adds nothing for them, ``RUN_ONCE`` one job for them all,
    ``RUN_ALL`` one job each, the latest ``catch_up_max`` of them."""

    UNSPECIFIED = 0
    SKIP = 1
    RUN_ONCE = 2
    RUN_ALL = 3

    @classmethod
    def _missing_(cls, value: object) -> MissedFires:
        return cls.UNSPECIFIED  # a policy added to the proto after this client was built


class Overlap(enum.IntEnum):
    """What a fire does while the previous fire's job has not finished: ``ALLOW`` (the default)
    adds the job anyway, ``SKIP`` adds nothing (counted in :attr:`Schedule.skipped`)."""

    UNSPECIFIED = 0
    ALLOW = 1
    SKIP = 2

    @classmethod
    def _missing_(cls, value: object) -> Overlap:
        return cls.UNSPECIFIED  # a policy added to the proto after this client was built


@dataclass(frozen=True)
class JobTemplate:
    """The job every fire adds. ``payload``: bytes as they are, anything else JSON-encoded (as
    in :meth:`jobwire.Client.add`); read back, it is the bytes stored."""

    type: str
    payload: object = None
    headers: Mapping[str, str] | None = None
    priority: int = 0
    max_attempts: int | None = None
    backoff: Backoff | None = None
    attempt_timeout: Seconds | None = None
    rate_key: str = ""
    """Every job's rate key (held by the queue's ``key_rate``); empty: none."""
    concurrency_key: str = ""
    """Every job's concurrency key (held by the queue's ``key_concurrency``); empty: none."""

    def json(self) -> Any:
        """The payload decoded as JSON (``None`` when empty)."""
        return decode_json(encode(self.payload))

    def to_proto(self) -> spb.JobTemplate:
        message = spb.JobTemplate(
            type=self.type,
            payload=encode(self.payload),
            headers=dict(self.headers or {}),
            priority=self.priority,
            rate_key=self.rate_key,
            concurrency_key=self.concurrency_key,
        )
        set_attempt_options(message, self.max_attempts, self.backoff, self.attempt_timeout)
        return message

    @classmethod
    def from_proto(cls, m: spb.JobTemplate) -> JobTemplate:
        return cls(
            type=m.type,
            payload=m.payload,
            headers=dict(m.headers),
            priority=m.priority,
            max_attempts=m.max_attempts if m.HasField("max_attempts") else None,
            backoff=Backoff.from_proto(m.backoff) if m.HasField("backoff") else None,
            attempt_timeout=m.timeout.ToTimedelta() if m.HasField("timeout") else None,
            rate_key=m.rate_key,
            concurrency_key=m.concurrency_key,
        )


@dataclass(frozen=True)
class Schedule:
    """A schedule as the server last reported it: its definition and its state."""

    queue: str
    name: str
    template: JobTemplate
    cron: str | None
    """The cron expression, or ``None`` for an interval schedule."""
    every: timedelta | None
    """The interval, or ``None`` for a cron schedule."""
    time_zone: str
    """The IANA zone of ``cron``; empty: UTC."""
    start: datetime | None
    end: datetime | None
    jitter: timedelta | None
    missed_fires: MissedFires
    catch_up_max: int
    overlap: Overlap
    paused: bool
    next_fire_at: datetime | None
    """When it fires next; ``None`` while paused or once no due time is left."""
    last_fire_at: datetime | None
    """The due time of the last job a fire added."""
    last_job_id: str
    """The last job it added (a fire or a trigger); empty before the first."""
    fires: int
    """Jobs it has added, fires and triggers."""
    skipped: int
    """Due times that added nothing under ``Overlap.SKIP``."""
    refused: int
    """Fires refused because the queue held its cap of waiting jobs."""
    revision: int
    """1 when created, one more at each upsert."""
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_proto(cls, m: spb.Schedule) -> Schedule:
        d = m.definition
        timing = d.WhichOneof("timing")
        return cls(
            queue=d.queue,
            name=d.name,
            template=JobTemplate.from_proto(d.template),
            cron=d.cron if timing == "cron" else None,
            every=d.every.ToTimedelta() if timing == "every" else None,
            time_zone=d.time_zone,
            start=optional_time(d, "start"),
            end=optional_time(d, "end"),
            jitter=d.jitter.ToTimedelta() if d.HasField("jitter") else None,
            missed_fires=MissedFires(d.missed_fires),
            catch_up_max=d.catch_up_max,
            overlap=Overlap(d.overlap),
            paused=m.paused,
            next_fire_at=optional_time(m, "next_fire_at"),
            last_fire_at=optional_time(m, "last_fire_at"),
            last_job_id=m.last_job_id,
            fires=m.fires,
            skipped=m.skipped,
            refused=m.refused,
            revision=m.revision,
            created_at=optional_time(m, "created_at"),
            updated_at=optional_time(m, "updated_at"),
        )


class ScheduleCalls(Calls):
    """The ``ScheduleService`` calls of :class:`jobwire.Client`."""

    async def upsert_schedule(
        self,
        queue: str,
        name: str,
        template: JobTemplate,
        *,
        every: Seconds | None = None,
        cron: str | None = None,
        time_zone: str = "",
        start: datetime | None = None,
        end: datetime | None = None,
        jitter: Seconds | None = None,
        missed_fires: MissedFires = MissedFires.UNSPECIFIED,
        catch_up_max: int = 0,
        overlap: Overlap = Overlap.UNSPECIFIED,
        timeout: float | None = UNSET,
    ) -> tuple[Schedule, bool]:
        """Creates the schedule ``name`` of ``queue``, or replaces its definition (its pause and
        how far it has fired are kept). Exactly one of ``every`` (1 s to 366 days) and ``cron``
        (5 fields, or 6 with seconds first, read in ``time_zone``; UTC when empty). Returns the
        schedule as stored and whether it was created. A bad field raises
        :class:`jobwire.InvalidArgument` naming it."""
        if (every is None) == (cron is None):
            raise ValueError("give exactly one of every and cron")
        definition = spb.ScheduleDefinition(
            queue=queue,
            name=name,
            template=template.to_proto(),
            time_zone=time_zone,
            missed_fires=spb.MissedFirePolicy.ValueType(missed_fires),
            catch_up_max=catch_up_max,
            overlap=spb.OverlapPolicy.ValueType(overlap),
        )
        if every is not None:
            definition.every.CopyFrom(to_duration(every, "every"))
        if cron is not None:
            definition.cron = cron
        if start is not None:
            definition.start.CopyFrom(to_timestamp(start))
        if end is not None:
            definition.end.CopyFrom(to_timestamp(end))
        if jitter is not None:
            definition.jitter.CopyFrom(to_duration(jitter, "jitter"))
        response = await self._unary(
            self.schedules_stub.UpsertSchedule,
            spb.UpsertScheduleRequest(schedule=definition),
            timeout,
            retry=False,
            failed_precondition=FailedPrecondition,
        )
        return Schedule.from_proto(response.schedule), response.created

    async def get_schedule(
        self, queue: str, name: str, *, timeout: float | None = UNSET
    ) -> Schedule:
        """One schedule, with its next fire time (:class:`jobwire.NotFound` if unknown)."""
        response = await self._unary(
            self.schedules_stub.GetSchedule,
            spb.GetScheduleRequest(queue=queue, name=name),
            timeout,
            failed_precondition=FailedPrecondition,
        )
        return Schedule.from_proto(response.schedule)

    async def list_schedules(self, queue: str, *, timeout: float | None = UNSET) -> list[Schedule]:
        """Every schedule of ``queue``, sorted by name (read page after page; ``timeout`` is
        per page)."""
        schedules: list[Schedule] = []
        token = ""
        while True:
            page = await self._unary(
                self.schedules_stub.ListSchedules,
                spb.ListSchedulesRequest(queue=queue, page_size=1000, page_token=token),
                timeout,
                failed_precondition=FailedPrecondition,
            )
            schedules += [Schedule.from_proto(s) for s in page.schedules]
            token = page.next_page_token
            if not token:
                return sorted(schedules, key=lambda s: s.name)

    async def delete_schedule(
        self, queue: str, name: str, *, timeout: float | None = UNSET
    ) -> None:
        """Deletes a schedule; the jobs it added stay (:class:`jobwire.NotFound` if unknown)."""
        await self._unary(
            self.schedules_stub.DeleteSchedule,
            spb.DeleteScheduleRequest(queue=queue, name=name),
            timeout,
            retry=False,
            failed_precondition=FailedPrecondition,
        )

    async def pause_schedule(self, queue: str, name: str, *, timeout: float | None = UNSET) -> None:
        """Stops a schedule firing; the due times passing meanwhile are missed fires."""
        await self._unary(
            self.schedules_stub.PauseSchedule,
            spb.PauseScheduleRequest(queue=queue, name=name),
            timeout,
            failed_precondition=FailedPrecondition,
        )

    async def resume_schedule(
        self, queue: str, name: str, *, timeout: float | None = UNSET
    ) -> None:
        """Lets a paused schedule fire again (missed times follow its ``missed_fires``)."""
        await self._unary(
            self.schedules_stub.ResumeSchedule,
            spb.ResumeScheduleRequest(queue=queue, name=name),
            timeout,
            failed_precondition=FailedPrecondition,
        )

    async def trigger_schedule(
        self, queue: str, name: str, *, timeout: float | None = UNSET
    ) -> str:
        """Adds one job from the schedule's template now, whatever its timetable, pause or
        overlap policy; returns the job's id."""
        response = await self._unary(
            self.schedules_stub.TriggerSchedule,
            spb.TriggerScheduleRequest(queue=queue, name=name),
            timeout,
            retry=False,
            failed_precondition=FailedPrecondition,
        )
        return response.job_id
