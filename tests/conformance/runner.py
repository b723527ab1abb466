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

from matching import StepFailed, dig, mismatch, substitute
from processes import HERE, REPO, Actor, Processes, Redis, Server, driver_path, kill_group

# The order of `rotate` (each language's rescuer is the next one) and of the tables.
LANGUAGES = ["rust", "python", "typescript", "go", "java"]
# Added to a request's own timeout_ms before its driver counts as hung.
ANSWER_SLACK_S = 15.0
DEFAULT_TIMEOUT_MS = 10_000
RUNNER_OPS = {
    *("server_sigterm", "server_wait_not_serving", "server_wait_exit", "server_start"),
    *("kill", "join", "exec", "spawn", "stop"),
}


def say(line: str = "") -> None:
    print(line, flush=True)


def tail(path: Path, lines: int = 30) -> list[str]:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return text[-lines:]


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
        actors: dict[str, str] = self.doc.get("actors", {})
        roles = sorted(set(actors.values()))
        if self.mode == "once":
            return [{}]
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
        if self.scenario.mode == "once":
            return self.scenario.name
        if self.scenario.mode == "each":
            return f"{self.scenario.name} [{next(iter(self.roles.values()))}]"
        first, second = self.scenario.doc["roles"]
        return f"{self.scenario.name} [{first} {self.roles[first]}, {second} {self.roles[second]}]"


class Runner:
    def __init__(self, procs: Processes, tmp: Path, jobwire: str, redis: Redis, tools: dict[str, str]) -> None:
        self.procs = procs
        self.tmp = tmp
        self.jobwire = jobwire
        self.redis = redis
        self.tools = tools
        self.shared: Server | None = None
        self.shared_lock = threading.Lock()
        self.report_lock = threading.Lock()

    def shared_server(self) -> Server:
        with self.shared_lock:
            if self.shared is None or not self.shared.alive():
                self.shared = Server(self.procs, self.tmp, self.jobwire, self.redis, {})
            return self.shared

    def execute_and_report(self, run: Run) -> None:
        if not run.failure:
            self.execute(run)
        with self.report_lock:
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

    def execute(self, run: Run) -> None:
        scenario = run.scenario
        run_dir = self.tmp / f"run-{run.number:03d}-{scenario.name}"
        run_dir.mkdir()
        server = (
            Server(self.procs, run_dir, self.jobwire, self.redis, scenario.doc.get("server", {}))
            if scenario.needs_own_server()
            else self.shared_server()
        )
        run.logs.append(server.log)
        names: dict[str, Any] = {
            "q": f"conf-{run.number}-{scenario.name}"[:100],
            "jobwire": self.jobwire,
            "dir": str(HERE),
            **self.tools,
        }
        actors: dict[str, Actor] = {}
        spawned: dict[str, subprocess.Popen[bytes]] = {}
        for actor, role in scenario.doc.get("actors", {}).items():
            names[f"lang.{actor}"] = run.roles[role]
        started = time.monotonic()
        try:
            for index, step in enumerate(scenario.doc["steps"], 1):
                names["addr"] = server.addr
                try:
                    self.step(step, names, actors, spawned, server, run, run_dir)
                except StepFailed as e:
                    raise StepFailed(
                        f"step {index} ({step.get('op')}{' ' + step['actor'] if 'actor' in step else ''}): {e}"
                    ) from e
            for actor in actors.values():
                if actor.pending is not None:
                    self.take_pending(actor)
        except StepFailed as e:
            run.failure = str(e)
        finally:
            for proc in spawned.values():
                kill_group(proc)
            problems = [p for p in (a.close() for a in actors.values()) if p]
            if problems and not run.failure:
                run.failure = "; ".join(problems)
            if server is not self.shared:
                server.stop()
            elif not server.alive() and not run.failure:
                run.failure = "the shared jobwire server died during the run"
            run.seconds = time.monotonic() - started

    def step(
        self,
        step: dict[str, Any],
        names: dict[str, Any],
        actors: dict[str, Actor],
        spawned: dict[str, subprocess.Popen[bytes]],
        server: Server,
        run: Run,
        run_dir: Path,
    ) -> None:
        op = step["op"]
        if op in {"exec", "spawn", "stop"}:
            self.command_step(substitute(step, names), spawned, run, run_dir)
            return
        if op in RUNNER_OPS:
            self.runner_step(step, actors, server)
            return
        if "actor" not in step:
            raise StepFailed(f"{op!r} needs an actor (runner steps: {', '.join(sorted(RUNNER_OPS))})")
        name = step["actor"]
        actor = actors.get(name)
        if actor is None:
            if name not in run.scenario.doc.get("actors", {}):
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
            actor.pending = {
                "id": want_id,
                "limit": limit,
                "expect": expect,
                "save": step.get("save", {}),
                "names": names,
                "op": op,
            }
            return
        self.check(actor.receive(want_id, limit), expect, step.get("save", {}), names)

    def take_pending(self, actor: Actor) -> None:
        pending, actor.pending = actor.pending, None
        assert pending is not None
        try:
            self.check(
                actor.receive(pending["id"], pending["limit"]), pending["expect"], pending["save"], pending["names"]
            )
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

    def command_step(
        self, step: dict[str, Any], spawned: dict[str, subprocess.Popen[bytes]], run: Run, run_dir: Path
    ) -> None:
        """exec: a command run to its end; spawn: one started in the background; stop: SIGTERM."""
        op = step["op"]
        limit = int(step.get("timeout_ms", DEFAULT_TIMEOUT_MS)) / 1000
        want = int(step.get("expect_status", 0))
        if op == "stop":
            proc = spawned.pop(step["name"], None)
            if proc is None:
                raise StepFailed(f"stop: nothing named {step['name']!r} was spawned")
            proc.send_signal(signal.SIGTERM)
            try:
                status = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired as e:
                kill_group(proc)
                raise StepFailed(f"{step['name']} still runs {limit:.0f} s after SIGTERM (killed)") from e
            if status != want:
                raise StepFailed(f"{step['name']} exited with status {status} after SIGTERM, expected {want}")
            return
        log = run_dir / f"{step.get('name', 'exec')}-{len(run.logs)}.log"
        run.logs.append(log)
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(step['cmd'])}\n".encode())
        if op == "spawn":
            spawned[step["name"]] = self.procs.start(step["cmd"], log, stdin=subprocess.DEVNULL, cwd=REPO)
            return
        proc = self.procs.start(step["cmd"], log, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd=REPO)
        try:
            stdout, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired as e:
            kill_group(proc)
            raise StepFailed(f"{step['cmd'][0]} still runs after {limit:.0f} s (killed)") from e
        text = stdout.decode(errors="replace")
        with open(log, "a") as out:
            out.write(text)
        if proc.returncode != want:
            raise StepFailed(
                f"{' '.join(step['cmd'])} exited with status {proc.returncode}, expected {want}:\n{text[-800:]}"
            )
        for wanted in step.get("expect_lines", []):
            if not any(re.fullmatch(wanted, line) for line in text.splitlines()):
                raise StepFailed(f"no line of {step['cmd'][0]}'s output matches {wanted!r}:\n{text[-800:]}")

    def wait_not_serving(self, server: Server, limit_s: float) -> None:
        """Polls `jobwire health` until the server answers NOT_SERVING (exit 4): it is draining."""
        deadline = time.monotonic() + limit_s
        while True:
            probe = [self.jobwire, "health", "--addr", server.addr]
            status = subprocess.run(probe, capture_output=True, timeout=limit_s + 5).returncode
            if status == 4:
                return
            if time.monotonic() > deadline:
                raise StepFailed(f"the server is not NOT_SERVING after {limit_s:.0f} s (health exit {status})")
            time.sleep(0.02)

    def runner_step(self, step: dict[str, Any], actors: dict[str, Actor], server: Server) -> None:
        op = step["op"]
        if op == "server_sigterm":
            server.sigterm()
        elif op == "server_wait_not_serving":
            self.wait_not_serving(server, int(step.get("timeout_ms", DEFAULT_TIMEOUT_MS)) / 1000)
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
    once = [r for r in runs if r.scenario.mode == "once"]
    if once:
        say()
        for r in once:
            say(f"{r.scenario.name:<20} {cell[not r.failure]}")
    for name in dict.fromkeys(r.scenario.name for r in runs if r.scenario.mode in {"matrix", "rotate"}):
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


class Builds:
    """`driver build` of every language at once; each language's runs may start once it is done."""

    def __init__(self, procs: Processes, tmp: Path, langs: list[str]) -> None:
        self.done: dict[str, bool] = {}
        self.changed = threading.Condition()
        for lang in langs:
            log = tmp / f"build-{lang}.log"
            proc = procs.start([str(driver_path(lang)), "build"], log, cwd=REPO, stdin=subprocess.DEVNULL)
            threading.Thread(target=self._wait, args=(lang, proc, log, time.monotonic()), daemon=True).start()

    def _wait(self, lang: str, proc: subprocess.Popen[bytes], log: Path, t0: float) -> None:
        try:
            status = proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            status = -1
        with self.changed:
            if status == 0:
                say(f"# built the {lang} driver ({time.monotonic() - t0:.0f} s)")
            else:
                say(f"not ok - build the {lang} driver (status {status})")
                for line in tail(log, 40):
                    say(f"#   {line}")
            self.done[lang] = status == 0
            self.changed.notify_all()

    def take(self, pending: list[Run]) -> Run | None:
        """The first pending run whose drivers are all built (or failed to), waiting for one."""
        with self.changed:
            while pending:
                for i, run in enumerate(pending):
                    if all(lang in self.done for lang in run.roles.values()):
                        return pending.pop(i)
                self.changed.wait()
            return None

    def failed(self) -> list[str]:
        return [lang for lang, ok in self.done.items() if not ok]


def run_all(runner: Runner, builds: Builds, runs: list[Run], jobs: int) -> None:
    """Runs are independent (queues of their own, a server of their own where they restart it),
    so `jobs` go at once, each as soon as its drivers are built, each reported when it ends."""
    pending = list(runs)

    def work() -> None:
        while (run := builds.take(pending)) is not None:
            broken = sorted({lang for lang in run.roles.values() if not builds.done[lang]})
            if broken:
                run.failure = f"the {', '.join(broken)} driver did not build"
            runner.execute_and_report(run)

    threads = [threading.Thread(target=work) for _ in range(max(1, jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobwire", required=True, help="the jobwire binary")
    parser.add_argument("--lang", action="append", choices=LANGUAGES, help="only these languages")
    parser.add_argument("--scenario", action="append", help="only these scenarios (file names without .json)")
    jobs = int(os.environ.get("CONFORMANCE_JOBS", "2"))
    parser.add_argument("--jobs", type=int, default=jobs, help="runs at once (default 2, or $CONFORMANCE_JOBS)")
    parser.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a program the scenarios name as ${NAME} (python, grpcurl)",
    )
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
    say(
        f"# languages with a driver: {', '.join(langs)}; absent: "
        f"{', '.join(lang for lang in LANGUAGES if lang not in langs) or 'none'}"
    )
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
        builds = Builds(procs, tmp, langs)
        tools = dict(t.split("=", 1) for t in args.tool)
        runner = Runner(procs, tmp, args.jobwire, redis, tools)
        for scenario in scenarios:
            for roles in scenario.assignments(langs):
                runs.append(Run(scenario, roles, len(runs) + 1))
        runner.shared_server()
        run_all(runner, builds, runs, args.jobs)
        failed_builds = len(builds.failed())
        if runner.shared is not None:
            runner.shared.stop()
        tables(runs, langs)
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
