"""The Python side of the cross-language test (tests/crosslang/run.sh).

It imports the repository's own client (``clients/python``, put on ``PYTHONPATH`` by run.sh)
and has one subcommand per role:

  work            a jobwire.Worker serving calc, digest and crash-me jobs; results name "python"
  produce         adds calc and digest jobs, awaits every result, compares it to what it
                  computes itself from the payload (the worker is in another language)
  produce-shell   adds jobs for `jobwire work` running work.sh, awaits and compares results
  add-crash       adds one crash-me job and prints its id
  await-crash     awaits a crash-me job that lost its first worker; checks who finished it
  health          the standard health service through grpcio-health-checking

The job types and their results are defined twice on purpose, here and in crosslang.ts, so
each language checks the other's answers:

  calc    payload {"n": int, "text": str}, headers {"x-crosslang": ...} ->
          {"lang", "job_id", "square": n*n, "reversed": text reversed by code point,
           "utf8_bytes": UTF-8 length of text, "header": the x-crosslang header}
  digest  payload: raw bytes -> {"lang", "job_id", "sha256": hex digest, "size": byte count}
  crash-me payload {"n": int} -> {"lang", "job_id", "attempt", "lost_deliveries"} (a worker
          started with --hang-marker instead writes the job id to that file and hangs)

Every wait is bounded; each subcommand exits 0 when everything matched, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import jobwire

LANG = "python"
QUEUE_SERVICE = "jobwire.v1.QueueService"


def calc_text(i: int) -> str:
    """Text with 2-, 3- and 4-byte UTF-8 characters (the 🚀 is outside the BMP)."""
    return f"naïve ✓ 🚀 日本語 #{i}"


def calc_n(i: int) -> int:
    """Big enough that n*n needs more than 32 bits, small enough to stay exact in a JS number."""
    return 30_000_000 + i


def digest_payload(i: int) -> bytes:
    """Bytes that are not UTF-8 (every value 0-255, NULs included)."""
    return bytes((k * 7 + i) % 256 for k in range(1000))


def calc(payload: Any, job_id: str, headers: dict[str, str], lang: str) -> dict[str, Any]:
    text: str = payload["text"]
    return {
        "lang": lang,
        "job_id": job_id,
        "square": payload["n"] * payload["n"],
        "reversed": text[::-1],
        "utf8_bytes": len(text.encode()),
        "header": headers.get("x-crosslang", ""),
    }


def digest(payload: bytes, job_id: str, lang: str) -> dict[str, Any]:
    return {
        "lang": lang,
        "job_id": job_id,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
    }


def say(*parts: object) -> None:
    print(*parts, flush=True)


# ---- worker -------------------------------------------------------------------------------------


async def work(args: argparse.Namespace) -> int:
    worker = jobwire.Worker(
        args.addr,
        queues=[args.queue],
        concurrency=4,
        worker_id=f"crosslang-python-{os.getpid()}",
        labels={"lang": LANG},
        reconnect=jobwire.ReconnectPolicy(initial=0.1, max=1.0),
    )

    @worker.handler("calc")
    async def on_calc(job: jobwire.Job) -> dict[str, Any]:
        return calc(job.json(), job.id, job.headers, LANG)

    @worker.handler("digest")
    async def on_digest(job: jobwire.Job) -> dict[str, Any]:
        return digest(job.payload, job.id, LANG)

    @worker.handler("crash-me")
    async def on_crash_me(job: jobwire.Job) -> dict[str, Any]:
        if args.hang_marker:
            # Tell run.sh this job is running here, then hang until run.sh kills the process.
            marker = Path(args.hang_marker)
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(job.id)
            tmp.rename(marker)
            say(f"holding {job.id} (attempt {job.attempt}); waiting to be killed")
            await asyncio.sleep(600)
        return {
            "lang": LANG,
            "job_id": job.id,
            "attempt": job.attempt,
            "lost_deliveries": job.lost_deliveries,
        }

    say(f"python worker pid {os.getpid()} serving {args.queue} on {args.addr}")
    await worker.run()  # until SIGTERM
    say("python worker stopped")
    return 0


# ---- producers ----------------------------------------------------------------------------------


def compare(what: str, got: Any, want: Any) -> bool:
    if got == want:
        return True
    say(f"MISMATCH {what}:\n  got  {json.dumps(got, ensure_ascii=False)}\n"
        f"  want {json.dumps(want, ensure_ascii=False)}")
    return False


async def await_all(
    client: jobwire.Client, ids: list[str], timeout: float
) -> list[jobwire.JobInfo | BaseException]:
    return await asyncio.gather(
        *(client.wait(job_id, timeout=timeout) for job_id in ids), return_exceptions=True
    )


async def produce(args: argparse.Namespace) -> int:
    async with jobwire.Client(args.addr, timeout=10) as client:
        # calc jobs in one AddJobs call, digest jobs one AddJob each.
        outcomes = await client.add_many(
            jobwire.NewJob(
                args.queue,
                "calc",
                payload={"n": calc_n(i), "text": calc_text(i)},
                headers={"x-crosslang": f"from-python-{i}"},
            )
            for i in range(args.count)
        )
        ids: list[str] = []
        for outcome in outcomes:
            if isinstance(outcome, jobwire.Rejected):
                say(f"add_many rejected entry {outcome.index}: {outcome.error}")
                return 1
            ids.append(outcome.id)
        n_digest = 3
        for i in range(n_digest):
            ids.append((await client.add(args.queue, "digest", payload=digest_payload(i))).id)

        infos = await await_all(client, ids, args.timeout)
        good = 0
        for k, (job_id, info) in enumerate(zip(ids, infos)):
            if isinstance(info, BaseException):
                say(f"job {job_id}: no result: {type(info).__name__}: {info}")
                continue
            if k < args.count:
                payload = {"n": calc_n(k), "text": calc_text(k)}
                want = calc(payload, job_id, {"x-crosslang": f"from-python-{k}"}, args.expect_lang)
            else:
                want = digest(digest_payload(k - args.count), job_id, args.expect_lang)
            if compare(f"result of {job_id}", info.result_json(), want):
                good += 1
        say(f"{good}/{len(ids)} results match ({args.count} calc, {n_digest} digest, "
            f"done by {args.expect_lang})")
        return 0 if good == len(ids) else 1


def shell_expected(job_id: str, attempt: int, payload: bytes) -> bytes:
    """What work.sh prints for a job."""
    return (
        f"lang=shell id={job_id} type=shell-echo attempt={attempt} bytes={len(payload)} "
        f"upper={payload.decode().upper()}"
    ).encode()


async def produce_shell(args: argparse.Namespace) -> int:
    async with jobwire.Client(args.addr, timeout=10) as client:
        plain = [f"job-{i}-abc".encode() for i in range(args.count)]
        ids = [(await client.add(args.queue, "shell-echo", payload=p)).id for p in plain]
        # Fails its first attempt (exit 3), then succeeds: retried after a short fixed backoff.
        flaky = b"fail-once:xyz"
        flaky_id = (await client.add(
            args.queue, "shell-echo", payload=flaky, max_attempts=3,
            backoff=jobwire.Backoff.fixed(0.1),
        )).id
        # Exits 65 (--no-retry-exit-code): dead at once, with the script's stderr as the error.
        doomed_id = (await client.add(
            args.queue, "shell-echo", payload=b"permanent:no", max_attempts=3
        )).id

        ok = True
        infos = await await_all(client, ids + [flaky_id], args.timeout)
        for job_id, payload, info in zip(ids + [flaky_id], plain + [flaky], infos):
            if isinstance(info, BaseException):
                say(f"job {job_id}: no result: {type(info).__name__}: {info}")
                ok = False
                continue
            attempt = 2 if payload == flaky else 1
            ok &= compare(f"result of {job_id}", info.result, shell_expected(job_id, attempt, payload))
            ok &= compare(f"attempts of {job_id}", info.attempts, attempt)
        try:
            info = await client.wait(doomed_id, timeout=args.timeout)
            say(f"job {doomed_id} completed but should be dead: {info.result!r}")
            ok = False
        except jobwire.JobDead as e:
            ok &= compare(f"last_error of {doomed_id}", e.info.last_error, "refusing permanent:no for good")
            ok &= compare(f"attempts of {doomed_id}", e.info.attempts, 1)
        except Exception as e:  # noqa: BLE001 - report anything else as a failure
            say(f"job {doomed_id}: {type(e).__name__}: {e}")
            ok = False
        say(f"{'all' if ok else 'NOT all'} of {len(ids) + 2} shell jobs as expected "
            "(plain, retried after exit 3, dead after exit 65)")
        return 0 if ok else 1


async def add_crash(args: argparse.Namespace) -> int:
    async with jobwire.Client(args.addr, timeout=10) as client:
        added = await client.add(args.queue, "crash-me", payload={"n": 7})
        print(added.id, flush=True)
    return 0


async def await_crash(args: argparse.Namespace) -> int:
    async with jobwire.Client(args.addr, timeout=10) as client:
        try:
            info = await client.wait(args.job, timeout=args.timeout)
        except TimeoutError:
            now = await client.get(args.job)
            say(f"job {args.job} not finished after {args.timeout}s: {now}")
            return 1
        result = info.result_json()
        say(f"job {args.job}: state {info.state.name}, attempts {info.attempts}, "
            f"lost_deliveries {info.lost_deliveries}, result {json.dumps(result)}")
        ok = compare("finisher's language", result.get("lang"), args.expect_lang)
        ok &= compare("result's job id", result.get("job_id"), args.job)
        if not (info.lost_deliveries >= 1 or info.attempts >= 2):
            say("GetJobInfo shows neither a lost delivery nor a second attempt")
            ok = False
        if not (result.get("lost_deliveries", 0) >= 1 or result.get("attempt", 0) >= 2):
            say("the finishing worker saw a first, clean delivery")
            ok = False
        say(f"finished by {result.get('lang')}; GetJobInfo: attempts {info.attempts}, "
            f"lost_deliveries {info.lost_deliveries}; the finisher saw attempt "
            f"{result.get('attempt')}, lost_deliveries {result.get('lost_deliveries')}")
        return 0 if ok else 1


# ---- health -------------------------------------------------------------------------------------


def health(args: argparse.Namespace) -> int:
    serving = health_pb2.HealthCheckResponse.SERVING
    ok = True
    with grpc.insecure_channel(args.addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", QUEUE_SERVICE):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            say(f"Check({service!r}) = {name}")
            ok &= response.status == serving
        # Watch sends the current status first.
        stream = stub.Watch(health_pb2.HealthCheckRequest(service=QUEUE_SERVICE), timeout=10)
        first = next(stream)
        stream.cancel()
        say(f"Watch({QUEUE_SERVICE!r}) first = "
            f"{health_pb2.HealthCheckResponse.ServingStatus.Name(first.status)}")
        ok &= first.status == serving
        # An unknown service is NOT_FOUND (the health protocol's rule).
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
            say("Check('no.such.Service') answered instead of NOT_FOUND")
            ok = False
        except grpc.RpcError as e:
            code = e.code()
            say(f"Check('no.such.Service') -> {code.name}")
            ok &= code == grpc.StatusCode.NOT_FOUND
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("work", "produce", "produce-shell", "add-crash", "await-crash", "health"):
        p = sub.add_parser(name)
        p.add_argument("--addr", required=True)
        p.add_argument("--timeout", type=float, default=40.0, help="longest wait for results")
        if name != "health":
            p.add_argument("--queue", required=name != "await-crash")
        if name in ("produce", "produce-shell"):
            p.add_argument("--count", type=int, default=10)
        if name in ("produce", "await-crash"):
            p.add_argument("--expect-lang", required=True)
        if name == "work":
            p.add_argument("--hang-marker")
        if name == "await-crash":
            p.add_argument("--job", required=True)
    args = parser.parse_args()
    if args.command == "health":
        return health(args)
    run = {
        "work": work,
        "produce": produce,
        "produce-shell": produce_shell,
        "add-crash": add_crash,
        "await-crash": await_crash,
    }[args.command]
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
