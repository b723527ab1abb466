"""The processes of a conformance run: redis-server, jobwire servers and driver processes, each
started in a session of its own and killed (with its children) when the runner exits."""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from matching import StepFailed

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class Processes:
    """Every process started here, so that all of them are killed on exit."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        out = open(log, "ab")  # noqa: SIM115 - the child owns it; closed with the Popen
        kwargs.setdefault("stdout", out)
        proc = subprocess.Popen(cmd, stderr=out, start_new_session=True, **kwargs)
        out.close()
        self.live.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.live:
            if proc.poll() is None:
                kill_group(proc)
        for proc in self.live:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started in a session of its own, with its children."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_until(what: str, check: Any, proc: subprocess.Popen[bytes], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        if proc.poll() is not None:
            raise StepFailed(f"{what}: the process exited ({proc.returncode}) before it was ready")
        if time.monotonic() > deadline:
            raise StepFailed(f"{what}: not ready after {limit_s:.0f} s")
        time.sleep(0.05)


class Redis:
    """The run's one redis-server, shared by every jobwire server (each with its own key prefix)."""

    def __init__(self, procs: Processes, tmp: Path) -> None:
        self.socket = tmp / "redis.sock"
        self.log = tmp / "redis.log"
        # Private: no TCP port and no persistence; its unix socket in the run's temp dir.
        args = ["--unixsocket", str(self.socket), "--dir", str(tmp), "--save", ""]
        self.proc = procs.start(
            ["redis-server", *"--port 0 --unixsocketperm 700 --appendonly no".split(), *args],
            self.log,
        )
        wait_until(
            "redis-server",
            lambda: "ready to accept connections" in self.log.read_text(errors="replace").lower(),
            self.proc,
            20,
        )


class Server:
    """One jobwire server: started on port 0 the first time, again on the same port after."""

    numbers = itertools.count(1)  # next() on it is atomic: runs start servers from several threads

    def __init__(self, procs: Processes, tmp: Path, jobwire: str, redis: Redis, flags: dict[str, Any]) -> None:
        self.n = next(Server.numbers)
        self.procs = procs
        self.tmp = tmp
        self.jobwire = jobwire
        self.redis = redis
        self.prefix = f"conf{self.n}"  # servers of different runs never see each other's keys
        self.log = tmp / f"server-{self.n}.log"
        self.extra: list[str] = []
        if "drain_grace_ms" in flags:
            self.extra += ["--drain-grace", f"{int(flags['drain_grace_ms'])}ms"]
        if "lease_ttl_ms" in flags:
            self.extra += ["--lease-ttl", f"{int(flags['lease_ttl_ms'])}ms"]
        self.addr = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start()

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise StepFailed("server_start: the server is still running")
        self.starts += 1
        ready = self.tmp / f"server-{self.n}-{self.starts}.ready"
        listen = self.addr or "127.0.0.1:0"
        env = dict(os.environ, NO_COLOR="1", JOBWIRE_LOG=os.environ.get("CONFORMANCE_SERVER_LOG", "info"))
        with open(self.log, "ab") as log:
            log.write(f"---- start {self.starts} on {listen}\n".encode())
        self.proc = self.procs.start(
            [
                self.jobwire,
                "serve",
                "--listen",
                listen,
                "--redis-url",
                f"unix://{self.redis.socket}",
                "--key-prefix",
                self.prefix,
                "--ready-file",
                str(ready),
                *self.extra,
            ],
            self.log,
            env=env,
        )
        wait_until(
            f"jobwire serve ({self.log.name})", lambda: ready.exists() and ready.stat().st_size > 0, self.proc, 30
        )
        self.addr = ready.read_text().splitlines()[0].strip()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigterm(self) -> None:
        if not self.alive():
            raise StepFailed("server_sigterm: the server is not running")
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, limit_s: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired as e:
            raise StepFailed(f"server_wait_exit: the server still runs after {limit_s:.1f} s") from e

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)


def driver_path(lang: str) -> Path:
    """drivers/<lang>/driver, or under $CONFORMANCE_DRIVERS (drivers of another checkout)."""
    return Path(os.environ.get("CONFORMANCE_DRIVERS") or HERE / "drivers") / lang / "driver"


class Actor:
    """One driver process serving one actor: a request out, one reply line back, in order."""

    def __init__(self, procs: Processes, lang: str, name: str, addr: str, log: Path) -> None:
        self.lang = lang
        self.name = name
        self.log = log
        env = dict(os.environ, JOBWIRE_ADDR=addr, CONFORMANCE_LANG=lang, CONFORMANCE_ACTOR=name)
        self.proc = procs.start(
            [str(driver_path(lang))], log, env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.replies: queue.Queue[str | None] = queue.Queue()
        self.pending: dict[str, Any] | None = None  # a "wait": false step whose reply is due
        self.next_id = 0
        self.killed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.replies.put(raw.decode(errors="replace"))
        self.replies.put(None)

    def send(self, request: dict[str, Any]) -> int:
        self.next_id += 1
        line = json.dumps({"id": self.next_id, **request}, ensure_ascii=False)
        with open(self.log, "a") as log:
            log.write(f">> {line}\n")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError as e:
            raise StepFailed(f"{self.name} ({self.lang}): the driver is gone (exit {self.proc.poll()})") from e
        return self.next_id

    def receive(self, want_id: int, limit_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + limit_s
        while True:
            try:
                line = self.replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty as e:
                kill_group(self.proc)
                raise StepFailed(
                    f"{self.name} ({self.lang}): no reply to request {want_id} within {limit_s:.0f} s (driver killed)"
                ) from e
            if line is None:
                raise StepFailed(
                    f"{self.name} ({self.lang}): the driver exited ({self.proc.wait()}) "
                    f"before answering request {want_id}"
                )
            with open(self.log, "a") as log:
                log.write(f"<< {line.rstrip()}\n")
            try:
                reply = json.loads(line)
            except json.JSONDecodeError as e:
                raise StepFailed(f"{self.name} ({self.lang}): a reply line is not JSON: {line!r}") from e
            if not isinstance(reply, dict):
                raise StepFailed(f"{self.name} ({self.lang}): a reply is not a JSON object: {line!r}")
            if reply.get("id") != want_id:
                raise StepFailed(f"{self.name} ({self.lang}): reply {reply.get('id')} where {want_id} was due")
            return reply

    def close(self, limit_s: float = 15) -> str | None:
        """EOF on stdin: the driver stops its worker and must exit 0. Returns a problem, if any."""
        if self.killed:
            return None
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            status = self.proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            return f"{self.name} ({self.lang}) did not exit within {limit_s:.0f} s of EOF (killed)"
        if status != 0:
            return f"{self.name} ({self.lang}) exited with status {status} after EOF"
        return None
