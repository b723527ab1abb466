"""The admin calls against a real server: stats, listings, pause/resume, dead-letter retries,
deletes and purges, connected workers."""

from __future__ import annotations

import asyncio

import pytest

import jobwire
from tests.harness import Server
from tests.helpers import running


async def test_stats_and_list_queues(client: jobwire.Client, queue: str) -> None:
    await client.add(queue, "a")
    await client.add(queue, "a", delay=3600)
    stats = await client.stats(queue)
    assert (stats.queue, stats.waiting, stats.delayed, stats.paused) == (queue, 1, 1, False)
    assert queue in {q.queue for q in await client.list_queues()}


async def test_pause_resume_and_list_jobs(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    await client.pause_queue(queue)
    assert (await client.stats(queue)).paused
    ids = [(await client.add(queue, "t", payload=n)).id for n in range(5)]
    worker = jobwire.Worker(server.target, queues=[queue], concurrency=2)
    ran: list[str] = []

    @worker.handler("t")
    async def t(job: jobwire.Job) -> None:
        ran.append(job.id)

    async with running(worker):
        await asyncio.sleep(0.3)  # a paused queue delivers nothing, however long one waits
        assert ran == []
        listed: list[str] = []
        token = ""
        while True:
            page = await client.list_jobs(
                queue, jobwire.JobState.WAITING, page_size=2, page_token=token
            )
            listed += [j.id for j in page]
            token = page.next_page_token
            if not token:
                break
        assert listed == ids
        await client.resume_queue(queue)
        for job_id in ids:
            await client.wait(job_id, timeout=10)
    assert sorted(ran) == sorted(ids)
    completed = await client.list_jobs(queue, jobwire.JobState.COMPLETED)
    assert {j.id for j in completed} == set(ids)


async def test_retry_dead_jobs_delete_and_purge(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = jobwire.Worker(server.target, queues=[queue], concurrency=3)

    @worker.handler("doomed")
    async def doomed(job: jobwire.Job) -> None:
        raise jobwire.Permanent("boom")

    async with running(worker):
        ids = [(await client.add(queue, "doomed")).id for _ in range(3)]
        for job_id in ids:
            with pytest.raises(jobwire.JobDead):
                await client.wait(job_id, timeout=10)
    assert (await client.stats(queue)).dead == 3
    await client.pause_queue(queue)  # nothing runs the retried jobs: they stay waiting

    await client.retry_job(ids[0])
    retried = await client.get(ids[0])
    assert (retried.state, retried.attempts) == (jobwire.JobState.WAITING, 0)
    with pytest.raises(jobwire.FailedPrecondition):
        await client.retry_job(ids[0])
    assert await client.retry_dead_jobs(queue, 10) == 2
    await client.delete_job(ids[0])
    with pytest.raises(jobwire.NotFound):
        await client.get(ids[0])
    assert await client.purge_queue(queue, [jobwire.JobState.WAITING]) == 2
    assert (await client.stats(queue)).waiting == 0


async def test_list_workers(server: Server, client: jobwire.Client, queue: str) -> None:
    worker = jobwire.Worker(
        server.target, queues=[queue], concurrency=3, worker_id="admin-test-worker"
    )

    @worker.handler("t")
    async def t(job: jobwire.Job) -> None:
        return None

    async with running(worker):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not (workers := await client.list_workers(queue)):
            assert loop.time() < deadline, "the worker never showed up"
            await asyncio.sleep(0.05)
    (info,) = workers
    assert (info.worker_id, info.queues, info.max_in_flight) == ("admin-test-worker", [queue], 3)
    assert info.labels == {"lang": "python"}
