package io.jobwire.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import jobwire.v1.Jobwire.JobInfo;
import jobwire.v1.Jobwire.JobState;
import jobwire.v1.Jobwire.QueueStats;
import jobwire.v1.Jobwire.WorkerInfo;
import org.junit.jupiter.api.Test;

/** The operators' calls against a real server. */
class AdminTest extends Fixture {
  private static final Duration WAIT = Duration.ofSeconds(15);
  private final Admin admin = client.admin();

  @Test
  void statsQueuesAndJobListings() {
    String q = queue("list");
    for (int i = 0; i < 3; i++) {
      Blocking.get(client.add(NewJob.of(q, "t").payload("n" + i)));
    }
    Blocking.get(client.add(NewJob.of(q, "t").delay(Duration.ofHours(1))));
    QueueStats stats = Blocking.get(admin.stats(q));
    assertEquals(3, stats.getWaiting());
    assertEquals(1, stats.getDelayed());
    assertTrue(
        Blocking.get(admin.listQueues()).stream().anyMatch(s -> s.getQueue().equals(q) && s.getWaiting() == 3));
    Page<JobInfo> first = Blocking.get(admin.listJobs(q, JobState.JOB_STATE_WAITING, 2, ""));
    assertEquals(List.of("n0", "n1"), first.items().stream().map(j -> j.getPayload().toStringUtf8()).toList());
    assertTrue(first.hasNext());
    Page<JobInfo> rest = Blocking.get(admin.listJobs(q, JobState.JOB_STATE_WAITING, 2, first.nextPageToken()));
    assertEquals(List.of("n2"), rest.items().stream().map(j -> j.getPayload().toStringUtf8()).toList());
    assertEquals(1, Blocking.get(admin.listJobs(q, JobState.JOB_STATE_DELAYED, 10, "")).items().size());
  }

  @Test
  void pausedQueuesDeliverNothingUntilResumed() {
    String q = queue("pause");
    Blocking.get(admin.pauseQueue(q));
    AtomicInteger ran = new AtomicInteger();
    try (Worker worker =
        Worker.builder(client).queues(q).handle("t", job -> { ran.incrementAndGet(); return null; }).build().start()) {
      AddResult added = Blocking.get(client.add(NewJob.of(q, "t")));
      assertTrue(Blocking.get(admin.stats(q)).getPaused());
      Stack.waitFor("the worker stream listed", () -> !Blocking.get(admin.listWorkers(q)).isEmpty(), WAIT);
      assertEquals(1, Blocking.get(admin.stats(q)).getWaiting());
      assertEquals(0, ran.get());
      Blocking.get(admin.resumeQueue(q));
      Blocking.get(client.awaitResult(added.id(), WAIT));
      assertEquals(1, ran.get());
    }
  }

  @Test
  void deadJobsGoBackOneByOneOrInBulk() {
    String q = queue("retry");
    AtomicBoolean doomed = new AtomicBoolean(true);
    try (Worker worker =
        Worker.builder(client)
            .queues(q)
            .concurrency(3)
            .handle(
                "t",
                job -> {
                  if (doomed.get()) {
                    throw JobFailure.permanent("not yet");
                  }
                  return utf8("ok");
                })
            .build()
            .start()) {
      List<String> ids = new ArrayList<>();
      for (int i = 0; i < 3; i++) {
        ids.add(Blocking.get(client.add(NewJob.of(q, "t"))).id());
      }
      Stack.waitFor("three dead", () -> Blocking.get(admin.stats(q)).getDead() == 3, WAIT);
      doomed.set(false);
      Blocking.get(admin.retryJob(ids.get(0)));
      assertEquals("ok", text(Blocking.get(client.awaitResult(ids.get(0), WAIT))));
      assertEquals(2, Blocking.get(admin.retryDeadJobs(q, 10)));
      for (String id : ids) {
        assertEquals("ok", text(Blocking.get(client.awaitResult(id, WAIT))));
      }
    }
  }

  @Test
  void deleteAndPurge() {
    String q = queue("purge");
    AddResult a = Blocking.get(client.add(NewJob.of(q, "t")));
    Blocking.get(client.add(NewJob.of(q, "t")));
    Blocking.get(client.add(NewJob.of(q, "t").delay(Duration.ofHours(1))));
    Blocking.get(admin.deleteJob(a.id()));
    assertEquals(1, Blocking.get(admin.stats(q)).getWaiting());
    assertEquals(2, Blocking.get(admin.purgeQueue(q, Set.of(JobState.JOB_STATE_WAITING, JobState.JOB_STATE_DELAYED))));
    QueueStats stats = Blocking.get(admin.stats(q));
    assertEquals(0, stats.getWaiting() + stats.getDelayed());
  }

  @Test
  void workersAreListedWithTheirLabels() {
    String q = queue("workers");
    try (Worker worker =
        Worker.builder(client).queues(q).concurrency(5).workerId("lister").label("team", "mail").handleAny(j -> null).build().start()) {
      Stack.waitFor("the worker listed", () -> !Blocking.get(admin.listWorkers(q)).isEmpty(), WAIT);
      WorkerInfo w = Blocking.get(admin.listWorkers(q)).get(0);
      assertEquals("lister", w.getWorkerId());
      assertEquals("java", w.getLabelsMap().get("client"));
      assertEquals("mail", w.getLabelsMap().get("team"));
      assertEquals(List.of(q), w.getQueuesList());
      assertEquals(5, w.getMaxInFlight());
    }
  }
}
