/**
 * Where a worker stream's acks go: one unary call each (the GetJob protocol), or the Work
 * stream's {@link Outbox}, which gathers them into few messages and matches each answer to its
 * ack by `ack_id`. Both reject with the RpcError the unary RPC would have given, so the stream
 * handles a refused ack the same way whichever the protocol.
 */
import type { ClientDuplexStream, Metadata } from "@grpc/grpc-js";

import { RpcError, Status } from "./errors";
import * as pb from "./gen/jobwire/v1/jobwire";
import { unary } from "./internal/rpc";

/** What unary acks are sent with. */
export interface AckTarget {
  readonly raw: pb.QueueServiceClient;
  readonly metadata: Metadata;
}

/** One ack, as a WorkAck carries it. */
export type AckRequest = NonNullable<pb.WorkAck["ack"]>;
/** What an answered ack brings back (a FailJob or ExtendLease response). */
export type AckResult = pb.WorkAnswer["result"];

/** The unary RPC each ack stands for, named in its errors. */
export const ACK_METHODS: Record<AckRequest["$case"], string> = {
  complete: "CompleteJob",
  fail: "FailJob",
  progress: "ReportProgress",
  extend: "ExtendLease",
  giveBack: "ReturnJob",
};

/** Where a session's acks go. A refused ack rejects with the RpcError its unary RPC would. */
export interface Acker {
  /** Acks may still be sent after the stream ended (unary calls do; a Work stream's die with it). */
  readonly outlivesStream: boolean;
  /** Sending (again) can still succeed. */
  readonly open: boolean;
  send(ack: AckRequest, deadline: number): Promise<AckResult>;
  /** A delivered job was handed to a handler. */
  started(leaseToken: string): void;
  answered(answers: pb.WorkAnswer[]): void;
  /** The stream ended: what is unanswered will never be. */
  close(): void;
}

/** One unary call per ack (the GetJob protocol). */
export function unaryAcker(w: AckTarget): Acker {
  const call = async (ack: AckRequest, deadline: number): Promise<AckResult> => {
    const ctx = { deadline, metadata: w.metadata };
    const name = ACK_METHODS[ack.$case];
    switch (ack.$case) {
      case "complete":
        await unary(name, w.raw.completeJob.bind(w.raw), ack.value, ctx);
        return undefined;
      case "fail":
        return { $case: "fail", value: await unary(name, w.raw.failJob.bind(w.raw), ack.value, ctx) };
      case "progress":
        await unary(name, w.raw.reportProgress.bind(w.raw), ack.value, ctx);
        return undefined;
      case "extend":
        return { $case: "extend", value: await unary(name, w.raw.extendLease.bind(w.raw), ack.value, ctx) };
      case "giveBack":
        await unary(name, w.raw.returnJob.bind(w.raw), ack.value, ctx);
        return undefined;
    }
  };
  return { outlivesStream: true, open: true, send: call, started: () => {}, answered: () => {}, close: () => {} };
}

/**
 * The sending side of a Work stream. An ack is written at once when no write is under way;
 * acks (and `started` marks) that come while one is, or within the same tick, wait and go
 * together in the next message. Each caller waits for the answer carrying its ack_id.
 */
export class Outbox implements Acker {
  readonly outlivesStream = false;
  open = true;
  private acks: pb.WorkAck[] = [];
  private startedTokens: string[] = [];
  private writing = false;
  private flushQueued = false;
  private nextAckId = 1;
  private readonly waiting = new Map<number, { method: string; resolve: (r: AckResult) => void; reject: (e: RpcError) => void }>();

  constructor(
    private readonly call: ClientDuplexStream<pb.WorkRequest, pb.WorkResponse>,
    private readonly reportStarted: boolean,
  ) {}

  send(ack: AckRequest): Promise<AckResult> {
    const method = ACK_METHODS[ack.$case];
    if (!this.open) return Promise.reject(new RpcError(method, Status.UNAVAILABLE, "the work stream ended"));
    const ackId = this.nextAckId++;
    return new Promise<AckResult>((resolve, reject) => {
      this.waiting.set(ackId, { method, resolve, reject });
      this.acks.push({ ackId, ack });
      this.queueFlush();
    });
  }

  started(leaseToken: string): void {
    if (!this.reportStarted || !this.open) return;
    this.startedTokens.push(leaseToken);
    this.queueFlush();
  }

  answered(answers: pb.WorkAnswer[]): void {
    for (const answer of answers) {
      const caller = this.waiting.get(answer.ackId);
      if (!caller) continue;
      this.waiting.delete(answer.ackId);
      if (answer.code === Status.OK) caller.resolve(answer.result);
      else caller.reject(new RpcError(caller.method, answer.code, answer.message));
    }
  }

  close(): void {
    this.open = false;
    this.acks = [];
    this.startedTokens = [];
    for (const caller of this.waiting.values()) {
      caller.reject(new RpcError(caller.method, Status.UNAVAILABLE, "the work stream ended before the answer"));
    }
    this.waiting.clear();
  }

  /** Writes at the end of this tick unless a write is under way (its end writes what waits). */
  private queueFlush(): void {
    if (this.writing || this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.writing || !this.open || (this.acks.length === 0 && this.startedTokens.length === 0)) return;
    const value = pb.WorkAcks.fromPartial({ acks: this.acks, started: this.startedTokens });
    this.acks = [];
    this.startedTokens = [];
    this.writing = true;
    this.call.write(pb.WorkRequest.fromPartial({ message: { $case: "acks", value } }), () => {
      this.writing = false;
      this.flush();
    });
  }
}
