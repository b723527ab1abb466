package io.jobwire.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import jobwire.v1.Jobwire.JobInfo;
import jobwire.v1.Jobwire.QueueSettings;
import jobwire.v1.Jobwire.QueueStats;
import jobwire.v1.Jobwire.RateLimit;
import jobwire.v1.Jobwire.SetQueueSettingsResponse;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Rate keys, concurrency keys, the rate-limited answer and the settings behind them, against a real server. */
class RateLimitTest extends Fixture {
  private static final Duration WAIT = Duration.ofSeconds(15);

  @ParameterizedTest
  @EnumSource(Protocol.class)
  void aRateLimitedAnswerDelaysTheJobWithoutSpendingAnAttempt(Protocol protocol) {
    String q = queue("limited");
    Duration retryAfter = Duration.ofMillis(300);
    List<Long> starts = new CopyOnWriteArrayList<>();
    List<Integer> attempts = new CopyOnWriteArrayList<>();
    Worker worker =
        Worker.builder(client)
            .queues(q)
            .protocol(protocol)
            .handle(
                "call",
                job -> {
                  starts.add(System.nanoTime());
                  attempts.add(job.attempt());
                  if (starts.size() == 1) {
                    throw new RateLimitedException(retryAfter, true);
                  }
                  return "done".getBytes(StandardCharsets.UTF_8);
                })
            .build()
            .start();
    try (worker) {
      AddResult added =
          Blocking.get(client.add(NewJob.of(q, "call").maxAttempts(1).rateKey("api.example").concurrencyKey("tenant-7")));
      assertEquals("done", new String(Blocking.get(client.awaitResult(added.id(), WAIT)), StandardCharsets.UTF_8));
      JobInfo info = Blocking.get(client.info(added.id()));
      assertEquals(List.of(1, 1), attempts, "the rate-limited run spent no attempt");
      assertEquals(1, info.getAttempts());
      assertEquals(0, info.getLostDeliveries());
      long waitedMs = TimeUnit.NANOSECONDS.toMillis(starts.get(1) - starts.get(0));
      assertTrue(waitedMs >= retryAfter.toMillis() - 50, "ran again after " + waitedMs + " ms");
    }
  }

  @Test
  void rateKeyRateAndKeyConcurrencyAreSetCountedInStatsAndCleared() throws InterruptedException {
    String q = queue("keys");
    Admin admin = client.admin();
    QueueSettings limits =
        QueueSettings.newBuilder()
            .setRate(RateLimit.newBuilder().setCount(100).setPeriod(Protos.duration(Duration.ofSeconds(1))).setBurst(10))
            .setKeyRate(RateLimit.newBuilder().setCount(5).setPeriod(Protos.duration(Duration.ofMinutes(1))))
            .setKeyConcurrency(1)
            .build();
    SetQueueSettingsResponse set = Blocking.get(admin.setQueueSettings(q, limits, List.of()));
    assertEquals(100, set.getSettings().getRate().getCount());
    assertEquals(5, set.getSettings().getKeyRate().getCount());
    assertEquals(1, set.getEffective().getKeyConcurrency());
    assertEquals(set.getSettings(), Blocking.get(admin.queueSettings(q)).getSettings());

    CountDownLatch release = new CountDownLatch(1);
    Worker worker =
        Worker.builder(client)
            .queues(q)
            .concurrency(4)
            .handle("t", job -> { release.await(); return null; })
            .build()
            .start();
    try (worker) {
      for (int i = 0; i < 3; i++) {
        Blocking.get(client.add(NewJob.of(q, "t").concurrencyKey("tenant-1")));
      }
      Stack.waitFor(
          "one job of the key active, two held by key_concurrency",
          () -> {
            QueueStats s = Blocking.get(admin.stats(q));
            return s.getActive() == 1 && s.getHeldByKeyConcurrency() == 2 && s.getWaitingKeys() == 1;
          },
          WAIT);
      release.countDown();
    }
    SetQueueSettingsResponse cleared =
        Blocking.get(admin.setQueueSettings(q, QueueSettings.getDefaultInstance(), List.of("rate", "key_rate", "key_concurrency")));
    assertEquals(QueueSettings.getDefaultInstance(), cleared.getSettings());
  }

  @Test
  void theShardCountIsSetOnceAndReadBack() {
    String q = queue("shards");
    Admin admin = client.admin();
    SetQueueSettingsResponse set =
        Blocking.get(admin.setQueueSettings(q, QueueSettings.newBuilder().setShards(3).build(), List.of()));
    assertEquals(3, set.getSettings().getShards());
    assertEquals(3, set.getEffective().getShards());
    assertEquals(3, Blocking.get(admin.queueSettings(q)).getSettings().getShards());
    assertThrows(
        FailedPreconditionException.class,
        () -> Blocking.get(admin.setQueueSettings(q, QueueSettings.newBuilder().setShards(4).build(), List.of())));
  }
}
