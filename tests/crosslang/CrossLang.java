/*
 * The Java side of the cross-language test (tests/crosslang/run.sh), on the repository's own
 * client (clients/java; run.sh compiles this file against its classes and dependencies).
 * Subcommands:
 *
 *   work      a Worker serving calc, digest and crash-me jobs; results name "java"
 *   produce   adds calc and digest jobs, awaits every result, compares it to what it computes
 *             itself from the payload (the worker is in another language)
 *
 * The job types and their results mirror crosslang.py (see its docstring) and are written again
 * here on purpose, so each language checks the other's answers. Every wait is bounded; `produce`
 * exits 0 when every result matched, 1 otherwise; `work` exits 0 after a SIGTERM once its
 * running jobs are answered.
 */

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.jobwire.client.AddOutcome;
import io.jobwire.client.JobwireClient;
import io.jobwire.client.NewJob;
import io.jobwire.client.Worker;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;

public final class CrossLang {
  private static final String LANG = "java";
  private static final Gson GSON = new GsonBuilder().disableHtmlEscaping().create();

  private CrossLang() {}

  static String calcText(int i) {
    return "naïve ✓ 🚀 日本語 #" + i; // 2-, 3- and 4-byte UTF-8 characters
  }

  static long calcN(int i) {
    return 30_000_000L + i; // n*n needs more than 32 bits
  }

  static byte[] digestPayload(int i) {
    byte[] b = new byte[1000]; // every value 0-255, NULs included: not UTF-8
    for (int k = 0; k < b.length; k++) {
      b[k] = (byte) ((k * 7 + i) % 256);
    }
    return b;
  }

  static JsonObject calc(long n, String text, String jobId, String header, String lang) {
    JsonObject r = new JsonObject();
    r.addProperty("lang", lang);
    r.addProperty("job_id", jobId);
    r.addProperty("square", n * n);
    r.addProperty("reversed", new StringBuilder(text).reverse().toString()); // by code point
    r.addProperty("utf8_bytes", text.getBytes(StandardCharsets.UTF_8).length);
    r.addProperty("header", header);
    return r;
  }

  static JsonObject digest(byte[] payload, String jobId, String lang) throws Exception {
    JsonObject r = new JsonObject();
    r.addProperty("lang", lang);
    r.addProperty("job_id", jobId);
    r.addProperty("sha256", HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(payload)));
    r.addProperty("size", payload.length);
    return r;
  }

  static byte[] json(JsonElement e) {
    return GSON.toJson(e).getBytes(StandardCharsets.UTF_8);
  }

  static int work(Map<String, String> args) throws Exception {
    String hangMarker = args.get("hang-marker");
    CountDownLatch terminated = new CountDownLatch(1);
    // Exit 0 on SIGTERM once the worker has stopped (a shutdown hook alone would exit 143).
    sun.misc.Signal.handle(new sun.misc.Signal("TERM"), signal -> terminated.countDown());
    try (JobwireClient client = JobwireClient.builder().target(args.get("addr")).build()) {
      Worker worker =
          Worker.builder(client)
              .queues(args.get("queue"))
              .concurrency(4)
              .workerId("crosslang-java-" + ProcessHandle.current().pid())
              .label("lang", LANG)
              .handle(
                  "calc",
                  job -> {
                    JsonObject p = JsonParser.parseString(job.text()).getAsJsonObject();
                    String header = job.headers().getOrDefault("x-crosslang", "");
                    return json(calc(p.get("n").getAsLong(), p.get("text").getAsString(), job.id(), header, LANG));
                  })
              .handle("digest", job -> json(digest(job.payload(), job.id(), LANG)))
              .handle(
                  "crash-me",
                  job -> {
                    if (hangMarker != null) {
                      // Tell run.sh this job is running here, then hang until run.sh kills us.
                      Path marker = Path.of(hangMarker);
                      Path tmp = Path.of(hangMarker + ".tmp");
                      Files.writeString(tmp, job.id());
                      Files.move(tmp, marker, StandardCopyOption.ATOMIC_MOVE);
                      System.out.println("holding " + job.id() + " (attempt " + job.attempt() + "); waiting to be killed");
                      Thread.sleep(600_000);
                    }
                    JsonObject r = new JsonObject();
                    r.addProperty("lang", LANG);
                    r.addProperty("job_id", job.id());
                    r.addProperty("attempt", job.attempt());
                    r.addProperty("lost_deliveries", job.lostDeliveries());
                    return json(r);
                  })
              .build()
              .start();
      System.out.println("java worker pid " + ProcessHandle.current().pid() + " serving " + args.get("queue"));
      terminated.await();
      worker.close();
      System.out.println("java worker stopped");
    }
    return 0;
  }

  static int produce(Map<String, String> args) throws Exception {
    String queue = args.get("queue");
    String expect = args.get("expect-lang");
    int count = Integer.parseInt(args.get("count"));
    Duration timeout = Duration.ofMillis((long) (Double.parseDouble(args.get("timeout")) * 1000));
    try (JobwireClient client = JobwireClient.builder().target(args.get("addr")).build()) {
      // calc jobs in one AddJobs call, digest jobs one AddJob each.
      List<NewJob> calcs = new ArrayList<>();
      for (int i = 0; i < count; i++) {
        JsonObject p = new JsonObject();
        p.addProperty("n", calcN(i));
        p.addProperty("text", calcText(i));
        calcs.add(NewJob.of(queue, "calc").payload(GSON.toJson(p)).header("x-crosslang", "from-java-" + i));
      }
      List<String> ids = new ArrayList<>();
      for (AddOutcome o : client.addMany(calcs).join()) {
        if (!o.ok()) {
          System.out.println("addMany rejected an entry: " + o.code() + " " + o.message());
          return 1;
        }
        ids.add(o.id());
      }
      int digests = 3;
      for (int i = 0; i < digests; i++) {
        ids.add(client.add(NewJob.of(queue, "digest").payload(digestPayload(i))).join().id());
      }
      List<CompletableFuture<byte[]>> results = new ArrayList<>();
      for (String id : ids) {
        results.add(client.awaitResult(id, timeout));
      }
      int good = 0;
      for (int k = 0; k < ids.size(); k++) {
        String id = ids.get(k);
        JsonObject want =
            k < count
                ? calc(calcN(k), calcText(k), id, "from-java-" + k, expect)
                : digest(digestPayload(k - count), id, expect);
        try {
          JsonElement got = JsonParser.parseString(new String(results.get(k).join(), StandardCharsets.UTF_8));
          if (got.equals(want)) {
            good++;
          } else {
            System.out.println("MISMATCH result of " + id + ":\n  got  " + got + "\n  want " + want);
          }
        } catch (RuntimeException e) {
          System.out.println("job " + id + ": no result: " + e.getCause());
        }
      }
      System.out.println(
          good + "/" + ids.size() + " results match (" + count + " calc, " + digests + " digest, done by " + expect + ")");
      return good == ids.size() ? 0 : 1;
    }
  }

  public static void main(String[] argv) throws Exception {
    Map<String, String> args = new HashMap<>();
    for (int i = 1; i + 1 < argv.length; i += 2) {
      args.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
    }
    int status;
    switch (argv.length > 0 ? argv[0] : "") {
      case "work":
        status = work(args);
        break;
      case "produce":
        status = produce(args);
        break;
      default:
        System.err.println("usage: CrossLang work|produce --addr A --queue Q ...");
        status = 2;
    }
    System.exit(status);
  }
}
