"""Following jobs against a real server: wait and run over WatchJob, watch, subscribe with
resume from a cursor, and cancel (a running handler is cancelled)."""

from __future__ import annotations

import asyncio

import pytest

import jobwire
from tests.harness import Server
from tests.helpers import Endless, running, state_becomes, until


def make_worker(server: Server, queue: str) -> jobwire.Worker:
    return jobwire.Worker(
        server.target,
        queues=[queue],
        concurrency=2,
        reconnect=jobwire.ReconnectPolicy(initial=0.05, max=0.5),
    )


async def test_wait_follows_the_job_without_reading_it_until_the_end(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    reads = 0
    get = client.get

    async def counting_get(job_id: str, **kwargs: object) -> jobwire.JobInfo:
        nonlocal reads
        reads += 1
        return await get(job_id, **kwargs)  # type: ignore[arg-type]

    client.get = counting_get  # type: ignore[method-assign]
    worker = make_worker(server, queue)
    release = asyncio.Event()

    @worker.handler("slow")
    async def slow(job: jobwire.Job) -> str:
        await release.wait()
        return "done"

    async with running(worker):
        added = await client.add(queue, "slow")
        waiting = asyncio.create_task(client.wait(added.id, timeout=10))
        await asyncio.sleep(0.5)  # long enough for a poller to have read the job many times
        assert not waiting.done()
        release.set()
        info = await waiting
    assert info.result_json() == "done"
    assert reads == 1, "one read once WatchJob said the job ended"


async def test_run_and_the_ways_a_job_ends(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)

    @worker.handler("echo")
    async def echo(job: jobwire.Job) -> object:
        return job.json()

    @worker.handler("bad")
    async def bad(job: jobwire.Job) -> None:
        raise jobwire.Permanent("no such customer")

    async with running(worker):
        info = await client.run(queue, "echo", {"a": 1}, timeout=10)
        assert info.result_json() == {"a": 1}
        with pytest.raises(jobwire.JobDead) as dead:
            await client.run(queue, "bad", timeout=10)
        assert dead.value.info.state is jobwire.JobState.DEAD
        assert "no such customer" in dead.value.info.last_error

    later = await client.add(queue, "echo", delay=3600)
    with pytest.raises(TimeoutError):
        await client.wait(later.id, timeout=0.3)
    await client.cancel(later.id)
    with pytest.raises(jobwire.JobCancelled):
        await client.wait(later.id, timeout=10)
    with pytest.raises(jobwire.NotFound):
        await client.wait(f"{queue}/01J00000000000000000000000", timeout=10)


async def test_watch_yields_each_transition(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)

    @worker.handler("steps")
    async def steps(job: jobwire.Job) -> str:
        await job.progress({"done": 50})
        return "ok"

    added = await client.add(queue, "steps")
    events: list[jobwire.JobEvent] = []

    async def follow() -> None:
        async for event in client.watch(added.id):
            events.append(event)

    following = asyncio.create_task(follow())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not events:  # the first event, before a worker takes the job
        assert loop.time() < deadline, "no event came"
        await asyncio.sleep(0.01)
    async with running(worker):
        await asyncio.wait_for(following, timeout=10)
    types = [e.type for e in events]
    assert types[0] is jobwire.EventType.WAITING
    assert types[-1] is jobwire.EventType.COMPLETED
    assert jobwire.EventType.PROGRESS in types
    progress = next(e for e in events if e.type is jobwire.EventType.PROGRESS)
    assert progress.progress_json() == {"done": 50}
    assert events[-1].result_json() == "ok"
    assert all(e.job_id == added.id for e in events)


async def test_subscribe_and_resume_from_a_cursor(client: jobwire.Client, queue: str) -> None:
    seen: list[jobwire.JobEvent] = []
    subscribed = asyncio.Event()
    two = asyncio.Event()

    async def follow(cursor: str) -> None:
        stream = client.subscribe(queue, cursor=cursor)
        subscribed.set()
        async for event in stream:
            seen.append(event)
            if len(seen) == 2:
                two.set()
                return

    following = asyncio.create_task(follow(""))
    await until(subscribed)
    # The subscription starts with the next event: add until it has seen two.
    ids = []
    while not two.is_set():
        ids.append((await client.add(queue, "e")).id)
        await asyncio.sleep(0.05)
    await following
    # Events after the second one, missed while not subscribed, come on resume, in order.
    more = [(await client.add(queue, "e")).id for _ in range(3)]
    resumed: list[jobwire.JobEvent] = []
    async with asyncio.timeout(10):
        async for event in client.subscribe(queue, cursor=seen[-1].cursor):
            resumed.append(event)
            if event.job_id == more[-1]:
                break
    last_seen = ids.index(seen[-1].job_id)
    assert [e.job_id for e in resumed] == ids[last_seen + 1 :] + more
    assert all(e.type is jobwire.EventType.WAITING for e in resumed)


async def test_a_cursor_too_old_is_out_of_range(client: jobwire.Client, queue: str) -> None:
    with pytest.raises((jobwire.OutOfRange, jobwire.InvalidArgument)):
        async for _ in client.subscribe(queue, cursor="not-a-cursor"):
            pass


async def test_cancel_a_running_job_cancels_its_handler(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)
    long = Endless()
    worker.register("long", long, threaded=False)

    async with running(worker):
        added = await client.add(queue, "long")
        await until(long.started)
        await client.cancel(added.id)
        await until(long.cancelled)
        await state_becomes(client, added.id, jobwire.JobState.CANCELLED)
    with pytest.raises(jobwire.FailedPrecondition):
        await client.cancel(added.id)  # it has finished: cancelled


async def test_cancel_a_finished_job_is_refused(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)

    @worker.handler("quick")
    async def quick(job: jobwire.Job) -> None:
        return None

    async with running(worker):
        info = await client.run(queue, "quick", timeout=10)
    with pytest.raises(jobwire.FailedPrecondition):
        await client.cancel(info.id)
