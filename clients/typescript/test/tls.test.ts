/**
 * The client and the worker against a mutual-TLS server: certificates from the repository's
 * `scripts/dev-certs.sh` (a private CA, a server certificate for 127.0.0.1 and localhost, a
 * client certificate), the real binary with `--tls-cert`, `--tls-key` and `--tls-client-ca`;
 * and with tokens over TLS (`--auth-tokens` too, no client certificates).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";

import { Client, RpcError, Status, Worker, silentLogger, type TlsOptions } from "../src";
import { REPO_ROOT, Stack, createToken, uniqueQueue } from "./harness";

let certs: string;
let stack: Stack;

/** The client side of mutual TLS: the CA, the client certificate and its key. */
function mutual(overrides: Partial<TlsOptions> = {}): TlsOptions {
  return {
    caFile: path.join(certs, "ca.pem"),
    certFile: path.join(certs, "client.pem"),
    keyFile: path.join(certs, "client.key"),
    ...overrides,
  };
}

/**
 * Asserts that `call` fails the way a refused TLS handshake makes it fail: the channel cannot
 * connect (UNAVAILABLE), or is still trying when the call's deadline passes.
 */
async function refused(call: () => Promise<unknown>): Promise<void> {
  const codes: number[] = [Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED];
  await assert.rejects(call, (err: unknown) => err instanceof RpcError && codes.includes(err.code));
}

/** Runs one "greet" job added through `client` on `worker` (started here, stopped at the end). */
async function greets(client: Client, worker: Worker, queue: string): Promise<void> {
  worker.handle("greet", async (job) => ({ hello: job.json<{ name: string }>().name }));
  worker.start();
  try {
    const result = await client.addAndWait(queue, "greet", { name: "ada" }, { timeoutMs: 10_000 });
    assert.deepEqual(result.json(), { hello: "ada" });
  } finally {
    await worker.stop();
  }
}

before(async () => {
  certs = mkdtempSync(path.join(tmpdir(), "jobwire-ts-certs-"));
  execFileSync(path.join(REPO_ROOT, "scripts", "dev-certs.sh"), [certs, "ts-worker"], { stdio: "ignore" });
  const file = (name: string): string => path.join(certs, name);
  stack = await Stack.start({
    args: ["--tls-cert", file("server.pem"), "--tls-key", file("server.key"), "--tls-client-ca", file("ca.pem")],
  });
});

after(async () => {
  await stack?.stop();
  if (certs) rmSync(certs, { recursive: true, force: true });
});

describe("tls", () => {
  it("runs a job through a producer and a worker over mutual TLS", async () => {
    const queue = uniqueQueue("tls");
    const client = new Client({ address: stack.address, tls: mutual() });
    const worker = new Worker({
      address: stack.address,
      tls: mutual(),
      queues: [queue],
      concurrency: 2,
      logger: silentLogger,
      handleSignals: false,
    });
    try {
      await greets(client, worker, queue);
    } finally {
      client.close();
    }
  });

  it("checks the certificate against the server name override", async () => {
    const named = new Client({ address: stack.address, tls: mutual({ serverName: "localhost" }) });
    const wrong = new Client({ address: stack.address, tls: mutual({ serverName: "not-the-server.example" }) });
    try {
      await named.stats("q");
      await refused(() => wrong.stats("q", { deadlineMs: 3_000 }));
    } finally {
      named.close();
      wrong.close();
    }
  });

  it("is refused in plain text and without a client certificate", async () => {
    const plain = new Client({ address: stack.address });
    const noCert = new Client({ address: stack.address, tls: { caFile: path.join(certs, "ca.pem") } });
    try {
      await refused(() => plain.stats("q", { deadlineMs: 3_000 }));
      await refused(() => noCert.stats("q", { deadlineMs: 3_000 }));
    } finally {
      plain.close();
      noCert.close();
    }
  });

  it("wants a client certificate with its key", () => {
    assert.throws(
      () => new Client({ address: stack.address, tls: { certFile: path.join(certs, "client.pem") } }),
      /certFile and keyFile together/,
    );
  });
});

describe("tls with tokens", () => {
  let secured: Stack;
  let producer: string;

  before(async () => {
    const file = path.join(certs, "tokens.json");
    producer = createToken(file, "ts-tls-producer", "producer");
    // The client certificate (CN=ts-worker) stands in for the worker's entry: no token needed.
    createToken(file, "ts-tls-worker", "worker", undefined, "CN=ts-worker");
    const f = (name: string): string => path.join(certs, name);
    secured = await Stack.start({
      args: ["--tls-cert", f("server.pem"), "--tls-key", f("server.key"), "--tls-client-ca", f("ca.pem"), "--auth-tokens", file],
    });
  });

  after(async () => {
    await secured?.stop();
  });

  it("sends the token over mutual TLS; the certificate stands in for the worker's", async () => {
    const queue = uniqueQueue("tls-auth");
    const client = new Client({ address: secured.address, tls: mutual(), token: producer });
    const worker = new Worker({ address: secured.address, tls: mutual(), token: "", queues: [queue], logger: silentLogger, handleSignals: false });
    worker.handle("echo", (job) => job.payload);
    worker.start();
    try {
      const result = await client.addAndWait(queue, "echo", Buffer.from("over tls"), { timeoutMs: 10_000 });
      assert.equal(result.text(), "over tls");
    } finally {
      await worker.stop();
      client.close();
    }
    const asWorker = new Client({ address: secured.address, tls: mutual(), token: "" });
    const bad = new Client({ address: secured.address, tls: mutual(), token: "not-a-token" });
    try {
      await assert.rejects(asWorker.add(queue, "echo"), (e: unknown) => e instanceof RpcError && e.code === Status.PERMISSION_DENIED);
      await assert.rejects(bad.add(queue, "echo"), (e: unknown) => e instanceof RpcError && e.code === Status.UNAUTHENTICATED);
    } finally {
      asWorker.close();
      bad.close();
    }
  });
});
