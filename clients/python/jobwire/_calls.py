"""What the groups of client calls share: the stubs, the call metadata, the default timeout and
the retry policy, and one way to make a unary call with them.

:class:`jobwire.Client` is assembled from groups (producing and acks in ``_client``, sessions in
``_sessions``, schedules in ``_schedules``, events in ``_events``, admin calls in
``_admin``), each a class over
:class:`Calls`, so each file stays about one part of the API.
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc

from ._errors import Error, LeaseLost
from ._gen.jobwire.v1 import jobwire_pb2_grpc as pb_grpc
from ._gen.jobwire.v1 import schedules_pb2_grpc as spb_grpc
from ._retry import NO_RETRY, RetryPolicy, call_unary

Req = TypeVar("Req")
Resp = TypeVar("Resp")

UNSET: Any = object()
"""The default of every ``timeout`` parameter: the client's own default applies."""


class Calls:
    """The state every call group reads; :class:`jobwire.Client` sets it up."""

    stub: pb_grpc.QueueServiceAsyncStub
    """The generated QueueService stub, for anything the client does not wrap."""
    sessions_stub: pb_grpc.SessionServiceAsyncStub
    """The generated SessionService stub."""
    schedules_stub: spb_grpc.ScheduleServiceAsyncStub
    """The generated ScheduleService stub."""
    metadata: grpc.aio.Metadata | None
    timeout: float | None
    retry: RetryPolicy

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is UNSET else timeout

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None,
        *,
        retry: bool = True,
        failed_precondition: type[Error] = LeaseLost,
    ) -> Resp:
        """One call within ``timeout`` (the client's default for :data:`UNSET`), retried on
        UNAVAILABLE when ``retry`` says repeating it is safe."""
        return await call_unary(
            method,
            request,
            timeout=self._timeout(timeout),
            retry=self.retry if retry else NO_RETRY,
            metadata=self.metadata,
            failed_precondition=failed_precondition,
        )
