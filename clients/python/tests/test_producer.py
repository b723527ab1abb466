"""The producer side against a real server: add, add_many, read, idempotency, retries, health."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import grpc
import pytest

import jobwire
from jobwire._gen.jobwire.v1 import jobwire_pb2 as pb
from tests.harness import Server
from tests.helpers import serving


async def test_add_and_read_back(client: jobwire.Client, queue: str) -> None:
    added = await client.add(
        queue, "email", payload={"to": "ada@example.com", "n": 1}, headers={"k": "v"}, priority=2
    )
    assert added.id.startswith(f"{queue}/")
    assert not added.duplicate

    info = await client.get(added.id)
    assert info.id == added.id
    assert info.queue == queue
    assert info.type == "email"
    assert info.state is jobwire.JobState.WAITING
    assert info.payload == b'{"to":"ada@example.com","n":1}'
    assert info.json() == {"to": "ada@example.com", "n": 1}
    assert info.headers == {"k": "v"}
    assert info.priority == 2
    assert info.max_attempts == 3
    assert info.idempotency_key, "the client gives every add an idempotency key"
    assert info.created_at is not None


async def test_payload_bytes_pass_through(client: jobwire.Client, queue: str) -> None:
    raw = bytes(range(256))
    added = await client.add(queue, "blob", payload=raw)
    info = await client.get(added.id)
    assert info.payload == raw
    empty = await client.get((await client.add(queue, "nothing")).id)
    assert empty.payload == b""
    assert empty.json() is None


async def test_delay_makes_the_job_delayed(client: jobwire.Client, queue: str) -> None:
    added = await client.add(queue, "later", delay=3600)
    info = await client.get(added.id)
    assert info.state is jobwire.JobState.DELAYED
    assert info.run_at is not None


async def remembered_as_generated(client: jobwire.Client, queue: str, job_id: str) -> bool | None:
    """How the server remembers the key of ``job_id``: True when a repeat sent as a generated key
    is the duplicate (kept for the retry window), False when one sent as a chosen key is (the
    idempotency window), None when neither is. Each kind is looked for among its own."""
    key = (await client.get(job_id)).idempotency_key
    kind = None
    for generated in (True, False):
        repeat = pb.AddJobRequest(
            queue=queue, type="t", idempotency_key=key, idempotency_key_generated=generated
        )
        answer = await client.stub.AddJob(repeat)
        if answer.duplicate:
            assert answer.job_id == job_id
            assert kind is None, "a key is remembered as one kind only"
            kind = generated
    return kind


async def test_a_key_the_client_generates_is_marked_and_one_given_is_not(
    client: jobwire.Client, queue: str
) -> None:
    generated = await client.add(queue, "t")
    assert await remembered_as_generated(client, queue, generated.id) is True
    chosen = await client.add(queue, "t", idempotency_key="order-18")
    assert await remembered_as_generated(client, queue, chosen.id) is False
    outcomes = await client.add_many(
        [jobwire.NewJob(queue, "t"), jobwire.NewJob(queue, "t", idempotency_key="order-19")]
    )
    ids = [o.id for o in outcomes if isinstance(o, jobwire.Added)]
    assert len(ids) == 2
    assert [await remembered_as_generated(client, queue, i) for i in ids] == [True, False]


async def test_same_key_returns_the_same_job(client: jobwire.Client, queue: str) -> None:
    first = await client.add(queue, "once", payload={"a": 1}, idempotency_key="order-17")
    second = await client.add(queue, "once", payload={"a": 1}, idempotency_key="order-17")
    assert second.id == first.id
    assert (first.duplicate, second.duplicate) == (False, True)
    assert (await client.stats(queue)).waiting == 1


class LoseFirstAnswer(grpc.aio.UnaryUnaryClientInterceptor):
    """Lets the first AddJob reach the server, then reports UNAVAILABLE as if its answer had been
    lost on the way back: the case a retry without an idempotency key would duplicate."""

    def __init__(self) -> None:
        self.adds = 0

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: Any,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        if method.endswith("/AddJob"):
            self.adds += 1
            if self.adds == 1:
                await call  # the server did add the job
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    "injected: the answer was lost",
                )
        return call


async def test_retry_on_unavailable_does_not_add_twice(server: Server, queue: str) -> None:
    lossy = LoseFirstAnswer()
    async with jobwire.Client(server.target, interceptors=[lossy], timeout=10) as client:
        added = await client.add(queue, "charge", payload={"cents": 500})
        assert lossy.adds == 2, "the add was retried after UNAVAILABLE"
        assert added.duplicate, "the retry was recognised by its idempotency key"
        assert (await client.stats(queue)).waiting == 1
        assert (await client.get(added.id)).json() == {"cents": 500}


async def test_no_retry_without_a_key(server: Server, queue: str) -> None:
    lossy = LoseFirstAnswer()
    async with jobwire.Client(
        server.target, interceptors=[lossy], auto_idempotency_key=False
    ) as client:
        with pytest.raises(jobwire.Unavailable):
            await client.add(queue, "charge")
        assert lossy.adds == 1, "an add without an idempotency key is not safe to retry"


async def test_add_many_keeps_order_and_reports_rejections(
    client: jobwire.Client, queue: str
) -> None:
    outcomes = await client.add_many(
        [
            jobwire.NewJob(queue, "a", payload={"i": 0}),
            jobwire.NewJob(queue, "bad type with spaces"),
            jobwire.NewJob(queue, "c", payload=b"raw", idempotency_key="batch-key"),
        ]
    )
    assert len(outcomes) == 3
    first, second, third = outcomes
    assert isinstance(first, jobwire.Added) and isinstance(third, jobwire.Added)
    assert isinstance(second, jobwire.Rejected)
    assert second.index == 1
    assert isinstance(second.error, jobwire.InvalidArgument)
    assert "type" in str(second.error)
    assert (await client.get(first.id)).json() == {"i": 0}
    assert (await client.get(third.id)).payload == b"raw"

    again = await client.add_many([jobwire.NewJob(queue, "c", idempotency_key="batch-key")])
    assert again == [jobwire.Added(id=third.id, duplicate=True)]


async def test_errors_are_typed(client: jobwire.Client, queue: str) -> None:
    with pytest.raises(jobwire.InvalidArgument) as invalid:
        await client.add("no spaces allowed", "t")
    assert "queue" in invalid.value.details
    with pytest.raises(jobwire.NotFound):
        await client.get(f"{queue}/01JAAAAAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(jobwire.InvalidArgument):
        await client.get("not-an-id")
    with pytest.raises(ValueError):
        await client.add(queue, "t", delay=1, run_at=datetime.now())


async def test_wait_times_out_on_a_job_nobody_runs(client: jobwire.Client, queue: str) -> None:
    added = await client.add(queue, "nobody")
    with pytest.raises(TimeoutError):
        await client.wait(added.id, timeout=0.3)


async def test_health_check_reports_serving(client: jobwire.Client) -> None:
    await serving(client)  # SERVING within a deadline (it starts NOT_SERVING)
    assert await client.health() is jobwire.ServingStatus.SERVING
    assert await client.health("") is jobwire.ServingStatus.SERVING
    with pytest.raises(jobwire.NotFound):
        await client.health("no.such.Service")


async def test_stats_and_list_queues(client: jobwire.Client, queue: str) -> None:
    await client.add(queue, "t")
    stats = await client.stats(queue)
    assert (stats.queue, stats.waiting, stats.active) == (queue, 1, 0)
    assert queue in [q.queue for q in await client.list_queues()]
    assert (await client.stats("never-used-queue")).waiting == 0
