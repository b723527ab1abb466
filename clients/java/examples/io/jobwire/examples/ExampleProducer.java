package io.jobwire.examples;

import io.jobwire.client.AddOutcome;
import io.jobwire.client.Blocking;
import io.jobwire.client.JobDeadException;
import io.jobwire.client.JobwireClient;
import io.jobwire.client.NewJob;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;

/**
 * An example producer: runs one job and prints its result, adds a batch and awaits them all
 * concurrently, and shows a dead job's error.
 *
 * <pre>
 *   JOBWIRE_ADDR=127.0.0.1:50051 java -cp ... io.jobwire.examples.ExampleProducer [queue]
 * </pre>
 */
public final class ExampleProducer {
  private ExampleProducer() {}

  public static void main(String[] args) {
    String queue = args.length > 0 ? args[0] : "emails";
    Duration wait = Duration.ofSeconds(30);
    try (JobwireClient client = JobwireClient.builder().build()) {
      // Add and await in one step.
      byte[] result =
          Blocking.get(client.run(NewJob.of(queue, "welcome").payload("\"ada@example.com\""), wait));
      System.out.println("welcome: " + new String(result, StandardCharsets.UTF_8));

      // A batch, awaited together: the futures compose without blocking a thread each.
      List<AddOutcome> added =
          Blocking.get(
              client.addMany(
                  List.of(
                      NewJob.of(queue, "report").payload("{\"month\":\"2024-05\"}"),
                      NewJob.of(queue, "report").payload("{\"month\":\"2024-06\"}").priority(1))));
      List<CompletableFuture<byte[]>> results =
          added.stream().map(a -> client.awaitResult(a.id(), wait)).toList();
      CompletableFuture.allOf(results.toArray(CompletableFuture[]::new)).join();
      System.out.println("reports: " + results.size() + " done");

      // A job that fails for good: the error comes back as an exception of its kind.
      try {
        Blocking.get(client.run(NewJob.of(queue, "welcome").payload(" "), wait));
      } catch (JobDeadException e) {
        System.out.println("dead: " + e.lastError());
      }
    }
  }
}
