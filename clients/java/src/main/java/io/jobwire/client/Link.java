package io.jobwire.client;

import java.util.List;
import java.util.concurrent.CompletableFuture;
import jobwire.v1.Jobwire.Job;
import jobwire.v1.Jobwire.Revoke;
import jobwire.v1.Jobwire.WorkAck;
import jobwire.v1.Jobwire.WorkAnswer;

/**
 * The transport of one worker stream, whichever the protocol: jobs and control messages come in
 * through {@link Events}; acks go out through {@link #send} and come back as a {@link
 * WorkAnswer} (the Work protocol's answer, which the unary protocol imitates: code 0 and the
 * RPC's response, or the refusal's code and message).
 */
abstract class Link {
  /** A link's inbound side; called on gRPC threads, one message at a time. */
  interface Events {
    void jobs(List<Job> jobs);

    void revoke(Revoke revoke);

    void drain();

    /** Any message arrived (a ping included): the stream is up. */
    void alive();

    /** The stream ended: cleanly (error null) or with this error. Called once. */
    void ended(Throwable error);
  }

  /** The code an answer gets when the stream ended before it came. */
  static final int UNAVAILABLE = io.grpc.Status.Code.UNAVAILABLE.value();

  /** Opens the stream. */
  abstract void open(Events events);

  /** Sends one ack (its ack_id is set here) and completes with its answer; never fails. */
  abstract CompletableFuture<WorkAnswer> send(WorkAck.Builder ack);

  /** A job delivered on this stream was handed to a handler. */
  abstract void started(String leaseToken);

  /** Ends this side of the stream once everything held is answered: the server then ends it. */
  abstract void finish();

  /** Cancels the stream: the server gives back what it still holds. */
  abstract void abort();

  static WorkAnswer unanswered(String why) {
    return WorkAnswer.newBuilder().setCode(UNAVAILABLE).setMessage(why).build();
  }
}
