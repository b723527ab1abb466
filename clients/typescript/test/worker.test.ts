/**
 * Worker side against a real jobwire + redis: retries, dead-lettering, concurrency, revoke,
 * lease extension, graceful stop, drain and reconnection.
 */
import assert from "node:assert/strict";
import { after, before, describe, it, type TestContext } from "node:test";

import {
  Client,
  JobAbortedError,
  JobCancelledError,
  JobDeadError,
  PermanentError,
  RateLimitedError,
  RetryAfterError,
  RpcError,
  Status,
  Worker,
  silentLogger,
  type AbortReason,
  type WorkerOptions,
} from "../src";
import { Proxy, Stack, uniqueQueue, waitFor } from "./harness";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves when `signal` aborts, with the abort reason. */
function aborted(signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(signal.reason);
    else signal.addEventListener("abort", () => resolve(signal.reason), { once: true });
  });
}

/** Runs `body`; skips the test when the server does not implement the RPC it needs. */
async function unlessUnimplemented(t: TestContext, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof RpcError && err.code === Status.UNIMPLEMENTED) t.skip(`server lacks ${err.method}`);
    else throw err;
  }
}

function newWorker(address: string, queue: string, opts: Partial<WorkerOptions> = {}): Worker {
  return new Worker({ address, queues: [queue], concurrency: 1, logger: silentLogger, handleSignals: false, ...opts });
}

describe("worker", () => {
  let stack: Stack;
  let client: Client;

  before(async () => {
    stack = await Stack.start();
    client = new Client({ address: stack.address });
  });

  after(async () => {
    client?.close();
    await stack?.stop();
  });

  it("retries a thrown error with the job's backoff, then completes", async () => {
    const queue = uniqueQueue("retry");
    const starts: number[] = [];
    const worker = newWorker(stack.address, queue).handle("flaky", (job) => {
      starts.push(Date.now());
      if (job.attempt === 1) throw new Error("transient failure");
      return { attempt: job.attempt };
    });
    worker.start();
    try {
      const { id } = await client.add(queue, "flaky", {}, { maxAttempts: 3, backoff: { kind: "fixed", baseMs: 100 } });
      const result = await client.waitForResult(id, { timeoutMs: 10_000 });
      assert.deepEqual(result.json(), { attempt: 2 });
      assert.equal(result.info.attempts, 2);
      assert.match(result.info.lastError, /transient failure/);
      assert.equal(starts.length, 2);
      assert.ok(starts[1]! - starts[0]! >= 80, `fixed backoff respected (${starts[1]! - starts[0]!} ms)`);
    } finally {
      await worker.stop();
    }
  });

  it("RetryAfterError chooses the wait before the next attempt", async () => {
    const queue = uniqueQueue("retry-after");
    const starts: number[] = [];
    const worker = newWorker(stack.address, queue).handle("later", (job) => {
      starts.push(Date.now());
      if (job.attempt === 1) throw new RetryAfterError(600, "rate limited");
      return "ok";
    });
    worker.start();
    try {
      const { id } = await client.add(queue, "later", {}, { maxAttempts: 2, backoff: { kind: "fixed", baseMs: 0 } });
      const result = await client.waitForResult(id, { timeoutMs: 10_000 });
      assert.equal(result.json(), "ok");
      const gap = starts[1]! - starts[0]!;
      assert.ok(gap >= 550, `retry_after overrides a zero backoff (${gap} ms)`);
    } finally {
      await worker.stop();
    }
  });

  it("RateLimitedError gives the job back for later without spending an attempt", async () => {
    const queue = uniqueQueue("rate-limited");
    const starts: number[] = [];
    const worker = newWorker(stack.address, queue).handle("call", () => {
      starts.push(Date.now());
      if (starts.length === 1) throw new RateLimitedError(400, { holdKey: true });
      return "ok";
    });
    worker.start();
    try {
      const { id } = await client.add(queue, "call", {}, { maxAttempts: 1, rateKey: "api.example" });
      const result = await client.waitForResult(id, { timeoutMs: 10_000 });
      assert.equal(result.json(), "ok");
      const gap = starts[1]! - starts[0]!;
      assert.ok(gap >= 350, `ran again after the wait (${gap} ms)`);
      const info = await client.getJobInfo(id);
      assert.equal(info.attempts, 1, "the rate-limited run spent no attempt (maxAttempts 1)");
    } finally {
      await worker.stop();
    }
  });

  it("PermanentError sends the job dead without further attempts", async () => {
    const queue = uniqueQueue("permanent");
    let calls = 0;
    const worker = newWorker(stack.address, queue).handle("bad", () => {
      calls++;
      throw new PermanentError("payload is unusable");
    });
    worker.start();
    try {
      const { id } = await client.add(queue, "bad", {}, { maxAttempts: 5, backoff: { kind: "fixed", baseMs: 10 } });
      const err = await client.waitForResult(id, { timeoutMs: 10_000 }).then(
        () => assert.fail("expected the job to die"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof JobDeadError);
      assert.equal(err.info.state, "dead");
      assert.equal(err.info.attempts, 1);
      assert.match(err.lastError, /^payload is unusable$/);
      assert.equal(calls, 1);
    } finally {
      await worker.stop();
    }
  });

  it("never runs more than `concurrency` handlers at once", async () => {
    const queue = uniqueQueue("concurrency");
    let running = 0;
    let peak = 0;
    const worker = newWorker(stack.address, queue, { concurrency: 3 }).handle("work", async (job) => {
      running++;
      peak = Math.max(peak, running);
      assert.ok(worker.running <= 3);
      await sleep(80);
      running--;
      return job.json<number>() * 2;
    });
    const added = await client.addMany(Array.from({ length: 12 }, (_, i) => ({ queue, type: "work", payload: i })));
    worker.start();
    try {
      const results = await Promise.all(
        added.map((a) => {
          assert.ok(a.ok);
          return client.waitForResult(a.id, { timeoutMs: 15_000 });
        }),
      );
      assert.deepEqual(
        results.map((r) => r.json<number>()),
        Array.from({ length: 12 }, (_, i) => i * 2),
      );
      assert.equal(peak, 3, `peak concurrency was ${peak}`);
    } finally {
      await worker.stop();
    }
  });

  it("a revoke on timeout aborts the handler and the job is not completed", async () => {
    const queue = uniqueQueue("revoke");
    let reason: AbortReason | undefined;
    let abortedAfter = 0;
    const worker = newWorker(stack.address, queue)
      .handle("slow", async (job) => {
        const started = Date.now();
        const r = await Promise.race([aborted(job.signal), sleep(15_000)]);
        abortedAfter = Date.now() - started;
        if (r instanceof JobAbortedError) reason = r.reason;
        return "too late"; // Must not become the result: the lease is gone.
      })
      .handle("quick", () => "quick done");
    worker.start();
    try {
      const { id } = await client.add(queue, "slow", {}, { timeoutMs: 300, maxAttempts: 1 });
      await assert.rejects(client.waitForResult(id, { timeoutMs: 10_000 }), (err: unknown) => {
        assert.ok(err instanceof JobDeadError);
        assert.equal(err.lastError, "timeout");
        assert.equal(err.info.result.length, 0);
        return true;
      });
      await waitFor("the handler to see the abort", () => reason !== undefined);
      assert.equal(reason, "timeout");
      assert.ok(abortedAfter < 10_000, `aborted after ${abortedAfter} ms`);
      // The credit came back: with concurrency 1 the next job still runs.
      const next = await client.addAndWait(queue, "quick", {}, { timeoutMs: 10_000 });
      assert.equal(next.json(), "quick done");
    } finally {
      await worker.stop();
    }
  });

  it("extend() pushes the deadline so a long job is not revoked", async () => {
    const queue = uniqueQueue("extend");
    let before: Date | undefined;
    let afterExtend: Date | undefined;
    const worker = newWorker(stack.address, queue).handle("long", async (job) => {
      before = job.deadline;
      afterExtend = await job.extend(5_000);
      await sleep(900);
      if (job.signal.aborted) throw new Error("revoked despite extend");
      return "finished";
    });
    worker.start();
    try {
      const { id } = await client.add(queue, "long", {}, { timeoutMs: 300, maxAttempts: 1 });
      const result = await client.waitForResult(id, { timeoutMs: 10_000 });
      assert.equal(result.json(), "finished");
      assert.equal(result.info.attempts, 1);
      assert.ok(before && afterExtend && afterExtend.getTime() > before.getTime() + 3_000);
    } finally {
      await worker.stop();
    }
  });

  it("cancel() revokes a running job (reason 'cancelled') and the await rejects", async (t) => {
    const queue = uniqueQueue("cancel");
    let reason: unknown;
    const worker = newWorker(stack.address, queue).handle("job", async (job) => {
      reason = await aborted(job.signal);
      throw new Error("stopped");
    });
    worker.start();
    try {
      const { id } = await client.add(queue, "job", {});
      await waitFor("the job to run", async () => (await client.getJobInfo(id)).state === "active");
      await unlessUnimplemented(t, async () => {
        await client.cancel(id);
        await assert.rejects(client.waitForResult(id, { timeoutMs: 10_000 }), JobCancelledError);
        await waitFor("the handler to see the abort", () => reason !== undefined);
        assert.ok(reason instanceof JobAbortedError && reason.reason === "cancelled");
        assert.equal((await client.getJobInfo(id)).state, "cancelled");
      });
    } finally {
      await worker.stop({ timeoutMs: 1_000 }); // If skipped, the handler still waits for its abort.
    }
  });

  it("progress() is stored on the job while it runs", async (t) => {
    const queue = uniqueQueue("progress");
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let reported: Promise<void> | undefined;
    const worker = newWorker(stack.address, queue).handle("job", async (job) => {
      reported = job.progress({ done: 1, of: 2 });
      await reported.catch(() => {});
      await released;
      return "ok";
    });
    worker.start();
    try {
      const { id } = await client.add(queue, "job", {});
      await waitFor("the progress report", () => reported !== undefined);
      await unlessUnimplemented(t, async () => {
        await reported;
        assert.deepEqual((await client.getJobInfo(id)).progressJson(), { done: 1, of: 2 });
      });
      release();
      assert.equal((await client.waitForResult(id, { timeoutMs: 10_000 })).json(), "ok");
    } finally {
      release();
      await worker.stop();
    }
  });

  it("fails the attempt of a job type nobody handles", async () => {
    const queue = uniqueQueue("unknown-type");
    const worker = newWorker(stack.address, queue).handle("known", () => "ok");
    worker.start();
    try {
      const { id } = await client.add(queue, "unknown", {}, { maxAttempts: 1 });
      await assert.rejects(client.waitForResult(id, { timeoutMs: 10_000 }), (err: unknown) => {
        assert.ok(err instanceof JobDeadError);
        assert.match(err.lastError, /no handler registered for job type "unknown"/);
        return true;
      });
    } finally {
      await worker.stop();
    }
  });

  it("stop() lets running handlers finish and answer, and starts nothing new", async () => {
    const queue = uniqueQueue("stop");
    const started: string[] = [];
    const finished: string[] = [];
    const worker = newWorker(stack.address, queue, { concurrency: 2 }).handle("job", async (job) => {
      started.push(job.id);
      await sleep(job.json<number>());
      finished.push(job.id);
      return "done";
    });
    const [a, b] = await Promise.all([client.add(queue, "job", 300), client.add(queue, "job", 700)]);
    worker.start();
    await waitFor("both jobs to start", () => started.length === 2);
    const c = await client.add(queue, "job", 10);
    const stopped = worker.stop();
    await stopped;
    assert.deepEqual([...finished].sort(), [a!.id, b!.id].sort(), "both running jobs finished before stop() resolved");
    for (const id of [a!.id, b!.id]) {
      const info = await client.getJobInfo(id);
      assert.equal(info.state, "completed");
      assert.equal(info.lostDeliveries, 0);
    }
    assert.ok(!started.includes(c.id), "no job was started after stop()");
    // If the server managed to deliver C before the stream ended, it hands C back.
    await waitFor("job C to be waiting", async () => (await client.getJobInfo(c.id)).state === "waiting");
    assert.equal((await client.getJobInfo(c.id)).attempts, 0);
  });

  it("an aborted stream aborts running handlers, and the worker reconnects", async () => {
    const queue = uniqueQueue("reconnect");
    const proxy = new Proxy(() => stack.address);
    await proxy.start();
    const reasons: unknown[] = [];
    const worker = newWorker(proxy.address, queue, { reconnect: { initialDelayMs: 50, maxDelayMs: 200 } }).handle("job", async (job) => {
      if (job.lostDeliveries === 0) {
        reasons.push(await aborted(job.signal));
        throw new Error("gave up");
      }
      return { deliveries: job.lostDeliveries + 1 };
    });
    worker.start();
    try {
      const { id } = await client.add(queue, "job", {});
      await waitFor("the first delivery", async () => (await client.getJobInfo(id)).state === "active");
      const connections = proxy.connections;
      proxy.cutAll();
      const result = await client.waitForResult(id, { timeoutMs: 15_000 });
      assert.deepEqual(result.json(), { deliveries: 2 });
      assert.equal(result.info.attempts, 1, "a lost delivery does not use up an attempt");
      assert.ok(proxy.connections > connections, "the worker reconnected");
      assert.equal(reasons.length, 1);
      assert.ok(reasons[0] instanceof JobAbortedError && reasons[0].reason === "stream-ended");
    } finally {
      await worker.stop();
      await proxy.stop();
    }
  });
});

describe("worker and a draining server", () => {
  let stack: Stack;
  let client: Client;

  before(async () => {
    stack = await Stack.start({ args: ["--drain-grace", "10s"] });
    client = new Client({ address: stack.address });
  });

  after(async () => {
    client?.close();
    await stack?.stop();
  });

  it("finishes in-flight work on drain, then reconnects to the next server", async () => {
    const queue = uniqueQueue("drain");
    const port = stack.server.port;
    let startedA = false;
    const worker = newWorker(stack.address, queue, { reconnect: { initialDelayMs: 50, maxDelayMs: 300 } }).handle("job", async (job) => {
      startedA = true;
      await sleep(job.json<number>());
      return `done ${job.json<number>()}`;
    });
    worker.start();
    try {
      const a = await client.add(queue, "job", 600);
      await waitFor("job A to start", () => startedA);
      // SIGTERM: the server tells the stream to drain and accepts acks for the grace period;
      // it exits as soon as nothing is held.
      const started = Date.now();
      await stack.server.terminate();
      assert.ok(Date.now() - started < 8_000, "the server did not have to wait out its grace");
      await stack.server.start({ listen: `127.0.0.1:${port}`, args: ["--drain-grace", "10s"] });
      const infoA = await client.getJobInfo(a.id);
      assert.equal(infoA.state, "completed", "job A was answered during the drain");
      assert.equal(infoA.lostDeliveries, 0);
      assert.equal(infoA.resultJson(), "done 600");
      const b = await client.addAndWait(queue, "job", 10, { timeoutMs: 15_000 });
      assert.equal(b.json(), "done 10", "the worker reconnected to the new server");
    } finally {
      await worker.stop();
    }
  });
});
