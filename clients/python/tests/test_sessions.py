"""Sessions against a real server: the SessionService calls, a session's state handed to the
handler and written with the completion, and the rerun on a fresh state after a conflict."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest

import jobwire
from tests.harness import Server
from tests.helpers import running

PROTOCOLS = pytest.mark.parametrize("protocol", ["work", "unary"])


def make_worker(
    server: Server, queue: str, protocol: Literal["work", "unary"] = "work"
) -> jobwire.Worker:
    return jobwire.Worker(
        server.target,
        queues=[queue],
        concurrency=4,
        reconnect=jobwire.ReconnectPolicy(initial=0.05, max=0.5),
        protocol=protocol,
    )


async def test_create_get_update_delete(client: jobwire.Client, queue: str) -> None:
    session = await client.create_session(
        queue, "user-7", state={"turns": 0}, ttl=3600, max_concurrency=2
    )
    assert session.id == f"{queue}/user-7"
    assert session.json() == {"turns": 0}
    assert session.max_concurrency == 2
    assert session.ttl.total_seconds() == 3600
    first = session.version

    with pytest.raises(jobwire.AlreadyExists):
        await client.create_session(queue, "user-7")

    version = await client.update_session(session.id, state={"turns": 1})
    assert version == first + 1
    version = await client.update_session(
        session.id, merge_patch={"name": "ada"}, expected_version=version
    )
    read = await client.get_session(session.id)
    assert read.version == version
    assert read.json() == {"turns": 1, "name": "ada"}

    with pytest.raises(jobwire.Conflict):
        await client.update_session(session.id, state={"turns": 9}, expected_version=first)
    assert (await client.get_session(session.id)).json() == {"turns": 1, "name": "ada"}

    await client.delete_session(session.id)
    with pytest.raises(jobwire.NotFound):
        await client.get_session(session.id)


async def test_generated_name_and_listing(client: jobwire.Client, queue: str) -> None:
    made = {(await client.create_session(queue)).id for _ in range(5)}
    assert all(s.startswith(f"{queue}/") for s in made)
    listed: set[str] = set()
    token = ""
    while True:
        page = await client.list_sessions(queue, page_size=2, page_token=token)
        listed.update(s.id for s in page)
        token = page.next_page_token
        if not token:
            break
    assert listed == made


async def test_list_session_jobs_in_release_order(client: jobwire.Client, queue: str) -> None:
    session = await client.create_session(queue, max_concurrency=1)
    added = [(await client.add_to_session(session.id, "step", i)).id for i in range(4)]
    listed: list[str] = []
    token = ""
    while True:
        page = await client.list_session_jobs(session.id, page_size=2, page_token=token)
        listed.extend(j.id for j in page)
        token = page.next_page_token
        if not token:
            break
    # The first was released to the queue; the rest wait inside the session, in add order.
    assert listed == added[1:]
    with pytest.raises(jobwire.NotFound):
        await client.list_session_jobs(f"{queue}/nobody")


async def test_update_needs_exactly_one_change(client: jobwire.Client, queue: str) -> None:
    session = await client.create_session(queue)
    with pytest.raises(ValueError):
        await client.update_session(session.id)
    with pytest.raises(ValueError):
        await client.update_session(session.id, state={}, merge_patch={})


@PROTOCOLS
async def test_handler_reads_and_writes_the_state_in_order(
    server: Server, client: jobwire.Client, queue: str, protocol: Literal["work", "unary"]
) -> None:
    session = await client.create_session(queue, "chat", state={"turns": []})
    worker = make_worker(server, queue, protocol)
    seen: list[tuple[int, Any]] = []

    @worker.handler("reply")
    async def reply(job: jobwire.Job) -> dict[str, int]:
        assert job.session is not None and job.session.id == session.id
        seen.append((job.session.version, job.session.json()))
        state = job.session.json()
        state["turns"].append(job.json())
        job.set_session_state(state)
        return {"turns": len(state["turns"])}

    added = [await client.add_to_session(session.id, "reply", payload=n) for n in range(5)]
    async with running(worker):
        results = [await client.wait(a.id, timeout=10) for a in added]

    assert [r.result_json() for r in results] == [{"turns": n} for n in range(1, 6)]
    assert [state["turns"] for _, state in seen] == [list(range(n)) for n in range(5)]
    final = await client.get_session(session.id)
    assert final.json() == {"turns": [0, 1, 2, 3, 4]}
    assert final.version == session.version + 5
    assert (await client.get(added[0].id)).session_id == session.id


@PROTOCOLS
async def test_conflict_reruns_the_handler_on_the_fresh_state(
    server: Server, client: jobwire.Client, queue: str, protocol: Literal["work", "unary"]
) -> None:
    session = await client.create_session(queue, "counter", state={"n": 0})
    worker = make_worker(server, queue, protocol)
    runs: list[Any] = []
    written_elsewhere = asyncio.Event()

    @worker.handler("inc")
    async def inc(job: jobwire.Job) -> None:
        assert job.session is not None
        state = job.session.json()
        runs.append(state)
        if len(runs) == 1:  # someone else writes the session while the first run goes on
            await client.update_session(session.id, state={"n": 100})
            written_elsewhere.set()
        job.set_session_state({"n": state["n"] + 1})

    async with running(worker):
        info = await client.run(queue, "inc", session_id=session.id, timeout=10)

    assert written_elsewhere.is_set()
    assert runs == [{"n": 0}, {"n": 100}]
    assert info.attempts == 1, "the rerun happens within the attempt"
    assert (await client.get_session(session.id)).json() == {"n": 101}


async def test_a_session_that_keeps_changing_fails_the_attempt(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    session = await client.create_session(queue, "busy", state={"n": 0})
    worker = make_worker(server, queue)
    runs = 0

    @worker.handler("inc")
    async def inc(job: jobwire.Job) -> None:
        nonlocal runs
        runs += 1
        await client.update_session(session.id, merge_patch={"other": runs})
        job.set_session_state({"n": 1})

    async with running(worker):
        added = await client.add_to_session(session.id, "inc", max_attempts=1)
        with pytest.raises(jobwire.JobDead) as dead:
            await client.wait(added.id, timeout=10)

    assert runs == 6, "the first run and 5 reruns"
    assert "the session kept changing" in dead.value.info.last_error
    assert (await client.get_session(session.id)).json()["n"] == 0


async def test_set_session_state_without_a_session_is_refused(
    server: Server, client: jobwire.Client, queue: str
) -> None:
    worker = make_worker(server, queue)

    @worker.handler("plain")
    async def plain(job: jobwire.Job) -> None:
        assert job.session is None
        job.set_session_state({"x": 1})

    async with running(worker):
        added = await client.add(queue, "plain", max_attempts=1)
        with pytest.raises(jobwire.JobDead) as dead:
            await client.wait(added.id, timeout=10)
    assert "has no session" in dead.value.info.last_error
