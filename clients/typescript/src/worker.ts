/**
 * The worker side: one worker stream, handlers by job type, acknowledgements, reconnection and
 * graceful shutdown.
 *
 * Invariants (the reasons behind the code):
 * - The stream is a Work call by default: jobs arrive on it several per message and every ack
 *   (complete, fail, return, extend, progress) goes out on it as a WorkAck answered by its
 *   ack_id, so an ack costs no call of its own. An ack is written at once when no write is
 *   under way; acks ready while one is (or in the same tick) go together in the next message.
 *   A refused ack rejects with the RpcError its unary RPC would have given; an ack answered
 *   UNAVAILABLE is sent again while the stream lives. `protocol: "unary"` uses GetJob and one
 *   unary call per ack instead.
 * - Concurrency is the stream's credit (`max_in_flight = concurrency`, plus `prefetch`): the
 *   server sends a job only while the stream holds fewer unanswered jobs than that, and a job's
 *   credit comes back only with its answer (complete, fail or return). Every answer is sent
 *   after its handler has settled, so at most `concurrency` handlers ever run at once. Jobs
 *   beyond that (prefetch) wait in delivery order for a free handler, and each one handed to a
 *   handler is marked `started` on the next message; on stop or drain they are handed back.
 * - A job revoked for timeout or a lost lease has its `signal` aborted and is never completed or
 *   failed on its own account. The server keeps its credit used until the worker answers, so
 *   once the handler has settled the worker sends one FailJob with the revoked token purely to
 *   give the credit back; the server answers FAILED_PRECONDITION and leaves the job unchanged.
 *   A job revoked because it was cancelled is answered normally (the server accepts it and the
 *   job ends cancelled).
 * - When the stream ends (server gone, network cut), the server takes back its unanswered jobs,
 *   so their signals are aborted. The worker waits for those handlers to settle before it
 *   reconnects (otherwise old and new handlers would together exceed concurrency), then
 *   reconnects with jittered exponential backoff.
 * - Drain (the server is going away): the server sends nothing more on this stream; the worker
 *   finishes and answers what it holds, then ends the stream and reconnects.
 * - Stop (SIGTERM / SIGINT / `stop()`): any answer frees credit the server may refill at once.
 *   Jobs that arrive while stopping are never started; they are handed back with a return that
 *   also asks the server to send nothing more on the stream (`stop_stream`). To avoid a
 *   return/refill ping-pong for the whole stop, every answer (results and returns) is held
 *   until the last running handler settles (or until 2 s before the job's own deadline), then
 *   all are sent together and the stream ends right after. Jobs the server still sends in that
 *   last instant go back when the stream ends, counted as a lost delivery (a protocol limit).
 */
import { hostname } from "node:os";

import type { Metadata } from "@grpc/grpc-js";

import { buildMetadata, createRawClient, createSessionsClient, type ConnectionOptions } from "./connection";
import * as pb from "./gen/jobwire/v1/jobwire";
import { backoffDelay, sleepUnlessAborted } from "./internal/time";
import type { Handler } from "./job";
import { consoleLogger, defaultLogger, type Logger } from "./logger";
import { WorkerStream, type StreamOwner } from "./worker-stream";

export { ActiveJob, type Handler, type SessionSnapshot } from "./job";

export interface WorkerOptions extends ConnectionOptions {
  /** Queues to serve, 1 to 32, in strict priority order (earlier queues first). */
  queues: string[];
  /** Handlers running at once = the stream's max_in_flight, 1 to 1,000. Default 10. */
  concurrency?: number;
  /** Shown to operators. Default `<hostname>-<pid>`. */
  workerId?: string;
  /** Free-form labels shown to operators (at most 32). */
  labels?: Record<string, string>;
  /** `run()` stops the worker on SIGTERM / SIGINT (a second signal aborts handlers). Default true. */
  handleSignals?: boolean;
  /** Reconnect backoff: first wait (default 100 ms), doubling with jitter up to `maxDelayMs` (default 10 s). */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  /** Time allowed to deliver one answer (CompleteJob / FailJob), retries on UNAVAILABLE included. Default 30 s. */
  ackDeadlineMs?: number;
  /** Where the worker reports what it does. Default: warnings and errors to stderr. */
  logger?: Logger;
  /**
   * `"work"` (default): one Work stream carries the jobs and the acks, several per message.
   * `"unary"`: a GetJob stream and one unary call per ack, for a server without Work.
   */
  protocol?: "work" | "unary";
  /**
   * Jobs held beyond `concurrency`, not started yet, so the next one is already here when a
   * handler returns; 0 to 1,000, default 0. They are leased from delivery (their deadlines run
   * while they wait) and handed back on stop or drain. Work protocol only.
   */
  prefetch?: number;
}

export interface StopOptions {
  /**
   * Abort the signals of handlers still running after this many ms; their jobs go back to the
   * queue when the stream ends (without using up an attempt). Default: wait for them.
   */
  timeoutMs?: number;
}

/**
 * A jobwire worker. Register handlers with `handle()`, then `run()` (resolves once stopped) or
 * `start()` / `stop()`.
 *
 * ```ts
 * const worker = new Worker({ queues: ["emails"], concurrency: 8 });
 * worker.handle("welcome", async (job) => sendWelcome(job.json<{ to: string }>()));
 * await worker.run(); // until SIGTERM / SIGINT
 * ```
 */
export class Worker implements StreamOwner {
  readonly workerId: string;
  readonly concurrency: number;
  readonly prefetch: number;
  readonly protocol: "work" | "unary";
  readonly queues: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  /** @internal */ readonly raw: pb.QueueServiceClient;
  /** @internal For reading a session again after a conflicting write. */ readonly rawSessions: pb.SessionServiceClient;
  /** @internal */ readonly metadata: Metadata;
  /** @internal */ readonly log: Logger;
  /** @internal */ readonly ackDeadlineMs: number;
  private readonly options: WorkerOptions;
  private readonly handlers = new Map<string, Handler>();
  private readonly stopController = new AbortController();
  private stream: WorkerStream | undefined;
  private done: Promise<void> | undefined;
  private stopTimer: NodeJS.Timeout | undefined;

  constructor(options: WorkerOptions) {
    if (!Array.isArray(options.queues) || options.queues.length === 0) {
      throw new TypeError("queues: give at least one queue");
    }
    const concurrency = options.concurrency ?? 10;
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1000) {
      throw new RangeError(`concurrency must be an integer from 1 to 1000, got ${concurrency}`);
    }
    this.protocol = options.protocol ?? "work";
    const prefetch = options.prefetch ?? 0;
    if (!Number.isInteger(prefetch) || prefetch < 0 || prefetch > 1000) {
      throw new RangeError(`prefetch must be an integer from 0 to 1000, got ${prefetch}`);
    }
    if (prefetch > 0 && this.protocol === "unary") throw new RangeError("prefetch needs the work protocol");
    this.options = options;
    this.concurrency = concurrency;
    this.prefetch = prefetch;
    this.queues = [...options.queues];
    this.labels = { ...(options.labels ?? {}) };
    this.workerId = options.workerId ?? `${hostname()}-${process.pid}`;
    this.ackDeadlineMs = options.ackDeadlineMs ?? 30_000;
    this.log = options.logger ?? (process.env["JOBWIRE_LOG"] === "debug" ? consoleLogger : defaultLogger);
    this.metadata = buildMetadata(options);
    // Keepalive pings notice a dead connection on an idle stream within ~40 s.
    this.raw = createRawClient(options, {
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
    });
    this.rawSessions = createSessionsClient(this.raw);
  }

  /** Registers the handler of one job type (replacing any earlier one). Returns the worker. */
  handle<R>(type: string, handler: Handler<R>): this {
    this.handlers.set(type, handler as Handler);
    return this;
  }

  /** True once `stop()` was called (or a signal arrived). */
  get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  /** Handlers running right now. */
  get running(): number {
    return this.stream?.runningCount() ?? 0;
  }

  /** Starts consuming in the background. Errors that end the worker surface from `run()` / `stop()`. */
  start(): void {
    if (this.done) throw new Error("worker already started");
    if (this.handlers.size === 0) throw new Error("register at least one handler with handle() before start()");
    this.done = this.loop();
    this.done.catch(() => {}); // Reported by run(); avoid an unhandled rejection when only stop() is used.
  }

  /**
   * Starts (unless started) and resolves once the worker has stopped: after `stop()`, or after
   * SIGTERM / SIGINT when `handleSignals` is on. Rejects when the server refuses the stream for
   * good (INVALID_ARGUMENT, UNAUTHENTICATED...).
   */
  async run(): Promise<void> {
    if (!this.done) this.start();
    const handleSignals = this.options.handleSignals ?? true;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (!this.stopping) {
        this.log.info("stopping: finishing running jobs (send the signal again to abort them)", {
          signal,
          running: this.running,
        });
        void this.stop();
      } else {
        this.log.warn("second signal: aborting running jobs", { signal });
        this.stream?.abortAll("stopping");
      }
    };
    if (handleSignals) {
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    }
    try {
      await this.done;
    } finally {
      if (handleSignals) {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
    }
  }

  /**
   * Stops taking jobs, lets running handlers finish and answers them, ends the stream and
   * closes the channel. Resolves when all of that is done.
   */
  async stop(options: StopOptions = {}): Promise<void> {
    if (!this.stopping) {
      this.stopController.abort();
      this.stream?.onStop();
    }
    if (options.timeoutMs !== undefined) {
      clearTimeout(this.stopTimer);
      this.stopTimer = setTimeout(() => this.stream?.abortAll("stopping"), options.timeoutMs);
    }
    if (!this.done) {
      this.raw.close();
      return;
    }
    try {
      await this.done;
    } catch {
      // Already reported to run().
    } finally {
      clearTimeout(this.stopTimer);
    }
  }

  /** @internal */
  handlerFor(type: string): Handler | undefined {
    return this.handlers.get(type);
  }

  private async loop(): Promise<void> {
    const initial = this.options.reconnect?.initialDelayMs ?? 100;
    const max = this.options.reconnect?.maxDelayMs ?? 10_000;
    let failures = 0;
    try {
      while (!this.stopping) {
        const stream = new WorkerStream(this);
        this.stream = stream;
        const end = await stream.run();
        this.stream = undefined;
        if (end.fatal) throw end.fatal;
        if (this.stopping) break;
        if (end.healthy) failures = 0;
        const delay = backoffDelay(failures++, initial, max);
        this.log.info(end.drained ? "stream drained; reconnecting" : "stream ended; reconnecting", {
          delayMs: Math.round(delay),
        });
        await sleepUnlessAborted(delay, this.stopController.signal);
      }
    } finally {
      this.raw.close();
      this.log.info("worker stopped", { workerId: this.workerId });
    }
  }
}