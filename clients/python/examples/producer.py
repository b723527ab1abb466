"""An example producer: adds jobs for examples/worker.py and waits for their results.

    python examples/producer.py          # JOBWIRE_TARGET=host:port to point it elsewhere

Start examples/worker.py against the same server first: every step waits for a job's result.
"""

from __future__ import annotations

import asyncio

import jobwire


async def main() -> None:
    async with jobwire.Client(timeout=5) as client:
        # One job, then wait for its result.
        added = await client.add("emails", "welcome", payload={"to": "ada@example.com"})
        info = await client.wait(added.id, timeout=30)
        print(f"{added.id}: {info.state.name} -> {info.result_json()}")

        # An idempotency key makes a repeat harmless: the same job id comes back.
        again = await client.add(
            "emails", "welcome", payload={"to": "ada@example.com"}, idempotency_key="signup-ada"
        )
        repeat = await client.add(
            "emails", "welcome", payload={"to": "ada@example.com"}, idempotency_key="signup-ada"
        )
        print(f"same job: {again.id == repeat.id}, duplicate: {repeat.duplicate}")

        # A job that fails for good ends dead; wait() raises JobDead.
        bad = await client.add("emails", "welcome", payload={"to": "nobody"})
        try:
            await client.wait(bad.id, timeout=30)
        except jobwire.JobDead as e:
            print(f"{bad.id}: dead: {e.info.last_error}")

        # Many at once (one AddJobs call per 1,000), with retries and a fast fixed backoff.
        outcomes = await client.add_many(
            jobwire.NewJob(
                "images",
                "resize",
                payload={"image": n, "flaky": n == 0},
                max_attempts=3,
                backoff=jobwire.Backoff.fixed(0.5),
            )
            for n in range(3)
        )
        for outcome in outcomes:
            if isinstance(outcome, jobwire.Rejected):
                print(f"job {outcome.index} rejected: {outcome.error}")
                continue
            info = await client.wait(outcome.id, timeout=30)
            print(f"{outcome.id}: {len(info.result)} bytes after {info.attempts} attempt(s)")

        print(await client.stats("images"))


if __name__ == "__main__":
    asyncio.run(main())
