/**
 * Producer side against a real jobwire + redis: add, addMany, await results, JSON and bytes,
 * errors, and retries on UNAVAILABLE that never add a job twice.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  Client,
  JobDeadError,
  PermanentError,
  RpcError,
  Status,
  WaitTimeoutError,
  Worker,
  proto,
  silentLogger,
  type Handler,
} from "../src";
import { Proxy, Stack, uniqueQueue, waitFor } from "./harness";

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

/** Runs a worker on `queue` with `handlers` for the duration of `body`. */
async function withWorker(
  queue: string,
  handlers: Record<string, Handler>,
  body: () => Promise<void>,
  concurrency = 4,
): Promise<void> {
  const worker = new Worker({ address: stack.address, queues: [queue], concurrency, logger: silentLogger, handleSignals: false });
  for (const [type, h] of Object.entries(handlers)) worker.handle(type, h);
  worker.start();
  try {
    await body();
  } finally {
    await worker.stop();
  }
}

/** One AddJob through the generated client, for a request the wrapper would not send. */
function rawAdd(request: proto.AddJobRequest): Promise<proto.AddJobResponse> {
  return new Promise((resolve, reject) => {
    client.raw.addJob(request, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/**
 * How the server remembers the key of job `id`: true when a repeat sent as a generated key is the
 * duplicate (kept for the retry window), false when one sent as a chosen key is (the idempotency
 * window), undefined when neither is. Each kind is looked for among its own.
 */
async function rememberedAsGenerated(queue: string, id: string): Promise<boolean | undefined> {
  const { idempotencyKey } = await client.getJobInfo(id);
  let kind: boolean | undefined;
  for (const generated of [true, false]) {
    const res = await rawAdd(proto.AddJobRequest.fromPartial({ queue, type: "t", idempotencyKey, idempotencyKeyGenerated: generated }));
    if (res.duplicate) {
      assert.equal(res.jobId, id, "a duplicate names the first job");
      assert.equal(kind, undefined, "a key is remembered as one kind only");
      kind = generated;
    }
  }
  return kind;
}

describe("producer", () => {
  it("marks the idempotency keys it generates, and not the ones it is given", async () => {
    const queue = uniqueQueue("marked");
    assert.equal(await rememberedAsGenerated(queue, (await client.add(queue, "t")).id), true);
    const chosen = await client.add(queue, "t", undefined, { idempotencyKey: "order-18" });
    assert.equal(await rememberedAsGenerated(queue, chosen.id), false);
    const many = await client.addMany([{ queue, type: "t" }, { queue, type: "t", idempotencyKey: "order-19" }]);
    const kinds: (boolean | undefined)[] = [];
    for (const r of many) {
      if (!r.ok) throw new Error(`rejected: ${r.message}`);
      kinds.push(await rememberedAsGenerated(queue, r.id));
    }
    assert.deepEqual(kinds, [true, false]);
  });

  it("adds a job, a worker completes it, and the result is awaited", async () => {
    const queue = uniqueQueue("basic");
    const added = await client.add(queue, "sum", { a: 2, b: 3 });
    assert.match(added.id, new RegExp(`^${queue}/`));
    assert.equal(added.duplicate, false);
    assert.notEqual(added.idempotencyKey, "", "an idempotency key is generated");

    const before = await client.getJobInfo(added.id);
    assert.equal(before.state, "waiting");
    assert.equal(before.type, "sum");
    assert.deepEqual(before.json(), { a: 2, b: 3 });
    assert.equal(before.idempotencyKey, added.idempotencyKey);

    await withWorker(queue, { sum: (job) => { const { a, b } = job.json<{ a: number; b: number }>(); return { sum: a + b }; } }, async () => {
      const result = await client.waitForResult(added.id, { timeoutMs: 10_000 });
      assert.deepEqual(result.json<{ sum: number }>(), { sum: 5 });
      assert.equal(result.info.state, "completed");
      assert.equal(result.info.attempts, 1);
      const info = await client.getJobInfo(added.id);
      assert.equal(info.state, "completed");
      assert.deepEqual(info.resultJson(), { sum: 5 });
      assert.ok(info.finishedAt instanceof Date);
    });
  });

  it("round-trips JSON and raw bytes in payloads and results", async () => {
    const queue = uniqueQueue("json");
    type Order = { id: number; items: string[]; note: string | null };
    const order: Order = { id: 7, items: ["a", "ü", "🚀"], note: null };
    const bytes = Buffer.from([0, 1, 2, 254, 255]);
    await withWorker(
      queue,
      {
        json: (job) => {
          const o = job.json<Order>();
          return { count: o.items.length, first: o.items[0], echo: o };
        },
        bytes: (job) => {
          assert.deepEqual(job.payload, bytes);
          return new Uint8Array([...job.payload].reverse());
        },
        string: (job) => job.json<string>().toUpperCase(),
        nothing: () => undefined,
        text: (job) => Buffer.from(`hello ${job.text()}`),
      },
      async () => {
        const j = await client.addAndWait(queue, "json", order, { timeoutMs: 10_000 });
        assert.deepEqual(j.json(), { count: 3, first: "a", echo: order });

        const b = await client.addAndWait(queue, "bytes", bytes, { timeoutMs: 10_000 });
        assert.deepEqual(b.bytes, Buffer.from([255, 254, 2, 1, 0]));

        const s = await client.addAndWait(queue, "string", "shout", { timeoutMs: 10_000 });
        assert.equal(s.json<string>(), "SHOUT");
        assert.equal(s.text(), '"SHOUT"', "strings travel JSON-encoded");

        const n = await client.addAndWait(queue, "nothing", undefined, { timeoutMs: 10_000 });
        assert.equal(n.bytes.length, 0);
        assert.equal(n.json(), undefined);

        const t = await client.addAndWait(queue, "text", new TextEncoder().encode("bytes"), { timeoutMs: 10_000 });
        assert.equal(t.text(), "hello bytes");
      },
    );
  });

  it("awaits results by WatchJob stream and by GetJobInfo polling alike", async () => {
    const queue = uniqueQueue("watch");
    const polling = new Client({ address: stack.address, watch: "poll", poll: { initialIntervalMs: 10, maxIntervalMs: 50 } });
    try {
      await withWorker(queue, { slow: async (job) => { await new Promise((r) => setTimeout(r, 150)); return job.json<number>() + 1; } }, async () => {
        const [a, b] = await Promise.all([client.add(queue, "slow", 1), client.add(queue, "slow", 2)]);
        const [ra, rb] = await Promise.all([
          client.waitForResult(a.id, { timeoutMs: 10_000 }),
          polling.waitForResult(b.id, { timeoutMs: 10_000 }),
        ]);
        assert.equal(ra.json(), 2);
        assert.equal(rb.json(), 3);
        // A finished job is answered at once, by either.
        assert.equal((await client.waitForResult(a.id, { timeoutMs: 1_000 })).json(), 2);
        assert.equal((await polling.waitForResult(a.id, { timeoutMs: 1_000 })).json(), 2);
      });
    } finally {
      polling.close();
    }
  });

  it("adds many jobs, reporting a rejected entry on its own", async () => {
    const queue = uniqueQueue("many");
    const results = await client.addMany([
      { queue, type: "t", payload: { n: 1 }, priority: 5, headers: { traceparent: "00-abc-def-01" } },
      { queue: "bad queue name!", type: "t", payload: { n: 2 } },
      { queue, type: "t", payload: { n: 3 }, idempotencyKey: "fixed-key" },
      { queue, type: "t", payload: { n: 4 }, idempotencyKey: "fixed-key" },
    ]);
    assert.equal(results.length, 4);
    const [r1, r2, r3, r4] = results;
    assert.ok(r1?.ok && r3?.ok && r4?.ok);
    assert.ok(r2 && !r2.ok);
    assert.equal(r2.code, Status.INVALID_ARGUMENT);
    assert.match(r2.message, /queue/);
    // Entries 3 and 4 share a key: one job; the later entry is the duplicate (in request order).
    assert.equal(r4.id, r3.id);
    assert.ok(!r3.duplicate && r4.duplicate);
    assert.equal(r3.idempotencyKey, "fixed-key");
    const stats = await client.stats(queue);
    assert.equal(stats.waiting, 2);
    const info = await client.getJobInfo(r1.id);
    assert.equal(info.priority, 5);
    assert.deepEqual(info.headers, { traceparent: "00-abc-def-01" });
    assert.deepEqual(info.json(), { n: 1 });
    const queues = await client.listQueues();
    assert.ok(queues.some((q) => q.queue === queue && q.waiting === 2));
  });

  it(
    "keeps the request order of an AddJobs batch (FIFO)",
    async () => {
      const queue = uniqueQueue("batch-order");
      const n = 20;
      const added = await client.addMany(Array.from({ length: n }, (_, i) => ({ queue, type: "t", payload: i })));
      const seen: number[] = [];
      await withWorker(queue, { t: (job) => void seen.push(job.json<number>()) }, async () => {
        await waitFor("every job", () => seen.length === n);
      }, 1);
      assert.ok(added.every((r) => r.ok));
      assert.deepEqual(seen, Array.from({ length: n }, (_, i) => i));
    },
  );

  it("maps server errors to RpcError with the status code", async () => {
    await assert.rejects(client.add("bad queue!", "t", {}), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Status.INVALID_ARGUMENT);
      assert.equal(err.codeName, "INVALID_ARGUMENT");
      assert.match(err.details, /queue/);
      return true;
    });
    await assert.rejects(client.getJobInfo(`${uniqueQueue("nf")}/01J00000000000000000000000`), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Status.NOT_FOUND);
      return true;
    });
  });

  it("rejects the await with JobDeadError when the job dies, and WaitTimeoutError on timeout", async () => {
    const queue = uniqueQueue("dead");
    const waiting = await client.add(queue, "never-run", {});
    await assert.rejects(client.waitForResult(waiting.id, { timeoutMs: 200 }), WaitTimeoutError);

    const doomed = await client.add(queue, "doomed", {});
    await withWorker(queue, { doomed: () => { throw new PermanentError("bad input"); } }, async () => {
      await assert.rejects(client.waitForResult(doomed.id, { timeoutMs: 10_000 }), (err: unknown) => {
        assert.ok(err instanceof JobDeadError);
        assert.equal(err.jobId, doomed.id);
        assert.match(err.lastError, /bad input/);
        return true;
      });
    });
  });

  it("honours per-call deadlines and abort signals", async () => {
    const ac = new AbortController();
    ac.abort(new Error("caller gave up"));
    await assert.rejects(client.add(uniqueQueue("abort"), "t", {}, { signal: ac.signal }), /caller gave up/);
    // A server that accepts the connection but never answers: the deadline ends the call.
    const accepted: import("node:net").Socket[] = [];
    const silent = await import("node:net").then((net) => net.createServer((sock) => accepted.push(sock)));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as { port: number }).port;
    const c = new Client({ address: `127.0.0.1:${port}`, deadlineMs: 300 });
    const started = Date.now();
    await assert.rejects(c.stats("q"), (err: unknown) => err instanceof RpcError && (err.code === Status.DEADLINE_EXCEEDED || err.code === Status.UNAVAILABLE));
    assert.ok(Date.now() - started < 3000, "the deadline bounds the call, retries included");
    c.close();
    for (const sock of accepted) sock.destroy();
    silent.close();
  });

  it("retries an add whose answer was lost (UNAVAILABLE) without adding a second job", async () => {
    const queue = uniqueQueue("idem");
    const proxy = new Proxy(() => stack.address);
    await proxy.start();
    const c = new Client({ address: proxy.address, retry: { initialBackoffMs: 50 } });
    try {
      await c.stats(queue); // Connect first, so the cut hits the add's answer.
      proxy.cutNextResponse();
      const connectionsBefore = proxy.connections;
      const added = await c.add(queue, "t", { once: true });
      assert.ok(proxy.connections > connectionsBefore, "the add was retried on a new connection");
      assert.equal(added.duplicate, true, "the retry found the first add by its idempotency key");
      const stats = await client.stats(queue);
      assert.equal(stats.waiting, 1, "exactly one job was added");
      const info = await client.getJobInfo(added.id);
      assert.equal(info.idempotencyKey, added.idempotencyKey);
      assert.deepEqual(info.json(), { once: true });

      // The same holds for addMany: a lost answer is retried with the same keys.
      await c.stats(queue);
      proxy.cutNextResponse();
      const many = await c.addMany([
        { queue, type: "t", payload: 1 },
        { queue, type: "t", payload: 2 },
      ]);
      assert.ok(many.every((r) => r.ok && r.duplicate));
      assert.equal((await client.stats(queue)).waiting, 3);
    } finally {
      c.close();
      await proxy.stop();
    }
  });

  it("adds in flight when the server is killed each go in once", async () => {
    // A stack of the test's own: its server is killed (no drain) and started again on its port
    // while twenty producers add one job after another.
    const own = await Stack.start();
    const c = new Client({ address: own.address, deadlineMs: 30_000, retry: { maxAttempts: 60, initialBackoffMs: 50, maxBackoffMs: 500 } });
    try {
      const queue = uniqueQueue("killed");
      const ids: string[] = [];
      const producers = Array.from({ length: 20 }, async (_, p) => {
        for (let n = 0; n < 100; n++) ids.push((await c.add(queue, "t", { n: p * 100 + n })).id);
      });
      await waitFor("300 adds before the kill", () => ids.length >= 300, 20_000);
      const port = own.server.port;
      await own.server.stop();
      await own.server.start({ listen: `127.0.0.1:${port}` });
      await Promise.all(producers);
      assert.equal(new Set(ids).size, 2000, "each add answered with a job of its own");
      assert.equal((await c.stats(queue)).waiting, 2000, "each job once");
    } finally {
      c.close();
      await own.stop();
    }
  });

  it("retries on UNAVAILABLE while Redis is down and succeeds once it is back", async () => {
    const queue = uniqueQueue("redis-down");
    await stack.redis.stop();
    try {
      // While Redis is down the server answers UNAVAILABLE.
      const once = new Client({ address: stack.address, retry: { maxAttempts: 1 } });
      await assert.rejects(once.add(queue, "t", {}), (err: unknown) => {
        assert.ok(err instanceof RpcError);
        assert.equal(err.code, Status.UNAVAILABLE);
        return true;
      });
      once.close();
      const c = new Client({ address: stack.address, deadlineMs: 20_000, retry: { maxAttempts: 100, initialBackoffMs: 100, maxBackoffMs: 500 } });
      const pending = c.add(queue, "t", { survived: true });
      // Let a few tries fail before Redis comes back.
      await new Promise((r) => setTimeout(r, 700));
      await stack.redis.start();
      const added = await pending;
      assert.equal(added.duplicate, false);
      await waitFor("the job to be readable", async () => (await client.stats(queue)).waiting === 1);
      c.close();
    } finally {
      if (!stack.redis.running) await stack.redis.start();
    }
  });
});
