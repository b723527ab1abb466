package io.jobwire.client;

import java.time.Duration;
import java.time.Instant;
import jobwire.v1.Jobwire.AddJobRequest;
import jobwire.v1.Schedules.JobTemplate;
import jobwire.v1.Schedules.MissedFirePolicy;
import jobwire.v1.Schedules.OverlapPolicy;
import jobwire.v1.Schedules.ScheduleDefinition;

/**
 * A schedule to create or replace, built fluently from the job each fire adds:
 * {@code NewSchedule.cron("nightly", NewJob.of("reports", "build").payload("{}"), "0 30 2 * * *")
 * .timeZone("Europe/Berlin")}. The job's queue is the schedule's; its type, payload, headers,
 * priority, attempts, backoff, timeout, rate key and concurrency key are the template (a delay, run time, idempotency key
 * or session do not apply to a schedule and are refused). Immutable; each setter returns a new
 * one.
 */
public final class NewSchedule {
  private final ScheduleDefinition definition;

  private NewSchedule(ScheduleDefinition definition) {
    this.definition = definition;
  }

  /**
   * A schedule adding {@code job} every {@code every} (1 s to 366 days): due at the start plus a
   * multiple of it, or, without a start, at its multiples since the Unix epoch.
   *
   * @param name its name in the job's queue (1 to 128 characters of {@code A-Z a-z 0-9 _ . : -})
   * @param job the job each fire adds
   * @param every the interval
   * @return the schedule
   */
  public static NewSchedule every(String name, NewJob job, Duration every) {
    return new NewSchedule(base(name, job).setEvery(Protos.duration(every)).build());
  }

  /**
   * A schedule adding {@code job} at each time of a cron expression: 5 fields, or 6 with seconds
   * first (croner's syntax, and @daily, @hourly...), in UTC unless {@link #timeZone} says
   * otherwise.
   *
   * @param name its name in the job's queue
   * @param job the job each fire adds
   * @param expression the cron expression
   * @return the schedule
   */
  public static NewSchedule cron(String name, NewJob job, String expression) {
    return new NewSchedule(base(name, job).setCron(expression).build());
  }

  private static ScheduleDefinition.Builder base(String name, NewJob job) {
    AddJobRequest add = job.toRequest();
    if (add.hasDelay() || add.hasRunAt() || !add.getIdempotencyKey().isEmpty() || !add.getSessionId().isEmpty()) {
      throw new IllegalArgumentException(
          "a schedule's job takes no delay, run time, idempotency key or session");
    }
    JobTemplate.Builder template =
        JobTemplate.newBuilder()
            .setType(add.getType())
            .setPayload(add.getPayload())
            .putAllHeaders(add.getHeadersMap())
            .setPriority(add.getPriority())
            .setRateKey(add.getRateKey())
            .setConcurrencyKey(add.getConcurrencyKey());
    if (add.hasMaxAttempts()) {
      template.setMaxAttempts(add.getMaxAttempts());
    }
    if (add.hasBackoff()) {
      template.setBackoff(add.getBackoff());
    }
    if (add.hasTimeout()) {
      template.setTimeout(add.getTimeout());
    }
    return ScheduleDefinition.newBuilder().setQueue(add.getQueue()).setName(name).setTemplate(template);
  }

  private NewSchedule with(java.util.function.Consumer<ScheduleDefinition.Builder> change) {
    ScheduleDefinition.Builder b = definition.toBuilder();
    change.accept(b);
    return new NewSchedule(b.build());
  }

  /**
   * The IANA time zone the cron expression is read in ({@code Europe/Berlin}).
   *
   * @param zone the zone
   * @return the changed schedule
   */
  public NewSchedule timeZone(String zone) {
    return with(b -> b.setTimeZone(zone));
  }

  /**
   * No due time before {@code start} (inclusive).
   *
   * @param start the first possible due time
   * @return the changed schedule
   */
  public NewSchedule start(Instant start) {
    return with(b -> b.setStart(Protos.timestamp(start)));
  }

  /**
   * No due time at or after {@code end}.
   *
   * @param end the end, exclusive
   * @return the changed schedule
   */
  public NewSchedule end(Instant end) {
    return with(b -> b.setEnd(Protos.timestamp(end)));
  }

  /**
   * Each job runs a delay of up to {@code jitter} (at most 1 h) after its due time, the same on
   * every instance.
   *
   * @param jitter the longest delay
   * @return the changed schedule
   */
  public NewSchedule jitter(Duration jitter) {
    return with(b -> b.setJitter(Protos.duration(jitter)));
  }

  /**
   * What due times missed while every instance was down or the schedule paused do (default
   * skip).
   *
   * @param policy skip, run once, or run all
   * @param catchUpMax with RUN_ALL, how many of the latest run (1 to 99; 0: 10); else 0
   * @return the changed schedule
   */
  public NewSchedule missedFires(MissedFirePolicy policy, int catchUpMax) {
    return with(b -> b.setMissedFires(policy).setCatchUpMax(catchUpMax));
  }

  /**
   * What a fire does while the previous fire's job has not finished (default allow).
   *
   * @param policy allow, or skip
   * @return the changed schedule
   */
  public NewSchedule overlap(OverlapPolicy policy) {
    return with(b -> b.setOverlap(policy));
  }

  /**
   * The definition this builds.
   *
   * @return the definition as sent
   */
  public ScheduleDefinition toDefinition() {
    return definition;
  }
}
