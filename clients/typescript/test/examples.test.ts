/**
 * The examples, run as real processes: the producer's whole flow against the example worker, and
 * SIGTERM on the worker while a job runs (it must finish the job, answer it and exit 0).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";

import { Client } from "../src";
import { Stack, waitFor } from "./harness";

const ROOT = path.resolve(__dirname, "..");

interface Proc {
  child: ChildProcess;
  lines: string[];
  exit: Promise<number | null>;
}

function runExample(name: string, address: string): Proc {
  const child = spawn(process.execPath, ["--import", "tsx", path.join("examples", name)], {
    cwd: ROOT,
    env: { ...process.env, JOBWIRE_ADDR: address, JOBWIRE_LOG: "" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  for (const s of [child.stdout!, child.stderr!]) createInterface({ input: s }).on("line", (l) => lines.push(l));
  const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, lines, exit };
}

describe("examples", () => {
  let stack: Stack;
  let client: Client;
  let worker: Proc | undefined;

  before(async () => {
    stack = await Stack.start();
    client = new Client({ address: stack.address });
  });

  after(async () => {
    worker?.child.kill("SIGKILL");
    client?.close();
    await stack?.stop();
  });

  it("the example producer runs its flow against the example worker", async () => {
    worker = runExample("worker.ts", stack.address);
    await waitFor("the worker to start", () => worker!.lines.some((l) => l.includes("serving emails, reports")), 20_000);
    const producer = runExample("producer.ts", stack.address);
    const code = await producer.exit;
    const out = producer.lines.join("\n");
    assert.equal(code, 0, out);
    assert.match(out, /welcome sent: <emails\/\w+@example>/);
    assert.match(out, /report of 300 ms/);
    assert.match(out, /report of 600 ms/);
    assert.match(out, /dead: not an email address: nobody/);
    assert.match(out, /queue reports: 0 waiting, 0 active, 2 completed, 0 dead/);
  });

  it("SIGTERM lets the running job finish before the worker exits", async () => {
    assert.ok(worker, "the worker of the previous test is running");
    const { id } = await client.add("reports", "build-report", { ms: 1200 }, { timeoutMs: 5_000 });
    await waitFor("the report to start", () => worker!.lines.some((l) => l.includes(`report ${id}: started`)));
    const started = Date.now();
    worker.child.kill("SIGTERM");
    const code = await worker.exit;
    assert.equal(code, 0, worker.lines.join("\n"));
    assert.ok(worker.lines.some((l) => l.includes(`report ${id}: done`)));
    assert.ok(worker.lines.includes("worker stopped"));
    assert.ok(Date.now() - started < 10_000);
    const info = await client.getJobInfo(id);
    assert.equal(info.state, "completed");
    assert.equal(info.result.toString(), "report of 1200 ms\n");
  });
});
