/**
 * Sessions (`SessionService`): a state document plus its own ordered line of jobs in a queue.
 * The plain shapes of what `Client`'s session calls take and return, and their conversions.
 *
 * States are JSON documents: a `Buffer` / `Uint8Array` travels as JSON text as it is, anything
 * else is `JSON.stringify`-ed (as payloads are).
 */
import * as pb from "./gen/jobwire/v1/jobwire";
import { durationToMs, msToDuration } from "./internal/time";
import { decodeJson, encodeValue } from "./payload";

/** A session to create. */
export interface NewSession {
  /** The queue its jobs run in. */
  queue: string;
  /** 1 to 128 characters of A-Z a-z 0-9 _ . : -; default: a generated one. The id is `<queue>/<name>`. */
  name?: string;
  /** The initial state (at most 256 KiB); default `{}`. */
  state?: unknown;
  /** It expires after this long without activity (100 ms to 30 days); default 24 h. Never while it holds jobs. */
  ttlMs?: number;
  /** Its jobs running at once, 1 to 1,000; default 1. */
  maxConcurrency?: number;
}

/** A change of a session's state: exactly one of `state` and `mergePatch`. */
export interface SessionUpdate {
  /** The whole new state. */
  state?: unknown;
  /** A JSON merge patch (RFC 7396) applied to the state. */
  mergePatch?: unknown;
  /**
   * Write only if the session is still at this version (a compare-and-set); at another one the
   * update rejects with RpcError FAILED_PRECONDITION and nothing is written.
   */
  expectedVersion?: number;
}

/** One page of a listing; pass `nextPageToken` back for the next one (empty on the last). */
export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

/** Which page of a listing to read. */
export interface PageOptions {
  /** Entries per page; default the server's. */
  pageSize?: number;
  /** A previous page's `nextPageToken`; empty for the first page. */
  pageToken?: string;
}

/** A session as the server last reported it. */
export class Session {
  /** `<queue>/<name>`. */
  readonly id: string;
  /** The state, JSON text (`json()` parses it). */
  readonly state: string;
  /** Goes up by one on every write of the state. */
  readonly version: number;
  readonly createdAt: Date | undefined;
  /** Its last activity. */
  readonly updatedAt: Date | undefined;
  /** Its inactivity TTL. */
  readonly ttlMs: number;
  readonly maxConcurrency: number;
  readonly runningJobs: number;
  /** Its jobs released to the queue and not started yet (waiting, delayed or retrying). */
  readonly queuedJobs: number;
  /** Its jobs still waiting inside the session. */
  readonly pendingJobs: number;

  constructor(s: pb.Session) {
    this.id = s.id;
    this.state = s.state;
    this.version = s.version;
    this.createdAt = s.createdAt;
    this.updatedAt = s.updatedAt;
    this.ttlMs = durationToMs(s.ttl) ?? 0;
    this.maxConcurrency = s.maxConcurrency;
    this.runningJobs = s.runningJobs;
    this.queuedJobs = s.queuedJobs;
    this.pendingJobs = s.pendingJobs;
  }

  /** The state parsed as JSON. */
  json<T = unknown>(): T {
    return decodeJson<T>(Buffer.from(this.state, "utf8"), `state of session ${this.id}`);
  }
}

/** A state as the JSON text the server takes. */
export function stateText(state: unknown, what: string): string {
  return encodeValue(state, what).toString("utf8");
}

export function toCreateSessionRequest(s: NewSession): pb.CreateSessionRequest {
  return pb.CreateSessionRequest.fromPartial({
    queue: s.queue,
    name: s.name ?? "",
    state: s.state === undefined ? "" : stateText(s.state, "state"),
    ttl: s.ttlMs === undefined ? undefined : msToDuration(s.ttlMs, "ttlMs"),
    maxConcurrency: s.maxConcurrency,
  });
}

export function toUpdateSessionRequest(sessionId: string, u: SessionUpdate): pb.UpdateSessionRequest {
  if ((u.state === undefined) === (u.mergePatch === undefined)) {
    throw new TypeError("updateSession: give exactly one of state and mergePatch");
  }
  const update: pb.UpdateSessionRequest["update"] =
    u.state !== undefined
      ? { $case: "state", value: stateText(u.state, "state") }
      : { $case: "mergePatch", value: stateText(u.mergePatch, "mergePatch") };
  return pb.UpdateSessionRequest.fromPartial({ sessionId, update, expectedVersion: u.expectedVersion });
}
