"""What a handler gets: :class:`Job`, a delivered job and its handle on the lease (extend,
progress, the session's state and the one to write with the completion); and how a worker
spaces its reconnects (:class:`ReconnectPolicy`).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._acks import Acker
from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._sessions import SessionSnapshot, state_text
from ._types import Seconds, decode_json, encode, from_timestamp

MAX_SESSION_RERUNS = 5
"""How often a completion whose session write conflicts (someone wrote the session since the
job was delivered) runs the handler again on the fresh state, within one attempt, before the
attempt fails."""


class Job:
    """A delivered job, and the handler's handle on it.

    ``payload`` is the raw bytes; :meth:`json` decodes it. ``attempt`` counts from 1.
    ``deadline`` is when this attempt is revoked unless :meth:`extend` pushes it back.
    ``cancelled`` turns true when the job was taken away (revoked, stream lost, forced stop); a
    thread handler cannot be interrupted and should check it in long loops.

    ``session``: for a job of a session, the session's state and version as delivered (or as
    read again after a conflict, see :meth:`set_session_state`); ``None`` otherwise.
    """

    def __init__(self, message: pb.Job, acker: Acker, loop: asyncio.AbstractEventLoop) -> None:
        self.id: str = message.id
        self.queue: str = message.queue
        self.type: str = message.type
        self.payload: bytes = message.payload
        self.headers: dict[str, str] = dict(message.headers)
        self.priority: int = message.priority
        self.attempt: int = message.attempt
        self.max_attempts: int = message.max_attempts
        self.lost_deliveries: int = message.lost_deliveries
        self.lease_token: str = message.lease_token
        self.deadline: datetime | None = (
            from_timestamp(message.deadline) if message.HasField("deadline") else None
        )
        self.created_at: datetime | None = (
            from_timestamp(message.created_at) if message.HasField("created_at") else None
        )
        self.session: SessionSnapshot | None = (
            SessionSnapshot(
                id=message.session.session_id,
                state=message.session.state,
                version=message.session.version,
            )
            if message.HasField("session")
            else None
        )
        self.cancelled = False
        self._session_write: str | None = None
        self._acker = acker
        self._loop = loop

    def __repr__(self) -> str:
        return f"<jobwire.Job {self.id} type={self.type!r} attempt={self.attempt}>"

    def json(self) -> Any:
        """The payload decoded as JSON (``None`` when empty)."""
        return decode_json(self.payload)

    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode()

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    async def extend(self, by: Seconds) -> datetime:
        """Pushes this attempt's deadline to now + ``by`` (for long jobs); returns it. Raises
        :class:`jobwire.LeaseLost` when the job was already taken back."""
        self.deadline = await self._acker.extend(self.id, self.lease_token, by)
        return self.deadline

    def extend_blocking(self, by: Seconds) -> datetime:
        """:meth:`extend` for handlers running in a thread."""
        return asyncio.run_coroutine_threadsafe(self.extend(by), self._loop).result()

    async def progress(self, progress: object) -> None:
        """Reports this attempt's progress (bytes as is, else JSON; at most 64 KiB): kept on the
        job (:attr:`jobwire.JobInfo.progress`) and sent to whoever watches it."""
        await self._acker.progress(self.id, self.lease_token, encode(progress))

    def progress_blocking(self, progress: object) -> None:
        """:meth:`progress` for handlers running in a thread."""
        asyncio.run_coroutine_threadsafe(self.progress(progress), self._loop).result()

    def set_session_state(self, state: object) -> None:
        """Asks for the job's session to hold ``state`` (bytes as JSON text, else JSON-encoded;
        at most 256 KiB) once the job completes: written in the same atomic step as the
        completion, and only if the session is still at :attr:`session`'s version. If someone
        wrote the session in between (the server answers ABORTED), the worker reads it again,
        puts it in :attr:`session` and runs the handler again on it, within the same attempt (up
        to 5 times; then the attempt fails and is retried). Ignored when the handler fails."""
        if self.session is None:
            raise ValueError(f"job {self.id} has no session: there is no state to write")
        self._session_write = state_text(state)

    def take_session_write(self) -> tuple[str | None, int | None]:
        """The state :meth:`set_session_state` asked for and the version it expects (``None``s
        when none), forgetting it: a run of the handler again must ask anew."""
        state, self._session_write = self._session_write, None
        if state is None or self.session is None:
            return None, None
        return state, self.session.version


@dataclass(frozen=True)
class ReconnectPolicy:
    """Waits between reconnect attempts: random in [w/2, w], w = initial * multiplier**n, capped
    at ``max``; back to ``initial`` once a stream has worked."""

    initial: float = 0.2
    max: float = 10.0
    multiplier: float = 2.0

    def wait(self, failures: int) -> float:
        ceiling = min(self.initial * self.multiplier ** max(failures - 1, 0), self.max)
        return random.uniform(ceiling / 2, ceiling)


DEFAULT_RECONNECT = ReconnectPolicy()
