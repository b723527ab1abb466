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
* **Session writes.** A handler of a session job may ask for a new session state
  (:meth:`jobwire.Job.set_session_state`), sent with the completion and the version the job was
  delivered with. If the session was written meanwhile the server answers ABORTED, writes
  nothing and keeps the lease: the worker reads the session again and runs the handler again on
  it within the same attempt (up to ``MAX_SESSION_RERUNS`` times, then the attempt fails). A
  rerun takes a handler slot like any run, so ``concurrency`` still bounds them.
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
import inspect
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import grpc

from ._acks import Outbox, UnaryAcker
from ._client import Client
from ._errors import from_rpc_error
from ._execution import Delivery, Entry, Handler, JobRunner, Stream
from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._job import DEFAULT_RECONNECT, Job, ReconnectPolicy
from ._retry import RetryPolicy
from ._tls import Tls

log = logging.getLogger("jobwire.worker")

H = TypeVar("H", bound=Handler)

KEEPALIVE_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)
"""Channel options of a worker's own channel: HTTP/2 pings notice a dead connection (the worker
only reads from its stream, so without them a silently dropped connection would go unnoticed).
Options given to the worker override these by name."""

_FATAL_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED)
"""Stream errors that reconnecting cannot fix (a bad queue name, a server without jobwire)."""


class Worker(JobRunner):
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
        reconnect: ReconnectPolicy = DEFAULT_RECONNECT,
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
        self._handlers: dict[str, Entry] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._stopping: asyncio.Event | None = None
        self._forced = False
        self._stop_pending = False
        self._grace_timer: asyncio.TimerHandle | None = None
        self._stream: Stream | None = None
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
        self._handlers[job_type] = Entry(fn=fn, threaded=threaded)

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
        stream: Stream
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
            stream = Stream(work, outbox)
        else:
            request = pb.GetJobRequest(
                worker_id=self.worker_id,
                labels=self.labels,
                queues=self.queues,
                max_in_flight=self.concurrency,
            )
            stream = Stream(
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

    async def _close_when_idle(self, stream: Stream) -> None:
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

    async def _abandon(self, stream: Stream) -> None:
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

    def _on_job(self, stream: Stream, loop: asyncio.AbstractEventLoop, message: pb.Job) -> None:
        assert self._stopping is not None
        d = Delivery(Job(message, stream.acker, loop))
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

    def _on_revoke(self, stream: Stream, message: pb.Revoke) -> None:
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
