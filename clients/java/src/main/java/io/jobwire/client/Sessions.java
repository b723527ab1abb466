package io.jobwire.client;

import java.util.concurrent.CompletableFuture;
import jobwire.v1.Jobwire.DeleteSessionRequest;
import jobwire.v1.Jobwire.GetSessionRequest;
import jobwire.v1.Jobwire.JobInfo;
import jobwire.v1.Jobwire.ListSessionJobsRequest;
import jobwire.v1.Jobwire.ListSessionsRequest;
import jobwire.v1.Jobwire.Session;
import jobwire.v1.Jobwire.UpdateSessionRequest;

/**
 * Sessions ({@code SessionService}): a state document plus its own ordered line of jobs inside
 * one queue. Add a job to one with {@link NewJob#session}; a worker's handler reads the state
 * with {@link Job#session()} and writes a new one with {@link Job#setSessionState}, atomically
 * with the completion.
 *
 * <p>Writes with an expected version are compare-and-set: on a mismatch they fail with {@link
 * SessionConflictException} and write nothing.
 */
public final class Sessions {
  private final Calls calls;

  Sessions(Calls calls) {
    this.calls = calls;
  }

  /**
   * Creates a session. An existing id: {@link AlreadyExistsException}.
   *
   * @param session what to create
   * @return the new session (its id, state, version 1...)
   */
  public CompletableFuture<Session> create(NewSession session) {
    return calls.once(Rpc.CREATE_SESSION, session.toRequest()).thenApply(r -> r.getSession());
  }

  /**
   * Reads a session: its state, version and job counts.
   *
   * @param sessionId the session
   * @return the session
   */
  public CompletableFuture<Session> get(String sessionId) {
    return calls
        .retried(Rpc.GET_SESSION, GetSessionRequest.newBuilder().setSessionId(sessionId).build())
        .thenApply(r -> r.getSession());
  }

  /**
   * Replaces the state.
   *
   * @param sessionId the session
   * @param json the new state
   * @return the new version
   */
  public CompletableFuture<Long> replaceState(String sessionId, String json) {
    return update(change(sessionId).setState(json));
  }

  /**
   * Replaces the state if the session is still at {@code expectedVersion}.
   *
   * @param sessionId the session
   * @param json the new state
   * @param expectedVersion the version the write is based on
   * @return the new version; {@link SessionConflictException} when the session moved on
   */
  public CompletableFuture<Long> replaceState(String sessionId, String json, long expectedVersion) {
    return update(change(sessionId).setState(json).setExpectedVersion(expectedVersion));
  }

  /**
   * Applies a JSON merge patch (RFC 7396) to the state.
   *
   * @param sessionId the session
   * @param patch the patch
   * @return the new version
   */
  public CompletableFuture<Long> mergePatch(String sessionId, String patch) {
    return update(change(sessionId).setMergePatch(patch));
  }

  /**
   * Applies a JSON merge patch if the session is still at {@code expectedVersion}.
   *
   * @param sessionId the session
   * @param patch the patch
   * @param expectedVersion the version the patch is based on
   * @return the new version; {@link SessionConflictException} when the session moved on
   */
  public CompletableFuture<Long> mergePatch(String sessionId, String patch, long expectedVersion) {
    return update(change(sessionId).setMergePatch(patch).setExpectedVersion(expectedVersion));
  }

  private static UpdateSessionRequest.Builder change(String sessionId) {
    return UpdateSessionRequest.newBuilder().setSessionId(sessionId);
  }

  private CompletableFuture<Long> update(UpdateSessionRequest.Builder request) {
    return calls.once(Rpc.UPDATE_SESSION, request.build()).thenApply(r -> r.getVersion());
  }

  /**
   * Deletes a session, its state and its jobs not yet started; its running jobs end cancelled.
   *
   * @param sessionId the session
   * @return done when deleted
   */
  public CompletableFuture<Void> delete(String sessionId) {
    return calls
        .once(Rpc.DELETE_SESSION, DeleteSessionRequest.newBuilder().setSessionId(sessionId).build())
        .thenApply(r -> null);
  }

  /**
   * A page of a queue's sessions.
   *
   * @param queue the queue
   * @param pageSize 1 to 100 (0: 100); pages may be shorter
   * @param pageToken empty for the first page, else {@link Page#nextPageToken()}
   * @return the page
   */
  public CompletableFuture<Page<Session>> list(String queue, int pageSize, String pageToken) {
    ListSessionsRequest request =
        ListSessionsRequest.newBuilder()
            .setQueue(queue)
            .setPageSize(pageSize)
            .setPageToken(pageToken)
            .build();
    return calls
        .retried(Rpc.LIST_SESSIONS, request)
        .thenApply(r -> new Page<>(r.getSessionsList(), r.getNextPageToken()));
  }

  /**
   * A page of the jobs still pending inside a session (added, not yet released to its queue),
   * next to be released first: the session's add order. Jobs it released already are not listed
   * ({@link Admin#listJobs} shows them, with their session id).
   *
   * @param sessionId the session, {@code <queue>/<name>}
   * @param pageSize 1 to 100 (0: 100)
   * @param pageToken empty for the first page, else {@link Page#nextPageToken()}
   * @return the page
   */
  public CompletableFuture<Page<JobInfo>> listJobs(String sessionId, int pageSize, String pageToken) {
    ListSessionJobsRequest request =
        ListSessionJobsRequest.newBuilder()
            .setSessionId(sessionId)
            .setPageSize(pageSize)
            .setPageToken(pageToken)
            .build();
    return calls
        .retried(Rpc.LIST_SESSION_JOBS, request)
        .thenApply(r -> new Page<>(r.getPendingJobsList(), r.getNextPageToken()));
  }
}
