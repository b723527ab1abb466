package io.jobwire.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The examples, run as a user would: the worker and the producer in JVMs of their own, the
 * producer's output checked, then the worker stopped with SIGTERM (its shutdown hook).
 */
class ExamplesTest {
  @Test
  @Timeout(240)
  void theExampleProducerRunsItsJobsOnTheExampleWorker() throws Exception {
    try (Stack stack = Stack.start()) {
      String q = Fixture.queue("examples");
      Path workerLog = stack.dir.resolve("example-worker.log");
      Process worker = Stack.spawn(workerLog, withAddr(stack, "io.jobwire.examples.ExampleWorker", q));
      Path producerLog = stack.dir.resolve("example-producer.log");
      Process producer = Stack.spawn(producerLog, withAddr(stack, "io.jobwire.examples.ExampleProducer", q));
      assertTrue(producer.waitFor(180, TimeUnit.SECONDS), () -> Stack.read(producerLog));
      String out = Stack.read(producerLog);
      assertEquals(0, producer.exitValue(), out);
      assertEquals(
          List.of(
              "welcome: {\"sent\":\"ada@example.com\"}",
              "reports: 2 done",
              "dead: no address to write to"),
          out.lines().filter(l -> l.matches("^(welcome|reports|dead): .*")).toList(),
          out);
      worker.destroy(); // SIGTERM: the shutdown hook stops the worker gracefully
      assertTrue(worker.waitFor(30, TimeUnit.SECONDS), () -> Stack.read(workerLog));
      Stack.waitFor(
          "the worker stream gone",
          () -> {
            try (JobwireClient c = stack.client()) {
              return Blocking.get(c.admin().listWorkers(q)).isEmpty();
            }
          },
          Duration.ofSeconds(30));
    }
  }

  private static List<String> withAddr(Stack stack, String mainClass, String queue) {
    List<String> cmd = new ArrayList<>();
    cmd.add("env");
    cmd.add("JOBWIRE_ADDR=" + stack.address());
    cmd.addAll(Stack.javaCommand(mainClass, queue));
    return cmd;
  }
}
