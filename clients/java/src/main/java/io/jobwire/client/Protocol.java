package io.jobwire.client;

/** How a {@link Worker} talks to the server. */
public enum Protocol {
  /**
   * One bidirectional {@code Work} stream carries the jobs down and the acks up, several per
   * message, each ack answered by its id: no call per ack. The default, and the fast path; the
   * only one with prefetch.
   */
  WORK,
  /**
   * A {@code GetJob} stream for the jobs and one unary call per ack ({@code CompleteJob},
   * {@code FailJob}...), for servers or proxies without {@code Work}. No prefetch.
   */
  UNARY
}
