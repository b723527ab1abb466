"""The worker: one worker stream, handlers run concurrently, every job acknowledged.

How it holds together:

* **Protocol.** By default the stream is a Work call: jobs arrive on it (several per message)
  and acks go out on it (``_acks.Outbox``: those ready together share a message), each
  answered by its ack id; a refused ack raises the same :class:`jobwire.Error` as the unary
  call. ``protocol="unary"`` opens a GetJob stream and acks with one unary call each.
* **Credit.** The stream is opened with ``max_in_flight = concurrency`` (plus ``prefetch`` on
  Work); the server sends a job only while fewer than that are unacknowledged. A semaphore of
  ``concurrency`` slots guards the handlers: prefetched jobs wait for a slot in delivery order,
  and each one handed to a handler is reported ``started``. A server that over-delivered could
  not run more at once (it is logged).
* **Acks.** A handler's return completes the job (its value is the result); an exception fails
  the attempt (retried per the job's backoff), :class:`jobwire.Permanent` fails it for good,
  :class:`jobwire.RetryAfter` retries after a chosen wait. Acks are retried on UNAVAILABLE.
* **Revoke.** The server asks the worker to stop the job (timeout, lease lost, or cancelled):
  the handler's task is cancelled and its outcome never sent. The server keeps the credit used
  until the worker answers, and the only answer the contract has is an ack: so once the task has
  ended the worker sends a FailJob with the revoked token to get the credit back. After a
  timeout or a lost lease the token is stale and the server answers FAILED_PRECONDITION,
  changing nothing; after a cancel the lease still holds, the FailJob is accepted and the job
  ends cancelled.
* **Drain.** The server is going away: no new jobs come on this stream; the worker finishes and
  acks what is running, hands back the prefetched jobs not started, then closes the stream and
  reconnects.
* **Stream lost.** Its unacknowledged jobs went back to the queue at once, so handlers still
  running are cancelled (another worker will run those jobs) and the worker reconnects with
  exponential backoff.
* **Stop** (SIGTERM/SIGINT or :meth:`Worker.stop`): start no more jobs (prefetched ones are
  handed back), let running handlers finish and ack, then close the stream. A second signal
  (or ``stop_grace``) cancels the running handlers and hands their jobs back with ReturnJob
  (not a failed attempt).
* **Late arrivals.** Acks free credit, so the server may send a job while the worker stops (or
  drains). It is not started but handed back with ReturnJob at once, so another worker can take
  it. Handed back, it goes to the head of its queue and may come straight back to this stream
  (the returned credit invites it): then the worker keeps it, unstarted, and it goes back when
  the stream closes, counted as one lost delivery. Returning it again would only loop. The
  give-back also asks the server to send nothing more on the stream (``stop_stream``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import random
import signal
import socket
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import grpc

from ._acks import Acker, Outbox, UnaryAcker
from ._client import Client
from ._errors import Error, LeaseLost, NotFound, Permanent, RetryAfter, TooLarge, from_rpc_error
from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._retry import RetryPolicy
from ._tls import Tls
from ._types import Seconds, decode_json, encode, from_timestamp

log = logging.getLogger("jobwire.worker")

Handler = Callable[["Job"], object]
"""``async def handler(job) -> result`` or a plain function (run in a thread by default)."""

H = TypeVar("H", bound=Handler)

MAX_ERROR_BYTES = 16 * 1024
"""The server keeps at most this much of an error text."""

KEEPALIVE_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)
"""Channel options of a worker's own channel: HTTP/2 pings notice a dead connection (the worker
only reads from its stream, so without them a silently dropped connection would go unnoticed).
Options given to the worker override these by name."""

_FATAL_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED)
"""Stream errors that reconnecting cannot fix (a bad queue name, a server without jobwire)."""


class Job:
    """A delivered job, and the handler's handle on it.

    ``payload`` is the raw bytes; :meth:`json` decodes it. ``attempt`` counts from 1.
    ``deadline`` is when this attempt is revoked unless :meth:`extend` pushes it back.
    ``cancelled`` turns true when the job was taken away (revoked, stream lost, forced stop); a
    thread handler cannot be interrupted and should check it in long loops.
    """

    def __init__(self, message: pb.Job, acker: Acker, loop: asyncio.AbstractEventLoop) -> None:
        self.id: str = message.id
        self.queue: str = message.queue
        self.type: str = message.type
        self.payload: bytes = message.payload
        self.headers: dict[str, str] = dict(message.headers)
        self.priority: int = message.priority
        self.attempt: int = message.attempt
        self.max_attempts: int = message.max_attempts
        self.lost_deliveries: int = message.lost_deliveries
        self.lease_token: str = message.lease_token
        self.deadline: datetime | None = (
            from_timestamp(message.deadline) if message.HasField("deadline") else None
        )
        self.created_at: datetime | None = (
            from_timestamp(message.created_at) if message.HasField("created_at") else None
        )
        self.cancelled = False
        self._acker = acker
        self._loop = loop

    def __repr__(self) -> str:
        return f"<jobwire.Job {self.id} type={self.type!r} attempt={self.attempt}>"

    def json(self) -> Any:
        """The payload decoded as JSON (``None`` when empty)."""
        return decode_json(self.payload)

    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode()

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    async def extend(self, by: Seconds) -> datetime:
        """Pushes this attempt's deadline to now + ``by`` (for long jobs); returns it. Raises
        :class:`jobwire.LeaseLost` when the job was already taken back."""
        self.deadline = await self._acker.extend(self.id, self.lease_token, by)
        return self.deadline

    def extend_blocking(self, by: Seconds) -> datetime:
        """:meth:`extend` for handlers running in a thread."""
        return asyncio.run_coroutine_threadsafe(self.extend(by), self._loop).result()

    async def progress(self, progress: object) -> None:
        """Reports this attempt's progress (bytes as is, else JSON; at most 64 KiB): kept on the
        job (:attr:`jobwire.JobInfo.progress`) and sent to whoever watches it."""
        await self._acker.progress(self.id, self.lease_token, encode(progress))

    def progress_blocking(self, progress: object) -> None:
        """:meth:`progress` for handlers running in a thread."""
        asyncio.run_coroutine_threadsafe(self.progress(progress), self._loop).result()


@dataclass(frozen=True)
class ReconnectPolicy:
    """Waits between reconnect attempts: random in [w/2, w], w = initial * multiplier**n, capped
    at ``max``; back to ``initial`` once a stream has worked."""

    initial: float = 0.2
    max: float = 10.0
    multiplier: float = 2.0

    def wait(self, failures: int) -> float:
        ceiling = min(self.initial * self.multiplier ** max(failures - 1, 0), self.max)
        return random.uniform(ceiling / 2, ceiling)


@dataclass
class _Entry:
    fn: Handler
    threaded: bool


class _Delivery:
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


class _Stream:
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
        self.deliveries: dict[tuple[str, str], _Delivery] = {}
        self.draining = False
        self.closing = False
        self.returned: set[str] = set()
        self.poke = asyncio.Event()
        self.leaving = asyncio.Event()
        """Set on drain and on stop: jobs waiting for a handler slot are handed back."""

    def busy(self) -> bool:
        """Some handler or ack of this stream is still going."""
        return any(d.task is not None and not d.task.done() for d in self.deliveries.values())


class Worker:
    """Runs handlers for the jobs of ``queues`` (served in that order of priority).

    >>> worker = jobwire.Worker("127.0.0.1:50051", queues=["emails"], concurrency=8)
    >>> @worker.handler("welcome")
    ... async def welcome(job: jobwire.Job) -> dict[str, str]:
    ...     return {"sent_to": job.json()["to"]}
    >>> asyncio.run(worker.run())

    ``concurrency``: how many handlers run at once, which is also the stream's credit
    (``max_in_flight``). ``client``: share a :class:`jobwire.Client` (else the worker opens its
    own from ``target``/``tls``/``credentials``/``options``/``token``, the bearer token of a server with
    ``--auth-tokens``, default ``$JOBWIRE_TOKEN``). ``stop_grace``: on stop, how long running
    handlers may take before they are cancelled (``None``: as long as they need).
    ``ack_timeout``: the time budget of one unary ack, retries included.

    ``protocol``: ``"work"`` (default) opens one Work stream that carries the jobs (several per
    message) and the acks (gathered into one message when several are ready together, each
    answered by its ack id), so an ack costs no call of its own; an ack answered UNAVAILABLE is
    sent again for as long as the stream lives. ``"unary"`` opens a GetJob stream and acks with
    one unary call each, for servers without Work. ``prefetch`` (Work only, default 0): jobs
    held beyond ``concurrency``, waiting in delivery order for a free handler, so the next job is
    already here when a handler returns; they are leased from delivery (their deadlines run
    while they wait) and handed back, not run, on stop and drain.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        queues: Sequence[str] | str,
        concurrency: int = 10,
        worker_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        client: Client | None = None,
        tls: Tls | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        token: str | None = None,
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        stop_grace: float | None = None,
        ack_timeout: float = 30.0,
        protocol: Literal["work", "unary"] = "work",
        prefetch: int = 0,
    ) -> None:
        if isinstance(queues, str):
            queues = [queues]
        if not queues:
            raise ValueError("queues: name at least one queue")
        if not 1 <= concurrency <= 1000:
            raise ValueError("concurrency: must be from 1 to 1000")
        if protocol not in ("work", "unary"):
            raise ValueError("protocol: must be 'work' or 'unary'")
        if not 0 <= prefetch <= 1000 or (prefetch and protocol != "work"):
            raise ValueError("prefetch: must be from 0 to 1000, and 0 with protocol='unary'")
        self.protocol = protocol
        self.prefetch = prefetch
        self.queues = list(queues)
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.labels = dict(labels) if labels is not None else {"lang": "python"}
        self._client = client
        self._client_args = (target, tls, credentials, options, token)
        self.reconnect = reconnect
        self.stop_grace = stop_grace
        self.ack_timeout = ack_timeout
        self._ack_retry = RetryPolicy(attempts=12, initial=0.1, max=5.0)
        self._handlers: dict[str, _Entry] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._stopping: asyncio.Event | None = None
        self._forced = False
        self._stop_pending = False
        self._grace_timer: asyncio.TimerHandle | None = None
        self._stream: _Stream | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running = 0
        self.max_running = 0
        """The most handlers seen running at once (for tests and metrics)."""
        self.ack_messages = 0
        """Messages of acks (and ``started`` marks) sent on Work streams that have ended (for
        tests and metrics)."""

    # ---- registration -------------------------------------------------------------------------

    def handler(self, job_type: str, *, threaded: bool | None = None) -> Callable[[H], H]:
        """Registers the decorated function for jobs of ``job_type``.

        An ``async def`` runs on the event loop; a plain function runs in a thread (one of
        ``concurrency`` threads) unless ``threaded=False`` says it is quick enough to run inline.
        """

        def register(fn: H) -> H:
            self.register(job_type, fn, threaded=threaded)
            return fn

        return register

    def register(self, job_type: str, fn: Handler, *, threaded: bool | None = None) -> None:
        """The non-decorator form of :meth:`handler`."""
        if job_type in self._handlers:
            raise ValueError(f"a handler for {job_type!r} is already registered")
        if threaded is None:
            threaded = not inspect.iscoroutinefunction(fn)
        self._handlers[job_type] = _Entry(fn=fn, threaded=threaded)

    @property
    def running(self) -> int:
        """Handlers running right now."""
        return self._running

    # ---- lifecycle ----------------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Asks :meth:`run` to return: start no more jobs, let running handlers finish and ack,
        then close the stream. ``force=True`` cancels the running handlers instead (their jobs
        go back to the queue). Call it from the event loop's thread."""
        if self._stopping is None:
            self._stop_pending = True  # run() has not started yet: it returns at once
            return
        first = not self._stopping.is_set()
        self._stopping.set()
        if force:
            self._force()
        elif first and self.stop_grace is not None:
            self._grace_timer = asyncio.get_running_loop().call_later(self.stop_grace, self._force)
        if self._stream is not None:
            self._stream.leaving.set()
            self._stream.poke.set()

    def _on_signal(self, signum: int) -> None:
        assert self._stopping is not None
        if self._stopping.is_set():
            log.warning("second %s: cancelling running handlers", signal.Signals(signum).name)
            self.stop(force=True)
        else:
            log.info(
                "%s: finishing %d running job(s), then stopping",
                signal.Signals(signum).name,
                self._running,
            )
            self.stop()

    def _force(self) -> None:
        self._forced = True
        stream = self._stream
        if stream is None:
            return
        for d in stream.deliveries.values():
            if d.task is not None and not d.acking and not d.give_back:
                d.give_back = True
                d.job.cancelled = True
                d.task.cancel()
        stream.poke.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Works until :meth:`stop` (or SIGTERM/SIGINT when ``handle_signals``), reconnecting
        with backoff whenever the server goes away. Raises :class:`jobwire.Error` when the server
        refuses the stream for good (INVALID_ARGUMENT: e.g. a bad queue name)."""
        if not self._handlers:
            raise ValueError("register at least one handler before run()")
        if self._stopping is not None:
            raise RuntimeError("this worker is already running")
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_pending:
            self._stopping.set()
        self._stop_pending = False
        self._forced = False
        self._slots = asyncio.Semaphore(self.concurrency)
        owns_client = self._client is None
        if self._client is None:
            target, tls, credentials, options, token = self._client_args
            given = {name for name, _ in options}
            merged = [o for o in KEEPALIVE_OPTIONS if o[0] not in given] + list(options)
            self._client = Client(
                target, tls=tls, credentials=credentials, options=merged, token=token
            )
        signals: list[signal.Signals] = []
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    signals.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass  # not the main thread, or no signals on this platform
        try:
            failures = 0
            while not self._stopping.is_set():
                healthy = await self._session(self._client, loop)
                if self._stopping.is_set():
                    break
                if healthy:
                    failures = 0
                    continue
                failures += 1
                wait = self.reconnect.wait(failures)
                log.warning("stream to %s failed; reconnecting in %.2fs", self._client.target, wait)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=wait)
                except TimeoutError:
                    pass
        finally:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None
            for sig in signals:
                loop.remove_signal_handler(sig)
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
            if owns_client:
                await self._client.close()
                self._client = None
            self._stopping = None
            self._stream = None
        log.info("worker stopped")

    # ---- one stream ---------------------------------------------------------------------------

    async def _session(self, client: Client, loop: asyncio.AbstractEventLoop) -> bool:
        """Holds one worker stream until it ends; True when it worked (the server sent anything:
        a job, a ping, a drain), so the next connect need not back off."""
        assert self._stopping is not None
        outbox: Outbox | None = None
        stream: _Stream
        if self.protocol == "work":
            work = client.stub.Work(metadata=client.metadata)
            opened = pb.WorkOpen(
                worker_id=self.worker_id,
                labels=self.labels,
                queues=self.queues,
                max_in_flight=self.concurrency,
                prefetch=self.prefetch,
            )
            outbox = Outbox(work, prefetch=self.prefetch > 0)
            stream = _Stream(work, outbox)
        else:
            request = pb.GetJobRequest(
                worker_id=self.worker_id,
                labels=self.labels,
                queues=self.queues,
                max_in_flight=self.concurrency,
            )
            stream = _Stream(
                client.stub.GetJob(request, metadata=client.metadata),
                UnaryAcker(client, self.ack_timeout),
            )
        self._stream = stream
        if self._stopping.is_set():
            stream.leaving.set()
        closer = asyncio.create_task(self._close_when_idle(stream))
        healthy = False
        try:
            if outbox is not None:
                await outbox.call.write(pb.WorkRequest(open=opened))
            while True:
                message = await stream.call.read()
                if message is grpc.aio.EOF:
                    log.info("stream ended by the server")
                    break
                assert isinstance(message, pb.WorkResponse | pb.GetJobResponse)
                healthy = True
                kind = message.WhichOneof("message")
                if isinstance(message, pb.WorkResponse) and kind == "jobs":
                    for job in message.jobs.jobs:
                        self._on_job(stream, loop, job)
                elif isinstance(message, pb.GetJobResponse) and kind == "job":
                    self._on_job(stream, loop, message.job)
                elif isinstance(message, pb.WorkResponse) and kind == "answers":
                    assert outbox is not None
                    outbox.answered(message.answers)
                elif kind == "revoke":
                    self._on_revoke(stream, message.revoke)
                elif kind == "drain":
                    log.info(
                        "server is draining: finishing %d job(s), then reconnecting",
                        len(stream.deliveries),
                    )
                    stream.draining = True
                    stream.leaving.set()
                    stream.poke.set()
                # ping: nothing to do; anything newer than this client: ignored.
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not stream.closing or (task is not None and task.cancelling()):
                raise
        except grpc.aio.AioRpcError as e:
            if e.code() in _FATAL_CODES:
                raise from_rpc_error(e) from e
            log.warning("stream failed: %s %s", e.code().name, e.details())
        finally:
            closer.cancel()
            if outbox is not None:
                outbox.close()
                self.ack_messages += outbox.messages_sent
            await self._abandon(stream)
            if self._stream is stream:
                self._stream = None
        return healthy

    async def _close_when_idle(self, stream: _Stream) -> None:
        """Closes the stream once it is draining or the worker stops, and no handler of it is
        still running: what is still held then (jobs not started) goes back to the queue."""
        assert self._stopping is not None
        while True:
            if (stream.draining or self._stopping.is_set()) and not stream.busy():
                # Jobs kept (not started) go back with the stream: the server hands back what a
                # closed stream held. Returning them first would free their credit while the
                # stream is still open, and the server would send more jobs at once.
                stream.closing = True
                stream.call.cancel()
                return
            await stream.poke.wait()
            stream.poke.clear()

    async def _abandon(self, stream: _Stream) -> None:
        """The stream is gone and with it every lease it held: cancel handlers still running
        (an ack in flight is let finish), and wait for them."""
        tasks = []
        for d in stream.deliveries.values():
            if d.task is None:
                continue
            if not d.task.done() and not d.acking:
                d.lost = True
                d.job.cancelled = True
                d.task.cancel()
            tasks.append(d.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        stream.deliveries.clear()

    def _on_job(self, stream: _Stream, loop: asyncio.AbstractEventLoop, message: pb.Job) -> None:
        assert self._stopping is not None
        d = _Delivery(Job(message, stream.acker, loop))
        stream.deliveries[d.key] = d
        if self._stopping.is_set() or stream.draining:
            if d.job.id in stream.returned:
                log.debug(
                    "keeping %s (it came back); it is returned when the stream closes", d.job.id
                )
            else:
                stream.returned.add(d.job.id)
                d.task = asyncio.create_task(self._give_back(stream, d))
            return
        held = sum(1 for x in stream.deliveries.values() if x.task is not None and not x.acking)
        if held >= self.concurrency + self.prefetch:
            log.warning(
                "the server sent %s while %d jobs are held (max_in_flight=%d, prefetch=%d)",
                d.job.id,
                held,
                self.concurrency,
                self.prefetch,
            )
        d.task = asyncio.create_task(self._execute(stream, d), name=f"jobwire:{d.job.id}")

    def _on_revoke(self, stream: _Stream, message: pb.Revoke) -> None:
        d = stream.deliveries.get((message.job_id, message.lease_token))
        try:
            reason = pb.RevokeReason.Name(message.reason)
        except ValueError:  # a reason added to the proto after this client was built
            reason = f"reason {message.reason}"
        if d is None:
            log.debug("revoke of %s, which is no longer held", message.job_id)
            return
        log.info("job %s revoked (%s): cancelling its handler", message.job_id, reason)
        d.revoked = True
        d.revoke_reason = reason
        d.job.cancelled = True
        if d.task is None:
            # Never started (the worker is stopping): answer at once so the credit comes back.
            d.task = asyncio.create_task(self._answer_revoke(stream, d))
        elif not d.task.done() and not d.acking:
            d.task.cancel()
        # An ack already in flight answers the revoke by itself.

    # ---- one job ------------------------------------------------------------------------------

    async def _execute(self, stream: _Stream, d: _Delivery) -> None:
        acker = stream.acker
        entry = self._handlers.get(d.job.type)
        retryable, retry_after, error = True, None, ""
        result: bytes | None = None
        interrupted = False
        assert self._slots is not None
        try:
            try:
                if entry is None:
                    raise _NoHandler(
                        f"no handler for job type {d.job.type!r} on worker {self.worker_id}"
                    )
                if not await self._take_slot(stream):
                    d.acking = True
                    stream.returned.add(d.job.id)
                    await self._give_back(stream, d)
                    return
                acker.started(d.job.lease_token)
                try:
                    self._running += 1
                    self.max_running = max(self.max_running, self._running)
                    value = await self._invoke(entry, d.job)
                finally:
                    self._running -= 1
                    self._slots.release()
                result = encode(value)
            except asyncio.CancelledError:
                if not (d.revoked or d.lost or d.give_back):
                    raise  # the worker itself is being cancelled
                interrupted = True
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            except Permanent as e:
                retryable, error = False, _describe(e, with_traceback=False)
            except RetryAfter as e:
                retry_after, error = e.delay, _describe(e, with_traceback=False)
            except _NoHandler as e:
                error = str(e)
            except Exception as e:  # noqa: BLE001 - any error of a handler fails its attempt
                error = _describe(e, with_traceback=True)
            if d.lost:
                return  # the lease went back with the stream: nothing to answer
            if d.revoked:
                d.acking = True
                await self._answer_revoke(stream, d)
                return
            if interrupted:  # a forced stop: unprocessed, back to the head of the queue
                d.acking = True
                stream.returned.add(d.job.id)
                await self._give_back(stream, d)
                return
            d.acking = True
            if result is not None:
                try:
                    await acker.complete(d.job.id, d.job.lease_token, result)
                    log.debug("completed %s", d.job.id)
                    return
                except TooLarge as e:
                    retryable, error = False, f"the result could not be stored: {e.details}"
            state = await acker.fail(
                d.job.id,
                d.job.lease_token,
                _cut(error),
                retryable=retryable,
                retry_after=retry_after,
            )
            log.info("job %s failed (attempt %d): now %s", d.job.id, d.job.attempt, state.name)
        except LeaseLost:
            log.warning("job %s: lease lost before the ack (timed out or taken back)", d.job.id)
        except NotFound:
            log.warning("job %s: no longer exists", d.job.id)
        except Error as e:
            log.error("job %s: ack failed: %s", d.job.id, e)
        finally:
            stream.deliveries.pop(d.key, None)
            stream.poke.set()

    async def _take_slot(self, stream: _Stream) -> bool:
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

    async def _invoke(self, entry: _Entry, job: Job) -> object:
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

    async def _give_back(self, stream: _Stream, d: _Delivery) -> None:
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

    async def _answer_revoke(self, stream: _Stream, d: _Delivery) -> None:
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
