package io.jobwire.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import jobwire.v1.Jobwire.JobInfo;
import jobwire.v1.Jobwire.JobState;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Processes killed, drained and restarted under a Java worker and producer: each test has its
 * own Redis and servers.
 */
class ResilienceTest {
  private static final Duration WAIT = Duration.ofSeconds(30);

  private static String queue(String label) {
    return Fixture.queue(label);
  }

  @Test
  @Timeout(180)
  void aWorkerKilledMidJobHasItsJobFinishedByAnother() throws Exception {
    try (Stack stack = Stack.start(); JobwireClient client = stack.client()) {
      String q = queue("kill");
      Path marker = stack.dir.resolve("holding");
      Process victim =
          Stack.spawn(
              stack.dir.resolve("victim.log"),
              Stack.javaCommand(HangingWorker.class.getName(), stack.address(), q, marker.toString()));
      AddResult added = Blocking.get(client.add(NewJob.of(q, "crash-me")));
      Stack.waitFor(
          "the child JVM worker running the job",
          () -> {
            assertTrue(victim.isAlive(), () -> Stack.read(stack.dir.resolve("victim.log")));
            return Files.exists(marker);
          },
          Duration.ofSeconds(120));
      assertEquals(added.id(), Files.readString(marker));
      try (Worker rescuer =
          Worker.builder(client)
              .queues(q)
              .handle("crash-me", job -> Fixture.utf8("rescued at attempt " + job.attempt() + ", lost " + job.lostDeliveries()))
              .build()
              .start()) {
        victim.destroyForcibly();
        assertTrue(victim.waitFor(10, TimeUnit.SECONDS));
        String result = Fixture.text(Blocking.get(client.awaitResult(added.id(), WAIT)));
        assertEquals("rescued at attempt 1, lost 1", result);
        JobInfo info = Blocking.get(client.info(added.id()));
        assertEquals(1, info.getLostDeliveries());
      }
    }
  }

  @Test
  @Timeout(120)
  void onDrainTheWorkerFinishesItsJobsAndReconnectsElsewhere() throws Exception {
    try (Stack stack = Stack.start(); JobwireClient admin = stack.client()) {
      Stack.Server first = stack.server("--drain-grace", "20s");
      Stack.Server second = stack.server();
      AtomicReference<String> upstream = new AtomicReference<>(first.address);
      try (Proxy proxy = new Proxy(upstream::get);
          JobwireClient viaProxy = JobwireClient.builder().target(proxy.address()).build()) {
        String q = queue("drain");
        CountDownLatch running = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        try (Worker worker =
            Worker.builder(viaProxy)
                .queues(q)
                .concurrency(1)
                .prefetch(1)
                .handle(
                    "gate",
                    job -> {
                      running.countDown();
                      release.await();
                      return Fixture.utf8("done");
                    })
                .handle("next", job -> Fixture.utf8("served after the drain"))
                .build()
                .start()) {
          AddResult held = Blocking.get(admin.add(NewJob.of(q, "gate")));
          assertTrue(running.await(60, TimeUnit.SECONDS));
          AddResult prefetched = Blocking.get(admin.add(NewJob.of(q, "next")));
          Stack.waitFor("the second job prefetched", () -> stats(admin, q).getActive() == 2, WAIT);
          upstream.set(second.address); // new connections go to the second server from now on
          first.terminate();
          // The drain reached the worker: it handed back the job it had not started.
          Stack.waitFor("the prefetched job handed back", () -> stats(admin, q).getActive() == 1, WAIT);
          release.countDown();
          assertEquals("done", Fixture.text(Blocking.get(admin.awaitResult(held.id(), WAIT))));
          assertEquals(0, first.awaitExit(WAIT));
          JobInfo info = Blocking.get(admin.info(held.id()));
          assertEquals(1, info.getAttempts());
          assertEquals(0, info.getLostDeliveries());
          // Reconnected through the proxy, to the second server: the handed-back job runs there.
          assertEquals(
              "served after the drain",
              Fixture.text(Blocking.get(admin.awaitResult(prefetched.id(), WAIT))));
          assertEquals(0, Blocking.get(admin.info(prefetched.id())).getLostDeliveries());
        }
      }
    }
  }

  private static jobwire.v1.Jobwire.QueueStats stats(JobwireClient client, String q) {
    return Blocking.get(client.admin().stats(q));
  }

  @Test
  @Timeout(120)
  void aWorkerAndAProducerCarryOnAfterTheServerRestarts() throws Exception {
    try (Stack stack = Stack.start(); JobwireClient client = stack.client()) {
      String q = queue("restart");
      Stack.Server server = stack.server(0);
      try (JobwireClient direct = JobwireClient.builder().target(server.address).build();
          Worker worker =
              Worker.builder(direct)
                  .queues(q)
                  .reconnect(Duration.ofMillis(50), Duration.ofMillis(500))
                  .handle("t", job -> Fixture.utf8("ok " + job.text()))
                  .build()
                  .start()) {
        assertEquals("ok 1", Fixture.text(Blocking.get(direct.run(NewJob.of(q, "t").payload("1"), WAIT))));
        server.kill();
        server.start(server.port);
        assertEquals("ok 2", Fixture.text(Blocking.get(direct.run(NewJob.of(q, "t").payload("2"), WAIT))));
        assertEquals(JobState.JOB_STATE_COMPLETED, Blocking.get(client.admin().listJobs(q, JobState.JOB_STATE_COMPLETED, 10, "")).items().get(0).getState());
      }
    }
  }

  @Test
  @Timeout(120)
  void addsInFlightWhenTheServerIsKilledEachGoInOnce() throws Exception {
    // Twenty producers add one job after another while the server is killed (no drain) and
    // started again on its port: every add goes in, each job once.
    try (Stack stack = Stack.start()) {
      String q = queue("killed");
      Stack.Server server = stack.server(0);
      ExecutorService producers = Executors.newFixedThreadPool(20);
      try (JobwireClient client =
          JobwireClient.builder().target(server.address).callTimeout(WAIT).build()) {
        Set<String> ids = ConcurrentHashMap.newKeySet();
        List<Future<?>> running = new ArrayList<>();
        for (int p = 0; p < 20; p++) {
          int first = p * 100;
          running.add(
              producers.submit(
                  () -> {
                    for (int n = 0; n < 100; n++) {
                      NewJob job = NewJob.of(q, "t").payload(Integer.toString(first + n));
                      ids.add(Blocking.get(client.add(job)).id());
                    }
                    return null;
                  }));
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (ids.size() < 300) {
          assertTrue(System.nanoTime() < deadline, ids.size() + " adds before the kill");
          Thread.sleep(5);
        }
        server.kill();
        server.start(server.port);
        for (Future<?> producer : running) {
          producer.get(60, TimeUnit.SECONDS);
        }
        assertEquals(2000, ids.size(), "each add answered with a job of its own");
        assertEquals(2000, Blocking.get(client.admin().stats(q)).getWaiting(), "each job once");
      } finally {
        producers.shutdownNow();
      }
    }
  }

  @Test
  @Timeout(120)
  void anAddWhoseAnswerIsLostIsRetriedWithoutAddingTwice() throws Exception {
    try (Stack stack = Stack.start();
        Proxy proxy = new Proxy(stack::address);
        JobwireClient viaProxy = JobwireClient.builder().target(proxy.address()).build()) {
      String q = queue("lost-answer");
      Blocking.get(viaProxy.admin().stats(q)); // the connection is up
      proxy.cutNextResponse();
      AddResult added = Blocking.get(viaProxy.add(NewJob.of(q, "t").payload("once")));
      assertTrue(added.duplicate(), "the retry found the first add by its key");
      try (JobwireClient direct = stack.client()) {
        assertEquals(1, Blocking.get(direct.admin().stats(q)).getWaiting());
        assertEquals("once", Blocking.get(direct.info(added.id())).getPayload().toStringUtf8());
      }
    }
  }
}
