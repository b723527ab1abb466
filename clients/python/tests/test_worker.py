"""The worker against a real server: completion, failures and retries, concurrency, revoke,
lease extension, threads, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from typing import Any, Literal

import grpc
import pytest

import jobwire
from tests.harness import Server
from tests.helpers import Endless, running, state_becomes, until

FAST_RETRY = jobwire.Backoff.fixed(0.05)


PROTOCOLS = pytest.mark.parametrize("protocol", ["work", "unary"])
"""Runs a test on both worker protocols: the behaviour is the same whichever carries the acks."""


def make_worker(
    server: Server,
    queue: str,
    concurrency: int = 4,
    protocol: Literal["work", "unary"] = "work",
) -> jobwire.Worker:
    return jobwire.Worker(
        server.target,
        queues=[queue],
        concurrency=concurrency,
        reconnect=jobwire.ReconnectPolicy(initial=0.05, max=0.5),
        protocol=protocol,
    )


@PROTOCOLS
async def test_worker_completes_and_result_is_readable(
    server: Server, client: jobwire.Client, queue: str, protocol: Literal["work", "unary"]
) -> None:
    worker = make_worker(server, queue, protocol=protocol)
    seen: list[jobwire.Job] = []

    @worker.handler("add")
    async def add(job: jobwire.Job) -> dict[str, int]:
        seen.append(job)
        numbers = job.json()
        return {"sum": numbers["a"] + numbers["b"]}

    async with running(worker):
        added = await client.add(queue, "add", payload={"a": 2, "b": 3}, headers={"h": "1"})
        info = await client.wait(added.id, timeout=10)

    assert info.state is jobwire.JobState.COMPLETED
    assert info.result == b'{"sum":5}'
    assert info.result_json() == {"sum": 5}
    assert info.attempts == 1
    assert (await client.get(added.id)).result_json() == {"sum": 5}
    job = seen[0]
    assert (job.id, job.queue, job.type, job.attempt, job.max_attempts) == (
        added.id,
        queue,
        "add",
        1,
        3,
    )
    assert job.headers == {"h": "1"}
    assert job.deadline is not None and job.lease_token


async def test_results_bytes_as_is_none_as_empty(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)

    @worker.handler("bytes")
    async def raw(job: jobwire.Job) -> bytes:
        return b"\x00\xffraw"

    @worker.handler("none")
    async def nothing(job: jobwire.Job) -> None:
        return None

    @worker.handler("text")
    async def text(job: jobwire.Job) -> str:
        return job.text().upper()

    async with running(worker):
        a = await client.add(queue, "bytes")
        b = await client.add(queue, "none")
        c = await client.add(queue, "text", payload=b"hello")
        assert (await client.wait(a.id, timeout=10)).result == b"\x00\xffraw"
        assert (await client.wait(b.id, timeout=10)).result == b""
        assert (await client.wait(c.id, timeout=10)).result_json() == "HELLO"


async def test_exception_retries_then_succeeds(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)
    attempts: list[int] = []

    @worker.handler("flaky")
    async def flaky(job: jobwire.Job) -> str:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise ConnectionError("upstream hiccup")
        return "ok"

    async with running(worker):
        added = await client.add(queue, "flaky", max_attempts=3, backoff=FAST_RETRY)
        info = await client.wait(added.id, timeout=10)

    assert attempts == [1, 2]
    assert info.state is jobwire.JobState.COMPLETED
    assert info.attempts == 2
    assert info.result_json() == "ok"
    assert "ConnectionError: upstream hiccup" in info.last_error


async def test_exhausted_attempts_go_dead(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)

    @worker.handler("broken")
    async def broken(job: jobwire.Job) -> None:
        raise ValueError(f"attempt {job.attempt} failed")

    async with running(worker):
        added = await client.add(queue, "broken", max_attempts=2, backoff=FAST_RETRY)
        with pytest.raises(jobwire.JobDead) as dead:
            await client.wait(added.id, timeout=10)

    assert dead.value.info.attempts == 2
    assert "attempt 2 failed" in dead.value.info.last_error


async def test_permanent_goes_dead_without_retry(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)
    calls = 0

    @worker.handler("charge")
    async def charge(job: jobwire.Job) -> None:
        nonlocal calls
        calls += 1
        raise jobwire.Permanent("card declined")

    async with running(worker):
        added = await client.add(queue, "charge", max_attempts=5, backoff=FAST_RETRY)
        with pytest.raises(jobwire.JobDead) as dead:
            await client.wait(added.id, timeout=10)

    assert calls == 1
    info = dead.value.info
    assert info.state is jobwire.JobState.DEAD
    assert info.attempts == 1
    assert info.last_error == "card declined"


async def test_retry_after_overrides_backoff(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)
    starts: list[float] = []

    @worker.handler("later")
    async def later(job: jobwire.Job) -> str:
        starts.append(time.monotonic())
        if job.attempt == 1:
            raise jobwire.RetryAfter(0.4, "rate limited")
        return "done"

    async with running(worker):
        # The job's own backoff would wait an hour: RetryAfter must win.
        added = await client.add(
            queue, "later", backoff=jobwire.Backoff.fixed(3600), max_attempts=2
        )
        info = await client.wait(added.id, timeout=10)

    assert info.state is jobwire.JobState.COMPLETED
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 0.35
    assert info.last_error == "rate limited"


async def test_rate_limited_goes_back_for_later_without_an_attempt(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)
    starts: list[float] = []

    @worker.handler("call")
    async def call(job: jobwire.Job) -> str:
        starts.append(time.monotonic())
        if len(starts) == 1:
            raise jobwire.RateLimited(0.3, hold_key=True)
        return "done"

    async with running(worker):
        added = await client.add(queue, "call", max_attempts=1, rate_key="api.example")
        info = await client.wait(added.id, timeout=10)

    assert info.state is jobwire.JobState.COMPLETED
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 0.25
    assert info.attempts == 1, "the rate-limited run spent no attempt (max_attempts=1)"


async def test_concurrency_is_honoured(
    server: Server, client: jobwire.Client, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    limit = 3
    worker = make_worker(server, queue, concurrency=limit)
    now = 0
    peak = 0

    @worker.handler("sleep")
    async def sleep(job: jobwire.Job) -> None:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        try:
            await asyncio.sleep(0.15)
        finally:
            now -= 1

    caplog.set_level(logging.WARNING, logger="jobwire")
    outcomes = await client.add_many([jobwire.NewJob(queue, "sleep") for _ in range(12)])
    ids = [o.id for o in outcomes if isinstance(o, jobwire.Added)]
    async with running(worker):
        for job_id in ids:
            await client.wait(job_id, timeout=20)

    assert peak == limit, f"never more than {limit} at once, and the credit was used"
    assert worker.max_running == limit
    over = [r for r in caplog.records if "max_in_flight" in r.getMessage()]
    assert not over, "the server sent more jobs than the stream's credit"


async def test_sync_handlers_run_in_threads(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue, concurrency=2)
    threads: set[str] = set()

    @worker.handler("cpu")
    def cpu(job: jobwire.Job) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.1)  # blocking is fine here: this runs in a thread
        return sum(job.json())

    async with running(worker):
        a = await client.add(queue, "cpu", payload=[1, 2, 3])
        b = await client.add(queue, "cpu", payload=[4, 5])
        assert (await client.wait(a.id, timeout=10)).result_json() == 6
        assert (await client.wait(b.id, timeout=10)).result_json() == 9
    assert threads and all(name.startswith("jobwire-handler") for name in threads)


@PROTOCOLS
async def test_revoke_on_timeout_cancels_the_handler(
    server: Server, client: jobwire.Client, queue: str, protocol: Literal["work", "unary"]
) -> None:
    worker = make_worker(server, queue, concurrency=1, protocol=protocol)
    stuck = Endless()
    worker.register("stuck", stuck, threaded=False)
    ran_after: list[str] = []

    @worker.handler("quick")
    async def quick(job: jobwire.Job) -> str:
        ran_after.append(job.id)
        return "ok"

    async with running(worker):
        added = await client.add(queue, "stuck", attempt_timeout=0.3, max_attempts=1)
        await until(stuck.started)
        await until(stuck.cancelled, timeout=10)
        with pytest.raises(jobwire.JobDead) as dead:
            await client.wait(added.id, timeout=10)
        assert dead.value.info.last_error == "timeout"
        assert dead.value.info.result == b""
        # concurrency=1: the next job runs only if answering the revoke gave the credit back.
        follow = await client.add(queue, "quick")
        assert (await client.wait(follow.id, timeout=10)).result_json() == "ok"
    assert ran_after == [follow.id]


async def test_extend_keeps_a_long_job_alive(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue, concurrency=1)

    @worker.handler("long")
    async def long(job: jobwire.Job) -> str:
        assert job.deadline is not None
        before = job.deadline
        new_deadline = await job.extend(5)
        assert new_deadline > before and job.deadline == new_deadline
        await asyncio.sleep(0.6)  # past the original 0.3 s timeout
        return "survived"

    async with running(worker):
        added = await client.add(queue, "long", attempt_timeout=0.3, max_attempts=1)
        info = await client.wait(added.id, timeout=10)
    assert info.state is jobwire.JobState.COMPLETED
    assert info.result_json() == "survived"


async def test_unknown_type_fails_the_attempt(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)

    @worker.handler("known")
    async def known(job: jobwire.Job) -> None:
        return None

    async with running(worker):
        added = await client.add(queue, "unknown", max_attempts=1)
        with pytest.raises(jobwire.JobDead) as dead:
            await client.wait(added.id, timeout=10)
    assert "no handler for job type 'unknown'" in dead.value.info.last_error


async def test_graceful_stop_finishes_in_flight_and_takes_no_more(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue, concurrency=2)
    started: list[str] = []
    both = asyncio.Event()

    @worker.handler("work")
    async def work(job: jobwire.Job) -> str:
        started.append(job.id)
        if len(started) == 2:
            both.set()
        await asyncio.sleep(0.4)
        return "finished"

    outcomes = await client.add_many([jobwire.NewJob(queue, "work") for _ in range(4)])
    ids = [o.id for o in outcomes if isinstance(o, jobwire.Added)]
    task = asyncio.create_task(worker.run())  # handles SIGTERM itself
    await until(both)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, timeout=10)

    assert len(started) == 2, "no job was started after the stop"
    for job_id in started:
        info = await client.get(job_id)
        assert info.state is jobwire.JobState.COMPLETED, info
        assert info.result_json() == "finished"
    for job_id in ids:
        if job_id not in started:  # never started: waiting (again, if it was sent during the stop)
            info = await state_becomes(client, job_id, jobwire.JobState.WAITING)
            assert info.attempts == 0, info
            assert info.lost_deliveries <= 1, info  # 1 if it came back after being returned


async def test_run_rejects_a_bad_queue_name(server: Server) -> None:
    worker = jobwire.Worker(server.target, queues=["no spaces"])

    @worker.handler("t")
    async def t(job: jobwire.Job) -> None:
        return None

    with pytest.raises(jobwire.InvalidArgument):
        await asyncio.wait_for(worker.run(handle_signals=False), timeout=10)


async def test_stop_grace_cancels_handlers_that_overrun(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = jobwire.Worker(server.target, queues=[queue], concurrency=1, stop_grace=0.2)
    endless = Endless()
    worker.register("endless", endless, threaded=False)

    added = await client.add(queue, "endless")
    task = asyncio.create_task(worker.run(handle_signals=False))
    await until(endless.started)
    worker.stop()
    await asyncio.wait_for(task, timeout=10)
    assert endless.cancelled.is_set()
    info = await state_becomes(client, added.id, jobwire.JobState.WAITING)  # back in the queue
    assert (info.attempts, info.last_error) == (0, ""), "given back: the attempt does not count"
    # Handed back with ReturnJob; with no other worker it comes straight back to the stopping
    # stream, which keeps it and hands it back by closing (one lost delivery).
    assert info.lost_deliveries <= 1


class CountReturns(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.returns = 0

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method.endswith("/ReturnJob"):
            self.returns += 1
        return await continuation(details, request)


async def test_jobs_sent_during_a_stop_are_returned_without_looping(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    counter = CountReturns()
    own = jobwire.Client(server.target, interceptors=[counter])
    # ReturnJob calls are counted: the unary path's (the Work path's give-backs are acks on its
    # stream, and ask the server to stop the flow: see test_work.py).
    worker = jobwire.Worker(queues=[queue], concurrency=2, client=own, protocol="unary")
    started: dict[str, asyncio.Event] = {"long": asyncio.Event(), "short": asyncio.Event()}

    @worker.handler("long")
    async def long(job: jobwire.Job) -> str:
        started["long"].set()
        await asyncio.sleep(1.0)  # while it runs, the short job's slot keeps getting jobs
        return "long done"

    @worker.handler("short")
    async def short(job: jobwire.Job) -> str:
        started["short"].set()
        await started["long"].wait()
        await asyncio.sleep(0.05)
        return "short done"

    long_job = await client.add(queue, "long", priority=5)
    short_job = await client.add(queue, "short", priority=5)
    rest = [(await client.add(queue, "later")).id for _ in range(3)]
    task = asyncio.create_task(worker.run(handle_signals=False))
    await until(started["long"])
    await until(started["short"])
    worker.stop()
    await asyncio.wait_for(task, timeout=10)
    await own.close()

    assert (await client.get(long_job.id)).result_json() == "long done"
    assert (await client.get(short_job.id)).result_json() == "short done"
    for job_id in rest:
        info = await state_becomes(client, job_id, jobwire.JobState.WAITING)
        assert info.attempts == 0, info
        assert info.lost_deliveries <= 1, info  # kept when it came back, then closed over
    # While the long job ran, each late job was returned once and kept when it came back: no
    # return/redeliver loop.
    assert 1 <= counter.returns <= len(rest)


async def test_retry_fails_the_attempt_with_exactly_its_message(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)

    @worker.handler("flaky")
    async def flaky(job: jobwire.Job) -> str:
        if job.attempt < 3:
            raise jobwire.Retry(f"failed attempt {job.attempt}")
        return "ok"

    @worker.handler("never")
    async def never(job: jobwire.Job) -> None:
        raise jobwire.Retry(f"failed attempt {job.attempt}")

    async with running(worker):
        ok = await client.run(queue, "flaky", backoff=FAST_RETRY, max_attempts=3, timeout=10)
        assert (ok.attempts, ok.last_error) == (3, "failed attempt 2")
        added = await client.add(queue, "never", backoff=FAST_RETRY, max_attempts=2)
        with pytest.raises(jobwire.JobDead) as dead:
            await client.wait(added.id, timeout=10)
    assert dead.value.info.last_error == "failed attempt 2"
