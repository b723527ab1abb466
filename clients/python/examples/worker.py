"""An example worker: sends (pretend) welcome emails and resizes (pretend) images.

    python examples/worker.py            # JOBWIRE_TARGET=host:port to point it elsewhere

Stop it with Ctrl-C or SIGTERM: it finishes the jobs it is running, then exits.
"""

from __future__ import annotations

import asyncio
import logging
import time

import jobwire

worker = jobwire.Worker(queues=["emails", "images"], concurrency=8)


@worker.handler("welcome")
async def welcome(job: jobwire.Job) -> dict[str, str]:
    """An async handler: its return value (JSON-encoded) becomes the job's result."""
    data = job.json()
    if "@" not in data.get("to", ""):
        raise jobwire.Permanent(f"not an email address: {data.get('to')!r}")  # no retry
    await asyncio.sleep(0.05)  # pretend to talk to the mail server
    return {"sent_to": data["to"]}


@worker.handler("resize")
def resize(job: jobwire.Job) -> bytes:
    """A plain function runs in a thread, so blocking code is fine here."""
    if job.attempt == 1 and job.json().get("flaky"):
        raise jobwire.RetryAfter(1.0, "image store busy")  # retry in 1 s, not per the backoff
    job.extend_blocking(60)  # a long job: push the attempt's deadline back
    time.sleep(0.05)
    return b"\x89PNG..."  # bytes are stored as they are


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(worker.run())
