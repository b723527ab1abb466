"""Helpers for running a worker inside a test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import jobwire


@asynccontextmanager
async def running(worker: jobwire.Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Runs ``worker`` in a task for the duration of the block, then stops it gracefully."""
    task = asyncio.create_task(worker.run(handle_signals=False))
    try:
        yield task
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=15)


async def until(condition: asyncio.Event, timeout: float = 10.0) -> None:
    """Waits for an event with a deadline."""
    await asyncio.wait_for(condition.wait(), timeout=timeout)


async def serving(client: jobwire.Client, timeout: float = 10.0) -> None:
    """Waits (with a deadline) until the server's health check says SERVING: it starts
    NOT_SERVING and flips once it has seen its Redis, just after it starts listening."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (status := await client.health()) is not jobwire.ServingStatus.SERVING:
        if loop.time() > deadline:
            raise TimeoutError(f"the server is still {status.name} after {timeout}s")
        await asyncio.sleep(0.02)


async def state_becomes(
    client: jobwire.Client, job_id: str, state: jobwire.JobState, timeout: float = 10.0
) -> jobwire.JobInfo:
    """Reads the job until it is in ``state`` (with a deadline) and returns it. For changes the
    server makes on its own after a call returns, e.g. requeueing once it sees a stream close."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (info := await client.get(job_id)).state is not state:
        if loop.time() > deadline:
            raise AssertionError(f"job {job_id} is {info.state.name}, not {state.name}: {info}")
        await asyncio.sleep(0.02)
    return info


class Endless:
    """A handler that runs until it is cancelled, noting when it starts and when it is
    cancelled. Register it with ``threaded=False`` (it is a callable object, not a function)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, job: jobwire.Job) -> str:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "should never be stored"
