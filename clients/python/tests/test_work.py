"""The worker on the Work protocol: acks gathered into few messages, a refused ack answered on
the stream without ending it, prefetch (jobs held beyond concurrency, handed back on stop)."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import pytest

import jobwire
from tests.harness import Server
from tests.helpers import running, state_becomes, until


async def added_ids(client: jobwire.Client, queue: str, job_type: str, count: int) -> list[str]:
    """Adds ``count`` jobs in one call; their ids."""
    added = await client.add_many(jobwire.NewJob(queue, job_type) for _ in range(count))
    return [a.id for a in added if isinstance(a, jobwire.Added)]


async def test_acks_ready_together_go_in_one_message(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    jobs = 16
    worker = jobwire.Worker(server.target, queues=[queue], concurrency=jobs)
    arrived = 0
    all_running = asyncio.Event()

    @worker.handler("together")
    async def together(job: jobwire.Job) -> int:
        nonlocal arrived
        arrived += 1
        if arrived == jobs:
            all_running.set()
        await all_running.wait()  # all return in the same turn of the loop
        return arrived

    added = await added_ids(client, queue, "together", jobs)
    async with running(worker):
        for job_id in added:
            assert (await client.wait(job_id, timeout=10)).result_json() == jobs
    # One message per ack would be 16; the completes ready together share a message.
    assert 1 <= worker.ack_messages <= jobs // 4, worker.ack_messages


@pytest.mark.parametrize("protocol", ["work", "unary"])
async def test_a_stale_token_is_refused_and_the_stream_goes_on(
    server: Server, client: jobwire.Client, queue: str, protocol: Literal["work", "unary"]
) -> None:
    worker = jobwire.Worker(server.target, queues=[queue], concurrency=1, protocol=protocol)
    finished: list[jobwire.Job] = []

    @worker.handler("first")
    async def first(job: jobwire.Job) -> str:
        finished.append(job)
        return "one"

    @worker.handler("stale")
    async def stale(job: jobwire.Job) -> str:
        try:
            await finished[0].extend(5)  # the lease of a job already completed
        except jobwire.LeaseLost as e:
            return f"refused: {e.code.name}"
        return "accepted"

    async with running(worker):
        one = await client.add(queue, "first")
        await client.wait(one.id, timeout=10)
        stream = worker._stream
        assert stream is not None
        two = await client.add(queue, "stale")
        info = await client.wait(two.id, timeout=10)
        assert info.result_json() == "refused: FAILED_PRECONDITION"
        assert worker._stream is stream  # the same stream carried the answer and the next ack


@pytest.mark.parametrize("protocol", ["work", "unary"])
async def test_progress_is_stored_and_an_oversized_one_refused_alike(
    server: Server, client: jobwire.Client, queue: str, protocol: Literal["work", "unary"]
) -> None:
    worker = jobwire.Worker(server.target, queues=[queue], concurrency=1, protocol=protocol)

    @worker.handler("report")
    async def report(job: jobwire.Job) -> str:
        await job.progress({"done": 1})
        try:
            await job.progress(b"x" * (64 * 1024 + 1))
        except jobwire.Error as e:
            return f"{type(e).__name__} {e.code.name}"
        return "accepted"

    async with running(worker):
        added = await client.add(queue, "report")
        info = await client.wait(added.id, timeout=10)
    assert info.progress == b'{"done":1}'
    assert info.result_json() == "TooLarge RESOURCE_EXHAUSTED"


async def test_prefetch_holds_jobs_beyond_concurrency_and_hands_them_back_on_stop(
    server: Server, client: jobwire.Client, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobwire.worker")
    worker = jobwire.Worker(server.target, queues=[queue], concurrency=1, prefetch=2)
    started = asyncio.Event()
    release = asyncio.Event()
    ran: list[str] = []

    @worker.handler("block")
    async def block(job: jobwire.Job) -> str:
        ran.append(job.id)
        started.set()
        await release.wait()
        return "done"

    blocking = await client.add(queue, "block")
    later = [(await client.add(queue, "block")).id for _ in range(3)]
    task = asyncio.create_task(worker.run(handle_signals=False))
    try:
        await until(started)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        # One running and two prefetched: three leased to the worker, the fourth still waiting.
        while (await client.stats(queue)).active < 3:
            assert loop.time() < deadline, await client.stats(queue)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        stats = await client.stats(queue)
        assert (stats.active, stats.waiting) == (3, 1), stats
        assert worker.max_running == 1
        worker.stop()
        for job_id in later:
            # Handed back, not run: no attempt used, no lost delivery.
            info = await state_becomes(client, job_id, jobwire.JobState.WAITING)
            assert (info.attempts, info.lost_deliveries) == (0, 0), info
        release.set()
        await asyncio.wait_for(task, timeout=10)
    finally:
        release.set()
        worker.stop()
        await asyncio.wait_for(task, timeout=10)
    assert (await client.get(blocking.id)).result_json() == "done"
    assert ran == [blocking.id]
    returned = [r for r in caplog.records if "unprocessed" in r.getMessage()]
    assert len(returned) == 2, [r.getMessage() for r in returned]


async def test_prefetched_jobs_run_in_turn(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = jobwire.Worker(server.target, queues=[queue], concurrency=2, prefetch=3)

    @worker.handler("quick")
    async def quick(job: jobwire.Job) -> str:
        await asyncio.sleep(0.01)
        return job.id

    added = await added_ids(client, queue, "quick", 20)
    async with running(worker):
        for job_id in added:
            info = await client.wait(job_id, timeout=10)
            assert (info.result_json(), info.lost_deliveries) == (job_id, 0)
    assert worker.max_running == 2


def test_prefetch_needs_the_work_protocol() -> None:
    with pytest.raises(ValueError, match="prefetch"):
        jobwire.Worker("127.0.0.1:1", queues=["q"], prefetch=1, protocol="unary")
