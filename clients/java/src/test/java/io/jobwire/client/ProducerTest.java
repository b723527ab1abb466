package io.jobwire.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Status;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import jobwire.v1.Jobwire.JobEvent;
import jobwire.v1.Jobwire.JobEventType;
import jobwire.v1.Jobwire.JobInfo;
import jobwire.v1.Jobwire.JobState;
import org.junit.jupiter.api.Test;

/** The producer side against a real server: adds, awaits, cancel, info, Subscribe. */
class ProducerTest extends Fixture {
  private static Worker echo(String queue) {
    return Worker.builder(client)
        .queues(queue)
        .concurrency(4)
        .handle("echo", job -> utf8("echo:" + job.text()))
        .handle("fail", job -> { throw JobFailure.permanent("no good: " + job.text()); })
        .build()
        .start();
  }

  @Test
  void addGetsAnIdAndAnAutomaticIdempotencyKey() {
    String q = queue("add");
    AddResult added = Blocking.get(client.add(NewJob.of(q, "echo").payload("{\"a\":1}").priority(2)));
    assertTrue(added.id().startsWith(q + "/"), added.id());
    assertFalse(added.duplicate());
    JobInfo info = Blocking.get(client.info(added.id()));
    assertEquals(JobState.JOB_STATE_WAITING, info.getState());
    assertEquals("{\"a\":1}", info.getPayload().toStringUtf8());
    assertEquals(2, info.getPriority());
    assertTrue(info.getIdempotencyKey().startsWith("auto-"), info.getIdempotencyKey());
  }

  @Test
  void aRepeatedKeyIsADuplicateWithTheFirstId() {
    String q = queue("dup");
    AddResult first = Blocking.get(client.add(NewJob.of(q, "echo").idempotencyKey("k1")));
    AddResult again = Blocking.get(client.add(NewJob.of(q, "echo").idempotencyKey("k1")));
    assertEquals(first.id(), again.id());
    assertTrue(again.duplicate());
    assertEquals(1, Blocking.get(client.admin().stats(q)).getWaiting());
  }

  @Test
  void addManyAnswersEachEntryOnItsOwn() {
    String q = queue("many");
    List<NewJob> jobs = new ArrayList<>();
    for (int i = 0; i < 1_203; i++) {
      jobs.add(NewJob.of(q, "echo").payload("n" + i));
    }
    jobs.add(5, NewJob.of(q, "echo").priority(99));
    List<AddOutcome> outcomes = Blocking.get(client.addMany(jobs));
    assertEquals(1_204, outcomes.size());
    AddOutcome refused = outcomes.get(5);
    assertFalse(refused.ok());
    assertEquals(Status.Code.INVALID_ARGUMENT, refused.code());
    assertTrue(refused.message().contains("priority"), refused.message());
    assertTrue(refused.error() instanceof InvalidArgumentException);
    assertEquals(1_203, outcomes.stream().filter(AddOutcome::ok).count());
    assertEquals(1_203, Blocking.get(client.admin().stats(q)).getWaiting());
  }

  @Test
  void refusalsComeAsTheirKind() {
    InvalidArgumentException bad =
        assertThrows(
            InvalidArgumentException.class,
            () -> Blocking.get(client.add(NewJob.of("no spaces allowed", "echo"))));
    assertEquals("AddJob", bad.rpc());
    assertTrue(bad.getMessage().contains("queue"), bad.getMessage());
    assertThrows(
        NotFoundException.class, () -> Blocking.get(client.info(queue("x") + "/01JD0000000000000000000000")));
  }

  @Test
  void runAddsAndAwaitsTheResultWithWatchJob() {
    String q = queue("run");
    try (Worker w = echo(q)) {
      byte[] result = Blocking.get(client.run(NewJob.of(q, "echo").payload("hi"), Duration.ofSeconds(10)));
      assertEquals("echo:hi", text(result));
    }
  }

  @Test
  void watchFollowsAJobFromItsStateNowToItsEnd() {
    String q = queue("watch");
    AddResult added = Blocking.get(client.add(NewJob.of(q, "echo").payload("w")));
    List<JobEventType> seen = new CopyOnWriteArrayList<>();
    try (JobWatch watch = client.watch(added.id(), e -> seen.add(e.getType()))) {
      Stack.waitFor("the watch's first event", () -> !seen.isEmpty(), Duration.ofSeconds(10));
      try (Worker w = echo(q)) {
        JobEvent last = Blocking.get(watch.done());
        assertEquals(JobEventType.JOB_EVENT_TYPE_COMPLETED, last.getType());
        assertEquals("echo:w", last.getResult().toStringUtf8());
      }
    }
    assertEquals(JobEventType.JOB_EVENT_TYPE_WAITING, seen.get(0));
    assertTrue(seen.contains(JobEventType.JOB_EVENT_TYPE_ACTIVE), seen.toString());
    assertEquals(JobEventType.JOB_EVENT_TYPE_COMPLETED, seen.get(seen.size() - 1));
    assertThrows(
        NotFoundException.class,
        () -> Blocking.get(client.watch(q + "/01ARZ3NDEKTSV4RRFFQ69G5FAV", e -> {}).done()));
  }

  @Test
  void awaitingADeadJobThrowsItsError() {
    String q = queue("dead");
    try (Worker w = echo(q)) {
      JobDeadException dead =
          assertThrows(
              JobDeadException.class,
              () -> Blocking.get(client.run(NewJob.of(q, "fail").payload("x"), Duration.ofSeconds(10))));
      assertEquals("no good: x", dead.lastError());
    }
  }

  @Test
  void awaitingRunsOutAndACancelledJobSaysSo() {
    String q = queue("cancel");
    AddResult added = Blocking.get(client.add(NewJob.of(q, "echo").delay(Duration.ofHours(1))));
    assertThrows(
        WaitTimeoutException.class,
        () -> Blocking.get(client.awaitResult(added.id(), Duration.ofMillis(300))));
    var waiting = client.awaitResult(added.id(), Duration.ofSeconds(10));
    Blocking.get(client.cancel(added.id()));
    assertThrows(JobCancelledException.class, () -> Blocking.get(waiting));
    assertEquals(JobState.JOB_STATE_CANCELLED, Blocking.get(client.info(added.id())).getState());
    FailedPreconditionException again =
        assertThrows(FailedPreconditionException.class, () -> Blocking.get(client.cancel(added.id())));
    assertFalse(again instanceof StaleLeaseException);
  }

  @Test
  void subscribeFollowsAQueueAndResumesFromACursor() {
    String q = queue("sub");
    List<JobEvent> seen = new CopyOnWriteArrayList<>();
    Subscription sub = client.subscribe(q, "", seen::add);
    // Subscribe starts with the next event: wait until the stream is open before adding.
    Stack.waitFor(
        "the subscription to see an add",
        () -> {
          if (seen.isEmpty()) {
            Blocking.get(client.add(NewJob.of(q, "probe")));
          }
          return !seen.isEmpty();
        },
        Duration.ofSeconds(10));
    sub.close();
    String cursor = sub.cursor();
    int before = seen.size();
    List<String> added = new ArrayList<>();
    for (int i = 0; i < 3; i++) {
      added.add(Blocking.get(client.add(NewJob.of(q, "later"))).id());
    }
    assertEquals(before, seen.size(), "no event after close()");
    List<JobEvent> resumed = new CopyOnWriteArrayList<>();
    try (Subscription again = client.subscribe(q, cursor, resumed::add)) {
      Stack.waitFor("the three adds after the cursor", () -> resumed.size() >= 3, Duration.ofSeconds(10));
      List<String> ids = resumed.stream().map(JobEvent::getJobId).toList();
      assertTrue(ids.containsAll(added), ids.toString());
      assertTrue(resumed.stream().allMatch(e -> e.getType() == JobEventType.JOB_EVENT_TYPE_WAITING));
      assertFalse(resumed.stream().anyMatch(e -> e.getCursor().equals(cursor)), "no duplicate");
    }
  }

  @Test
  void aCursorOlderThanTheKeptEventsEndsTheSubscription() {
    // A second server that keeps only a few events of a queue: the first cursor falls out.
    Stack.Server small = stack.server("--events-max", "4");
    try (JobwireClient trimming = JobwireClient.builder().target(small.address).build()) {
      String q = queue("old");
      List<JobEvent> seen = new CopyOnWriteArrayList<>();
      Subscription first = trimming.subscribe(q, "", seen::add);
      Stack.waitFor(
          "a first event",
          () -> {
            if (seen.isEmpty()) {
              Blocking.get(trimming.add(NewJob.of(q, "probe")));
            }
            return !seen.isEmpty();
          },
          Duration.ofSeconds(10));
      first.close();
      for (int i = 0; i < 200; i++) {
        Blocking.get(trimming.add(NewJob.of(q, "filler")));
      }
      Subscription stale = trimming.subscribe(q, seen.get(0).getCursor(), e -> {});
      assertThrows(OutOfRangeException.class, () -> Blocking.get(stale.done()));
    } finally {
      small.kill();
    }
  }
}
