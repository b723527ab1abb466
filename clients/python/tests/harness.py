"""Real processes for the tests: a private redis-server on a unix socket and the jobwire binary on
port 0. Start-up is awaited with a deadline (never a sleep): redis-server's "ready" log line,
and the address jobwire writes to its ``--ready-file``. Every process is killed at the end. Logs
go to files in the temp dir and are printed when a start fails.
"""

from __future__ import annotations

import ctypes
import os
import queue
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[3]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
START_TIMEOUT = 30.0
DEFAULTS = (("--lease-ttl", "2s"), ("--drain-grace", "5s"))
"""Server flags of every test server unless ``extra`` sets them."""


def jobwire_bin() -> Path:
    """``$JOBWIRE_BIN``, else ``<repo>/target/debug/jobwire``."""
    return Path(os.environ.get("JOBWIRE_BIN") or REPO / "target" / "debug" / "jobwire")


class LogWatcher(threading.Thread):
    """Copies a process's output to a file, line by line, and hands each line to a waiter."""

    def __init__(self, pipe: IO[str], path: Path) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.path = path
        self.lines: queue.Queue[str | None] = queue.Queue()

    def run(self) -> None:
        with self.path.open("a") as out:
            for line in self.pipe:
                out.write(line)
                out.flush()
                self.lines.put(ANSI.sub("", line))
        self.lines.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float, what: str) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{what}: not ready after {timeout}s\n{self.tail()}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{what}: exited before it was ready\n{self.tail()}")
            match = pattern.search(line)
            if match:
                return match

    def tail(self, lines: int = 40) -> str:
        try:
            return "".join(self.path.read_text().splitlines(keepends=True)[-lines:])
        except OSError:
            return ""


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the test process dies, so a test run that
    is killed (a CI timeout) leaves no redis-server or jobwire behind."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: rely on the fixtures' teardown


def _wait_for_ready_file(
    path: Path, proc: subprocess.Popen[str], log: LogWatcher, timeout: float
) -> str:
    """The gRPC address a jobwire wrote to its ``--ready-file`` (line 1). The file is renamed
    into place whole, so once it exists it is complete."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return path.read_text().splitlines()[0]
        except (FileNotFoundError, IndexError):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"jobwire: exited before it was ready\n{log.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobwire: not ready after {timeout}s\n{log.tail()}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Redis:
    """``redis-server`` with no TCP port, no persistence, its socket in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stdout is not None
        self.log = LogWatcher(self.proc.stdout, directory / "redis.log")
        self.log.start()
        try:
            ready = re.compile(r"(?i)ready to accept connections")
            self.log.wait_for(ready, START_TIMEOUT, "redis")
        except BaseException:
            self.stop()
            raise

    def pause(self) -> None:
        """Freezes Redis (SIGSTOP): connections stay open, nothing answers."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        _stop(self.proc)


class Server:
    """The jobwire binary on ``listen`` (port 0 by default) over ``redis``, with its own key
    prefix unless one is given (two servers with one prefix share their queues)."""

    def __init__(
        self,
        redis: Redis,
        directory: Path,
        *,
        prefix: str | None = None,
        listen: str = "127.0.0.1:0",
        extra: tuple[str, ...] = (),
    ) -> None:
        binary = jobwire_bin()
        if not binary.exists():
            raise RuntimeError(
                f"{binary} does not exist: build it (cargo build) or set JOBWIRE_BIN"
            )
        self.prefix = prefix or f"pytest-{uuid.uuid4().hex[:10]}"
        env = dict(os.environ, JOBWIRE_LOG="info,jobwire=debug", NO_COLOR="1")
        name = f"jobwire-{uuid.uuid4().hex[:6]}"
        ready = directory / f"{name}.ready"
        self.proc = subprocess.Popen(
            [
                str(binary),
                "serve",
                "--listen",
                listen,
                "--redis-url",
                redis.url,
                "--key-prefix",
                self.prefix,
                "--ready-file",
                str(ready),
                *[arg for flag, value in DEFAULTS if flag not in extra for arg in (flag, value)],
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stderr is not None
        self.log = LogWatcher(self.proc.stderr, directory / f"{name}.log")
        self.log.start()
        try:
            self.target = _wait_for_ready_file(ready, self.proc, self.log, START_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    def terminate(self) -> None:
        """SIGTERM: the server drains its workers, then exits."""
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        _stop(self.proc)


def create_token(file: Path, name: str, role: str, *queues: str, subject: str | None = None) -> str:
    """The secret ``jobwire token create`` prints (and only it, on stdout). ``subject``: a client
    certificate subject that stands in for the token (mTLS)."""
    args = [str(jobwire_bin()), "token", "create", "--file", str(file), "--name", name]
    args += ["--role", role] + (["--queues", ",".join(queues)] if queues else [])
    args += ["--subject", subject] if subject else []
    done = subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)
    return done.stdout.strip()
