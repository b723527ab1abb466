/**
 * The worker's protocols against a real jobwire + redis: on the Work stream, acks gathered into
 * one message, a refused ack answered on the stream without ending it, prefetch (held beyond
 * concurrency, handed back on stop and on drain); and the unary fallback.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { Client, JobAbortedError, LeaseLostError, RpcError, Status, Worker, silentLogger, type WorkerOptions } from "../src";
import type * as pb from "../src/gen/jobwire/v1/jobwire";
import { Proxy, Stack, uniqueQueue, waitFor } from "./harness";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A promise and the function that resolves it. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open = (): void => {};
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

/** What a worker wrote on its Work streams: how many it opened, and each acks message. */
interface Recorded {
  opens: number;
  acks: pb.WorkAcks[];
}

/** Records what `worker` writes on the Work streams it opens. */
function record(worker: Worker): Recorded {
  const recorded: Recorded = { opens: 0, acks: [] };
  const raw = worker.raw;
  const open = raw.work.bind(raw);
  raw.work = ((...args: Parameters<typeof open>) => {
    recorded.opens++;
    const call = open(...args);
    const write = call.write.bind(call);
    call.write = ((message: pb.WorkRequest, ...rest: unknown[]) => {
      if (message.message?.$case === "acks") recorded.acks.push(message.message.value);
      return (write as (...a: unknown[]) => boolean)(message, ...rest);
    }) as typeof call.write;
    return call;
  }) as typeof raw.work;
  return recorded;
}

function newWorker(address: string, queue: string, opts: Partial<WorkerOptions> = {}): Worker {
  return new Worker({ address, queues: [queue], concurrency: 1, logger: silentLogger, handleSignals: false, ...opts });
}

describe("worker on the Work protocol, and on the unary one", () => {
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

  it("acks that are ready together go out in one message", async () => {
    const queue = uniqueQueue("batched");
    const count = 10;
    const release = gate();
    let started = 0;
    const worker = newWorker(stack.address, queue, { concurrency: count }).handle("job", async (job) => {
      started++;
      await release.opened;
      return job.json<number>();
    });
    const recorded = record(worker);
    const added = await Promise.all(Array.from({ length: count }, (_, i) => client.add(queue, "job", i)));
    worker.start();
    try {
      await waitFor("every job to start", () => started === count);
      release.open();
      for (const [i, { id }] of added.entries()) {
        assert.equal((await client.waitForResult(id, { timeoutMs: 10_000 })).json(), i);
      }
      const completes = recorded.acks.map((m) => m.acks.filter((a) => a.ack?.$case === "complete").length).filter((n) => n > 0);
      assert.equal(completes.reduce((a, b) => a + b, 0), count, "every complete went out on the stream");
      assert.ok(completes.length < count, `${count} completes in ${completes.length} messages`);
      assert.equal(recorded.opens, 1);
    } finally {
      release.open(); // Lets stop() end when an assertion failed.
      await worker.stop();
    }
  });

  it("a stale token is refused on the stream, which lives on", async () => {
    const queue = uniqueQueue("stale");
    let refusal: unknown;
    const worker = newWorker(stack.address, queue)
      .handle("slow", async (job) => {
        await new Promise((resolve) => job.signal.addEventListener("abort", resolve, { once: true }));
        assert.ok(job.signal.reason instanceof JobAbortedError && job.signal.reason.reason === "timeout");
        try {
          await job.progress({ late: true });
        } catch (err) {
          refusal = err;
        }
        return "too late";
      })
      .handle("quick", () => "quick done");
    const recorded = record(worker);
    worker.start();
    try {
      const { id } = await client.add(queue, "slow", {}, { timeoutMs: 300, maxAttempts: 1 });
      await waitFor("the late progress to be refused", () => refusal !== undefined);
      // Surfaced exactly as the unary ReportProgress refusal.
      assert.ok(refusal instanceof LeaseLostError, String(refusal));
      const cause = refusal.cause;
      assert.ok(cause instanceof RpcError && cause.code === Status.FAILED_PRECONDITION && cause.method === "ReportProgress");
      const next = await client.addAndWait(queue, "quick", {}, { timeoutMs: 10_000 });
      assert.equal(next.json(), "quick done", "the credit came back and the stream still serves");
      assert.equal((await client.getJobInfo(id)).state, "dead");
      assert.equal(recorded.opens, 1, "the refusal did not end the stream");
    } finally {
      await worker.stop();
    }
  });

  it("prefetch holds jobs beyond concurrency, marks them started, and hands them back on stop", async () => {
    const queue = uniqueQueue("prefetch");
    const release = gate();
    const ran: string[] = [];
    const worker = newWorker(stack.address, queue, { concurrency: 1, prefetch: 2 }).handle("job", async (job) => {
      ran.push(job.id);
      await release.opened;
      return "done";
    });
    const recorded = record(worker);
    // Added one after the other: delivered in this order.
    const a = await client.add(queue, "job", 1);
    const b = await client.add(queue, "job", 2);
    const c = await client.add(queue, "job", 3);
    worker.start();
    try {
      await waitFor("three jobs held", async () => (await client.stats(queue)).active === 3);
      assert.deepEqual(ran, [a.id], "one handler runs; two jobs wait for it");
      assert.equal(worker.running, 1);
      const marks = recorded.acks.flatMap((m) => m.started);
      assert.equal(marks.length, 1, "only the job handed to a handler is marked started");
      const stopped = worker.stop();
      release.open();
      await stopped;
    } finally {
      release.open(); // Lets stop() end when an assertion failed.
      await worker.stop();
    }
    assert.deepEqual(ran, [a.id], "prefetched jobs never start once stopping");
    assert.equal((await client.getJobInfo(a.id)).state, "completed");
    for (const job of [b, c]) {
      const info = await client.getJobInfo(job.id);
      assert.equal(info.state, "waiting", "handed back to the queue");
      assert.equal(info.attempts, 0);
      assert.equal(info.lostDeliveries, 0);
    }
  });

  it("a prefetched job cancelled while it waits never starts, and its credit comes back", async () => {
    const queue = uniqueQueue("cancel-prefetch");
    const release = gate();
    const ran: string[] = [];
    const worker = newWorker(stack.address, queue, { prefetch: 1 }).handle("job", async (job) => {
      ran.push(job.json<string>());
      if (job.json<string>() === "a") await release.opened;
      return job.json<string>();
    });
    try {
      const a = await client.add(queue, "job", "a");
      const b = await client.add(queue, "job", "b");
      worker.start();
      await waitFor("A running and B prefetched", async () => ran.length === 1 && (await client.stats(queue)).active === 2);
      await client.cancel(b.id);
      await waitFor("B to end cancelled", async () => (await client.getJobInfo(b.id)).state === "cancelled");
      release.open();
      assert.equal((await client.waitForResult(a.id, { timeoutMs: 10_000 })).json(), "a");
      const c = await client.addAndWait(queue, "job", "c", { timeoutMs: 10_000 });
      assert.equal(c.json(), "c", "B's credit came back");
      assert.deepEqual(ran, ["a", "c"], "B never started");
    } finally {
      release.open();
      await worker.stop();
    }
  });

  it("forgets the prefetched jobs the server took back, reconnects and runs them", async () => {
    const queue = uniqueQueue("cut-prefetch");
    const proxy = new Proxy(() => stack.address);
    await proxy.start();
    const firstRun = gate();
    const runs: string[] = [];
    const worker = newWorker(proxy.address, queue, { prefetch: 1, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } }).handle(
      "job",
      async (job) => {
        runs.push(job.json<string>());
        if (runs.length === 1) {
          firstRun.open();
          await new Promise((resolve) => job.signal.addEventListener("abort", resolve, { once: true }));
          throw new Error("cut off");
        }
        return job.json<string>();
      },
    );
    const recorded = record(worker);
    try {
      const a = await client.add(queue, "job", "a");
      const b = await client.add(queue, "job", "b");
      worker.start();
      await firstRun.opened;
      await waitFor("A running and B prefetched", async () => (await client.stats(queue)).active === 2);
      proxy.cutAll();
      assert.equal((await client.waitForResult(a.id, { timeoutMs: 15_000 })).json(), "a");
      const resultB = await client.waitForResult(b.id, { timeoutMs: 15_000 });
      assert.equal(resultB.json(), "b");
      assert.equal(resultB.info.lostDeliveries, 0, "a prefetched job never started is not a lost delivery");
      assert.deepEqual(runs.filter((r) => r === "b"), ["b"], "B did not start on the dead stream");
      assert.ok(recorded.opens >= 2, "the worker reconnected");
    } finally {
      await worker.stop();
      await proxy.stop();
    }
  });

  it("retries a thrown error, then completes, without a Work stream", async () => {
    const queue = uniqueQueue("unary");
    const worker = newWorker(stack.address, queue, { protocol: "unary" }).handle("flaky", (job) => {
      if (job.attempt === 1) throw new Error("transient failure");
      return { attempt: job.attempt };
    });
    const recorded = record(worker);
    worker.start();
    try {
      const { id } = await client.add(queue, "flaky", {}, { maxAttempts: 3, backoff: { kind: "fixed", baseMs: 100 } });
      const result = await client.waitForResult(id, { timeoutMs: 10_000 });
      assert.deepEqual(result.json(), { attempt: 2 });
      assert.match(result.info.lastError, /transient failure/);
      assert.equal(recorded.opens, 0);
    } finally {
      await worker.stop();
    }
  });

  it("refuses prefetch", () => {
    assert.throws(() => newWorker(stack.address, "q", { protocol: "unary", prefetch: 1 }), RangeError);
  });
});

describe("worker on the Work protocol and a draining server", () => {
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

  it("on drain finishes the running job, hands back the prefetched one, and reconnects", async () => {
    const queue = uniqueQueue("drain-prefetch");
    const port = stack.server.port;
    const ran: string[] = [];
    const worker = newWorker(stack.address, queue, { prefetch: 1, reconnect: { initialDelayMs: 50, maxDelayMs: 300 } }).handle(
      "job",
      async (job) => {
        ran.push(job.id);
        await sleep(job.json<number>());
        return `done ${job.json<number>()}`;
      },
    );
    const recorded = record(worker);
    const a = await client.add(queue, "job", 600);
    const b = await client.add(queue, "job", 10);
    worker.start();
    try {
      await waitFor("A running and B prefetched", async () => ran.length === 1 && (await client.stats(queue)).active === 2);
      await stack.server.terminate();
      assert.deepEqual(ran, [a.id], "B never started on the draining stream");
      await stack.server.start({ listen: `127.0.0.1:${port}`, args: ["--drain-grace", "10s"] });
      assert.equal((await client.getJobInfo(a.id)).state, "completed", "A was answered during the drain");
      const resultB = await client.waitForResult(b.id, { timeoutMs: 15_000 });
      assert.equal(resultB.json(), "done 10", "B ran after the reconnect");
      assert.equal(resultB.info.lostDeliveries, 0, "B was handed back, not lost");
      assert.ok(recorded.opens >= 2, "the worker opened a new stream");
    } finally {
      await worker.stop();
    }
  });
});
