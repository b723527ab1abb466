package io.jobwire.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import jobwire.v1.Jobwire.JobInfo;
import jobwire.v1.Jobwire.JobState;
import jobwire.v1.Jobwire.RevokeReason;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.api.Test;

/** The worker against a real server, on both protocols where it matters. */
class WorkerTest extends Fixture {
  private static final Duration WAIT = Duration.ofSeconds(15);

  private static byte[] await(AddResult added) {
    return Blocking.get(client.awaitResult(added.id(), WAIT));
  }

  private static AddResult add(NewJob job) {
    return Blocking.get(client.add(job));
  }

  @ParameterizedTest
  @EnumSource(Protocol.class)
  void eachTypeRunsItsHandlerAndTheOutcomeIsReported(Protocol protocol) {
    String q = queue("types");
    AtomicInteger flaky = new AtomicInteger();
    Worker worker =
        Worker.builder(client)
            .queues(q)
            .protocol(protocol)
            .concurrency(4)
            .handle("upper", job -> utf8(job.text().toUpperCase()))
            .handle("doomed", job -> { throw JobFailure.permanent("never: " + job.attempt()); })
            .handle("boom", job -> { throw new IllegalStateException("boom"); })
            .handle(
                "flaky",
                job -> {
                  if (flaky.incrementAndGet() == 1) {
                    throw JobFailure.retryAfter(Duration.ofMillis(20), "once");
                  }
                  return utf8("attempt " + job.attempt());
                })
            .build()
            .start();
    try (worker) {
      assertEquals("HELLO", text(await(add(NewJob.of(q, "upper").payload("hello")))));
      assertEquals("attempt 2", text(await(add(NewJob.of(q, "flaky").maxAttempts(2)))));
      JobDeadException doomed =
          assertThrows(JobDeadException.class, () -> await(add(NewJob.of(q, "doomed").maxAttempts(5))));
      assertEquals("never: 1", doomed.lastError());
      JobDeadException boom =
          assertThrows(JobDeadException.class, () -> await(add(NewJob.of(q, "boom").maxAttempts(1))));
      assertEquals("IllegalStateException: boom", boom.lastError());
      JobDeadException unknown =
          assertThrows(JobDeadException.class, () -> await(add(NewJob.of(q, "nobody").maxAttempts(1))));
      assertTrue(unknown.lastError().contains("no handler for job type \"nobody\""), unknown.lastError());
    }
  }

  @Test
  void noMoreHandlersRunAtOnceThanTheConcurrency() {
    String q = queue("conc");
    AtomicInteger now = new AtomicInteger();
    AtomicInteger most = new AtomicInteger();
    Worker worker =
        Worker.builder(client)
            .queues(q)
            .concurrency(3)
            .handle(
                "slow",
                job -> {
                  most.accumulateAndGet(now.incrementAndGet(), Math::max);
                  Thread.sleep(100);
                  now.decrementAndGet();
                  return null;
                })
            .build()
            .start();
    try (worker) {
      List<CompletableFuture<byte[]>> results = new ArrayList<>();
      for (int i = 0; i < 12; i++) {
        results.add(client.run(NewJob.of(q, "slow"), WAIT));
      }
      results.forEach(Blocking::get);
      assertEquals(3, most.get());
    }
  }

  @Test
  void prefetchedJobsAreLeasedAndWaitForAFreeHandler() {
    String q = queue("prefetch");
    CountDownLatch release = new CountDownLatch(1);
    Worker worker = gated(q, new CountDownLatch(1), release);
    try (worker) {
      List<AddResult> added = new ArrayList<>();
      for (int i = 0; i < 5; i++) {
        added.add(add(NewJob.of(q, "gate")));
      }
      Stack.waitFor("1 running + 2 prefetched leased", () -> stats(q).getActive() == 3, WAIT);
      assertEquals(1, worker.running());
      assertEquals(2, stats(q).getWaiting());
      release.countDown();
      for (AddResult a : added) {
        assertEquals(a.id(), text(await(a)));
      }
      for (AddResult a : added) {
        assertEquals(0, Blocking.get(client.info(a.id())).getLostDeliveries());
      }
    }
  }

  /**
   * A started worker with one handler slot and two prefetched jobs, whose "gate" jobs count
   * `running` down, wait for `release` and answer their own id.
   */
  private static Worker gated(String q, CountDownLatch running, CountDownLatch release) {
    return Worker.builder(client)
        .queues(q)
        .concurrency(1)
        .prefetch(2)
        .handle("gate", job -> { running.countDown(); release.await(); return utf8(job.id()); })
        .build()
        .start();
  }

  private static jobwire.v1.Jobwire.QueueStats stats(String q) {
    return Blocking.get(client.admin().stats(q));
  }

  @Test
  void handlersRunOnTheExecutorGiven() {
    String q = queue("exec");
    ExecutorService pool =
        Executors.newFixedThreadPool(2, r -> new Thread(r, "my-pool-thread"));
    try (Worker worker =
        Worker.builder(client)
            .queues(q)
            .executor(pool)
            .handle("where", job -> utf8(Thread.currentThread().getName()))
            .build()
            .start()) {
      assertEquals("my-pool-thread", text(await(add(NewJob.of(q, "where")))));
    } finally {
      pool.shutdownNow();
    }
  }

  @ParameterizedTest
  @EnumSource(Protocol.class)
  void progressAndExtendGoThroughTheLease(Protocol protocol) {
    String q = queue("progress");
    AtomicReference<Instant[]> deadlines = new AtomicReference<>();
    Worker worker =
        Worker.builder(client)
            .queues(q)
            .protocol(protocol)
            .handle(
                "long",
                job -> {
                  Blocking.get(job.progress("{\"done\":50}"));
                  Instant extended = Blocking.get(job.extend(Duration.ofMinutes(10)));
                  deadlines.set(new Instant[] {job.deadline(), extended});
                  return null;
                })
            .build()
            .start();
    try (worker) {
      AddResult added = add(NewJob.of(q, "long").timeout(Duration.ofSeconds(30)));
      await(added);
      JobInfo info = Blocking.get(client.info(added.id()));
      assertEquals("{\"done\":50}", info.getProgress().toStringUtf8());
      Instant[] d = deadlines.get();
      assertTrue(d[1].isAfter(d[0].plus(Duration.ofMinutes(9))), d[0] + " then " + d[1]);
    }
  }

  @Test
  void aHandBackIsNeitherAnAttemptNorALostDelivery() {
    String q = queue("handback");
    AtomicInteger deliveries = new AtomicInteger();
    Map<Integer, Integer> attempts = new ConcurrentHashMap<>();
    Worker worker =
        Worker.builder(client)
            .queues(q)
            .handle(
                "shy",
                job -> {
                  int n = deliveries.incrementAndGet();
                  attempts.put(n, job.attempt());
                  if (n == 1) {
                    throw new HandBackException("not now");
                  }
                  return utf8("took it");
                })
            .build()
            .start();
    try (worker) {
      AddResult added = add(NewJob.of(q, "shy"));
      assertEquals("took it", text(await(added)));
      assertEquals(Map.of(1, 1, 2, 1), attempts);
      JobInfo info = Blocking.get(client.info(added.id()));
      assertEquals(0, info.getLostDeliveries());
    }
  }

  @ParameterizedTest
  @EnumSource(Protocol.class)
  void cancellingARunningJobInterruptsItsHandler(Protocol protocol) throws Exception {
    String q = queue("revoke");
    CountDownLatch running = new CountDownLatch(1);
    CompletableFuture<RevokeReason> interrupted = new CompletableFuture<>();
    Worker worker =
        Worker.builder(client)
            .queues(q)
            .protocol(protocol)
            .handle(
                "forever",
                job -> {
                  running.countDown();
                  try {
                    Thread.sleep(60_000);
                  } catch (InterruptedException e) {
                    interrupted.complete(job.revokeReason().orElse(null));
                    throw e;
                  }
                  return null;
                })
            .build()
            .start();
    try (worker) {
      AddResult added = add(NewJob.of(q, "forever"));
      assertTrue(running.await(15, TimeUnit.SECONDS));
      CompletableFuture<byte[]> result = client.awaitResult(added.id(), WAIT);
      Blocking.get(client.cancel(added.id()));
      assertEquals(RevokeReason.REVOKE_REASON_CANCELLED, interrupted.get(10, TimeUnit.SECONDS));
      assertThrows(JobCancelledException.class, () -> Blocking.get(result));
      assertEquals(JobState.JOB_STATE_CANCELLED, Blocking.get(client.info(added.id())).getState());
      Stack.waitFor("the handler slot back", () -> worker.running() == 0, WAIT);
    }
  }

  @Test
  void aTimedOutDeliveryIsFencedOffAndTheNextAttemptWins() throws Exception {
    String q = queue("fence");
    CompletableFuture<Throwable> lateCall = new CompletableFuture<>();
    Worker worker =
        Worker.builder(client)
            .queues(q)
            .concurrency(2)
            .handle(
                "slow-then-fast",
                job -> {
                  if (job.attempt() == 1) {
                    try {
                      Thread.sleep(60_000);
                    } catch (InterruptedException e) {
                      // Revoked for its timeout: the lease is gone, so its token is stale now.
                      lateCall.complete(
                          Errors.unwrap(
                              assertThrows(Exception.class, () -> job.progress("late").join())));
                      assertEquals(RevokeReason.REVOKE_REASON_TIMEOUT, job.revokeReason().orElseThrow());
                      return utf8("too late");
                    }
                  }
                  return utf8("attempt " + job.attempt());
                })
            .build()
            .start();
    try (worker) {
      AddResult added =
          add(
              NewJob.of(q, "slow-then-fast")
                  .timeout(Duration.ofMillis(500))
                  .maxAttempts(2)
                  .fixedBackoff(Duration.ofMillis(10)));
      assertEquals("attempt 2", text(await(added)));
      Throwable stale = lateCall.get(10, TimeUnit.SECONDS);
      assertTrue(stale instanceof StaleLeaseException, String.valueOf(stale));
      JobInfo info = Blocking.get(client.info(added.id()));
      assertEquals(2, info.getAttempts());
      assertEquals("attempt 2", info.getResult().toStringUtf8());
    }
  }

  @Test
  void closeFinishesRunningJobsAndHandsBackTheRest() throws Exception {
    String q = queue("close");
    CountDownLatch running = new CountDownLatch(1);
    CountDownLatch release = new CountDownLatch(1);
    Worker worker = gated(q, running, release);
    AddResult first = add(NewJob.of(q, "gate"));
    assertTrue(running.await(15, TimeUnit.SECONDS));
    AddResult second = add(NewJob.of(q, "gate"));
    AddResult third = add(NewJob.of(q, "gate"));
    Stack.waitFor("both prefetched", () -> stats(q).getActive() == 3, WAIT);
    CompletableFuture<Void> closing = CompletableFuture.runAsync(worker::close);
    Stack.waitFor("the prefetched jobs handed back", () -> stats(q).getWaiting() == 2, WAIT);
    assertFalse(closing.isDone(), "close waits for the running handler");
    release.countDown();
    closing.get(15, TimeUnit.SECONDS);
    assertTrue(worker.terminated().isDone());
    assertEquals(first.id(), text(await(first)));
    for (AddResult a : List.of(second, third)) {
      JobInfo info = Blocking.get(client.info(a.id()));
      assertEquals(JobState.JOB_STATE_WAITING, info.getState());
      assertEquals(0, info.getLostDeliveries());
    }
  }

  @Test
  void closingTheClientStopsItsWorkers() throws Exception {
    String q = queue("orphan");
    JobwireClient own = stack.client();
    Worker worker = Worker.builder(own).queues(q).handleAny(job -> null).build().start();
    Stack.waitFor("the worker listed", () -> !Blocking.get(client.admin().listWorkers(q)).isEmpty(), WAIT);
    own.close();
    worker.terminated().get(15, TimeUnit.SECONDS);
    Stack.waitFor("the worker stream gone", () -> Blocking.get(client.admin().listWorkers(q)).isEmpty(), WAIT);
  }

  @Test
  void aStreamTheServerRefusesEndsTheWorkerWithTheRefusal() {
    Worker worker = Worker.builder(client).queues("not a queue name").handleAny(job -> null).build();
    InvalidArgumentException refused = assertThrows(InvalidArgumentException.class, worker::run);
    assertNotNull(refused.getMessage());
  }
}
