package io.jobwire.client;

import java.util.Collection;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import jobwire.v1.Jobwire.DeleteJobRequest;
import jobwire.v1.Jobwire.GetQueueSettingsRequest;
import jobwire.v1.Jobwire.GetQueueSettingsResponse;
import jobwire.v1.Jobwire.JobInfo;
import jobwire.v1.Jobwire.JobState;
import jobwire.v1.Jobwire.ListJobsRequest;
import jobwire.v1.Jobwire.ListQueuesRequest;
import jobwire.v1.Jobwire.ListWorkersRequest;
import jobwire.v1.Jobwire.PauseQueueRequest;
import jobwire.v1.Jobwire.PurgeQueueRequest;
import jobwire.v1.Jobwire.QueueSettings;
import jobwire.v1.Jobwire.QueueStats;
import jobwire.v1.Jobwire.ResumeQueueRequest;
import jobwire.v1.Jobwire.RetryDeadJobsRequest;
import jobwire.v1.Jobwire.RetryJobRequest;
import jobwire.v1.Jobwire.SetQueueSettingsRequest;
import jobwire.v1.Jobwire.SetQueueSettingsResponse;
import jobwire.v1.Jobwire.StatsRequest;
import jobwire.v1.Jobwire.WorkerInfo;

/**
 * The calls tools and operators need: figures, listings, dead-letter retries, pause/resume, queue
 * settings. Reads, pause/resume and settings (setting a value twice is harmless) are retried
 * after UNAVAILABLE; retries of dead jobs, deletes and purges are not.
 */
public final class Admin {
  private final Calls calls;

  Admin(Calls calls) {
    this.calls = calls;
  }

  /**
   * The figures of one queue (an unknown queue reads as all zeros).
   *
   * @param queue the queue
   * @return waiting, delayed, active, completed, dead, paused...
   */
  public CompletableFuture<QueueStats> stats(String queue) {
    return calls
        .retried(Rpc.STATS, StatsRequest.newBuilder().setQueue(queue).build())
        .thenApply(r -> r.getStats());
  }

  /**
   * Every queue that ever had a job, sorted by name, with its figures.
   *
   * @return the queues
   */
  public CompletableFuture<List<QueueStats>> listQueues() {
    return calls
        .retried(Rpc.LIST_QUEUES, ListQueuesRequest.getDefaultInstance())
        .thenApply(r -> r.getQueuesList());
  }

  /**
   * A page of a queue's jobs in one state (WAITING in dispatch order, DELAYED by due time,
   * ACTIVE, and COMPLETED, DEAD, CANCELLED newest first).
   *
   * @param queue the queue
   * @param state the state
   * @param pageSize 1 to 1,000 (0: 100)
   * @param pageToken empty for the first page, else {@link Page#nextPageToken()}
   * @return the page
   */
  public CompletableFuture<Page<JobInfo>> listJobs(
      String queue, JobState state, int pageSize, String pageToken) {
    ListJobsRequest request =
        ListJobsRequest.newBuilder()
            .setQueue(queue)
            .setState(state)
            .setPageSize(pageSize)
            .setPageToken(pageToken)
            .build();
    return calls
        .retried(Rpc.LIST_JOBS, request)
        .thenApply(r -> new Page<>(r.getJobsList(), r.getNextPageToken()));
  }

  /**
   * Moves one dead job back to waiting, its attempts reset.
   *
   * @param jobId the dead job
   * @return done when moved
   */
  public CompletableFuture<Void> retryJob(String jobId) {
    return calls
        .once(Rpc.RETRY_JOB, RetryJobRequest.newBuilder().setJobId(jobId).build())
        .thenApply(r -> null);
  }

  /**
   * Moves up to {@code limit} of a queue's oldest dead jobs back to waiting.
   *
   * @param queue the queue
   * @param limit 1 to 100,000
   * @return how many went back
   */
  public CompletableFuture<Long> retryDeadJobs(String queue, int limit) {
    return calls
        .once(
            Rpc.RETRY_DEAD_JOBS,
            RetryDeadJobsRequest.newBuilder().setQueue(queue).setLimit(limit).build())
        .thenApply(r -> r.getRetried());
  }

  /**
   * Stops delivery from a queue; adds still succeed.
   *
   * @param queue the queue
   * @return done when paused
   */
  public CompletableFuture<Void> pauseQueue(String queue) {
    return calls
        .retried(Rpc.PAUSE_QUEUE, PauseQueueRequest.newBuilder().setQueue(queue).build())
        .thenApply(r -> null);
  }

  /**
   * Resumes delivery from a paused queue.
   *
   * @param queue the queue
   * @return done when resumed
   */
  public CompletableFuture<Void> resumeQueue(String queue) {
    return calls
        .retried(Rpc.RESUME_QUEUE, ResumeQueueRequest.newBuilder().setQueue(queue).build())
        .thenApply(r -> null);
  }

  /**
   * Deletes a job that is not active (cancel an active one first).
   *
   * @param jobId the job
   * @return done when deleted
   */
  public CompletableFuture<Void> deleteJob(String jobId) {
    return calls
        .once(Rpc.DELETE_JOB, DeleteJobRequest.newBuilder().setJobId(jobId).build())
        .thenApply(r -> null);
  }

  /**
   * Deletes every job of a queue in the given states (never ACTIVE ones).
   *
   * @param queue the queue
   * @param states any of WAITING, DELAYED, COMPLETED, DEAD, CANCELLED
   * @return how many were deleted
   */
  public CompletableFuture<Long> purgeQueue(String queue, Collection<JobState> states) {
    return calls
        .once(
            Rpc.PURGE_QUEUE,
            PurgeQueueRequest.newBuilder().setQueue(queue).addAllStates(states).build())
        .thenApply(r -> r.getDeleted());
  }

  /**
   * The worker streams connected to any instance, oldest first.
   *
   * @param queue only those serving this queue; empty for all
   * @return the workers
   */
  public CompletableFuture<List<WorkerInfo>> listWorkers(String queue) {
    return calls
        .retried(Rpc.LIST_WORKERS, ListWorkersRequest.newBuilder().setQueue(queue).build())
        .thenApply(r -> r.getWorkersList());
  }

  /**
   * A queue's settings: those it holds ({@code getSettings()}: an unset field falls back to the
   * server's flag) and those in effect ({@code getEffective()}: unset is no limit).
   *
   * @param queue the queue
   * @return the settings
   */
  public CompletableFuture<GetQueueSettingsResponse> queueSettings(String queue) {
    return calls.retried(
        Rpc.GET_QUEUE_SETTINGS, GetQueueSettingsRequest.newBuilder().setQueue(queue).build());
  }

  /**
   * Changes a queue's settings at run time, no restart, on every instance: what Redis enforces
   * (max waiting, the concurrency cap, retention) from the next call on, new jobs' defaults
   * within a second. An invalid value fails with {@link InvalidArgumentException} naming the
   * field.
   *
   * @param queue the queue
   * @param set the fields to set ({@code QueueSettings.newBuilder().setConcurrency(5).build()});
   *     unset fields are left as they are
   * @param clear settings to remove, by their proto field names ({@code max_waiting}, {@code
   *     timeout}...): their flag applies again
   * @return the settings as they now are
   */
  public CompletableFuture<SetQueueSettingsResponse> setQueueSettings(
      String queue, QueueSettings set, Collection<String> clear) {
    SetQueueSettingsRequest request =
        SetQueueSettingsRequest.newBuilder().setQueue(queue).setSettings(set).addAllClear(clear).build();
    return calls.retried(Rpc.SET_QUEUE_SETTINGS, request);
  }
}
