package io.jobwire.client;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * A worker run in a child JVM by ResilienceTest, to be SIGKILLed mid-job: its handler writes
 * the job's id to a marker file (renamed into place whole) and then hangs.
 *
 * <p>Arguments: server address, queue, marker file.
 */
public final class HangingWorker {
  private HangingWorker() {}

  public static void main(String[] args) throws Exception {
    Path marker = Path.of(args[2]);
    JobwireClient client = JobwireClient.builder().target(args[0]).build();
    Worker.builder(client)
        .queues(args[1])
        .handle(
            "crash-me",
            job -> {
              Path tmp = marker.resolveSibling(marker.getFileName() + ".tmp");
              Files.writeString(tmp, job.id(), StandardCharsets.UTF_8);
              Files.move(tmp, marker, StandardCopyOption.ATOMIC_MOVE);
              Thread.sleep(Long.MAX_VALUE);
              return null;
            })
        .build()
        .run();
  }
}
