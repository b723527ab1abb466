"""Fixtures: one private Redis and one jobwire server for the session; tests keep apart by using
their own queue names."""

from __future__ import annotations

import os

# The tests start server processes while gRPC threads run. gRPC's fork handlers then run in the
# child between fork and exec and can kill it ("epoll_wait error: Bad file descriptor"); the
# child only execs, so it needs none of them. Must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import jobwire
from tests.harness import Redis, Server


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    # Short path: a unix socket path must stay under ~100 bytes.
    with tempfile.TemporaryDirectory(prefix="jw-py-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def redis(tmp_root: Path) -> Iterator[Redis]:
    directory = tmp_root / "redis"
    directory.mkdir()
    server = Redis(directory)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(redis: Redis, tmp_root: Path) -> Iterator[Server]:
    process = Server(redis, tmp_root)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def queue() -> str:
    """A queue name no other test uses."""
    return f"q-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(server: Server) -> AsyncIterator[jobwire.Client]:
    async with jobwire.Client(server.target, timeout=10) as c:
        yield c
