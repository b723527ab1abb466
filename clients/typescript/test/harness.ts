/**
 * Test fixture: a private redis-server on a unix socket in a temp dir and a real jobwire server
 * on 127.0.0.1:0, both killed at the end. Readiness is awaited with a deadline, never a sleep:
 * redis-server's "Ready to accept connections" line, and the address jobwire writes to its
 * `--ready-file`.
 *
 * The jobwire binary is `$JOBWIRE_BIN`, else `<repo>/target/debug/jobwire`, built with
 * `cargo build` when missing. `JOBWIRE_TEST_LOG=1` echoes the servers' output to stderr.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { after, before } from "node:test";

import { Client } from "../src";

export const REPO_ROOT = path.resolve(__dirname, "..", "..", "..");
const STARTUP_DEADLINE_MS = 20_000;
const echo = process.env["JOBWIRE_TEST_LOG"] === "1";

const children = new Set<ChildProcess>();
function killChildren(): void {
  for (const c of children) c.kill("SIGKILL");
}
process.on("exit", killChildren);
// A test process killed by a signal (e.g. a CI timeout) must not leave servers behind.
for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
  process.once(signal, () => {
    killChildren();
    process.kill(process.pid, signal);
  });
}

/** The jobwire binary, built if missing. */
export function jobwireBin(): string {
  const bin = process.env["JOBWIRE_BIN"] ?? path.join(REPO_ROOT, "target", "debug", "jobwire");
  if (!existsSync(bin)) {
    if (process.env["JOBWIRE_BIN"]) throw new Error(`JOBWIRE_BIN=${bin} does not exist`);
    process.stderr.write(`harness: ${bin} missing; running cargo build in ${REPO_ROOT}\n`);
    const r = spawnSync("cargo", ["build"], { cwd: REPO_ROOT, stdio: ["ignore", "inherit", "inherit"] });
    if (r.status !== 0 || !existsSync(bin)) throw new Error(`cargo build failed (status ${r.status})`);
  }
  return bin;
}

/**
 * When a process is ready: once one of its output lines (stdout or stderr) matches `line`, or
 * once `file` exists (jobwire's `--ready-file`, renamed into place whole, so complete).
 */
type Readiness = { line: RegExp } | { file: string };

/**
 * Spawns `cmd` and resolves with the matching line or the file's text once it is ready,
 * rejecting if the process exits or the deadline passes.
 */
function spawnUntil(
  name: string,
  cmd: string,
  args: string[],
  ready: Readiness,
  tail: string[],
): Promise<{ proc: ChildProcess; text: string }> {
  const proc = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  children.add(proc);
  proc.on("exit", () => children.delete(proc));
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err: Error | undefined, text = ""): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(poll);
      if (err) {
        proc.kill("SIGKILL");
        reject(new Error(`${err.message}\n--- last output of ${name} ---\n${tail.join("\n")}`));
      } else resolve({ proc, text });
    };
    const timer = setTimeout(() => finish(new Error(`${name} not ready within ${STARTUP_DEADLINE_MS} ms`)), STARTUP_DEADLINE_MS);
    const readyFile = "file" in ready ? ready.file : undefined;
    const poll = readyFile
      ? setInterval(() => existsSync(readyFile) && finish(undefined, readFileSync(readyFile, "utf8")), 20)
      : undefined;
    for (const stream of [proc.stdout!, proc.stderr!]) {
      createInterface({ input: stream }).on("line", (line) => {
        tail.push(line);
        if (tail.length > 200) tail.shift();
        if (echo) process.stderr.write(`[${name}] ${line}\n`);
        if ("line" in ready && ready.line.test(line)) finish(undefined, line);
      });
    }
    proc.on("error", (err) => finish(err));
    proc.on("exit", (code, signal) => finish(new Error(`${name} exited early (code ${code}, signal ${signal})`)));
  });
}

async function kill(proc: ChildProcess, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  proc.kill(signal);
  await exited;
}

export class Redis {
  readonly socket: string;
  private proc: ChildProcess | undefined;
  readonly log: string[] = [];
  constructor(readonly dir: string) {
    this.socket = path.join(dir, "redis.sock");
  }
  async start(): Promise<void> {
    const { proc } = await spawnUntil(
      "redis",
      "redis-server",
      ["--port", "0", "--unixsocket", this.socket, "--save", "", "--appendonly", "no", "--dir", this.dir],
      { line: /ready to accept connections/i },
      this.log,
    );
    this.proc = proc;
  }
  get running(): boolean {
    return this.proc !== undefined;
  }
  async stop(): Promise<void> {
    if (this.proc) await kill(this.proc);
    this.proc = undefined;
  }
}

export interface ServerOptions {
  /** Listen address; default 127.0.0.1:0. */
  listen?: string;
  /** Extra `jobwire serve` flags. */
  args?: string[];
}

export class JobwireServer {
  address = "";
  port = 0;
  private proc: ChildProcess | undefined;
  readonly log: string[] = [];
  constructor(
    readonly redis: Redis,
    readonly keyPrefix: string,
  ) {}

  async start(opts: ServerOptions = {}): Promise<void> {
    const readyFile = path.join(this.redis.dir, `jobwire-${randomBytes(4).toString("hex")}.ready`);
    const args = [
      "serve",
      "--ready-file",
      readyFile,
      "--listen",
      opts.listen ?? "127.0.0.1:0",
      "--redis-url",
      `unix://${this.redis.socket}`,
      "--key-prefix",
      this.keyPrefix,
      "--lease-ttl",
      "2s",
      ...(opts.args ?? []),
    ];
    const { proc, text } = await spawnUntil("jobwire", jobwireBin(), args, { file: readyFile }, this.log);
    this.proc = proc;
    this.address = text.split("\n")[0]!;
    this.port = Number(this.address.split(":").pop());
  }

  /** SIGTERM (graceful drain) and wait for the process to exit. */
  async terminate(): Promise<void> {
    if (this.proc) await kill(this.proc, "SIGTERM");
    this.proc = undefined;
  }

  async stop(): Promise<void> {
    if (this.proc) await kill(this.proc);
    this.proc = undefined;
  }
}

/** A temp dir, a redis and a jobwire server with a unique key prefix. */
export class Stack {
  readonly dir: string;
  readonly redis: Redis;
  readonly server: JobwireServer;
  private constructor() {
    this.dir = mkdtempSync(path.join(tmpdir(), "jobwire-ts-"));
    this.redis = new Redis(this.dir);
    this.server = new JobwireServer(this.redis, `jwts-${process.pid}-${randomBytes(4).toString("hex")}`);
  }

  static async start(opts: ServerOptions = {}): Promise<Stack> {
    const stack = new Stack();
    try {
      await stack.redis.start();
      await stack.server.start(opts);
    } catch (err) {
      await stack.stop();
      throw err;
    }
    return stack;
  }

  get address(): string {
    return this.server.address;
  }

  async stop(): Promise<void> {
    await this.server.stop();
    await this.redis.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A stack and a client on it for a whole test file: started before its first test, stopped after its last. */
export class SharedStack {
  private started: { stack: Stack; client: Client } | undefined;

  constructor() {
    before(async () => {
      const stack = await Stack.start();
      this.started = { stack, client: new Client({ address: stack.address }) };
    });
    after(async () => {
      this.started?.client.close();
      await this.started?.stack.stop();
    });
  }

  get stack(): Stack {
    return this.running().stack;
  }

  get client(): Client {
    return this.running().client;
  }

  private running(): { stack: Stack; client: Client } {
    if (this.started === undefined) throw new Error("SharedStack: used outside a test");
    return this.started;
  }
}

/**
 * The secret `jobwire token create` prints (and only it, on stdout). `subject`: a client
 * certificate subject that stands in for the token (mTLS).
 */
export function createToken(file: string, name: string, role: string, queues?: string, subject?: string): string {
  const args = ["token", "create", "--file", file, "--name", name, "--role", role];
  if (queues) args.push("--queues", queues);
  if (subject) args.push("--subject", subject);
  const run = spawnSync(jobwireBin(), args, { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`jobwire token create failed: ${run.stderr}`);
  return run.stdout.trim();
}

/** A unique queue name per test, so tests sharing a server never see each other's jobs. */
let queueCounter = 0;
export function uniqueQueue(label: string): string {
  return `${label}-${++queueCounter}-${randomBytes(3).toString("hex")}`;
}

/** Polls `cond` every 20 ms until it is true, or throws after `timeoutMs`. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A TCP proxy on 127.0.0.1:0 in front of `target`, used to cut connections on purpose.
 * `cutNextResponse()`: the next bytes the server sends are swallowed and both sides of every
 * connection are destroyed a moment later, so the request was processed but its answer is lost.
 */
export class Proxy {
  address = "";
  private server: net.Server | undefined;
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  private cutArmed = false;
  private swallowing = false;
  /** Connections accepted so far. */
  connections = 0;

  constructor(private readonly target: () => string) {}

  async start(): Promise<void> {
    this.server = net.createServer((client) => {
      this.connections++;
      const [host, port] = this.target().split(":");
      const upstream = net.connect(Number(port), host!);
      const pair: [net.Socket, net.Socket] = [client, upstream];
      this.pairs.add(pair);
      const close = (): void => {
        client.destroy();
        upstream.destroy();
        this.pairs.delete(pair);
      };
      client.on("data", (d) => upstream.write(d));
      upstream.on("data", (d) => {
        if (this.cutArmed) {
          this.cutArmed = false;
          this.swallowing = true;
          setTimeout(() => {
            this.cutAll();
            this.swallowing = false;
          }, 150);
        }
        if (this.swallowing) return;
        if (!this.pairs.has(pair)) return;
        client.write(d);
      });
      client.on("error", close);
      upstream.on("error", close);
      client.on("close", close);
      upstream.on("close", close);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    const addr = this.server.address() as net.AddressInfo;
    this.address = `127.0.0.1:${addr.port}`;
  }

  cutNextResponse(): void {
    this.cutArmed = true;
  }

  /** Destroys every open connection (clients see the connection drop). */
  cutAll(): void {
    for (const [a, b] of [...this.pairs]) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
  }

  async stop(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
