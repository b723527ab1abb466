package io.jobwire.client;

import jobwire.v1.Jobwire.RevokeReason;

/** One delivered job inside a {@link Worker}; fields guarded by the worker's lock. */
final class Delivery {
  enum State {
    /** Waiting for a handler slot (prefetched, or all slots busy). */
    QUEUED,
    /** Its handler runs. */
    RUNNING,
    /** Its final ack (complete, fail, give back) is on its way. */
    ANSWERING
  }

  final jobwire.v1.Jobwire.Job job;
  final WorkerStream stream;
  final Job view;
  State state = State.QUEUED;
  /** The handler's thread while it runs: interrupted on revoke, stream loss, stop timeout. */
  Thread thread;
  /** Why the server revoked it, or null. */
  volatile RevokeReason revoked;
  /** Its stream ended: the server took it back; nothing is to be answered. */
  boolean lost;
  /** The session state its handler asked to write with the completion, or null. */
  volatile String newSessionState;

  Delivery(jobwire.v1.Jobwire.Job job, WorkerStream stream) {
    this.job = job;
    this.stream = stream;
    this.view = new Job(this);
  }
}
