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

describe("tokens over tls", () => {
  let dir: string;
  let secured: Stack;
  let producer: string;
  let workerToken: string;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "jobwire-ts-tls-tokens-"));
    const tokens = path.join(dir, "tokens.json");
    producer = createToken(tokens, "ts-tls-producer", "producer");
    workerToken = createToken(tokens, "ts-tls-worker", "worker");
    const file = (name: string): string => path.join(certs, name);
    secured = await Stack.start({
      args: ["--auth-tokens", tokens, "--tls-cert", file("server.pem"), "--tls-key", file("server.key")],
    });
  });

  after(async () => {
    await secured?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("runs a job through a producer and a worker sending their tokens over TLS", async () => {
    const queue = uniqueQueue("tls-tokens");
    const tls = { caFile: path.join(certs, "ca.pem") };
    const client = new Client({ address: secured.address, tls, token: producer });
    const stranger = new Client({ address: secured.address, tls, token: "jw_" + "0".repeat(64) });
    const worker = new Worker({
      address: secured.address,
      tls,
      token: workerToken,
      queues: [queue],
      logger: silentLogger,
      handleSignals: false,
    });
    try {
      await greets(client, worker, queue);
      await assert.rejects(
        () => stranger.add(queue, "greet"),
        (err: unknown) => err instanceof RpcError && err.code === Status.UNAUTHENTICATED,
      );
    } finally {
      client.close();
      stranger.close();
    }
  });
});
