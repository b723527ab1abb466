/**
 * Tokens against a real server started with `--auth-tokens`: the file is made with `jobwire
 * token create`, as an operator would; the client and the worker send their tokens, a call
 * without one is refused, and a scope is held.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";

import { Client, RpcError, Status, Worker, silentLogger } from "../src";
import { Stack, createToken, uniqueQueue } from "./harness";

async function refusal(call: Promise<unknown>): Promise<RpcError> {
  const err = await call.then(
    () => assert.fail("the call was let through"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof RpcError, String(err));
  return err;
}

describe("tokens", () => {
  let dir: string;
  let stack: Stack;
  let producer: string;
  let worker: string;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "jobwire-ts-auth-"));
    const file = path.join(dir, "tokens.json");
    producer = createToken(file, "ts-producer", "producer", "ts-*");
    worker = createToken(file, "ts-worker", "worker");
    stack = await Stack.start({ args: ["--auth-tokens", file] });
  });

  after(async () => {
    await stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("the client and the worker send their tokens", async () => {
    const queue = uniqueQueue("ts-auth");
    const client = new Client({ address: stack.address, token: producer });
    const w = new Worker({ address: stack.address, token: worker, queues: [queue], logger: silentLogger, handleSignals: false });
    w.handle("echo", (job) => job.payload);
    w.start();
    try {
      const added = await client.add(queue, "echo", Buffer.from("hello"));
      const result = await client.waitForResult(added.id, { timeoutMs: 10_000 });
      assert.equal(result.text(), "hello");
    } finally {
      await w.stop();
      client.close();
    }
  });

  it("refuses a call without a token, and one outside the token's scope", async () => {
    const anonymous = new Client({ address: stack.address, token: "" });
    const unauthenticated = await refusal(anonymous.add(uniqueQueue("ts-auth"), "t"));
    assert.equal(unauthenticated.code, Status.UNAUTHENTICATED);
    assert.match(unauthenticated.details, /Bearer/);
    anonymous.close();

    const previous = process.env["JOBWIRE_TOKEN"];
    process.env["JOBWIRE_TOKEN"] = producer;
    const fromEnv = new Client({ address: stack.address });
    try {
      const outside = await refusal(fromEnv.add("billing", "t"));
      assert.equal(outside.code, Status.PERMISSION_DENIED);
      assert.match(outside.details, /"billing"/);
      assert.ok(!outside.details.includes(producer), "the refusal never holds the token");
      const added = await fromEnv.add(uniqueQueue("ts-env"), "t");
      assert.match(added.id, /^ts-env-/);
    } finally {
      fromEnv.close();
      if (previous === undefined) delete process.env["JOBWIRE_TOKEN"];
      else process.env["JOBWIRE_TOKEN"] = previous;
    }
  });
});
