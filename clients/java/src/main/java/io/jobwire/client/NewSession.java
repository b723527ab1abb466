package io.jobwire.client;

import java.time.Duration;
import jobwire.v1.Jobwire.CreateSessionRequest;

/**
 * A session to create, built fluently: {@code NewSession.in("chat").name("user-7").state("{}")}.
 * Immutable; each setter returns a new one.
 */
public final class NewSession {
  private final CreateSessionRequest request;

  private NewSession(CreateSessionRequest request) {
    this.request = request;
  }

  /**
   * A session of {@code queue}, with a generated name, state {@code {}}, a 24 h inactivity TTL
   * and one job at a time.
   *
   * @param queue the queue its jobs run in
   * @return the session
   */
  public static NewSession in(String queue) {
    return new NewSession(CreateSessionRequest.newBuilder().setQueue(queue).build());
  }

  /**
   * Its name (1 to 128 characters of {@code A-Z a-z 0-9 _ . : -}); its id is {@code
   * <queue>/<name>}.
   *
   * @param name the name
   * @return the changed session
   */
  public NewSession name(String name) {
    return new NewSession(request.toBuilder().setName(name).build());
  }

  /**
   * Its initial state, a JSON document of at most 256 KiB.
   *
   * @param json the state
   * @return the changed session
   */
  public NewSession state(String json) {
    return new NewSession(request.toBuilder().setState(json).build());
  }

  /**
   * It expires after this long without activity (100 ms to 30 days), never while it holds jobs.
   *
   * @param ttl the TTL
   * @return the changed session
   */
  public NewSession ttl(Duration ttl) {
    return new NewSession(request.toBuilder().setTtl(Protos.duration(ttl)).build());
  }

  /**
   * How many of its jobs may run at once, 1 to 1,000 (default 1: strictly one after another).
   *
   * @param n the limit
   * @return the changed session
   */
  public NewSession maxConcurrency(int n) {
    return new NewSession(request.toBuilder().setMaxConcurrency(n).build());
  }

  CreateSessionRequest toRequest() {
    return request;
  }
}
