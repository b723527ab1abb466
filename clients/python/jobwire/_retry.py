"""Retrying unary calls on UNAVAILABLE, within one overall deadline.

Only calls that are safe to repeat are retried: reads, acks (a lease token fences them), and adds
that carry an idempotency key (the server returns the first job's id for a repeat). A retried call
keeps the caller's ``timeout`` as a budget for all its attempts, not per attempt.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc

from ._errors import Error, LeaseLost, from_rpc_error

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True)
class RetryPolicy:
    """How UNAVAILABLE is retried: up to ``attempts`` tries in all, waiting a random time up to
    ``initial * multiplier ** n`` (capped at ``max``) between them ("full jitter")."""

    attempts: int = 5
    initial: float = 0.1
    max: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts: at least 1")
        if self.initial < 0 or self.max < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy: waits must be >= 0 and multiplier >= 1")

    def waits(self) -> Iterator[float]:
        """The waits before the 2nd, 3rd... tries."""
        ceiling = self.initial
        for _ in range(self.attempts - 1):
            yield random.uniform(ceiling / 2, ceiling)
            ceiling = min(ceiling * self.multiplier, self.max)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


async def call_unary(
    method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
    request: Req,
    *,
    timeout: float | None,
    retry: RetryPolicy,
    metadata: grpc.aio.Metadata | None = None,
    failed_precondition: type[Error] = LeaseLost,
) -> Resp:
    """Calls ``method``; retries UNAVAILABLE per ``retry`` while ``timeout`` (seconds, for all
    tries together) allows; raises :class:`jobwire.Error` subclasses (``failed_precondition``
    is the one FAILED_PRECONDITION becomes)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    waits = retry.waits()
    while True:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            return await method(request, timeout=remaining, metadata=metadata)
        except grpc.aio.AioRpcError as e:
            error: Error = from_rpc_error(e, failed_precondition)
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise error from e
            wait = next(waits, None)
            if wait is None or (deadline is not None and time.monotonic() + wait >= deadline):
                raise error from e
        await asyncio.sleep(wait)
