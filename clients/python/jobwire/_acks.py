"""Where a worker stream's acks go: one unary call each (GetJob streams), or the Work stream's
outbox, which gathers them into few messages and matches each answer to its ack by ``ack_id``.

Both raise what the unary call raises (the :mod:`jobwire._errors` subclass of the status code),
so the worker handles a refused ack the same way whichever the protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Protocol, TypeVar

import grpc

from ._client import Client, complete_request, extend_request, fail_request, return_request
from ._errors import Error, Unavailable, error_for
from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._types import JobState, Seconds, from_timestamp

T = TypeVar("T")

log = logging.getLogger("jobwire.worker")

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class Acker(Protocol):
    """The acks of one worker stream."""

    async def complete(
        self,
        job_id: str,
        lease_token: str,
        result: bytes,
        session_state: str | None = None,
        expected_session_version: int | None = None,
    ) -> None:
        """Completes a job, writing ``session_state`` (JSON text) with it when given, if the
        session is at ``expected_session_version`` (:class:`jobwire.Conflict` if not)."""

    async def fail(
        self,
        job_id: str,
        lease_token: str,
        error: str,
        *,
        retryable: bool = True,
        retry_after: Seconds | None = None,
    ) -> JobState: ...

    async def give_back(self, job_id: str, lease_token: str) -> None:
        """Hands back a job the worker will not start, and asks for no more on this stream."""

    async def postpone(self, job_id: str, lease_token: str, delay: Seconds, hold_key: bool) -> None:
        """ "Rate limited upstream": the job runs again after ``delay``, spending no attempt."""

    async def extend(self, job_id: str, lease_token: str, by: Seconds) -> datetime: ...

    async def progress(self, job_id: str, lease_token: str, progress: bytes) -> None: ...

    def started(self, lease_token: str) -> None:
        """A delivered job was handed to a handler (reported only with prefetch)."""


class UnaryAcker:
    """Acks as unary calls of ``client``, each within ``timeout`` (retries included)."""

    def __init__(self, client: Client, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    async def complete(
        self,
        job_id: str,
        lease_token: str,
        result: bytes,
        session_state: str | None = None,
        expected_session_version: int | None = None,
    ) -> None:
        await self.client.complete(
            job_id,
            lease_token,
            result,
            session_state=None if session_state is None else session_state.encode(),
            expected_session_version=expected_session_version,
            timeout=self.timeout,
        )

    async def fail(
        self,
        job_id: str,
        lease_token: str,
        error: str,
        *,
        retryable: bool = True,
        retry_after: Seconds | None = None,
    ) -> JobState:
        return await self.client.fail(
            job_id,
            lease_token,
            error,
            retryable=retryable,
            retry_after=retry_after,
            timeout=self.timeout,
        )

    async def give_back(self, job_id: str, lease_token: str) -> None:
        # stop_stream: the worker is leaving this stream, so the server sends no more on it.
        await self.client.return_job(job_id, lease_token, stop_stream=True, timeout=self.timeout)

    async def postpone(self, job_id: str, lease_token: str, delay: Seconds, hold_key: bool) -> None:
        await self.client.return_job(
            job_id, lease_token, retry_after=delay, hold_key=hold_key, timeout=self.timeout
        )

    async def extend(self, job_id: str, lease_token: str, by: Seconds) -> datetime:
        return await self.client.extend(job_id, lease_token, by, timeout=self.timeout)

    async def progress(self, job_id: str, lease_token: str, progress: bytes) -> None:
        await self.client.report_progress(job_id, lease_token, progress, timeout=self.timeout)

    def started(self, lease_token: str) -> None:
        pass  # GetJob has no prefetch: every delivered job counts as started


class Outbox:
    """The sending side of a Work stream. Acks and ``started`` marks wait in a list; one sender
    task writes everything waiting as one message, so what becomes ready while a write is
    pending goes out together in the next one, and nothing waits when no write is pending.

    An ack answered UNAVAILABLE is sent again (50 ms doubling to 1 s) for as long as the stream
    lives: dropped, it would leave the job leased to a live stream until its timeout. When the
    stream ends, acks still waiting raise :class:`jobwire.Unavailable`: the server has given
    their jobs back already.
    """

    def __init__(
        self, call: grpc.aio.StreamStreamCall[pb.WorkRequest, pb.WorkResponse], prefetch: bool
    ) -> None:
        self.call = call
        self.report_started = prefetch
        self.messages_sent = 0
        self._acks: list[pb.WorkAck] = []
        self._started: list[str] = []
        self._ready = asyncio.Event()
        self._answers: dict[int, asyncio.Future[pb.WorkAnswer]] = {}
        self._next_ack_id = 1
        self._closed = False
        self._sender = asyncio.create_task(self._send())

    def close(self) -> None:
        """The stream is gone: stop sending, and fail the acks still waiting for an answer."""
        self._closed = True
        self._sender.cancel()
        for answer in self._answers.values():
            if not answer.done():
                answer.set_exception(Unavailable(grpc.StatusCode.UNAVAILABLE, "the stream ended"))
        self._answers.clear()

    def answered(self, answers: pb.WorkAnswers) -> None:
        for answer in answers.answers:
            waiting = self._answers.pop(answer.ack_id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(answer)

    def started(self, lease_token: str) -> None:
        if self.report_started and not self._closed:
            self._started.append(lease_token)
            self._ready.set()

    async def complete(
        self,
        job_id: str,
        lease_token: str,
        result: bytes,
        session_state: str | None = None,
        expected_session_version: int | None = None,
    ) -> None:
        request = complete_request(
            job_id, lease_token, result, session_state, expected_session_version
        )
        await self._until_answered(lambda: self._ack(pb.WorkAck(complete=request)))

    async def fail(
        self,
        job_id: str,
        lease_token: str,
        error: str,
        *,
        retryable: bool = True,
        retry_after: Seconds | None = None,
    ) -> JobState:
        request = fail_request(job_id, lease_token, error, retryable, retry_after)
        answer = await self._until_answered(lambda: self._ack(pb.WorkAck(fail=request)))
        return JobState.of(answer.fail.state)

    async def give_back(self, job_id: str, lease_token: str) -> None:
        request = pb.ReturnJobRequest(job_id=job_id, lease_token=lease_token, stop_stream=True)
        await self._until_answered(lambda: self._ack(pb.WorkAck(give_back=request)))

    async def postpone(self, job_id: str, lease_token: str, delay: Seconds, hold_key: bool) -> None:
        request = return_request(job_id, lease_token, False, delay, hold_key)
        await self._until_answered(lambda: self._ack(pb.WorkAck(give_back=request)))

    async def extend(self, job_id: str, lease_token: str, by: Seconds) -> datetime:
        request = extend_request(job_id, lease_token, by)
        answer = await self._until_answered(lambda: self._ack(pb.WorkAck(extend=request)))
        return from_timestamp(answer.extend.deadline)

    async def progress(self, job_id: str, lease_token: str, progress: bytes) -> None:
        request = pb.ReportProgressRequest(
            job_id=job_id, lease_token=lease_token, progress=progress
        )
        await self._until_answered(lambda: self._ack(pb.WorkAck(progress=request)))

    async def _ack(self, ack: pb.WorkAck) -> pb.WorkAnswer:
        """Queues one ack and waits for its answer; raises the error of a refusal."""
        if self._closed:
            raise Unavailable(grpc.StatusCode.UNAVAILABLE, "the stream ended")
        ack.ack_id = self._next_ack_id
        self._next_ack_id += 1
        answer = asyncio.get_running_loop().create_future()
        self._answers[ack.ack_id] = answer
        self._acks.append(ack)
        self._ready.set()
        result: pb.WorkAnswer = await answer
        if result.code != 0:
            code = _CODES.get(result.code, grpc.StatusCode.UNKNOWN)
            raise error_for(code, result.message)
        return result

    async def _until_answered(self, send: Callable[[], Coroutine[Any, Any, T]]) -> T:
        wait = 0.05
        while True:
            try:
                return await send()
            except Error as e:
                if e.code != grpc.StatusCode.UNAVAILABLE or self._closed:
                    raise
                log.debug("ack answered %s; sending it again in %.2fs", e, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, 1.0)

    async def _send(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            acks, started = self._acks, self._started
            self._acks, self._started = [], []
            message = pb.WorkRequest(acks=pb.WorkAcks(acks=acks, started=started))
            try:
                await self.call.write(message)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return  # the stream is ending; its reader closes this outbox
            self.messages_sent += 1
