/**
 * The TypeScript conformance driver: serves one actor of a scenario run
 * (tests/conformance/README.md) over the public API of the TypeScript client, reading one JSON
 * request per line on stdin and writing one JSON reply per line on stdout, in order. Requests
 * are handled one at a time; a worker, when started, runs in the background.
 */
import { createInterface } from "node:readline";

import {
  Client,
  JobCancelledError,
  JobDeadError,
  PermanentError,
  RateLimitedError,
  RetryError,
  RpcError,
  WaitTimeoutError,
  Worker,
  statusName,
  type ActiveJob,
  type JobEvent,
  type MissedFires,
  type Overlap,
  type QueueSettingName,
  type QueueSettings,
  type QueueSettingsView,
  type Schedule,
} from "../../../../clients/typescript/src";

const LANG = process.env["CONFORMANCE_LANG"] ?? "typescript";
const ACTOR = process.env["CONFORMANCE_ACTOR"] ?? "";
const ADDRESS = process.env["JOBWIRE_ADDR"] ?? "";

type Request = Record<string, any>;
type Reply = Record<string, unknown>;

/** A request answered with `ok: false` and this code. */
class Refused extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const payloadOf = (v: unknown): unknown => (v === undefined || v === null ? {} : v);
const text = (b: Buffer): string => b.toString("utf8");
const waitMs = (r: Request): number => Number(r["timeout_ms"] ?? 0) || 10_000;
const upper = (s: string): string => s.toUpperCase();

function errorReply(err: unknown): Reply {
  if (err instanceof Refused) return { ok: false, code: err.code, message: err.message };
  if (err instanceof RpcError) return { ok: false, code: statusName(err.code), message: err.details };
  if (err instanceof WaitTimeoutError) return { ok: false, code: "DEADLINE_EXCEEDED", message: err.message };
  return { ok: false, code: "UNKNOWN", message: err instanceof Error ? `${err.name}: ${err.message}` : String(err) };
}

// ---- the worker ------------------------------------------------------------------------------

interface Call {
  attempt: number;
  lost_deliveries: number;
  token: string;
  session_state: string | null;
  session_version: number | null;
  ended: "returned" | "failed" | "rate_limited" | "cancelled" | null;
}

/** Every handler call of this worker process, by job, and the releases of blocked ones. */
class Calls {
  readonly byJob = new Map<string, Call[]>();
  /** Releases given before a call blocked, by job. */
  private readonly credits = new Map<string, number>();
  /** Calls blocked now, by job, in the order they blocked. */
  private readonly blocked = new Map<string, (() => void)[]>();
  private listeners: (() => void)[] = [];

  changed(): void {
    const listeners = this.listeners;
    this.listeners = [];
    for (const l of listeners) l();
  }

  release(jobId: string): void {
    const next = this.blocked.get(jobId)?.shift();
    if (next) next();
    else this.credits.set(jobId, (this.credits.get(jobId) ?? 0) + 1);
  }

  /** Blocks until released; rejects with `signal.reason` when the job is taken away. */
  block(jobId: string, signal: AbortSignal): Promise<void> {
    const credit = this.credits.get(jobId) ?? 0;
    if (credit > 0) {
      this.credits.set(jobId, credit - 1);
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiters = this.blocked.get(jobId) ?? [];
      this.blocked.set(jobId, waiters);
      const go = (): void => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = (): void => {
        const i = waiters.indexOf(go);
        if (i >= 0) waiters.splice(i, 1);
        reject(signal.reason);
      };
      if (signal.aborted) return onAbort();
      waiters.push(go);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  async waitFor(jobId: string, invocation: number, until: string, timeoutMs: number): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    const reached = (): boolean => {
      const calls = this.byJob.get(jobId) ?? [];
      return calls.length >= invocation && (until !== "ended" || calls[invocation - 1]?.ended !== null);
    };
    while (!reached()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Refused("DEADLINE_EXCEEDED", `call ${invocation} of ${jobId} not ${until}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.listeners.push(() => (clearTimeout(timer), resolve()));
      });
    }
    return { invocations: (this.byJob.get(jobId) ?? []).map((c) => ({ ...c })) };
  }
}

function blocks(instructions: Request, invocation: number): boolean {
  const block = instructions["block"];
  return block === true || (Array.isArray(block) && block.includes(invocation));
}

function calc(instructions: Request): Reply {
  const spec = instructions["calc"] as { n?: number; text?: string } | undefined;
  if (spec === undefined || spec === null) return {};
  const n = Number(spec.n ?? 0);
  const t = String(spec.text ?? "");
  return { square: n * n, reversed: [...t].reverse().join(""), utf8_bytes: Buffer.byteLength(t, "utf8") };
}

class WorkerActor {
  readonly calls = new Calls();
  private readonly worker: Worker;
  private readonly done: Promise<void>;

  constructor(r: Request) {
    const hold = Boolean(r["hold"]);
    this.worker = new Worker({
      address: ADDRESS,
      queues: r["queues"] as string[],
      concurrency: Number(r["concurrency"] ?? 1) || 1,
      workerId: `conformance-typescript-${ACTOR}`,
      reconnect: { initialDelayMs: 100, maxDelayMs: 1000 },
      handleSignals: false,
    });
    this.worker.handle("conf", (job) => this.handle(job, hold));
    this.done = this.worker.run();
  }

  async stop(): Promise<void> {
    await this.worker.stop();
    await this.done;
  }

  private async handle(job: ActiveJob, hold: boolean): Promise<unknown> {
    const instructions = (job.json<Request | undefined>() ?? {}) as Request;
    const call: Call = {
      attempt: job.attempt,
      lost_deliveries: job.lostDeliveries,
      token: job.leaseToken,
      session_state: job.session?.state ?? null,
      session_version: job.session?.version ?? null,
      ended: null,
    };
    const seen = job.session ? [...job.sessionJson<{ seen: string[] }>().seen] : null;
    const calls = this.calls.byJob.get(job.id) ?? [];
    this.calls.byJob.set(job.id, calls);
    calls.push(call);
    const invocation = calls.length;
    this.calls.changed();
    let ended: Call["ended"] = "returned";
    try {
      if (hold || blocks(instructions, invocation)) await this.calls.block(job.id, job.signal);
      if (invocation === 1 && instructions["rate_limited_ms"]) {
        ended = "rate_limited";
        throw new RateLimitedError(Number(instructions["rate_limited_ms"]));
      }
      if ("progress" in instructions) await job.progress(instructions["progress"]);
      if (job.attempt <= Number(instructions["fail_attempts"] ?? 0)) throw new RetryError(`failed attempt ${job.attempt}`);
      if (instructions["permanent"]) throw new PermanentError(String(instructions["permanent"]));
      if ("append" in instructions) job.setSessionState({ seen: [...(seen ?? []), instructions["append"]] });
      return {
        lang: LANG,
        job_id: job.id,
        type: job.type,
        attempt: job.attempt,
        lost_deliveries: job.lostDeliveries,
        header: job.headers["x-conformance"] ?? "",
        seen,
        ...calc(instructions),
      };
    } catch (err) {
      if (ended !== "rate_limited") ended = job.signal.aborted ? "cancelled" : "failed";
      throw err;
    } finally {
      call.ended = ended;
      this.calls.changed();
    }
  }
}

// ---- the requests ----------------------------------------------------------------------------

class Driver {
  private worker: WorkerActor | undefined;
  private subscription: { abort: AbortController; events: (JobEvent | Error)[]; arrived: () => void; done: Promise<void> } | undefined;

  constructor(private readonly client: Client) {}

  async serve(r: Request): Promise<Reply> {
    const op = String(r["op"] ?? "");
    const handler = (this as unknown as Record<string, ((r: Request) => Promise<Reply>) | undefined>)[`op_${op}`];
    if (typeof handler !== "function") return { ok: false, code: "UNIMPLEMENTED", message: `no op ${op}` };
    try {
      return { ok: true, ...(await handler.call(this, r)) };
    } catch (err) {
      return errorReply(err);
    }
  }

  // producer

  async op_add(r: Request): Promise<Reply> {
    const added = await this.client.add(r["queue"], r["type"], payloadOf(r["payload"]), {
      headers: r["headers"],
      maxAttempts: r["max_attempts"],
      backoff: r["backoff_ms"] ? { kind: "fixed", baseMs: r["backoff_ms"] } : undefined,
      timeoutMs: r["timeout_ms"] || undefined,
      sessionId: r["session"],
      idempotencyKey: r["idempotency_key"],
      rateKey: r["rate_key"],
      concurrencyKey: r["concurrency_key"],
    });
    return { job_id: added.id, duplicate: added.duplicate };
  }

  async op_await(r: Request): Promise<Reply> {
    try {
      const result = await this.client.waitForResult(r["job"], { timeoutMs: waitMs(r) });
      return { state: "COMPLETED", result: text(result.bytes) };
    } catch (err) {
      if (err instanceof JobDeadError) return { state: "DEAD", error: err.lastError };
      if (err instanceof JobCancelledError) return { state: "CANCELLED" };
      throw err;
    }
  }

  async op_info(r: Request): Promise<Reply> {
    const info = await this.client.getJobInfo(r["job"]);
    return {
      state: upper(info.state),
      attempts: info.attempts,
      lost_deliveries: info.lostDeliveries,
      result: text(info.result),
      last_error: info.lastError,
      progress: text(info.progress),
    };
  }

  async op_cancel(r: Request): Promise<Reply> {
    await this.client.cancel(r["job"]);
    return {};
  }

  async op_session_create(r: Request): Promise<Reply> {
    const s = await this.client.createSession({
      queue: r["queue"],
      name: r["name"],
      state: payloadOf(r["state"]),
      maxConcurrency: r["max_concurrency"],
    });
    return { session_id: s.id, version: s.version };
  }

  async op_session_get(r: Request): Promise<Reply> {
    const s = await this.client.getSession(r["session"]);
    return { state: s.state, version: s.version };
  }

  async op_session_update(r: Request): Promise<Reply> {
    const version = await this.client.updateSession(r["session"], { state: payloadOf(r["state"]), expectedVersion: r["expected_version"] });
    return { version };
  }

  /** Wire: a CompleteJob with a token of the scenario's choosing, through the generated client. */
  async op_complete_with_token(r: Request): Promise<Reply> {
    const result = Buffer.from(JSON.stringify(payloadOf(r["result"])), "utf8");
    await new Promise<void>((resolve, reject) => {
      this.client.raw.completeJob({ jobId: r["job"], leaseToken: r["token"], result }, (err) =>
        err ? reject(RpcError.from("CompleteJob", err)) : resolve(),
      );
    });
    return {};
  }

  async op_subscribe_start(r: Request): Promise<Reply> {
    await this.op_subscribe_stop();
    const abort = new AbortController();
    const sub = { abort, events: [] as (JobEvent | Error)[], arrived: () => {}, done: Promise.resolve() };
    const push = (item: JobEvent | Error): void => {
      sub.events.push(item);
      sub.arrived();
    };
    sub.done = (async () => {
      try {
        for await (const event of this.client.subscribe(r["queue"], { cursor: r["cursor"] ?? "", signal: abort.signal })) push(event);
      } catch (err) {
        if (!abort.signal.aborted) push(err instanceof Error ? err : new Error(String(err)));
      }
    })();
    this.subscription = sub;
    return {};
  }

  /** The next event of the subscription, or undefined when none comes before `signal` aborts. */
  private async nextEvent(signal: AbortSignal): Promise<JobEvent | undefined> {
    const sub = this.subscription;
    if (sub === undefined) throw new Refused("FAILED_PRECONDITION", "no subscription");
    while (sub.events.length === 0) {
      if (signal.aborted) return undefined;
      await new Promise<void>((resolve) => {
        sub.arrived = resolve;
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
    }
    const item = sub.events.shift()!;
    if (item instanceof Error) throw item;
    return item;
  }

  async op_subscribe_take(r: Request): Promise<Reply> {
    const count = Number(r["count"]);
    const taken: JobEvent[] = [];
    const timeout = AbortSignal.timeout(waitMs(r));
    while (taken.length < count) {
      const event = await this.nextEvent(timeout);
      if (event === undefined) throw new Refused("DEADLINE_EXCEEDED", `${taken.length} of ${count} events came`);
      taken.push(event);
    }
    const reply: Reply = { events: taken.map(eventReply), cursor: taken.at(-1)?.cursor ?? "" };
    if (r["quiet_ms"]) {
      const quiet = AbortSignal.timeout(Number(r["quiet_ms"]));
      const extra: JobEvent[] = [];
      for (let e = await this.nextEvent(quiet); e !== undefined; e = await this.nextEvent(quiet)) extra.push(e);
      reply["extra"] = extra.map(eventReply);
    }
    return reply;
  }

  async op_subscribe_stop(): Promise<Reply> {
    const sub = this.subscription;
    this.subscription = undefined;
    if (sub) {
      sub.abort.abort();
      await sub.done;
    }
    return {};
  }

  // schedules and settings

  async op_schedule_upsert(r: Request): Promise<Reply> {
    const { schedule, created } = await this.client.upsertSchedule({
      queue: r["queue"],
      name: r["name"],
      template: { type: r["type"], payload: payloadOf(r["payload"]), headers: r["headers"], maxAttempts: r["max_attempts"] },
      everyMs: r["every_ms"],
      cron: r["cron"],
      timeZone: r["time_zone"],
      jitterMs: r["jitter_ms"],
      missedFires: r["missed_fires"] === undefined ? undefined : (r["missed_fires"].toLowerCase().replace("_", "-") as MissedFires),
      catchUpMax: r["catch_up_max"],
      overlap: r["overlap"] === undefined ? undefined : (r["overlap"].toLowerCase() as Overlap),
    });
    return { created, ...scheduleReply(schedule) };
  }

  async op_schedule_get(r: Request): Promise<Reply> {
    return scheduleReply(await this.client.getSchedule(r["queue"], r["name"]));
  }

  async op_schedule_list(r: Request): Promise<Reply> {
    return { names: (await this.client.listSchedules(r["queue"])).map((s) => s.name) };
  }

  async op_schedule_pause(r: Request): Promise<Reply> {
    await this.client.pauseSchedule(r["queue"], r["name"]);
    return {};
  }

  async op_schedule_resume(r: Request): Promise<Reply> {
    await this.client.resumeSchedule(r["queue"], r["name"]);
    return {};
  }

  async op_schedule_delete(r: Request): Promise<Reply> {
    await this.client.deleteSchedule(r["queue"], r["name"]);
    return {};
  }

  async op_schedule_trigger(r: Request): Promise<Reply> {
    return { job_id: await this.client.triggerSchedule(r["queue"], r["name"]) };
  }

  async op_settings_get(r: Request): Promise<Reply> {
    return settingsReply(await this.client.getQueueSettings(r["queue"]));
  }

  async op_settings_set(r: Request): Promise<Reply> {
    const given: Request = r["settings"] ?? {};
    const settings: Record<string, number> = {};
    for (const [conformance, ours] of SETTINGS) if (given[conformance] !== undefined) settings[ours] = given[conformance];
    const byName = new Map(SETTINGS.map(([conformance, ours]) => [conformance.replace(/_ms$/, ""), ours]));
    const clear = ((r["clear"] ?? []) as string[]).map((name) => (byName.get(name) ?? name) as QueueSettingName);
    return settingsReply(await this.client.setQueueSettings(r["queue"], settings, { clear }));
  }

  // worker

  async op_worker_start(r: Request): Promise<Reply> {
    if (this.worker) throw new Refused("FAILED_PRECONDITION", "a worker runs already");
    this.worker = new WorkerActor(r);
    return {};
  }

  async op_worker_stop(): Promise<Reply> {
    const worker = this.worker;
    this.worker = undefined;
    await worker?.stop();
    return {};
  }

  async op_release(r: Request): Promise<Reply> {
    this.runningWorker().calls.release(r["job"]);
    return {};
  }

  async op_wait_handler(r: Request): Promise<Reply> {
    return this.runningWorker().calls.waitFor(r["job"], Number(r["invocation"] ?? 1) || 1, r["until"] ?? "started", waitMs(r));
  }

  private runningWorker(): WorkerActor {
    if (!this.worker) throw new Refused("FAILED_PRECONDITION", "no worker runs");
    return this.worker;
  }
}

function scheduleReply(s: Schedule): Reply {
  return {
    name: s.name,
    type: s.template.type,
    every_ms: s.everyMs ?? null,
    cron: s.cron ?? null,
    time_zone: s.timeZone,
    paused: s.paused,
    has_next_fire: s.nextFireAt !== undefined,
    fires: s.fires,
    revision: s.revision,
    last_job_id: s.lastJobId,
    overlap: upper(s.overlap),
    missed_fires: upper(s.missedFires).replace("-", "_"),
    catch_up_max: s.catchUpMax,
  };
}

/** The settings of the conformance ops (durations as `<name>_ms`) and this client's names for them. */
const SETTINGS: [string, QueueSettingName][] = [
  ["max_waiting", "maxWaiting"],
  ["max_attempts", "maxAttempts"],
  ["concurrency", "concurrency"],
  ["completed_max", "completedMax"],
  ["dead_max", "deadMax"],
  ["key_concurrency", "keyConcurrency"],
  ["timeout_ms", "timeoutMs"],
  ["completed_retention_ms", "completedRetentionMs"],
  ["dead_retention_ms", "deadRetentionMs"],
];

function settingsReply(view: QueueSettingsView): Reply {
  const one = (s: QueueSettings): Reply => Object.fromEntries(SETTINGS.map(([conformance, ours]) => [conformance, s[ours] ?? null]));
  return { settings: one(view.settings), effective: one(view.effective) };
}

function eventReply(e: JobEvent): Reply {
  return { job_id: e.jobId, type: upper(e.type), attempt: e.attempt };
}

async function main(): Promise<void> {
  const client = new Client({ address: ADDRESS });
  const driver = new Driver(client);
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    if (line.trim() === "") continue;
    const request = JSON.parse(line) as Request;
    const reply = await driver.serve(request);
    process.stdout.write(`${JSON.stringify({ id: request["id"], ...reply })}\n`);
  }
  await driver.op_subscribe_stop();
  await driver.op_worker_stop();
  client.close();
}

main().catch((err: unknown) => {
  process.stderr.write(`driver: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
