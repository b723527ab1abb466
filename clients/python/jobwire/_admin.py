"""The calls operators' tools make: queue figures, listings, pause/resume, dead-letter retries,
deletes, queue settings. Reads, pause/resume and settings (setting a value twice is harmless)
are retried on UNAVAILABLE; retries of dead jobs, deletes and purges are not (a repeat would
answer differently).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._calls import UNSET, Calls
from ._errors import FailedPrecondition
from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._settings import QueueSettings, QueueSettingsView, proto_field_names
from ._types import JobInfo, JobState, Page, QueueStats, WorkerInfo


class AdminCalls(Calls):
    """The admin calls of :class:`jobwire.Client`."""

    async def stats(self, queue: str, *, timeout: float | None = UNSET) -> QueueStats:
        """Counts of one queue (an unknown queue reads as zeros)."""
        response = await self._unary(self.stub.Stats, pb.StatsRequest(queue=queue), timeout)
        return QueueStats.from_proto(response.stats)

    async def list_queues(self, *, timeout: float | None = UNSET) -> list[QueueStats]:
        """Every queue that ever had a job, sorted by name."""
        response = await self._unary(self.stub.ListQueues, pb.ListQueuesRequest(), timeout)
        return [QueueStats.from_proto(q) for q in response.queues]

    async def list_jobs(
        self,
        queue: str,
        state: JobState,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = UNSET,
    ) -> Page[JobInfo]:
        """One page of a queue's jobs in ``state``: WAITING (in dispatch order), DELAYED (with
        RETRYING, by due time), ACTIVE, or COMPLETED, DEAD, CANCELLED (newest first).
        ``page_size`` 1 to 1,000 (0: 100); follow ``next_page_token`` until it is empty."""
        response = await self._unary(
            self.stub.ListJobs,
            pb.ListJobsRequest(
                queue=queue,
                state=pb.JobState.ValueType(state),
                page_size=page_size,
                page_token=page_token,
            ),
            timeout,
        )
        return Page(
            items=[JobInfo.from_proto(j) for j in response.jobs],
            next_page_token=response.next_page_token,
        )

    async def pause_queue(self, queue: str, *, timeout: float | None = UNSET) -> None:
        """Stops delivering the queue's jobs (adds still succeed)."""
        await self._unary(self.stub.PauseQueue, pb.PauseQueueRequest(queue=queue), timeout)

    async def resume_queue(self, queue: str, *, timeout: float | None = UNSET) -> None:
        """Delivers a paused queue's jobs again."""
        await self._unary(self.stub.ResumeQueue, pb.ResumeQueueRequest(queue=queue), timeout)

    async def retry_job(self, job_id: str, *, timeout: float | None = UNSET) -> None:
        """Moves a dead job back to waiting, its attempts and lost deliveries reset. A job that
        is not dead: :class:`jobwire.FailedPrecondition`."""
        await self._unary(
            self.stub.RetryJob,
            pb.RetryJobRequest(job_id=job_id),
            timeout,
            retry=False,
            failed_precondition=FailedPrecondition,
        )

    async def retry_dead_jobs(
        self, queue: str, limit: int, *, timeout: float | None = UNSET
    ) -> int:
        """Moves up to ``limit`` (1 to 100,000) of the queue's oldest dead jobs back to
        waiting; returns how many."""
        response = await self._unary(
            self.stub.RetryDeadJobs,
            pb.RetryDeadJobsRequest(queue=queue, limit=limit),
            timeout,
            retry=False,
        )
        return response.retried

    async def delete_job(self, job_id: str, *, timeout: float | None = UNSET) -> None:
        """Deletes a job that is not active (an active one: cancel it first;
        :class:`jobwire.FailedPrecondition`)."""
        await self._unary(
            self.stub.DeleteJob,
            pb.DeleteJobRequest(job_id=job_id),
            timeout,
            retry=False,
            failed_precondition=FailedPrecondition,
        )

    async def purge_queue(
        self, queue: str, states: Iterable[JobState], *, timeout: float | None = UNSET
    ) -> int:
        """Deletes every job of ``queue`` in ``states`` (not ACTIVE); returns how many."""
        response = await self._unary(
            self.stub.PurgeQueue,
            pb.PurgeQueueRequest(queue=queue, states=[pb.JobState.ValueType(s) for s in states]),
            timeout,
            retry=False,
        )
        return response.deleted

    async def list_workers(
        self, queue: str = "", *, timeout: float | None = UNSET
    ) -> list[WorkerInfo]:
        """The worker streams connected to any instance (of ``queue`` only, when given)."""
        response = await self._unary(
            self.stub.ListWorkers, pb.ListWorkersRequest(queue=queue), timeout
        )
        return [WorkerInfo.from_proto(w) for w in response.workers]

    async def get_queue_settings(
        self, queue: str, *, timeout: float | None = UNSET
    ) -> QueueSettingsView:
        """The settings ``queue`` holds, and those in effect (the server's flags for the rest)."""
        response = await self._unary(
            self.stub.GetQueueSettings, pb.GetQueueSettingsRequest(queue=queue), timeout
        )
        return QueueSettingsView.from_proto(response)

    async def set_queue_settings(
        self,
        queue: str,
        settings: QueueSettings | None = None,
        *,
        clear: Iterable[str] = (),
        timeout: float | None = UNSET,
    ) -> QueueSettingsView:
        """Sets the fields of ``settings`` that are not ``None`` and clears those named in
        ``clear`` (:class:`QueueSettings` field names: their flag applies again), at run time;
        returns the settings as they now are. An invalid value raises
        :class:`jobwire.InvalidArgument` naming the field."""
        request = pb.SetQueueSettingsRequest(
            queue=queue,
            settings=(settings or QueueSettings()).to_proto(),
            clear=proto_field_names(clear),
        )
        response = await self._unary(self.stub.SetQueueSettings, request, timeout)
        return QueueSettingsView.from_proto(response)
