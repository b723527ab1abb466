"""The conformance runner (tests/conformance/README.md describes the format it reads).

It starts one private redis-server (unix socket in a temp dir, no persistence) and jobwire
servers on 127.0.0.1 (port 0, read back from --ready-file), builds each language's driver once,
then runs every scenario (scenarios/*.json) with every language its mode asks for: one driver
process per actor, requests over stdin, replies over stdout, each reply matched against the
step's `expect`. Server steps (SIGTERM, wait for the exit, start again, SIGKILL of an actor) are
done here. Every process started here is killed on exit, also on failure or a signal.

Standard library only, Python 3.11+. Output: "ok - ..." / "not ok - ..." per run (with the
failing step, what differed and the tail of the logs as "#" lines), then the tables, then
"N passed, M failed"; the exit status is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# The order of `rotate` (each language's rescuer is the next one) and of the tables.
LANGUAGES = ["rust", "python", "typescript", "go", "java"]
# Added to a request's own timeout_ms before its driver counts as hung.
ANSWER_SLACK_S = 15.0
DEFAULT_TIMEOUT_MS = 10_000
RUNNER_OPS = {"server_sigterm", "server_wait_exit", "server_start", "kill", "join"}
VAR = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")


class StepFailed(Exception):
    """A step whose reply did not match, or that could not be carried out."""


def say(line: str = "") -> None:
    print(line, flush=True)


def tail(path: Path, lines: int = 30) -> list[str]:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return text[-lines:]


# ---- processes ----------------------------------------------------------------------------------


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
    def __init__(self, procs: Processes, tmp: Path) -> None:
        self.socket = tmp / "redis.sock"
        self.log = tmp / "redis.log"
        self.proc = procs.start(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(tmp)],
            self.log,
        )
        wait_until("redis-server", lambda: "ready to accept connections" in self.log.read_text(errors="replace").lower(),
                   self.proc, 20)


class Server:
    """One jobwire server: started on port 0 the first time, again on the same port after."""

    count = 0

    def __init__(self, procs: Processes, tmp: Path, jobwire: str, redis: Redis, flags: dict[str, Any]) -> None:
        Server.count += 1
        self.n = Server.count
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
            [self.jobwire, "serve", "--listen", listen, "--redis-url", f"unix://{self.redis.socket}",
             "--key-prefix", self.prefix, "--ready-file", str(ready), *self.extra],
            self.log, env=env,
        )
        wait_until(f"jobwire serve ({self.log.name})", lambda: ready.exists() and ready.stat().st_size > 0,
                   self.proc, 30)
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


# ---- drivers ------------------------------------------------------------------------------------


def driver_path(lang: str) -> Path:
    return HERE / "drivers" / lang / "driver"


class Actor:
    """One driver process serving one actor: a request out, one reply line back, in order."""

    def __init__(self, procs: Processes, lang: str, name: str, addr: str, log: Path) -> None:
        self.lang = lang
        self.name = name
        self.log = log
        env = dict(os.environ, JOBWIRE_ADDR=addr, CONFORMANCE_LANG=lang, CONFORMANCE_ACTOR=name)
        self.proc = procs.start([str(driver_path(lang))], log, env=env, cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
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
                raise StepFailed(f"{self.name} ({self.lang}): no reply to request {want_id} "
                                 f"within {limit_s:.0f} s (driver killed)") from e
            if line is None:
                raise StepFailed(f"{self.name} ({self.lang}): the driver exited ({self.proc.wait()}) "
                                 f"before answering request {want_id}")
            with open(self.log, "a") as log:
                log.write(f"<< {line.rstrip()}\n")
            try:
                reply = json.loads(line)
            except json.JSONDecodeError as e:
                raise StepFailed(f"{self.name} ({self.lang}): a reply line is not JSON: {line!r}") from e
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


# ---- matching and substitution ------------------------------------------------------------------


def substitute(value: Any, names: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = VAR.fullmatch(value)
        if whole:
            return lookup(names, whole.group(1))
        return VAR.sub(lambda m: str(lookup(names, m.group(1))), value)
    if isinstance(value, list):
        return [substitute(v, names) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, names) for k, v in value.items()}
    return value


def lookup(names: dict[str, Any], name: str) -> Any:
    if name not in names:
        raise StepFailed(f"${{{name}}} is not defined (saved names: {', '.join(sorted(names))})")
    return names[name]


def dig(reply: Any, path: str) -> Any:
    here = reply
    for part in path.split("."):
        if isinstance(here, list) and part.lstrip("-").isdigit():
            here = here[int(part)]
        elif isinstance(here, dict) and part in here:
            here = here[part]
        else:
            raise StepFailed(f"save: the reply has no {path!r}")
    return here


def mismatch(want: Any, got: Any, where: str = "") -> str | None:
    """Why `got` does not match `want` (README: "expect"), or None when it does."""
    at = where or "reply"
    if isinstance(want, dict) and set(want) == {"$contains"}:
        if isinstance(got, str) and want["$contains"] in got:
            return None
        return f"{at}: {json.dumps(got, ensure_ascii=False)} does not contain {want['$contains']!r}"
    if isinstance(want, (dict, list)) and isinstance(got, str):
        try:
            got = json.loads(got)
        except json.JSONDecodeError:
            return f"{at}: {got!r} is not JSON, expected {json.dumps(want, ensure_ascii=False)}"
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{at}: {json.dumps(got, ensure_ascii=False)} is not an object"
        for key, sub in want.items():
            if key not in got:
                return f"{at}: no {key!r} in {json.dumps(got, ensure_ascii=False)}"
            problem = mismatch(sub, got[key], f"{where}.{key}" if where else key)
            if problem:
                return problem
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{at}: {json.dumps(got, ensure_ascii=False)} is not {json.dumps(want, ensure_ascii=False)}"
        for i, (w, g) in enumerate(zip(want, got)):
            problem = mismatch(w, g, f"{where}.{i}" if where else str(i))
            if problem:
                return problem
        return None
    # Scalars: bool is not an int here, and 3 == 3.0.
    if type(want) is bool or type(got) is bool:
        same = want is got
    elif isinstance(want, (int, float)) and isinstance(got, (int, float)):
        same = want == got
    else:
        same = want == got
    return None if same else f"{at}: got {json.dumps(got, ensure_ascii=False)}, expected {json.dumps(want, ensure_ascii=False)}"


# ---- scenarios ----------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    path: Path
    doc: dict[str, Any]

    @property
    def mode(self) -> str:
        return str(self.doc.get("mode", "each"))

    def assignments(self, langs: list[str]) -> list[dict[str, str]]:
        """The languages of each role, one dict per run."""
        actors: dict[str, str] = self.doc["actors"]
        roles = sorted(set(actors.values()))
        if self.mode == "each":
            return [{r: lang for r in roles} for lang in langs]
        first, second = self.doc["roles"]
        if self.mode == "matrix":
            return [{**{r: a for r in roles}, second: b} for a, b in itertools.product(langs, langs)]
        if self.mode == "rotate":
            ring = [lang for lang in LANGUAGES if lang in langs]
            if len(ring) < 2:
                return []
            return [{**{r: a for r in roles}, second: ring[(i + 1) % len(ring)]} for i, a in enumerate(ring)]
        raise SystemExit(f"{self.path}: unknown mode {self.mode!r}")

    def needs_own_server(self) -> bool:
        return "server" in self.doc or any(s.get("op") in {"server_sigterm", "server_start"} for s in self.doc["steps"])


@dataclass
class Run:
    scenario: Scenario
    roles: dict[str, str]
    number: int
    failure: str = ""
    logs: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def label(self) -> str:
        if self.scenario.mode == "each":
            return f"{self.scenario.name} [{next(iter(self.roles.values()))}]"
        first, second = self.scenario.doc["roles"]
        return f"{self.scenario.name} [{first} {self.roles[first]}, {second} {self.roles[second]}]"


class Runner:
    def __init__(self, procs: Processes, tmp: Path, jobwire: str, redis: Redis) -> None:
        self.procs = procs
        self.tmp = tmp
        self.jobwire = jobwire
        self.redis = redis
        self.shared: Server | None = None

    def shared_server(self) -> Server:
        if self.shared is None or not self.shared.alive():
            self.shared = Server(self.procs, self.tmp, self.jobwire, self.redis, {})
        return self.shared

    def execute(self, run: Run) -> None:
        scenario = run.scenario
        run_dir = self.tmp / f"run-{run.number:03d}-{scenario.name}"
        run_dir.mkdir()
        server = (Server(self.procs, run_dir, self.jobwire, self.redis, scenario.doc.get("server", {}))
                  if scenario.needs_own_server() else self.shared_server())
        run.logs.append(server.log)
        names: dict[str, Any] = {"q": f"conf-{run.number}-{scenario.name}"[:100]}
        actors: dict[str, Actor] = {}
        for actor, role in scenario.doc["actors"].items():
            names[f"lang.{actor}"] = run.roles[role]
        started = time.monotonic()
        try:
            for index, step in enumerate(scenario.doc["steps"], 1):
                try:
                    self.step(step, names, actors, server, run, run_dir)
                except StepFailed as e:
                    raise StepFailed(f"step {index} ({step.get('op')}{' ' + step['actor'] if 'actor' in step else ''}): {e}") from e
            for actor in actors.values():
                if actor.pending is not None:
                    self.take_pending(actor)
        except StepFailed as e:
            run.failure = str(e)
        finally:
            problems = [p for p in (a.close() for a in actors.values()) if p]
            if problems and not run.failure:
                run.failure = "; ".join(problems)
            if server is not self.shared:
                server.stop()
            elif not server.alive() and not run.failure:
                run.failure = "the shared jobwire server died during the run"
            run.seconds = time.monotonic() - started

    def step(self, step: dict[str, Any], names: dict[str, Any], actors: dict[str, Actor], server: Server,
             run: Run, run_dir: Path) -> None:
        op = step["op"]
        if op in RUNNER_OPS:
            self.runner_step(step, actors, server)
            return
        if "actor" not in step:
            raise StepFailed(f"{op!r} needs an actor (runner steps: {', '.join(sorted(RUNNER_OPS))})")
        name = step["actor"]
        actor = actors.get(name)
        if actor is None:
            if name not in run.scenario.doc["actors"]:
                raise StepFailed(f"actor {name!r} is not in the scenario's actors")
            lang = names[f"lang.{name}"]
            log = run_dir / f"{name}-{lang}.log"
            run.logs.append(log)
            actor = actors[name] = Actor(self.procs, lang, name, server.addr, log)
        if actor.pending is not None:
            self.take_pending(actor)
        request = {k: substitute(v, names) for k, v in step.items() if k not in {"actor", "expect", "save", "wait"}}
        want_id = actor.send(request)
        limit = int(request.get("timeout_ms", DEFAULT_TIMEOUT_MS)) / 1000 + ANSWER_SLACK_S
        expect = substitute(step.get("expect", {"ok": True}), names)
        if step.get("wait", True) is False:
            actor.pending = {"id": want_id, "limit": limit, "expect": expect, "save": step.get("save", {}),
                             "names": names, "op": op}
            return
        self.check(actor.receive(want_id, limit), expect, step.get("save", {}), names)

    def take_pending(self, actor: Actor) -> None:
        pending, actor.pending = actor.pending, None
        assert pending is not None
        try:
            self.check(actor.receive(pending["id"], pending["limit"]), pending["expect"], pending["save"],
                       pending["names"])
        except StepFailed as e:
            raise StepFailed(f"the reply to the earlier {pending['op']} (sent without waiting): {e}") from e

    @staticmethod
    def check(reply: dict[str, Any], expect: Any, save: dict[str, str], names: dict[str, Any]) -> None:
        if "ok" not in expect:
            expect = {"ok": True, **expect}
        problem = mismatch(expect, reply)
        if problem:
            raise StepFailed(f"{problem}\n    reply: {json.dumps(reply, ensure_ascii=False)[:800]}")
        for var, path in save.items():
            names[var] = dig(reply, path)

    def runner_step(self, step: dict[str, Any], actors: dict[str, Actor], server: Server) -> None:
        op = step["op"]
        if op == "server_sigterm":
            server.sigterm()
        elif op == "server_wait_exit":
            status = server.wait_exit(int(step.get("timeout_ms", DEFAULT_TIMEOUT_MS)) / 1000)
            want = int(step.get("expect_status", 0))
            if status != want:
                raise StepFailed(f"the server exited with status {status}, expected {want}")
        elif op == "server_start":
            server.start()
        elif op == "kill":
            actor = actors.get(step["actor"])
            if actor is None:
                raise StepFailed(f"kill: actor {step['actor']!r} has not started")
            kill_group(actor.proc)
            actor.proc.wait()
            actor.killed = True
            actor.pending = None
        elif op == "join":
            actor = actors.get(step["actor"])
            if actor is None or actor.pending is None:
                raise StepFailed(f"join: actor {step['actor']!r} has no reply pending")
            self.take_pending(actor)


# ---- tables -------------------------------------------------------------------------------------


def tables(runs: list[Run], langs: list[str]) -> None:
    cell = {True: "ok", False: "FAIL"}
    each = [r for r in runs if r.scenario.mode == "each"]
    if each:
        width = max(len(r.scenario.name) for r in each)
        say()
        say(f"{'scenario':<{width}}  " + "  ".join(f"{lang:<10}" for lang in LANGUAGES))
        for name in dict.fromkeys(r.scenario.name for r in each):
            row = {next(iter(r.roles.values())): cell[not r.failure] for r in each if r.scenario.name == name}
            say(f"{name:<{width}}  " + "  ".join(f"{row.get(lang, '-'):<10}" for lang in LANGUAGES))
    for name in dict.fromkeys(r.scenario.name for r in runs if r.scenario.mode != "each"):
        mine = [r for r in runs if r.scenario.name == name]
        first, second = mine[0].scenario.doc["roles"]
        say()
        if mine[0].scenario.mode == "rotate":
            say(f"{name}: {first} -> {second}")
            for r in mine:
                say(f"  {r.roles[first]:<11} -> {r.roles[second]:<11} {cell[not r.failure]}")
            continue
        say(f"{name}: {first} (rows) x {second} (columns)")
        say(f"{'':<12}" + "".join(f"{lang:<12}" for lang in LANGUAGES))
        for a in LANGUAGES:
            row = {r.roles[second]: cell[not r.failure] for r in mine if r.roles[first] == a}
            say(f"{a:<12}" + "".join(f"{row.get(b, '-'):<12}" for b in LANGUAGES))


# ---- main ---------------------------------------------------------------------------------------


def build_drivers(procs: Processes, tmp: Path, langs: list[str]) -> list[str]:
    """Runs `driver build` for each language, in parallel; returns the languages that built."""
    building = {}
    for lang in langs:
        log = tmp / f"build-{lang}.log"
        building[lang] = (procs.start([str(driver_path(lang)), "build"], log, cwd=REPO, stdin=subprocess.DEVNULL),
                          log, time.monotonic())
    ready = []
    for lang, (proc, log, t0) in building.items():
        try:
            status = proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            status = -1
        if status == 0:
            say(f"# built the {lang} driver ({time.monotonic() - t0:.0f} s)")
            ready.append(lang)
        else:
            say(f"not ok - build the {lang} driver (status {status})")
            for line in tail(log, 40):
                say(f"#   {line}")
    return ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobwire", required=True, help="the jobwire binary")
    parser.add_argument("--lang", action="append", choices=LANGUAGES, help="only these languages")
    parser.add_argument("--scenario", action="append", help="only these scenarios (file names without .json)")
    args = parser.parse_args()

    scenarios = [Scenario(p.stem, p, json.loads(p.read_text())) for p in sorted((HERE / "scenarios").glob("*.json"))]
    if args.scenario:
        unknown = set(args.scenario) - {s.name for s in scenarios}
        if unknown:
            raise SystemExit(f"no such scenario: {', '.join(sorted(unknown))}")
        scenarios = [s for s in scenarios if s.name in args.scenario]
    langs = args.lang or [lang for lang in LANGUAGES if driver_path(lang).exists()]
    missing = [lang for lang in langs if not driver_path(lang).exists()]
    if missing:
        raise SystemExit(f"no driver for {', '.join(missing)} ({driver_path(missing[0])})")
    say(f"# languages with a driver: {', '.join(langs)}; absent: "
        f"{', '.join(lang for lang in LANGUAGES if lang not in langs) or 'none'}")
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not on PATH")

    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="jobwire-conformance."))
    started = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _f: sys.exit(128 + n))
    runs: list[Run] = []
    failed_builds = 0
    try:
        redis = Redis(procs, tmp)
        built = build_drivers(procs, tmp, langs)
        failed_builds = len(langs) - len(built)
        runner = Runner(procs, tmp, args.jobwire, redis)
        for scenario in scenarios:
            for roles in scenario.assignments(built):
                run = Run(scenario, roles, len(runs) + 1)
                runs.append(run)
                runner.execute(run)
                if run.failure:
                    say(f"not ok - {run.label()} ({run.seconds:.1f} s)")
                    for line in run.failure.splitlines():
                        say(f"#   {line}")
                    for log in run.logs:
                        say(f"# --- {log.parent.name}/{log.name} (last 25 lines)")
                        for line in tail(log, 25):
                            say(f"#   {line}")
                else:
                    say(f"ok - {run.label()} ({run.seconds:.1f} s)")
        if runner.shared is not None:
            runner.shared.stop()
        tables(runs, built)
    finally:
        procs.kill_all()
        if os.environ.get("CONFORMANCE_KEEP"):
            say(f"# logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    failed = sum(1 for r in runs if r.failure) + failed_builds
    say()
    say(f"# took {time.monotonic() - started:.0f} s")
    say(f"{len(runs) - failed + failed_builds} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
