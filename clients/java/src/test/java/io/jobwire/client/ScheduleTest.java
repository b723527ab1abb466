package io.jobwire.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import jobwire.v1.Jobwire.Backoff;
import jobwire.v1.Jobwire.BackoffKind;
import jobwire.v1.Jobwire.QueueSettings;
import jobwire.v1.Jobwire.SetQueueSettingsResponse;
import jobwire.v1.Schedules.MissedFirePolicy;
import jobwire.v1.Schedules.OverlapPolicy;
import jobwire.v1.Schedules.Schedule;
import jobwire.v1.Schedules.UpsertScheduleResponse;
import org.junit.jupiter.api.Test;

/** Schedules and queue settings against a real server. */
class ScheduleTest extends Fixture {
  private static final Duration WAIT = Duration.ofSeconds(10);
  private final Schedules schedules = client.schedules();
  private final Admin admin = client.admin();

  /** The next job a handler ran, within {@link #WAIT}. */
  private static Job next(LinkedBlockingQueue<Job> ran, String what) throws InterruptedException {
    Job job = ran.poll(WAIT.toMillis(), TimeUnit.MILLISECONDS);
    if (job == null) {
      throw new AssertionError("no job ran within " + WAIT + ": " + what);
    }
    return job;
  }

  @Test
  void aScheduleEverySecondFiresIntoAWorkerAndPausesTriggersResumesDeletes() throws Exception {
    String q = queue("sched");
    LinkedBlockingQueue<Job> ran = new LinkedBlockingQueue<>();
    try (Worker worker =
        Worker.builder(client).queues(q).handle("tick", job -> { ran.add(job); return null; }).build().start()) {
      NewJob job = NewJob.of(q, "tick").payload("{\"n\":1}").maxAttempts(2);
      UpsertScheduleResponse upserted = Blocking.get(schedules.upsert(NewSchedule.every("ticker", job, Duration.ofSeconds(1))));
      assertTrue(upserted.getCreated());
      assertEquals(1, upserted.getSchedule().getDefinition().getEvery().getSeconds());
      assertTrue(upserted.getSchedule().hasNextFireAt());
      Job first = next(ran, "a fire");
      assertEquals("ticker", first.headers().get("jobwire-schedule"));
      assertEquals("{\"n\":1}", first.text());
      Blocking.get(client.awaitResult(first.id(), WAIT));

      Blocking.get(schedules.pause(q, "ticker"));
      Schedule paused = Blocking.get(schedules.get(q, "ticker"));
      assertTrue(paused.getPaused());
      assertFalse(paused.hasNextFireAt());
      assertTrue(paused.getFires() >= 1);
      assertEquals(2, paused.getDefinition().getTemplate().getMaxAttempts());
      String triggered = Blocking.get(schedules.trigger(q, "ticker"));
      while (!next(ran, "the trigger").id().equals(triggered)) {
        // a fire that ran before the pause
      }
      assertEquals(triggered, Blocking.get(schedules.get(q, "ticker")).getLastJobId());

      Blocking.get(schedules.resume(q, "ticker"));
      assertFalse(Blocking.get(schedules.get(q, "ticker")).getPaused());
      next(ran, "a fire after the resume");
      Blocking.get(schedules.delete(q, "ticker"));
      assertThrows(NotFoundException.class, () -> Blocking.get(schedules.get(q, "ticker")));
    }
  }

  @Test
  void upsertReplacesAndListIsByName() {
    String q = queue("sched");
    NewJob job = NewJob.of(q, "report").header("x-team", "ops");
    UpsertScheduleResponse created =
        Blocking.get(
            schedules.upsert(
                NewSchedule.cron("nightly", job, "0 30 2 * * *")
                    .timeZone("Europe/Berlin")
                    .jitter(Duration.ofSeconds(30))
                    .missedFires(MissedFirePolicy.MISSED_FIRE_POLICY_RUN_ALL, 3)
                    .overlap(OverlapPolicy.OVERLAP_POLICY_SKIP)));
    assertTrue(created.getCreated());
    assertEquals(3, created.getSchedule().getDefinition().getCatchUpMax());
    UpsertScheduleResponse replaced =
        Blocking.get(schedules.upsert(NewSchedule.cron("nightly", job, "0 0 3 * * *").timeZone("Europe/Berlin")));
    assertFalse(replaced.getCreated());
    assertEquals(2, replaced.getSchedule().getRevision());
    Blocking.get(schedules.upsert(NewSchedule.cron("hourly", job, "@hourly")));
    List<Schedule> listed = Blocking.get(schedules.list(q));
    assertEquals(List.of("hourly", "nightly"), listed.stream().map(s -> s.getDefinition().getName()).toList());
    assertEquals("ops", listed.get(1).getDefinition().getTemplate().getHeadersMap().get("x-team"));
  }

  @Test
  void aTemplateTakesTheJobsRateAndConcurrencyKeys() {
    String q = queue("sched");
    NewJob job = NewJob.of(q, "report").rateKey("tenant-1").concurrencyKey("db");
    Schedule got = Blocking.get(schedules.upsert(NewSchedule.cron("keyed", job, "@hourly"))).getSchedule();
    assertEquals("tenant-1", got.getDefinition().getTemplate().getRateKey());
    assertEquals("db", got.getDefinition().getTemplate().getConcurrencyKey());
    assertEquals(0, got.getRefused());
  }

  @Test
  void badSchedulesAreRefusedNamingTheField() {
    String q = queue("sched");
    NewJob job = NewJob.of(q, "t");
    InvalidArgumentException cron =
        assertThrows(InvalidArgumentException.class, () -> Blocking.get(schedules.upsert(NewSchedule.cron("bad", job, "not a cron"))));
    assertTrue(cron.getMessage().contains("cron"), cron.getMessage());
    InvalidArgumentException zone =
        assertThrows(
            InvalidArgumentException.class,
            () -> Blocking.get(schedules.upsert(NewSchedule.cron("bad", job, "@daily").timeZone("Mars/Base"))));
    assertTrue(zone.getMessage().contains("time_zone"), zone.getMessage());
    assertThrows(IllegalArgumentException.class, () -> NewSchedule.every("bad", job.delay(Duration.ofSeconds(1)), Duration.ofSeconds(1)));
    assertThrows(NotFoundException.class, () -> Blocking.get(schedules.trigger(q, "missing")));
  }

  @Test
  void queueSettingsAreSetReadBackEnforcedAndCleared() {
    String q = queue("settings");
    assertEquals(QueueSettings.getDefaultInstance(), Blocking.get(admin.queueSettings(q)).getSettings());
    QueueSettings wanted =
        QueueSettings.newBuilder()
            .setMaxWaiting(1)
            .setMaxAttempts(2)
            .setTimeout(com.google.protobuf.Duration.newBuilder().setSeconds(300))
            .setBackoff(Backoff.newBuilder().setKind(BackoffKind.BACKOFF_KIND_FIXED).setBase(com.google.protobuf.Duration.newBuilder().setSeconds(2)))
            .setConcurrency(4)
            .build();
    SetQueueSettingsResponse set = Blocking.get(admin.setQueueSettings(q, wanted, List.of()));
    assertEquals(1, set.getSettings().getMaxWaiting());
    assertEquals(1, set.getEffective().getMaxWaiting());
    assertEquals(300, set.getSettings().getTimeout().getSeconds());
    assertEquals(set.getSettings(), Blocking.get(admin.queueSettings(q)).getSettings());

    Blocking.get(client.add(NewJob.of(q, "t")));
    assertThrows(ResourceExhaustedException.class, () -> Blocking.get(client.add(NewJob.of(q, "t"))));

    SetQueueSettingsResponse cleared =
        Blocking.get(admin.setQueueSettings(q, QueueSettings.getDefaultInstance(), List.of("max_waiting", "timeout")));
    assertFalse(cleared.getSettings().hasMaxWaiting());
    assertFalse(cleared.getSettings().hasTimeout());
    assertEquals(4, cleared.getSettings().getConcurrency());
    assertEquals(1800, cleared.getEffective().getTimeout().getSeconds());
    Blocking.get(client.add(NewJob.of(q, "t")));
  }

  @Test
  void invalidSettingsAreRefusedNamingTheField() {
    String q = queue("settings");
    InvalidArgumentException refused =
        assertThrows(
            InvalidArgumentException.class,
            () -> Blocking.get(admin.setQueueSettings(q, QueueSettings.newBuilder().setMaxAttempts(0).build(), List.of())));
    assertTrue(refused.getMessage().contains("max_attempts"), refused.getMessage());
    assertEquals(QueueSettings.getDefaultInstance(), Blocking.get(admin.queueSettings(q)).getSettings());
  }
}
