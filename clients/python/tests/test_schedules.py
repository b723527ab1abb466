"""Schedules and queue settings against a real server: a schedule's jobs arrive at a worker,
trigger, pause/resume, list, delete; settings set, read back, cleared, enforced, refused."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import jobwire
from tests.harness import Server
from tests.helpers import running


async def test_a_schedule_every_second_fires_and_its_jobs_run(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = jobwire.Worker(server.target, queues=[queue])
    ran: asyncio.Queue[tuple[str, dict[str, str], object]] = asyncio.Queue()

    @worker.handler("tick")
    async def tick(job: jobwire.Job) -> None:
        ran.put_nowait((job.id, dict(job.headers), job.json()))

    template = jobwire.JobTemplate("tick", payload={"n": 1}, max_attempts=2)
    async with running(worker):
        schedule, created = await client.upsert_schedule(queue, "ticker", template, every=1)
        assert created and schedule.every == timedelta(seconds=1) and schedule.cron is None
        assert schedule.next_fire_at is not None and not schedule.paused
        job_id, headers, payload = await asyncio.wait_for(ran.get(), timeout=10)
        assert headers["jobwire-schedule"] == "ticker" and payload == {"n": 1}
        assert (await client.wait(job_id, timeout=10)).state is jobwire.JobState.COMPLETED

        await client.pause_schedule(queue, "ticker")
        paused = await client.get_schedule(queue, "ticker")
        assert paused.paused and paused.next_fire_at is None and paused.fires >= 1
        assert paused.template.json() == {"n": 1} and paused.template.max_attempts == 2
        while not ran.empty():  # fires that ran before the pause
            ran.get_nowait()
        triggered = await client.trigger_schedule(queue, "ticker")
        assert (await asyncio.wait_for(ran.get(), timeout=10))[0] == triggered
        assert (await client.get_schedule(queue, "ticker")).last_job_id == triggered

        await client.resume_schedule(queue, "ticker")
        assert not (await client.get_schedule(queue, "ticker")).paused
        await asyncio.wait_for(ran.get(), timeout=10)  # fires again
        await client.delete_schedule(queue, "ticker")
    with pytest.raises(jobwire.NotFound):
        await client.get_schedule(queue, "ticker")


async def test_upsert_replaces_and_list(client: jobwire.Client, queue: str) -> None:
    template = jobwire.JobTemplate("report", headers={"x-team": "ops"})
    _, created = await client.upsert_schedule(
        queue,
        "nightly",
        template,
        cron="0 30 2 * * *",
        time_zone="Europe/Berlin",
        jitter=timedelta(seconds=30),
        missed_fires=jobwire.MissedFires.RUN_ALL,
        catch_up_max=3,
        overlap=jobwire.Overlap.SKIP,
    )
    assert created
    replaced, created = await client.upsert_schedule(
        queue, "nightly", template, cron="0 0 3 * * *", time_zone="Europe/Berlin"
    )
    assert not created and replaced.revision == 2 and replaced.cron == "0 0 3 * * *"
    await client.upsert_schedule(queue, "hourly", template, cron="@hourly")
    listed = await client.list_schedules(queue)
    assert [s.name for s in listed] == ["hourly", "nightly"]
    assert listed[1].time_zone == "Europe/Berlin" and listed[1].template.headers == {
        "x-team": "ops"
    }


async def test_a_template_keeps_its_rate_and_concurrency_keys(
    client: jobwire.Client, queue: str
) -> None:
    template = jobwire.JobTemplate("report", rate_key="tenant-1", concurrency_key="db")
    await client.upsert_schedule(queue, "keyed", template, cron="@hourly")
    got = await client.get_schedule(queue, "keyed")
    assert (got.template.rate_key, got.template.concurrency_key) == ("tenant-1", "db")
    assert got.refused == 0


async def test_invalid_schedules_are_refused_naming_the_field(
    client: jobwire.Client, queue: str
) -> None:
    template = jobwire.JobTemplate("t")
    with pytest.raises(jobwire.InvalidArgument, match="cron"):
        await client.upsert_schedule(queue, "bad", template, cron="not a cron")
    with pytest.raises(jobwire.InvalidArgument, match="time_zone"):
        await client.upsert_schedule(queue, "bad", template, cron="@daily", time_zone="Mars/Base")
    with pytest.raises(ValueError, match="exactly one"):
        await client.upsert_schedule(queue, "bad", template)
    with pytest.raises(jobwire.NotFound):
        await client.trigger_schedule(queue, "missing")


async def test_queue_settings_set_read_back_and_clear(client: jobwire.Client, queue: str) -> None:
    before = await client.get_queue_settings(queue)
    assert before.settings == jobwire.QueueSettings()
    answer = await client.set_queue_settings(
        queue,
        jobwire.QueueSettings(
            max_waiting=1,
            max_attempts=2,
            attempt_timeout=timedelta(minutes=5),
            backoff=jobwire.Backoff.fixed(2),
            concurrency=4,
        ),
    )
    assert answer.settings.max_waiting == 1 and answer.effective.max_waiting == 1
    assert answer.settings.attempt_timeout == timedelta(minutes=5)
    assert answer.settings.backoff is not None and answer.settings.backoff.kind == "fixed"
    assert (await client.get_queue_settings(queue)).settings == answer.settings

    await client.add(queue, "t")
    with pytest.raises(jobwire.TooLarge):  # max_waiting, enforced from the next call on
        await client.add(queue, "t")

    cleared = await client.set_queue_settings(queue, clear=["max_waiting", "attempt_timeout"])
    assert cleared.settings.max_waiting is None and cleared.settings.attempt_timeout is None
    assert cleared.settings.concurrency == 4
    assert cleared.effective.attempt_timeout == timedelta(minutes=30)  # the default again
    await client.add(queue, "t")


async def test_invalid_settings_are_refused_naming_the_field(
    client: jobwire.Client, queue: str
) -> None:
    with pytest.raises(jobwire.InvalidArgument, match="max_attempts"):
        await client.set_queue_settings(queue, jobwire.QueueSettings(max_attempts=0))
    with pytest.raises(jobwire.InvalidArgument, match="no_such_setting"):
        await client.set_queue_settings(queue, clear=["no_such_setting"])
    assert (await client.get_queue_settings(queue)).settings == jobwire.QueueSettings()


async def test_rate_and_key_settings_are_set_enforced_counted_and_cleared(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    answer = await client.set_queue_settings(
        queue,
        jobwire.QueueSettings(
            rate=jobwire.RateLimit(100, period=1, burst=10),
            key_rate=jobwire.RateLimit(5, period=timedelta(minutes=1)),
            key_concurrency=1,
        ),
    )
    assert answer.settings.rate == jobwire.RateLimit(100, timedelta(seconds=1), 10)
    # The server fills in the default burst: the jobs of a tenth of the period, at least 1.
    assert answer.settings.key_rate == jobwire.RateLimit(5, timedelta(minutes=1), 1)
    assert answer.effective.key_concurrency == 1
    assert (await client.get_queue_settings(queue)).settings == answer.settings

    worker = jobwire.Worker(server.target, queues=[queue], concurrency=4)
    release = asyncio.Event()

    @worker.handler("t")
    async def t(job: jobwire.Job) -> None:
        await release.wait()

    async with running(worker):
        for _ in range(3):
            await client.add(queue, "t", concurrency_key="tenant-1")
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # one job of the key active, the other two held back by key_concurrency
            stats = await client.stats(queue)
            if stats.active == 1 and stats.held_by_key_concurrency == 2 and stats.waiting_keys == 1:
                break
            assert asyncio.get_running_loop().time() < deadline, stats
            await asyncio.sleep(0.02)
        release.set()

    cleared = await client.set_queue_settings(queue, clear=["rate", "key_rate", "key_concurrency"])
    assert cleared.settings == jobwire.QueueSettings()


async def test_the_shard_count_is_a_setting_set_once(client: jobwire.Client, queue: str) -> None:
    answer = await client.set_queue_settings(queue, jobwire.QueueSettings(shards=3))
    assert answer.settings.shards == 3
    assert answer.effective.shards == 3
    assert (await client.get_queue_settings(queue)).settings == jobwire.QueueSettings(shards=3)
    with pytest.raises(jobwire.FailedPrecondition):
        await client.set_queue_settings(queue, jobwire.QueueSettings(shards=4))
    assert (await client.get_queue_settings(queue)).settings.shards == 3
