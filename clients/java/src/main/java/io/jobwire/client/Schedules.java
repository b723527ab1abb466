package io.jobwire.client;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import jobwire.v1.Schedules.DeleteScheduleRequest;
import jobwire.v1.Schedules.GetScheduleRequest;
import jobwire.v1.Schedules.ListSchedulesRequest;
import jobwire.v1.Schedules.PauseScheduleRequest;
import jobwire.v1.Schedules.ResumeScheduleRequest;
import jobwire.v1.Schedules.Schedule;
import jobwire.v1.Schedules.TriggerScheduleRequest;
import jobwire.v1.Schedules.UpsertScheduleRequest;
import jobwire.v1.Schedules.UpsertScheduleResponse;

/**
 * Schedules ({@code ScheduleService}): jobs the servers add on a timetable, a cron expression or a
 * fixed interval, with no leader among them (each due time adds exactly one job, whatever the
 * number of instances). A schedule is named within its queue. Build one with {@link NewSchedule}.
 *
 * <p>Reads, pause and resume (setting a state twice is harmless) are retried after UNAVAILABLE;
 * upserts, deletes and triggers are not (a repeat would answer differently, and a repeated
 * trigger would add a second job). An unknown schedule fails with {@link NotFoundException}, a
 * bad field with {@link InvalidArgumentException} naming it ({@code cron}, {@code time_zone},
 * {@code every}...).
 */
public final class Schedules {
  private final Calls calls;

  Schedules(Calls calls) {
    this.calls = calls;
  }

  /**
   * Creates a schedule, or replaces the definition of the one of its name in its queue (its pause
   * and how far it has fired are kept).
   *
   * @param schedule the schedule
   * @return the schedule as stored ({@code getSchedule()}) and whether it was created
   */
  public CompletableFuture<UpsertScheduleResponse> upsert(NewSchedule schedule) {
    return calls.once(
        Rpc.UPSERT_SCHEDULE,
        UpsertScheduleRequest.newBuilder().setSchedule(schedule.toDefinition()).build());
  }

  /**
   * One schedule: its definition, pause, next and last fire, last job, counts.
   *
   * @param queue its queue
   * @param name its name
   * @return the schedule
   */
  public CompletableFuture<Schedule> get(String queue, String name) {
    return calls
        .retried(Rpc.GET_SCHEDULE, GetScheduleRequest.newBuilder().setQueue(queue).setName(name).build())
        .thenApply(r -> r.getSchedule());
  }

  /**
   * Every schedule of a queue, sorted by name (read page after page, each page its own deadline).
   *
   * @param queue the queue
   * @return the schedules
   */
  public CompletableFuture<List<Schedule>> list(String queue) {
    return page(queue, "", new ArrayList<>())
        .thenApply(
            all -> {
              all.sort(Comparator.comparing(s -> s.getDefinition().getName()));
              return all;
            });
  }

  private CompletableFuture<List<Schedule>> page(String queue, String token, List<Schedule> into) {
    ListSchedulesRequest request =
        ListSchedulesRequest.newBuilder().setQueue(queue).setPageSize(1_000).setPageToken(token).build();
    return calls
        .retried(Rpc.LIST_SCHEDULES, request)
        .thenCompose(
            r -> {
              into.addAll(r.getSchedulesList());
              return r.getNextPageToken().isEmpty()
                  ? CompletableFuture.completedFuture(into)
                  : page(queue, r.getNextPageToken(), into);
            });
  }

  /**
   * Deletes a schedule; the jobs it added stay.
   *
   * @param queue its queue
   * @param name its name
   * @return done when deleted
   */
  public CompletableFuture<Void> delete(String queue, String name) {
    return calls
        .once(Rpc.DELETE_SCHEDULE, DeleteScheduleRequest.newBuilder().setQueue(queue).setName(name).build())
        .thenApply(r -> null);
  }

  /**
   * Stops a schedule firing; the due times that pass meanwhile are missed fires, which follow its
   * missed-fire policy on resume.
   *
   * @param queue its queue
   * @param name its name
   * @return done when paused
   */
  public CompletableFuture<Void> pause(String queue, String name) {
    return calls
        .retried(Rpc.PAUSE_SCHEDULE, PauseScheduleRequest.newBuilder().setQueue(queue).setName(name).build())
        .thenApply(r -> null);
  }

  /**
   * Lets a paused schedule fire again.
   *
   * @param queue its queue
   * @param name its name
   * @return done when resumed
   */
  public CompletableFuture<Void> resume(String queue, String name) {
    return calls
        .retried(Rpc.RESUME_SCHEDULE, ResumeScheduleRequest.newBuilder().setQueue(queue).setName(name).build())
        .thenApply(r -> null);
  }

  /**
   * Adds one job from the schedule's template now, whatever its timetable, pause or overlap
   * policy; its due times are unchanged.
   *
   * @param queue its queue
   * @param name its name
   * @return the id of the job added
   */
  public CompletableFuture<String> trigger(String queue, String name) {
    return calls
        .once(Rpc.TRIGGER_SCHEDULE, TriggerScheduleRequest.newBuilder().setQueue(queue).setName(name).build())
        .thenApply(r -> r.getJobId());
  }
}
