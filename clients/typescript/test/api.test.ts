/**
 * The rest of the API against a real jobwire + redis: sessions (calls, the state in the
 * handler, the write with the completion and its rerun after a conflict), following jobs and
 * queues (watch, subscribe with resume), cancel (the handler's signal aborts), admin calls.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  Client,
  JobCancelledError,
  JobDeadError,
  PermanentError,
  RetryError,
  RpcError,
  Status,
  Worker,
  silentLogger,
  type Handler,
  type JobEvent,
} from "../src";
import { Stack, uniqueQueue, waitFor } from "./harness";

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

async function withWorker(queue: string, handlers: Record<string, Handler>, body: (w: Worker) => Promise<void>, workerId?: string): Promise<void> {
  const worker = new Worker({
    address: stack.address,
    queues: [queue],
    concurrency: 3,
    logger: silentLogger,
    handleSignals: false,
    ...(workerId ? { workerId } : {}),
  });
  for (const [type, h] of Object.entries(handlers)) worker.handle(type, h);
  worker.start();
  try {
    await body(worker);
  } finally {
    await worker.stop();
  }
}

async function rejectsWithCode(p: Promise<unknown>, code: number): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof RpcError && err.code === code);
}

describe("sessions", () => {
  it("creates, reads, updates with compare-and-set, lists and deletes", async () => {
    const queue = uniqueQueue("sess");
    const s = await client.createSession({ queue, name: "user-7", state: { turns: 0 }, ttlMs: 3_600_000, maxConcurrency: 2 });
    assert.equal(s.id, `${queue}/user-7`);
    assert.deepEqual(s.json(), { turns: 0 });
    assert.equal(s.maxConcurrency, 2);
    assert.equal(s.ttlMs, 3_600_000);
    await rejectsWithCode(client.createSession({ queue, name: "user-7" }), Status.ALREADY_EXISTS);

    let version = await client.updateSession(s.id, { state: { turns: 1 } });
    assert.equal(version, s.version + 1);
    version = await client.updateSession(s.id, { mergePatch: { name: "ada" }, expectedVersion: version });
    const read = await client.getSession(s.id);
    assert.equal(read.version, version);
    assert.deepEqual(read.json(), { turns: 1, name: "ada" });
    await rejectsWithCode(client.updateSession(s.id, { state: {}, expectedVersion: s.version }), Status.FAILED_PRECONDITION);
    await assert.rejects(client.updateSession(s.id, {}), TypeError);

    const others = new Set([s.id]);
    for (let i = 0; i < 4; i++) others.add((await client.createSession({ queue })).id);
    const listed = new Set<string>();
    let pageToken = "";
    do {
      const page = await client.listSessions(queue, { pageSize: 2, pageToken });
      for (const x of page.items) listed.add(x.id);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    assert.deepEqual([...listed].sort(), [...others].sort());

    // Three jobs, none running: the session releases one to the queue, the others wait inside it.
    const added: string[] = [];
    for (let i = 0; i < 3; i++) added.push((await client.addToSession(s.id, "step", i)).id);
    const pending: string[] = [];
    pageToken = "";
    do {
      const page = await client.listSessionJobs(s.id, { pageSize: 1, pageToken });
      for (const j of page.items) pending.push(j.id);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    assert.deepEqual(pending, added.slice(1));
    await rejectsWithCode(client.listSessionJobs(`${queue}/nobody`), Status.NOT_FOUND);

    await client.deleteSession(s.id);
    await rejectsWithCode(client.getSession(s.id), Status.NOT_FOUND);
  });

  it("hands the handler the state and writes the new one with each completion, in order", async () => {
    const queue = uniqueQueue("sess-order");
    const s = await client.createSession({ queue, name: "chat", state: { turns: [] } });
    const seen: number[][] = [];
    const jobs: { id: string }[] = [];
    for (let n = 0; n < 5; n++) jobs.push(await client.addToSession(s.id, "reply", n));
    await withWorker(
      queue,
      {
        reply: (job) => {
          const state = job.sessionJson<{ turns: number[] }>();
          seen.push([...state.turns]);
          state.turns.push(job.json<number>());
          job.setSessionState(state);
          return state.turns.length;
        },
      },
      async () => {
        for (const [n, j] of jobs.entries()) assert.equal((await client.waitForResult(j.id, { timeoutMs: 10_000 })).json(), n + 1);
      },
    );
    assert.deepEqual(seen, [[], [0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]);
    const final = await client.getSession(s.id);
    assert.deepEqual(final.json(), { turns: [0, 1, 2, 3, 4] });
    assert.equal(final.version, s.version + 5);
    assert.equal((await client.getJobInfo(jobs[0]!.id)).sessionId, s.id);
  });

  it("runs the handler again on the fresh state when the session changed under it", async () => {
    const queue = uniqueQueue("sess-conflict");
    const s = await client.createSession({ queue, name: "counter", state: { n: 0 } });
    const runs: unknown[] = [];
    await withWorker(
      queue,
      {
        inc: async (job) => {
          const state = job.sessionJson<{ n: number }>();
          runs.push(state);
          if (runs.length === 1) await client.updateSession(s.id, { state: { n: 100 } });
          job.setSessionState({ n: state.n + 1 });
        },
      },
      async () => {
        const r = await client.addAndWait(queue, "inc", undefined, { sessionId: s.id, timeoutMs: 10_000 });
        assert.equal(r.info.attempts, 1, "the rerun happens within the attempt");
      },
    );
    assert.deepEqual(runs, [{ n: 0 }, { n: 100 }]);
    assert.deepEqual((await client.getSession(s.id)).json(), { n: 101 });
  });

  it("fails the attempt when the session keeps changing", async () => {
    const queue = uniqueQueue("sess-busy");
    const s = await client.createSession({ queue, state: { n: 0 } });
    let runs = 0;
    await withWorker(
      queue,
      {
        inc: async (job) => {
          runs++;
          await client.updateSession(s.id, { mergePatch: { other: runs } });
          job.setSessionState({ n: 1 });
        },
      },
      async () => {
        const { id } = await client.addToSession(s.id, "inc", undefined, { maxAttempts: 1 });
        await assert.rejects(client.waitForResult(id, { timeoutMs: 10_000 }), (err: unknown) => {
          return err instanceof JobDeadError && err.lastError.includes("the session kept changing");
        });
      },
    );
    assert.equal(runs, 6, "the first run and 5 reruns");
    assert.equal((await client.getSession(s.id)).json<{ n: number }>().n, 0);
  });
});

describe("events", () => {
  it("watches one job's transitions to the end", async () => {
    const queue = uniqueQueue("watch");
    const { id } = await client.add(queue, "steps");
    const events: JobEvent[] = [];
    const following = (async () => {
      for await (const e of client.watch(id)) events.push(e);
    })();
    await waitFor("the watch's first event", () => events.length > 0); // before a worker takes it
    await withWorker(
      queue,
      {
        steps: async (job) => {
          await job.progress({ done: 50 });
          return "ok";
        },
      },
      () => following,
    );
    const types = events.map((e) => e.type);
    assert.equal(types[0], "waiting");
    assert.equal(types.at(-1), "completed");
    assert.deepEqual(events.find((e) => e.type === "progress")?.progressJson(), { done: 50 });
    assert.equal(events.at(-1)?.resultJson(), "ok");
  });

  it("subscribes to a queue and resumes right after a cursor", async () => {
    const queue = uniqueQueue("sub");
    const seen: JobEvent[] = [];
    const ids: string[] = [];
    const ac = new AbortController();
    const following = (async () => {
      for await (const e of client.subscribe(queue, { signal: ac.signal })) {
        seen.push(e);
        if (seen.length === 2) return;
      }
    })();
    while (seen.length < 2) {
      ids.push((await client.add(queue, "e")).id);
      await new Promise((r) => setTimeout(r, 50));
    }
    await following;
    const more = [];
    for (let i = 0; i < 3; i++) more.push((await client.add(queue, "e")).id);
    const resumed: string[] = [];
    for await (const e of client.subscribe(queue, { cursor: seen.at(-1)!.cursor })) {
      resumed.push(e.jobId);
      if (e.jobId === more.at(-1)) break;
    }
    const lastSeen = ids.indexOf(seen.at(-1)!.jobId);
    assert.deepEqual(resumed, [...ids.slice(lastSeen + 1), ...more]);
  });

  it("ends a subscription when its signal aborts", async () => {
    const ac = new AbortController();
    const iterating = (async () => {
      for await (const _ of client.subscribe(uniqueQueue("sub-abort"), { signal: ac.signal })) {
        // nothing comes: the queue is idle
      }
    })();
    setTimeout(() => ac.abort(new Error("enough")), 100);
    await assert.rejects(iterating, /enough/);
  });

  it("cancel aborts the running handler's signal and the job ends cancelled", async () => {
    const queue = uniqueQueue("cancel");
    let started = false;
    let reason: unknown;
    await withWorker(
      queue,
      {
        long: (job) =>
          new Promise((_, reject) => {
            started = true;
            job.signal.addEventListener("abort", () => {
              reason = job.signal.reason;
              reject(job.signal.reason);
            });
          }),
      },
      async () => {
        const { id } = await client.add(queue, "long");
        await waitFor("the handler to start", () => started);
        await client.cancel(id);
        await assert.rejects(client.waitForResult(id, { timeoutMs: 10_000 }), JobCancelledError);
      },
    );
    assert.equal((reason as { reason?: string }).reason, "cancelled");
  });
});

describe("failures", () => {
  it("RetryError and PermanentError give their message alone as the job's error", async () => {
    const queue = uniqueQueue("retry-error");
    await withWorker(
      queue,
      {
        flaky: (job) => {
          throw new RetryError(`failed attempt ${job.attempt}`);
        },
        bad: () => {
          throw new PermanentError("bad input");
        },
      },
      async () => {
        const { id } = await client.add(queue, "flaky", {}, { maxAttempts: 2, backoff: { kind: "fixed", baseMs: 10 } });
        await assert.rejects(client.waitForResult(id, { timeoutMs: 10_000 }), (err: unknown) => {
          return err instanceof JobDeadError && err.lastError === "failed attempt 2" && err.info.attempts === 2;
        });
        const bad = await client.add(queue, "bad");
        await assert.rejects(client.waitForResult(bad.id, { timeoutMs: 10_000 }), (err: unknown) => {
          return err instanceof JobDeadError && err.lastError === "bad input";
        });
      },
    );
  });
});

describe("admin", () => {
  it("pauses and resumes a queue and lists its jobs page by page", async () => {
    const queue = uniqueQueue("pause");
    await client.pauseQueue(queue);
    assert.equal((await client.stats(queue)).paused, true);
    const ids: string[] = [];
    for (let n = 0; n < 5; n++) ids.push((await client.add(queue, "t", n)).id);
    const ran: string[] = [];
    await withWorker(
      queue,
      {
        t: (job) => {
          ran.push(job.id);
        },
      },
      async () => {
        await new Promise((r) => setTimeout(r, 300)); // a paused queue delivers nothing
        assert.deepEqual(ran, []);
        const listed: string[] = [];
        let pageToken = "";
        do {
          const page = await client.listJobs(queue, "waiting", { pageSize: 2, pageToken });
          listed.push(...page.items.map((j) => j.id));
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        assert.deepEqual(listed, ids);
        await client.resumeQueue(queue);
        for (const id of ids) await client.waitForResult(id, { timeoutMs: 10_000 });
      },
    );
    assert.deepEqual(ran.sort(), [...ids].sort());
  });

  it("retries dead jobs, deletes and purges", async () => {
    const queue = uniqueQueue("dead");
    const ids: string[] = [];
    await withWorker(
      queue,
      {
        doomed: () => {
          throw new Error("boom");
        },
      },
      async () => {
        for (let i = 0; i < 3; i++) ids.push((await client.add(queue, "doomed", undefined, { maxAttempts: 1 })).id);
        for (const id of ids) await assert.rejects(client.waitForResult(id, { timeoutMs: 10_000 }), JobDeadError);
      },
    );
    assert.equal((await client.stats(queue)).dead, 3);
    await client.pauseQueue(queue);
    await client.retryJob(ids[0]!);
    assert.equal((await client.getJobInfo(ids[0]!)).state, "waiting");
    await rejectsWithCode(client.retryJob(ids[0]!), Status.FAILED_PRECONDITION);
    assert.equal(await client.retryDeadJobs(queue, 10), 2);
    await client.deleteJob(ids[0]!);
    await rejectsWithCode(client.getJobInfo(ids[0]!), Status.NOT_FOUND);
    assert.equal(await client.purgeQueue(queue, ["waiting"]), 2);
    assert.equal((await client.stats(queue)).waiting, 0);
  });

  it("lists connected workers", async () => {
    const queue = uniqueQueue("workers");
    await withWorker(
      queue,
      { t: () => undefined },
      async () => {
        await waitFor("the worker to show", async () => (await client.listWorkers(queue)).length > 0);
        const [w] = await client.listWorkers(queue);
        assert.equal(w?.workerId, "ts-admin-worker");
        assert.deepEqual(w?.queues, [queue]);
        assert.equal(w?.maxInFlight, 3);
      },
      "ts-admin-worker",
    );
  });
});

describe("following across a server restart", () => {
  it("reopens a subscription from its last cursor and a watch from the job's state", async () => {
    const queue = uniqueQueue("restart-follow");
    const delayed = await client.add(queue, "t", undefined, { delayMs: 3_600_000 });
    const events: JobEvent[] = [];
    const watched: string[] = [];
    const ac = new AbortController();
    const subscribing = (async () => {
      for await (const e of client.subscribe(queue, { signal: ac.signal })) events.push(e);
    })().catch(() => {});
    const watching = (async () => {
      for await (const e of client.watch(delayed.id)) watched.push(e.type);
    })();
    try {
      let last = "";
      while (events.length === 0) {
        last = (await client.add(queue, "t")).id; // the subscription is open once it sees an add
        await new Promise((r) => setTimeout(r, 50));
      }
      await waitFor("the last add's event", () => events.some((e) => e.jobId === last));
      const seen = events.length;
      const port = stack.server.port;
      await stack.server.terminate();
      await stack.server.start({ listen: `127.0.0.1:${port}` });
      const after = await client.add(queue, "t");
      await waitFor("an event after the restart", () => events.length > seen);
      assert.equal(events[seen]?.jobId, after.id, "reopened from the last cursor: the next event is the first add after");
      assert.equal(events[seen]?.type, "waiting");
      await client.cancel(delayed.id);
      await watching;
      assert.equal(watched[0], "delayed");
      assert.equal(watched.at(-1), "cancelled");
    } finally {
      ac.abort();
      await subscribing;
    }
  });
});
