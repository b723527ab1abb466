"""Tokens against a real server started with ``--auth-tokens``: the file is made with ``jobwire
token create``, as an operator would; the client and the worker send their tokens, a call
without one is refused, and a scope is held."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import jobwire
from tests.harness import Redis, Server, create_token
from tests.helpers import running


class Secured:
    """A server that needs tokens, and the secrets of its producer and worker."""

    def __init__(self, redis: Redis, directory: Path) -> None:
        file = directory / "tokens.json"
        self.producer = create_token(file, "py-producer", "producer", "py-*")
        self.worker = create_token(file, "py-worker", "worker")
        self.server = Server(redis, directory, extra=("--auth-tokens", str(file)))


@pytest.fixture(scope="module")
def secured(redis: Redis, tmp_root: Path) -> Iterator[Secured]:
    directory = tmp_root / "auth"
    directory.mkdir()
    setup = Secured(redis, directory)
    try:
        yield setup
    finally:
        setup.server.stop()


async def test_the_client_and_the_worker_send_their_tokens(secured: Secured) -> None:
    target = secured.server.target
    worker = jobwire.Worker(target, queues=["py-auth"], token=secured.worker)

    @worker.handler("echo")
    async def echo(job: jobwire.Job) -> bytes:
        return job.payload

    client = jobwire.Client(target, token=secured.producer, timeout=10)
    async with client, running(worker):
        added = await client.add("py-auth", "echo", payload=b"hello")
        info = await client.wait(added.id, timeout=10)
    assert info.result == b"hello"


async def test_without_a_token_or_outside_the_scope_calls_are_refused(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = secured.server.target
    monkeypatch.delenv("JOBWIRE_TOKEN", raising=False)
    async with jobwire.Client(target, timeout=10) as anonymous:
        with pytest.raises(jobwire.Unauthenticated) as refused:
            await anonymous.add("py-auth", "t")
        assert "Bearer" in refused.value.details
        assert await anonymous.health() is jobwire.ServingStatus.SERVING, "health needs none"

    monkeypatch.setenv("JOBWIRE_TOKEN", secured.producer)
    async with jobwire.Client(target, timeout=10) as from_env:
        with pytest.raises(jobwire.PermissionDenied) as outside:
            await from_env.add("billing", "t")
        assert '"billing"' in outside.value.details and "py-producer" in outside.value.details
        assert secured.producer not in outside.value.details
        with pytest.raises(jobwire.PermissionDenied):
            await from_env.stats("py-auth")  # a read of the reader role
        added = await from_env.add("py-env", "t")
        assert added.id.startswith("py-env/")
