/**
 * Schedules and queue settings against a real jobwire + redis: a schedule's jobs arrive at a
 * worker, trigger, pause/resume, list, delete; settings set, read back, cleared, enforced and
 * refused naming the field.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { RpcError, Status, Worker, silentLogger, type ActiveJob } from "../src";
import { SharedStack, uniqueQueue, waitFor } from "./harness";

const shared = new SharedStack();

async function rejectsWithCode(p: Promise<unknown>, code: number, naming?: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof RpcError && err.code === code && (naming === undefined || err.message.includes(naming)));
}

describe("schedules", () => {
  it("fires every second into a worker; pause, trigger, resume, delete", async () => {
    const queue = uniqueQueue("sched");
    const ran: ActiveJob[] = [];
    const worker = new Worker({ address: shared.stack.address, queues: [queue], logger: silentLogger, handleSignals: false });
    worker.handle("tick", (job) => {
      ran.push(job);
    });
    worker.start();
    try {
      const { schedule, created } = await shared.client.upsertSchedule({
        queue,
        name: "ticker",
        template: { type: "tick", payload: { n: 1 }, maxAttempts: 2 },
        everyMs: 1000,
      });
      assert.ok(created);
      assert.equal(schedule.everyMs, 1000);
      assert.equal(schedule.cron, undefined);
      assert.ok(schedule.nextFireAt !== undefined && !schedule.paused);
      await waitFor("a fire's job runs", () => ran.length >= 1);
      const first = ran[0];
      assert.ok(first !== undefined);
      assert.equal(first.headers["jobwire-schedule"], "ticker");
      assert.deepEqual(first.json(), { n: 1 });
      assert.equal((await shared.client.waitForResult(first.id, { timeoutMs: 10_000 })).info.state, "completed");

      await shared.client.pauseSchedule(queue, "ticker");
      const paused = await shared.client.getSchedule(queue, "ticker");
      assert.ok(paused.paused && paused.nextFireAt === undefined && paused.fires >= 1);
      assert.deepEqual(paused.payloadJson(), { n: 1 });
      assert.equal(paused.template.maxAttempts, 2);
      const seen = ran.length;
      const triggered = await shared.client.triggerSchedule(queue, "ticker");
      await waitFor("the triggered job runs", () => ran.some((j) => j.id === triggered));
      assert.equal((await shared.client.getSchedule(queue, "ticker")).lastJobId, triggered);

      await shared.client.resumeSchedule(queue, "ticker");
      assert.equal((await shared.client.getSchedule(queue, "ticker")).paused, false);
      await waitFor("it fires again", () => ran.length >= seen + 2);
      await shared.client.deleteSchedule(queue, "ticker");
      await rejectsWithCode(shared.client.getSchedule(queue, "ticker"), Status.NOT_FOUND);
    } finally {
      await worker.stop();
    }
  });

  it("replaces on upsert and lists by name", async () => {
    const queue = uniqueQueue("sched");
    const template = { type: "report", headers: { "x-team": "ops" } };
    const first = await shared.client.upsertSchedule({
      queue,
      name: "nightly",
      template,
      cron: "0 30 2 * * *",
      timeZone: "Europe/Berlin",
      jitterMs: 30_000,
      missedFires: "run-all",
      catchUpMax: 3,
      overlap: "skip",
    });
    assert.ok(first.created);
    assert.equal(first.schedule.missedFires, "run-all");
    assert.equal(first.schedule.overlap, "skip");
    const replaced = await shared.client.upsertSchedule({ queue, name: "nightly", template, cron: "0 0 3 * * *", timeZone: "Europe/Berlin" });
    assert.equal(replaced.created, false);
    assert.equal(replaced.schedule.revision, 2);
    await shared.client.upsertSchedule({ queue, name: "hourly", template, cron: "@hourly" });
    const listed = await shared.client.listSchedules(queue);
    assert.deepEqual(
      listed.map((s) => s.name),
      ["hourly", "nightly"],
    );
    assert.deepEqual(listed[1]?.template.headers, { "x-team": "ops" });
  });

  it("keeps a template's rateKey and concurrencyKey", async () => {
    const queue = uniqueQueue("sched");
    const template = { type: "report", rateKey: "tenant-1", concurrencyKey: "db" };
    await shared.client.upsertSchedule({ queue, name: "keyed", template, cron: "@hourly" });
    const got = await shared.client.getSchedule(queue, "keyed");
    assert.equal(got.template.rateKey, "tenant-1");
    assert.equal(got.template.concurrencyKey, "db");
    assert.equal(got.refused, 0);
  });

  it("refuses a bad schedule naming the field", async () => {
    const queue = uniqueQueue("sched");
    const template = { type: "t" };
    await rejectsWithCode(shared.client.upsertSchedule({ queue, name: "bad", template, cron: "not a cron" }), Status.INVALID_ARGUMENT, "cron");
    await rejectsWithCode(shared.client.upsertSchedule({ queue, name: "bad", template, cron: "@daily", timeZone: "Mars/Base" }), Status.INVALID_ARGUMENT, "time_zone");
    await assert.rejects(shared.client.upsertSchedule({ queue, name: "bad", template }), TypeError);
    await rejectsWithCode(shared.client.triggerSchedule(queue, "missing"), Status.NOT_FOUND);
  });
});

describe("queue settings", () => {
  it("sets, reads back, enforces and clears", async () => {
    const queue = uniqueQueue("settings");
    assert.deepEqual((await shared.client.getQueueSettings(queue)).settings, {});
    const set = await shared.client.setQueueSettings(queue, { maxWaiting: 1, maxAttempts: 2, timeoutMs: 300_000, backoff: { kind: "fixed", baseMs: 2000 }, concurrency: 4 });
    assert.equal(set.settings.maxWaiting, 1);
    assert.equal(set.effective.maxWaiting, 1);
    assert.equal(set.settings.timeoutMs, 300_000);
    assert.equal(set.settings.backoff?.kind, "fixed");
    assert.deepEqual((await shared.client.getQueueSettings(queue)).settings, set.settings);

    await shared.client.add(queue, "t");
    await rejectsWithCode(shared.client.add(queue, "t"), Status.RESOURCE_EXHAUSTED);

    const cleared = await shared.client.setQueueSettings(queue, {}, { clear: ["maxWaiting", "timeoutMs"] });
    assert.equal(cleared.settings.maxWaiting, undefined);
    assert.equal(cleared.settings.timeoutMs, undefined);
    assert.equal(cleared.settings.concurrency, 4);
    assert.equal(cleared.effective.timeoutMs, 30 * 60_000);
    await shared.client.add(queue, "t");
  });

  it("sets rate, keyRate and keyConcurrency; Stats counts the jobs they hold; clears them", async () => {
    const queue = uniqueQueue("settings");
    const set = await shared.client.setQueueSettings(queue, {
      rate: { count: 100, periodMs: 1000, burst: 10 },
      keyRate: { count: 5, periodMs: 60_000 },
      keyConcurrency: 1,
    });
    assert.deepEqual(set.settings.rate, { count: 100, periodMs: 1000, burst: 10 });
    assert.deepEqual(set.settings.keyRate, { count: 5, periodMs: 60_000, burst: 1 }); // the server fills in the default burst
    assert.equal(set.effective.keyConcurrency, 1);
    assert.deepEqual((await shared.client.getQueueSettings(queue)).settings, set.settings);

    let release = (): void => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const worker = new Worker({ address: shared.stack.address, queues: [queue], concurrency: 4, logger: silentLogger, handleSignals: false });
    worker.handle("t", () => released);
    worker.start();
    try {
      for (let i = 0; i < 3; i++) await shared.client.add(queue, "t", {}, { concurrencyKey: "tenant-1" });
      await waitFor("one job of the key active, two held by keyConcurrency", async () => {
        const stats = await shared.client.stats(queue);
        return stats.active === 1 && stats.heldByKeyConcurrency === 2 && stats.waitingKeys === 1;
      });
    } finally {
      release();
      await worker.stop();
    }
    const cleared = await shared.client.setQueueSettings(queue, {}, { clear: ["rate", "keyRate", "keyConcurrency"] });
    assert.deepEqual(cleared.settings, {});
  });

  it("sets the shard count once and reads it back", async () => {
    const queue = uniqueQueue("settings");
    const set = await shared.client.setQueueSettings(queue, { shards: 3 });
    assert.equal(set.settings.shards, 3);
    assert.equal(set.effective.shards, 3);
    assert.deepEqual((await shared.client.getQueueSettings(queue)).settings, { shards: 3 });
    await rejectsWithCode(shared.client.setQueueSettings(queue, { shards: 4 }), Status.FAILED_PRECONDITION, "shards");
  });

  it("refuses an invalid value naming the field", async () => {
    const queue = uniqueQueue("settings");
    await rejectsWithCode(shared.client.setQueueSettings(queue, { maxAttempts: 0 }), Status.INVALID_ARGUMENT, "max_attempts");
    assert.deepEqual((await shared.client.getQueueSettings(queue)).settings, {});
  });
});
