"""Sessions (``SessionService``): a state document plus its own ordered line of jobs in a queue.

A session's jobs start in the order they were added (``max_concurrency`` at a time), each
delivered with the session's state and version (:attr:`jobwire.Job.session`); a handler may
write a new state in the same atomic step as completing (:meth:`jobwire.Job.set_session_state`).
States are JSON documents: given as ``bytes`` they travel as they are (JSON text), any other
value is JSON-encoded, as payloads are.

Retries: reads and deletes are retried on UNAVAILABLE; creates and updates are not, since a
repeat of one that went through would fail as ALREADY_EXISTS or as a version conflict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ._calls import UNSET, Calls
from ._errors import Conflict
from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._types import JobInfo, Page, Seconds, decode_json, encode, from_timestamp, to_duration


def _optional_time(message: Any, name: str) -> datetime | None:
    return from_timestamp(getattr(message, name)) if message.HasField(name) else None


def state_text(state: object) -> str:
    """A session state as the JSON text the server takes (bytes as is, else JSON-encoded)."""
    return encode(state).decode()


@dataclass(frozen=True)
class Session:
    """A session as the server last reported it."""

    id: str
    """``<queue>/<name>``."""
    state: str
    """The state, JSON text (:meth:`json` decodes it)."""
    version: int
    """Goes up by one on every write of the state."""
    created_at: datetime | None
    updated_at: datetime | None
    ttl: timedelta
    """It expires after this long without activity, never while it holds jobs."""
    max_concurrency: int
    running_jobs: int
    queued_jobs: int
    """Its jobs released to the queue and not started yet (waiting, delayed or retrying)."""
    pending_jobs: int
    """Its jobs still waiting inside the session."""

    def json(self) -> Any:
        """The state decoded as JSON."""
        return decode_json(self.state.encode())

    @classmethod
    def from_proto(cls, m: pb.Session) -> Session:
        return cls(
            id=m.id,
            state=m.state,
            version=m.version,
            created_at=_optional_time(m, "created_at"),
            updated_at=_optional_time(m, "updated_at"),
            ttl=m.ttl.ToTimedelta(),
            max_concurrency=m.max_concurrency,
            running_jobs=m.running_jobs,
            queued_jobs=m.queued_jobs,
            pending_jobs=m.pending_jobs,
        )


@dataclass(frozen=True)
class SessionSnapshot:
    """A session's state and version as a job was handed them (:attr:`jobwire.Job.session`)."""

    id: str
    state: str
    """JSON text."""
    version: int
    """The version a state written with the completion requires the session to still be at."""

    def json(self) -> Any:
        """The state decoded as JSON (``None`` when empty)."""
        return decode_json(self.state.encode())


class SessionCalls(Calls):
    """The ``SessionService`` calls of :class:`jobwire.Client`."""

    async def create_session(
        self,
        queue: str,
        name: str = "",
        *,
        state: object = None,
        ttl: Seconds | None = None,
        max_concurrency: int | None = None,
        timeout: float | None = UNSET,
    ) -> Session:
        """Creates a session in ``queue``; its id is ``<queue>/<name>`` (a generated name when
        ``name`` is empty). ``state``: the initial state (default ``{}``). ``ttl``: it expires
        after this long without activity (default 24 h). ``max_concurrency``: its jobs running
        at once (default 1). A name already taken raises :class:`jobwire.AlreadyExists`."""
        request = pb.CreateSessionRequest(
            queue=queue, name=name, state="" if state is None else state_text(state)
        )
        if ttl is not None:
            request.ttl.CopyFrom(to_duration(ttl, "ttl"))
        if max_concurrency is not None:
            request.max_concurrency = max_concurrency
        response = await self._unary(
            self.sessions_stub.CreateSession, request, timeout, retry=False
        )
        return Session.from_proto(response.session)

    async def get_session(self, session_id: str, *, timeout: float | None = UNSET) -> Session:
        """Reads a session: state, version, job counts (:class:`jobwire.NotFound` if unknown)."""
        response = await self._unary(
            self.sessions_stub.GetSession, pb.GetSessionRequest(session_id=session_id), timeout
        )
        return Session.from_proto(response.session)

    async def update_session(
        self,
        session_id: str,
        *,
        state: object = UNSET,
        merge_patch: object = UNSET,
        expected_version: int | None = None,
        timeout: float | None = UNSET,
    ) -> int:
        """Writes a session's state and returns its new version: give exactly one of ``state``
        (the whole new state) and ``merge_patch`` (an RFC 7396 JSON merge patch). With
        ``expected_version``, a compare-and-set: at another version it raises
        :class:`jobwire.Conflict` and writes nothing."""
        if (state is UNSET) == (merge_patch is UNSET):
            raise ValueError("update_session: give exactly one of state and merge_patch")
        request = pb.UpdateSessionRequest(session_id=session_id)
        if state is not UNSET:
            request.state = state_text(state)
        else:
            request.merge_patch = state_text(merge_patch)
        if expected_version is not None:
            request.expected_version = expected_version
        response = await self._unary(
            self.sessions_stub.UpdateSession,
            request,
            timeout,
            retry=False,
            failed_precondition=Conflict,
        )
        return response.version

    async def delete_session(self, session_id: str, *, timeout: float | None = UNSET) -> None:
        """Deletes a session, its state and its jobs not started yet; its running jobs can no
        longer change anything and end cancelled."""
        await self._unary(
            self.sessions_stub.DeleteSession,
            pb.DeleteSessionRequest(session_id=session_id),
            timeout,
        )

    async def list_sessions(
        self,
        queue: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = UNSET,
    ) -> Page[Session]:
        """One page of a queue's sessions (``page_size`` 1 to 100, 0 for the server's default
        of 100; a page may be shorter). Follow ``next_page_token`` until it is empty."""
        response = await self._unary(
            self.sessions_stub.ListSessions,
            pb.ListSessionsRequest(queue=queue, page_size=page_size, page_token=page_token),
            timeout,
        )
        return Page(
            items=[Session.from_proto(s) for s in response.sessions],
            next_page_token=response.next_page_token,
        )

    async def list_session_jobs(
        self,
        session_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = UNSET,
    ) -> Page[JobInfo]:
        """One page of the jobs still pending inside a session (added, not yet released to its
        queue), next to be released first: the session's add order. ``page_size`` 1 to 100
        (0: 100); follow ``next_page_token`` until it is empty. Jobs the session released
        already are not listed (``list_jobs`` shows them, with their ``session_id``)."""
        response = await self._unary(
            self.sessions_stub.ListSessionJobs,
            pb.ListSessionJobsRequest(
                session_id=session_id, page_size=page_size, page_token=page_token
            ),
            timeout,
        )
        return Page(
            items=[JobInfo.from_proto(j) for j in response.pending_jobs],
            next_page_token=response.next_page_token,
        )
