"""The Python conformance driver: serves one actor of a scenario run (tests/conformance/README.md)
over the public API of the Python client, reading one JSON request per line on stdin and
writing one JSON reply per line on stdout, in order. Requests are handled one at a time; a
worker, when started, runs in the background of the same event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jobwire

LANG = os.environ.get("CONFORMANCE_LANG", "python")
ACTOR = os.environ.get("CONFORMANCE_ACTOR", "")
DEFAULT_WAIT_MS = 10_000

Reply = dict[str, Any]


class Refused(Exception):
    """A request the driver answers with ``ok: false`` and this code."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message)
        self.code = code


def payload_of(value: Any) -> Any:
    """A JSON value of a request as the client sends it (absent: ``{}``)."""
    return {} if value is None else value


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def wait_seconds(request: dict[str, Any]) -> float:
    return int(request.get("timeout_ms") or DEFAULT_WAIT_MS) / 1000


def error_reply(error: BaseException) -> Reply:
    if isinstance(error, Refused):
        return {"ok": False, "code": error.code, "message": str(error)}
    if isinstance(error, jobwire.Error):
        return {"ok": False, "code": error.code.name, "message": error.details}
    if isinstance(error, TimeoutError):
        return {"ok": False, "code": "DEADLINE_EXCEEDED", "message": str(error)}
    return {"ok": False, "code": "UNKNOWN", "message": f"{type(error).__name__}: {error}"}


# ---- the worker ------------------------------------------------------------------------------


@dataclass
class Calls:
    """Every handler call of this worker process, by job, and the releases of blocked ones."""

    by_job: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    releases: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def release_of(self, job_id: str) -> asyncio.Semaphore:
        return self.releases.setdefault(job_id, asyncio.Semaphore(0))

    async def note(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, job_id: str, invocation: int, until: str, timeout: float) -> Reply:
        def reached() -> bool:
            calls = self.by_job.get(job_id, [])
            return len(calls) >= invocation and (
                until != "ended" or calls[invocation - 1]["ended"] is not None
            )

        try:
            async with asyncio.timeout(timeout), self.changed:
                await self.changed.wait_for(reached)
        except TimeoutError:
            raise Refused("DEADLINE_EXCEEDED", f"call {invocation} of {job_id} not {until}")
        return {"invocations": [dict(c) for c in self.by_job[job_id]]}


def blocks(instructions: dict[str, Any], invocation: int) -> bool:
    block = instructions.get("block")
    if block is True:
        return True
    return isinstance(block, list) and invocation in block


def calc(instructions: dict[str, Any]) -> dict[str, Any]:
    spec = instructions.get("calc")
    if not isinstance(spec, dict):
        return {}
    n, t = int(spec.get("n", 0)), str(spec.get("text", ""))
    return {"square": n * n, "reversed": t[::-1], "utf8_bytes": len(t.encode())}


class WorkerActor:
    def __init__(self, request: dict[str, Any]) -> None:
        self.calls = Calls()
        self.hold = bool(request.get("hold"))
        self.worker = jobwire.Worker(
            os.environ["JOBWIRE_ADDR"],
            queues=list(request["queues"]),
            concurrency=int(request.get("concurrency") or 1),
            worker_id=f"conformance-python-{ACTOR}",
            reconnect=jobwire.ReconnectPolicy(initial=0.1, max=1.0),
        )
        self.worker.register("conf", self.handle)
        self.task = asyncio.create_task(self.worker.run(handle_signals=False))

    async def stop(self) -> None:
        self.worker.stop()
        await self.task

    async def handle(self, job: jobwire.Job) -> object:
        instructions = job.json() or {}
        record: dict[str, Any] = {
            "attempt": job.attempt,
            "lost_deliveries": job.lost_deliveries,
            "token": job.lease_token,
            "session_state": job.session.state if job.session else None,
            "session_version": job.session.version if job.session else None,
            "ended": None,
        }
        seen = list(job.session.json()["seen"]) if job.session else None
        calls = self.calls.by_job.setdefault(job.id, [])
        calls.append(record)
        invocation = len(calls)
        await self.calls.note()
        ended = "returned"
        try:
            if self.hold or blocks(instructions, invocation):
                await self.calls.release_of(job.id).acquire()
            if invocation == 1 and instructions.get("rate_limited_ms"):
                ended = "rate_limited"
                raise jobwire.RateLimited(int(instructions["rate_limited_ms"]) / 1000)
            if "progress" in instructions:
                await job.progress(instructions["progress"])
            if job.attempt <= int(instructions.get("fail_attempts") or 0):
                ended = "failed"
                raise jobwire.Retry(f"failed attempt {job.attempt}")
            if instructions.get("permanent"):
                ended = "failed"
                raise jobwire.Permanent(str(instructions["permanent"]))
            if "append" in instructions:
                job.set_session_state({"seen": [*(seen or []), instructions["append"]]})
            header = job.headers.get("x-conformance", "")
            return {
                "lang": LANG,
                "job_id": job.id,
                "type": job.type,
                "attempt": job.attempt,
                "lost_deliveries": job.lost_deliveries,
                "header": header,
                "seen": seen,
                **calc(instructions),
            }
        except asyncio.CancelledError:
            ended = "cancelled"
            raise
        except BaseException:
            ended = "failed" if ended == "returned" else ended
            raise
        finally:
            record["ended"] = ended
            await self.calls.note()


# ---- the requests ----------------------------------------------------------------------------


class Driver:
    def __init__(self, client: jobwire.Client) -> None:
        self.client = client
        self.worker: WorkerActor | None = None
        self.events: asyncio.Queue[jobwire.JobEvent | BaseException] | None = None
        self.subscription: asyncio.Task[None] | None = None

    async def serve(self, request: dict[str, Any]) -> Reply:
        op = request.get("op", "")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            return {"ok": False, "code": "UNIMPLEMENTED", "message": f"no op {op!r}"}
        try:
            reply: Reply = await handler(request)
        except Exception as e:  # noqa: BLE001 - every failure is a reply
            return error_reply(e)
        return {"ok": True, **reply}

    # producer

    async def op_add(self, r: dict[str, Any]) -> Reply:
        backoff = jobwire.Backoff.fixed(r["backoff_ms"] / 1000) if r.get("backoff_ms") else None
        added = await self.client.add(
            r["queue"],
            r["type"],
            payload_of(r.get("payload")),
            headers=r.get("headers"),
            max_attempts=r.get("max_attempts"),
            backoff=backoff,
            attempt_timeout=r["timeout_ms"] / 1000 if r.get("timeout_ms") else None,
            session_id=r.get("session"),
            idempotency_key=r.get("idempotency_key"),
            rate_key=r.get("rate_key"),
            concurrency_key=r.get("concurrency_key"),
        )
        return {"job_id": added.id, "duplicate": added.duplicate}

    async def op_await(self, r: dict[str, Any]) -> Reply:
        try:
            info = await self.client.wait(r["job"], timeout=wait_seconds(r))
        except jobwire.JobCancelled:
            return {"state": "CANCELLED"}
        except jobwire.JobDead as e:
            return {"state": "DEAD", "error": e.info.last_error}
        return {"state": "COMPLETED", "result": text(info.result)}

    async def op_info(self, r: dict[str, Any]) -> Reply:
        info = await self.client.get(r["job"])
        return {
            "state": info.state.name,
            "attempts": info.attempts,
            "lost_deliveries": info.lost_deliveries,
            "result": text(info.result),
            "last_error": info.last_error,
            "progress": text(info.progress),
        }

    async def op_cancel(self, r: dict[str, Any]) -> Reply:
        await self.client.cancel(r["job"])
        return {}

    async def op_session_create(self, r: dict[str, Any]) -> Reply:
        session = await self.client.create_session(
            r["queue"],
            r.get("name") or "",
            state=payload_of(r.get("state")),
            max_concurrency=r.get("max_concurrency"),
        )
        return {"session_id": session.id, "version": session.version}

    async def op_session_get(self, r: dict[str, Any]) -> Reply:
        session = await self.client.get_session(r["session"])
        return {"state": session.state, "version": session.version}

    async def op_session_update(self, r: dict[str, Any]) -> Reply:
        version = await self.client.update_session(
            r["session"],
            state=payload_of(r.get("state")),
            expected_version=r.get("expected_version"),
        )
        return {"version": version}

    async def op_complete_with_token(self, r: dict[str, Any]) -> Reply:
        await self.client.complete(r["job"], r["token"], payload_of(r.get("result")))
        return {}

    async def op_subscribe_start(self, r: dict[str, Any]) -> Reply:
        await self.op_subscribe_stop(r)
        events: asyncio.Queue[jobwire.JobEvent | BaseException] = asyncio.Queue()

        async def follow() -> None:
            try:
                async for event in self.client.subscribe(r["queue"], cursor=r.get("cursor") or ""):
                    events.put_nowait(event)
            except Exception as e:  # noqa: BLE001 - handed to the next take
                events.put_nowait(e)

        self.events = events
        self.subscription = asyncio.create_task(follow())
        return {}

    async def op_subscribe_take(self, r: dict[str, Any]) -> Reply:
        if self.events is None:
            raise Refused("FAILED_PRECONDITION", "no subscription")
        taken: list[jobwire.JobEvent] = []
        try:
            async with asyncio.timeout(wait_seconds(r)):
                while len(taken) < int(r["count"]):
                    taken.append(await self.next_event())
        except TimeoutError:
            raise Refused("DEADLINE_EXCEEDED", f"{len(taken)} of {r['count']} events came")
        reply: Reply = {"events": [event_reply(e) for e in taken], "cursor": taken[-1].cursor}
        if r.get("quiet_ms"):
            extra: list[jobwire.JobEvent] = []
            try:
                async with asyncio.timeout(r["quiet_ms"] / 1000):
                    while True:
                        extra.append(await self.next_event())
            except TimeoutError:
                pass
            reply["extra"] = [event_reply(e) for e in extra]
        return reply

    async def next_event(self) -> jobwire.JobEvent:
        assert self.events is not None
        item = await self.events.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def op_subscribe_stop(self, r: dict[str, Any]) -> Reply:
        if self.subscription is not None:
            self.subscription.cancel()
            await asyncio.gather(self.subscription, return_exceptions=True)
        self.subscription, self.events = None, None
        return {}

    # schedules and settings

    async def op_schedule_upsert(self, r: dict[str, Any]) -> Reply:
        template = jobwire.JobTemplate(
            r["type"],
            payload=payload_of(r.get("payload")),
            headers=r.get("headers"),
            max_attempts=r.get("max_attempts"),
        )
        schedule, created = await self.client.upsert_schedule(
            r["queue"],
            r["name"],
            template,
            every=r["every_ms"] / 1000 if r.get("every_ms") else None,
            cron=r.get("cron"),
            time_zone=r.get("time_zone") or "",
            jitter=r["jitter_ms"] / 1000 if r.get("jitter_ms") else None,
            missed_fires=jobwire.MissedFires[r.get("missed_fires") or "UNSPECIFIED"],
            catch_up_max=int(r.get("catch_up_max") or 0),
            overlap=jobwire.Overlap[r.get("overlap") or "UNSPECIFIED"],
        )
        return {"created": created, **schedule_reply(schedule)}

    async def op_schedule_get(self, r: dict[str, Any]) -> Reply:
        return schedule_reply(await self.client.get_schedule(r["queue"], r["name"]))

    async def op_schedule_list(self, r: dict[str, Any]) -> Reply:
        return {"names": [s.name for s in await self.client.list_schedules(r["queue"])]}

    async def op_schedule_pause(self, r: dict[str, Any]) -> Reply:
        await self.client.pause_schedule(r["queue"], r["name"])
        return {}

    async def op_schedule_resume(self, r: dict[str, Any]) -> Reply:
        await self.client.resume_schedule(r["queue"], r["name"])
        return {}

    async def op_schedule_delete(self, r: dict[str, Any]) -> Reply:
        await self.client.delete_schedule(r["queue"], r["name"])
        return {}

    async def op_schedule_trigger(self, r: dict[str, Any]) -> Reply:
        return {"job_id": await self.client.trigger_schedule(r["queue"], r["name"])}

    async def op_settings_get(self, r: dict[str, Any]) -> Reply:
        return settings_reply(await self.client.get_queue_settings(r["queue"]))

    async def op_settings_set(self, r: dict[str, Any]) -> Reply:
        given = r.get("settings") or {}
        fields: dict[str, Any] = {name: given[name] for name in SETTING_COUNTS if name in given}
        for name, conformance_name in SETTING_DURATIONS.items():
            if f"{conformance_name}_ms" in given:
                fields[name] = timedelta(milliseconds=given[f"{conformance_name}_ms"])
        settings = jobwire.QueueSettings(**fields)
        clear = [PYTHON_SETTING_NAMES.get(name, name) for name in r.get("clear") or []]
        return settings_reply(await self.client.set_queue_settings(r["queue"], settings, clear=clear))

    # worker

    async def op_worker_start(self, r: dict[str, Any]) -> Reply:
        if self.worker is not None:
            raise Refused("FAILED_PRECONDITION", "a worker runs already")
        self.worker = WorkerActor(r)
        return {}

    async def op_worker_stop(self, r: dict[str, Any]) -> Reply:
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        return {}

    async def op_release(self, r: dict[str, Any]) -> Reply:
        self.running_worker().calls.release_of(r["job"]).release()
        return {}

    async def op_wait_handler(self, r: dict[str, Any]) -> Reply:
        return await self.running_worker().calls.wait_for(
            r["job"], int(r.get("invocation") or 1), r.get("until") or "started", wait_seconds(r)
        )

    def running_worker(self) -> WorkerActor:
        if self.worker is None:
            raise Refused("FAILED_PRECONDITION", "no worker runs")
        return self.worker


def schedule_reply(s: jobwire.Schedule) -> Reply:
    return {
        "name": s.name,
        "type": s.template.type,
        "every_ms": round(s.every.total_seconds() * 1000) if s.every is not None else None,
        "cron": s.cron,
        "time_zone": s.time_zone,
        "paused": s.paused,
        "has_next_fire": s.next_fire_at is not None,
        "fires": s.fires,
        "revision": s.revision,
        "last_job_id": s.last_job_id,
        "overlap": s.overlap.name,
        "missed_fires": s.missed_fires.name,
        "catch_up_max": s.catch_up_max,
    }


# The settings of the conformance ops: counts by their names, durations as `<name>_ms`.
SETTING_COUNTS = (
    "max_waiting",
    "max_attempts",
    "concurrency",
    "completed_max",
    "dead_max",
    "key_concurrency",
)
# This client's name of each duration setting -> the conformance name (before `_ms`).
SETTING_DURATIONS = {
    "attempt_timeout": "timeout",
    "completed_retention": "completed_retention",
    "dead_retention": "dead_retention",
}
# The conformance (proto) names of settings to clear whose name in this client differs.
PYTHON_SETTING_NAMES = {"timeout": "attempt_timeout"}


def settings_reply(view: jobwire.QueueSettingsView) -> Reply:
    def one(s: jobwire.QueueSettings) -> Reply:
        out: Reply = {name: getattr(s, name) for name in SETTING_COUNTS}
        for name, name_ms in SETTING_DURATIONS.items():
            value = getattr(s, name)
            out[f"{name_ms}_ms"] = None if value is None else round(value.total_seconds() * 1000)
        return out

    return {"settings": one(view.settings), "effective": one(view.effective)}


def event_reply(event: jobwire.JobEvent) -> Reply:
    return {"job_id": event.job_id, "type": event.type.name, "attempt": event.attempt}


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with jobwire.Client(os.environ["JOBWIRE_ADDR"]) as client:
        driver = Driver(client)
        while line := await reader.readline():
            if not line.strip():
                continue
            request = json.loads(line)
            reply = await driver.serve(request)
            print(json.dumps({"id": request.get("id"), **reply}), flush=True)
        await driver.op_subscribe_stop({})
        await driver.op_worker_stop({})


if __name__ == "__main__":
    # The client's log goes to stderr, which the runner keeps in the run's log.
    logging.basicConfig(
        level=os.environ.get("JOBWIRE_LOG", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(main())
