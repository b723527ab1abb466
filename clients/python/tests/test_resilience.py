"""Failures of the world around the client, each on servers of its own: Redis frozen (the server
answers UNAVAILABLE), and a server that drains, goes away and comes back."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import jobwire
from tests.harness import Redis, Server
from tests.helpers import serving, until


@pytest.fixture
def own_redis() -> Iterator[Redis]:
    """A Redis of the test's own (short temp path: unix socket paths are limited)."""
    with tempfile.TemporaryDirectory(prefix="jw-r-") as directory:
        redis = Redis(Path(directory))
        try:
            yield redis
        finally:
            redis.stop()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts; every one is stopped at the end, whatever happened."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


class CodeRecorder(grpc.aio.UnaryUnaryClientInterceptor):
    """Remembers the status code of every AddJob attempt."""

    def __init__(self) -> None:
        self.codes: list[grpc.StatusCode] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(details, request)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method.endswith("/AddJob"):
            self.codes.append(await call.code())
        return call


async def test_add_retries_while_redis_is_frozen_and_adds_once(
    own_redis: Redis, servers: list[Server]
) -> None:
    server = Server(own_redis, own_redis.directory, extra=("--redis-timeout", "300ms"))
    servers.append(server)
    recorder = CodeRecorder()
    retry = jobwire.RetryPolicy(attempts=20, initial=0.1, max=0.4)
    async with jobwire.Client(
        server.target, interceptors=[recorder], retry=retry, timeout=20
    ) as client:
        await serving(client)
        own_redis.pause()
        add = asyncio.create_task(client.add("frozen", "t", payload={"n": 1}))
        try:
            # Wait (with a deadline) until the server has answered UNAVAILABLE at least once.
            deadline = asyncio.get_running_loop().time() + 10
            while grpc.StatusCode.UNAVAILABLE not in recorder.codes:
                assert asyncio.get_running_loop().time() < deadline, recorder.codes
                await asyncio.sleep(0.05)
        finally:
            own_redis.resume()
        added = await asyncio.wait_for(add, timeout=20)
        assert recorder.codes[-1] == grpc.StatusCode.OK
        stats = await client.stats("frozen")
        assert stats.waiting == 1, "retries after UNAVAILABLE added the job exactly once"
        assert (await client.get(added.id)).json() == {"n": 1}


async def test_adds_in_flight_when_the_server_is_killed_each_go_in_once(
    own_redis: Redis, servers: list[Server]
) -> None:
    """Twenty producers add one job after another while the server is killed (no drain) and
    started again on its address: every add goes in, each job once."""
    first = Server(own_redis, own_redis.directory)
    servers.append(first)
    port = first.target.rsplit(":", 1)[1]
    retry = jobwire.RetryPolicy(attempts=60, initial=0.05, max=0.5)
    ids: list[str] = []

    async with jobwire.Client(first.target, retry=retry, timeout=30) as client:
        await serving(client)

        async def produce(p: int) -> None:
            for n in range(100):
                added = await client.add("killed", "t", payload={"n": p * 100 + n})
                ids.append(added.id)

        producers = [asyncio.create_task(produce(p)) for p in range(20)]
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while len(ids) < 300:
                assert asyncio.get_running_loop().time() < deadline, (
                    f"{len(ids)} adds before the kill"
                )
                await asyncio.sleep(0.005)
            first.proc.kill()
            first.proc.wait(timeout=10)
            servers.append(
                Server(
                    own_redis, own_redis.directory, prefix=first.prefix, listen=f"127.0.0.1:{port}"
                )
            )
            await asyncio.wait_for(asyncio.gather(*producers), timeout=60)
        finally:
            for producer in producers:
                producer.cancel()
        assert len(set(ids)) == 2000, "each add answered with a job of its own"
        assert (await client.stats("killed")).waiting == 2000, "each job once"


async def test_an_ack_answered_unavailable_is_sent_again_on_the_same_stream(
    own_redis: Redis, servers: list[Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobwire.worker")
    server = Server(own_redis, own_redis.directory, extra=("--redis-timeout", "300ms"))
    servers.append(server)
    worker = jobwire.Worker(server.target, queues=["resent"], concurrency=1)
    started = asyncio.Event()
    release = asyncio.Event()

    @worker.handler("job")
    async def job(job: jobwire.Job) -> str:
        started.set()
        await release.wait()
        return "acked after the freeze"

    async with jobwire.Client(server.target, timeout=20) as client:
        await serving(client)
        added = await client.add("resent", "job")
        task = asyncio.create_task(worker.run(handle_signals=False))
        try:
            await until(started)
            stream = worker._stream
            own_redis.pause()
            try:
                release.set()  # the complete goes out while Redis is frozen
                deadline = asyncio.get_running_loop().time() + 10
                while not any("sending it again" in r.getMessage() for r in caplog.records):
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
            finally:
                own_redis.resume()
            info = await client.wait(added.id, timeout=20)
            assert info.result_json() == "acked after the freeze"
            assert (info.attempts, info.lost_deliveries) == (1, 0), info
            assert worker._stream is stream
        finally:
            worker.stop()
            await asyncio.wait_for(task, timeout=15)


async def test_drain_finishes_in_flight_then_reconnects(
    own_redis: Redis, servers: list[Server]
) -> None:
    directory = own_redis.directory
    first = Server(own_redis, directory)
    servers.append(first)
    other = Server(own_redis, directory, prefix=first.prefix)  # same queues, stays up
    servers.append(other)
    port = first.target.rsplit(":", 1)[1]
    worker = jobwire.Worker(
        first.target,
        queues=["drained"],
        concurrency=2,
        reconnect=jobwire.ReconnectPolicy(initial=0.05, max=0.3),
    )
    started = asyncio.Event()
    done: list[str] = []

    @worker.handler("slow")
    async def slow(job: jobwire.Job) -> str:
        started.set()
        await asyncio.sleep(0.5)
        done.append(job.id)
        return "finished during the drain"

    async with jobwire.Client(other.target, timeout=10) as client:
        task = asyncio.create_task(worker.run(handle_signals=False))
        try:
            added = await client.add("drained", "slow")
            await until(started)
            first.terminate()  # drain: the job must still be finished and acked
            info = await client.wait(added.id, timeout=10)
            assert info.result_json() == "finished during the drain"
            assert info.lost_deliveries == 0
            assert first.wait(timeout=15) == 0

            # The worker keeps reconnecting to the same address; bring a server back there.
            servers.append(
                Server(own_redis, directory, prefix=first.prefix, listen=f"127.0.0.1:{port}")
            )
            again = await client.add("drained", "slow")
            info = await client.wait(again.id, timeout=15)
            assert info.state is jobwire.JobState.COMPLETED
            assert done == [added.id, again.id]
            assert not task.done()
        finally:
            worker.stop()
            await asyncio.wait_for(task, timeout=15)


async def test_drain_hands_prefetched_jobs_back_then_reconnects(
    own_redis: Redis, servers: list[Server]
) -> None:
    directory = own_redis.directory
    first = Server(own_redis, directory)
    servers.append(first)
    other = Server(own_redis, directory, prefix=first.prefix)
    servers.append(other)
    port = first.target.rsplit(":", 1)[1]
    worker = jobwire.Worker(
        first.target,
        queues=["prefetched"],
        concurrency=1,
        prefetch=1,
        reconnect=jobwire.ReconnectPolicy(initial=0.05, max=0.3),
    )
    started = asyncio.Event()

    @worker.handler("slow")
    async def slow(job: jobwire.Job) -> str:
        started.set()
        await asyncio.sleep(0.5)
        return job.id

    async with jobwire.Client(other.target, timeout=10) as client:
        running = await client.add("prefetched", "slow")
        held = await client.add("prefetched", "slow")
        task = asyncio.create_task(worker.run(handle_signals=False))
        try:
            await until(started)
            while (await client.stats("prefetched")).active < 2:
                await asyncio.sleep(0.02)
            first.terminate()  # drain: finish the running job, hand the prefetched one back
            info = await client.wait(running.id, timeout=10)
            assert (info.result_json(), info.lost_deliveries) == (running.id, 0)
            assert first.wait(timeout=15) == 0
            info = await client.get(held.id)
            assert info.state is jobwire.JobState.WAITING, info
            assert (info.attempts, info.lost_deliveries) == (0, 0), info

            servers.append(
                Server(own_redis, directory, prefix=first.prefix, listen=f"127.0.0.1:{port}")
            )
            info = await client.wait(held.id, timeout=15)
            assert (info.result_json(), info.attempts, info.lost_deliveries) == (held.id, 1, 0)
            assert not task.done()
        finally:
            worker.stop()
            await asyncio.wait_for(task, timeout=15)


async def test_server_crash_cancels_handlers_and_worker_reconnects(
    own_redis: Redis, servers: list[Server]
) -> None:
    directory = own_redis.directory
    crashing = Server(own_redis, directory)
    servers.append(crashing)
    other = Server(own_redis, directory, prefix=crashing.prefix)
    servers.append(other)
    port = crashing.target.rsplit(":", 1)[1]
    worker = jobwire.Worker(
        crashing.target,
        queues=["crash"],
        concurrency=1,
        reconnect=jobwire.ReconnectPolicy(initial=0.05, max=0.3),
    )
    started = asyncio.Event()
    cancelled = asyncio.Event()

    deliveries: list[str] = []

    @worker.handler("job")
    async def job(job: jobwire.Job) -> str:
        deliveries.append(job.lease_token)
        if len(deliveries) == 1:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return f"done on delivery {len(deliveries)}"

    async with jobwire.Client(other.target, timeout=10) as client:
        task = asyncio.create_task(worker.run(handle_signals=False))
        try:
            added = await client.add("crash", "job")
            await until(started)
            crashing.proc.kill()  # no drain: the stream just breaks
            await until(cancelled)  # the lease is gone, so is the work
            servers.append(
                Server(own_redis, directory, prefix=crashing.prefix, listen=f"127.0.0.1:{port}")
            )
            # The dead instance's lease comes back after --lease-ttl (2 s), then the
            # reconnected worker runs the job again.
            info = await client.wait(added.id, timeout=20)
            assert info.result_json() == "done on delivery 2"
            assert len(deliveries) == 2
            assert not task.done()
        finally:
            worker.stop()
            await asyncio.wait_for(task, timeout=15)


async def test_subscribe_and_watch_outlive_a_server_restart(
    own_redis: Redis, servers: list[Server]
) -> None:
    directory = own_redis.directory
    first = Server(own_redis, directory)
    servers.append(first)
    port = first.target.rsplit(":", 1)[1]
    async with jobwire.Client(first.target, timeout=10) as client:
        delayed = await client.add("followed", "t", delay=3600)
        events: asyncio.Queue[jobwire.JobEvent] = asyncio.Queue()
        watched: list[jobwire.EventType] = []

        async def subscribe() -> None:
            async for event in client.subscribe("followed", cursor=""):
                events.put_nowait(event)

        async def watch() -> None:
            async for event in client.watch(delayed.id):
                watched.append(event.type)

        subscribing = asyncio.create_task(subscribe())
        watching = asyncio.create_task(watch())
        try:
            async with asyncio.timeout(10):  # the subscription is open once it sees an add
                while events.empty():
                    last = await client.add("followed", "t")
                    await asyncio.sleep(0.05)
                while (await events.get()).job_id != last.id:
                    pass  # events of the earlier adds
            first.terminate()
            assert first.wait(timeout=15) == 0
            servers.append(
                Server(own_redis, directory, prefix=first.prefix, listen=f"127.0.0.1:{port}")
            )
            await serving(client)
            after = await client.add("followed", "t")
            async with asyncio.timeout(10):
                event = await events.get()
            # Reopened from the last cursor: the next event is the first one after the restart.
            assert (event.job_id, event.type) == (after.id, jobwire.EventType.WAITING)
            await client.cancel(delayed.id)
            await asyncio.wait_for(watching, timeout=10)
            assert watched[0] is jobwire.EventType.DELAYED
            assert watched[-1] is jobwire.EventType.CANCELLED
        finally:
            subscribing.cancel()
            watching.cancel()
            await asyncio.gather(subscribing, watching, return_exceptions=True)
