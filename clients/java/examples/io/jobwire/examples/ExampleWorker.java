package io.jobwire.examples;

import io.jobwire.client.Blocking;
import io.jobwire.client.JobFailure;
import io.jobwire.client.JobwireClient;
import io.jobwire.client.Worker;
import java.nio.charset.StandardCharsets;
import java.time.Duration;

/**
 * An example worker: serves the {@code emails} queue (or the first argument) with two handlers,
 * eight at a time, until SIGTERM or Ctrl-C, when running jobs finish before it exits.
 *
 * <pre>
 *   JOBWIRE_ADDR=127.0.0.1:50051 java -cp ... io.jobwire.examples.ExampleWorker [queue]
 * </pre>
 */
public final class ExampleWorker {
  private ExampleWorker() {}

  public static void main(String[] args) {
    String queue = args.length > 0 ? args[0] : "emails";
    try (JobwireClient client = JobwireClient.builder().build()) {
      Worker worker =
          Worker.builder(client)
              .queues(queue)
              .concurrency(8)
              .prefetch(2)
              .handle(
                  "welcome",
                  job -> {
                    String to = job.text();
                    if (to.isBlank()) {
                      throw JobFailure.permanent("no address to write to");
                    }
                    // ... send the mail here ...
                    return ("{\"sent\":" + to + "}").getBytes(StandardCharsets.UTF_8);
                  })
              .handle(
                  "report",
                  job -> {
                    // A long job: report progress and push the deadline back as it goes.
                    for (int part = 1; part <= 3; part++) {
                      Thread.sleep(100); // ... a third of the work; interrupted if revoked ...
                      Blocking.get(job.progress("{\"parts_done\":" + part + "}"));
                      Blocking.get(job.extend(Duration.ofMinutes(5)));
                    }
                    return "{\"rows\":3}".getBytes(StandardCharsets.UTF_8);
                  })
              .build();
      worker.installShutdownHook();
      System.out.println("serving " + queue);
      worker.run();
    }
  }
}
