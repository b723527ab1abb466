"""Running one delivered job: a handler slot, the handler, and the one answer its outcome calls
for (complete, with the session write and its conflict reruns; fail; give back; or the answer
that only gives a revoked job's credit back). :class:`JobRunner` is the part of
:class:`jobwire.Worker` that does it; the stream's state it works on is :class:`Stream`'s.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from ._acks import Acker
from ._client import Client
from ._errors import (
    Conflict,
    Error,
    LeaseLost,
    NotFound,
    Permanent,
    RateLimited,
    Retry,
    RetryAfter,
    TooLarge,
)
from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._job import MAX_SESSION_RERUNS, Job
from ._sessions import SessionSnapshot
from ._types import encode

log = logging.getLogger("jobwire.worker")

Handler = Callable[[Job], object]
"""``async def handler(job) -> result`` or a plain function (run in a thread by default)."""

MAX_ERROR_BYTES = 16 * 1024
"""The server keeps at most this much of an error text."""


@dataclass
class Entry:
    fn: Handler
    threaded: bool


class Delivery:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.task: asyncio.Task[None] | None = None
        self.revoked = False
        self.revoke_reason = ""
        self.lost = False
        self.give_back = False
        self.acking = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.job.id, self.job.lease_token)


class Stream:
    """One worker stream (a Work call, or a GetJob call with unary acks) and the deliveries it
    holds."""

    def __init__(
        self,
        call: (
            grpc.aio.StreamStreamCall[pb.WorkRequest, pb.WorkResponse]
            | grpc.aio.UnaryStreamCall[pb.GetJobRequest, pb.GetJobResponse]
        ),
        acker: Acker,
    ) -> None:
        self.call = call
        self.acker = acker
        self.deliveries: dict[tuple[str, str], Delivery] = {}
        self.draining = False
        self.closing = False
        self.returned: set[str] = set()
        self.poke = asyncio.Event()
        self.leaving = asyncio.Event()
        """Set on drain and on stop: jobs waiting for a handler slot are handed back."""

    def busy(self) -> bool:
        """Some handler or ack of this stream is still going."""
        return any(d.task is not None and not d.task.done() for d in self.deliveries.values())


class JobRunner:
    """Runs the jobs of a worker's streams; :class:`jobwire.Worker` sets up the state below."""

    worker_id: str
    concurrency: int
    ack_timeout: float
    max_running: int
    _handlers: dict[str, Entry]
    _slots: asyncio.Semaphore | None
    _client: Client | None
    _executor: ThreadPoolExecutor | None
    _running: int

    async def _execute(self, stream: Stream, d: Delivery) -> None:
        acker = stream.acker
        entry = self._handlers.get(d.job.type)
        reruns = 0
        try:
            while True:
                outcome = await self._run_handler(stream, d, entry, first=reruns == 0)
                if outcome is None:
                    return  # handed back before it started
                if d.lost:
                    return  # the lease went back with the stream: nothing to answer
                if d.revoked:
                    d.acking = True
                    await self._answer_revoke(stream, d)
                    return
                if outcome.interrupted:  # a forced stop: unprocessed, back to the queue's head
                    d.acking = True
                    stream.returned.add(d.job.id)
                    await self._give_back(stream, d)
                    return
                d.acking = True
                if outcome.postpone is not None:
                    delay, hold_key = outcome.postpone
                    await acker.postpone(d.job.id, d.job.lease_token, delay, hold_key)
                    log.info("job %s: rate limited, back in %gs", d.job.id, delay)
                    return
                if outcome.result is not None:
                    write, version = d.job.take_session_write()
                    try:
                        await acker.complete(
                            d.job.id, d.job.lease_token, outcome.result, write, version
                        )
                        log.debug("completed %s", d.job.id)
                        return
                    except TooLarge as e:
                        outcome.fail(f"the result could not be stored: {e.details}")
                    except Conflict as e:
                        if write is None:
                            raise
                        if reruns == MAX_SESSION_RERUNS:
                            outcome.fail(f"the session kept changing while the job ran: {e}")
                        elif await self._reread_session(d, outcome):
                            reruns += 1
                            d.acking = False
                            continue  # the handler again, on the fresh state
                state = await acker.fail(
                    d.job.id,
                    d.job.lease_token,
                    _cut(outcome.error),
                    retryable=outcome.retryable,
                    retry_after=outcome.retry_after,
                )
                log.info("job %s failed (attempt %d): now %s", d.job.id, d.job.attempt, state.name)
                return
        except LeaseLost:
            log.warning("job %s: lease lost before the ack (timed out or taken back)", d.job.id)
        except NotFound:
            log.warning("job %s: no longer exists", d.job.id)
        except Error as e:
            log.error("job %s: ack failed: %s", d.job.id, e)
        finally:
            stream.deliveries.pop(d.key, None)
            stream.poke.set()

    async def _run_handler(
        self, stream: Stream, d: Delivery, entry: Entry | None, *, first: bool
    ) -> _Outcome | None:
        """Runs the handler once in a slot and says how it went; ``None`` when the job was
        handed back instead (the worker left the stream before a slot was free). ``first``:
        the attempt's first run (later ones are reruns on a fresh session state, which take a
        slot whatever happens, since the attempt is under way)."""
        assert self._slots is not None
        outcome = _Outcome()
        try:
            if entry is None:
                raise _NoHandler(
                    f"no handler for job type {d.job.type!r} on worker {self.worker_id}"
                )
            if not first:
                await self._slots.acquire()
            elif not await self._take_slot(stream):
                d.acking = True
                stream.returned.add(d.job.id)
                await self._give_back(stream, d)
                return None
            if first:
                stream.acker.started(d.job.lease_token)
            try:
                self._running += 1
                self.max_running = max(self.max_running, self._running)
                value = await self._invoke(entry, d.job)
            finally:
                self._running -= 1
                self._slots.release()
            outcome.result = encode(value)
        except asyncio.CancelledError:
            if not (d.revoked or d.lost or d.give_back):
                raise  # the worker itself is being cancelled
            outcome.interrupted = True
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Permanent as e:
            outcome.fail(_describe(e, with_traceback=False), retryable=False)
        except Retry as e:
            outcome.fail(_describe(e, with_traceback=False))
        except RetryAfter as e:
            outcome.fail(_describe(e, with_traceback=False), retry_after=e.delay)
        except RateLimited as e:
            outcome.postpone = (e.delay, e.hold_key)
        except _NoHandler as e:
            outcome.fail(str(e))
        except Exception as e:  # noqa: BLE001 - any error of a handler fails its attempt
            outcome.fail(_describe(e, with_traceback=True))
        return outcome

    async def _reread_session(self, d: Delivery, outcome: _Outcome) -> bool:
        """After a conflicting session write: reads the session again into ``d.job.session``
        (True), or fails ``outcome`` with why it could not (False)."""
        assert self._client is not None and d.job.session is not None
        try:
            fresh = await self._client.get_session(d.job.session.id, timeout=self.ack_timeout)
        except Error as e:
            outcome.fail(f"the session changed while the job ran, and reading it failed: {e}")
            return False
        log.debug(
            "job %s: session %s changed under the completion (now version %d): running the "
            "handler again on it",
            d.job.id,
            fresh.id,
            fresh.version,
        )
        d.job.session = SessionSnapshot(id=fresh.id, state=fresh.state, version=fresh.version)
        return True

    async def _take_slot(self, stream: Stream) -> bool:
        """Waits for a free handler slot; False (holding none) when the worker leaves the stream
        (stop or drain) first: a prefetched job not started yet is handed back, not run."""
        assert self._slots is not None
        if not self._slots.locked():
            await self._slots.acquire()  # free: taken at once, even while leaving
            return True
        if stream.leaving.is_set():
            return False
        slot = asyncio.ensure_future(self._slots.acquire())
        leaving = asyncio.ensure_future(stream.leaving.wait())
        try:
            await asyncio.wait((slot, leaving), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled (revoke, lost stream, forced stop): hold no slot
            if slot.done() and not slot.cancelled():
                self._slots.release()
            raise
        finally:
            leaving.cancel()
            slot.cancel()
        acquired = slot.done() and not slot.cancelled()
        if acquired and stream.leaving.is_set():
            self._slots.release()  # both at once: leaving wins
            return False
        return acquired

    async def _invoke(self, entry: Entry, job: Job) -> object:
        if entry.threaded:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="jobwire-handler"
                )
            context = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            value = await loop.run_in_executor(self._executor, context.run, entry.fn, job)
        else:
            value = entry.fn(job)
        if inspect.isawaitable(value):
            value = await value
        return value

    async def _give_back(self, stream: Stream, d: Delivery) -> None:
        """Hands a job back unprocessed (ReturnJob): not a failed attempt, not a lost delivery."""
        try:
            await stream.acker.give_back(d.job.id, d.job.lease_token)
            log.debug("returned %s unprocessed", d.job.id)
        except (LeaseLost, NotFound):
            pass  # revoked or gone meanwhile: nothing left to return
        except Error as e:
            log.warning("job %s: could not hand it back: %s", d.job.id, e)
        finally:
            stream.deliveries.pop(d.key, None)
            stream.poke.set()

    async def _answer_revoke(self, stream: Stream, d: Delivery) -> None:
        """Acks a revoked delivery, which frees the stream's credit for the job: with a stale
        token (timeout, lease lost) the server answers FAILED_PRECONDITION and changes nothing;
        for a cancelled job it accepts the failure and the job ends cancelled."""
        try:
            await stream.acker.fail(d.job.id, d.job.lease_token, f"revoked ({d.revoke_reason})")
            if d.revoke_reason != "REVOKE_REASON_CANCELLED":
                log.warning("job %s: an ack of a revoked lease was accepted", d.job.id)
        except (LeaseLost, NotFound):
            pass
        except Error as e:
            log.warning("job %s: could not answer the revoke: %s", d.job.id, e)
        finally:
            stream.deliveries.pop(d.key, None)
            stream.poke.set()


class _Outcome:
    """How one run of a handler went: a result (encoded), or a failure to report, or
    interrupted (revoked, stream lost, forced stop)."""

    def __init__(self) -> None:
        self.result: bytes | None = None
        self.error = ""
        self.retryable = True
        self.retry_after: float | None = None
        self.interrupted = False
        # "Rate limited upstream": (retry after seconds, hold the rate key).
        self.postpone: tuple[float, bool] | None = None

    def fail(self, error: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        self.result = None
        self.error, self.retryable, self.retry_after = error, retryable, retry_after


class _NoHandler(Exception):
    """A job of a type this worker has no handler for: the attempt fails (and retries, maybe on
    a worker that has one)."""


def _describe(error: BaseException, *, with_traceback: bool) -> str:
    summary = f"{type(error).__name__}: {error}"
    if not with_traceback:
        return str(error) or summary
    return summary + "\n\n" + "".join(traceback.format_exception(error))


def _cut(text: str) -> str:
    data = text.encode()
    if len(data) <= MAX_ERROR_BYTES:
        return text
    return data[:MAX_ERROR_BYTES].decode(errors="ignore")
