package io.jobwire.client;

import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

/**
 * Test fixture: a private redis-server on a unix socket in a temp dir and real jobwire servers
 * (`$JOBWIRE_BIN`, else the repository's target/debug/jobwire) on 127.0.0.1, killed at the end.
 * Readiness is awaited with a deadline, never a sleep: redis-server's "Ready to accept
 * connections" line and the address jobwire writes to its --ready-file. Logs stay in the temp dir
 * and are printed when a start fails; JOBWIRE_TEST_LOG=1 keeps the dir for a look afterwards.
 */
final class Stack implements AutoCloseable {
  private static final Duration STARTUP = Duration.ofSeconds(20);
  /** Every process the tests started, killed when the JVM exits however it exits. */
  private static final Set<Process> CHILDREN = ConcurrentHashMap.newKeySet();

  static {
    Runtime.getRuntime().addShutdownHook(new Thread(() -> CHILDREN.forEach(Process::destroyForcibly)));
  }

  final Path dir;
  final String keyPrefix = "jwjava-" + UUID.randomUUID().toString().substring(0, 8);
  private final Process redis;
  private final List<Server> servers = new ArrayList<>();

  private Stack() throws IOException {
    dir = Files.createTempDirectory(Path.of("/tmp"), "jw-java-");
    Path log = dir.resolve("redis.log");
    redis =
        spawn(
            log,
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            dir.resolve("redis.sock").toString(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.toString());
    waitFor(
        "redis-server ready",
        () -> read(log).toLowerCase().contains("ready to accept connections"),
        STARTUP,
        redis,
        log);
  }

  /** A Redis and one jobwire server with the given extra flags. */
  static Stack start(String... serverArgs) {
    try {
      Stack stack = new Stack();
      stack.server(serverArgs);
      return stack;
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** The first server's address. */
  String address() {
    return servers.get(0).address;
  }

  /** A client of the first server. */
  JobwireClient client() {
    return JobwireClient.builder().target(address()).build();
  }

  /** Starts one more jobwire server over the same Redis (and key prefix) on a free port. */
  Server server(String... args) {
    return server(0, args);
  }

  /** Starts a jobwire server on `port` (0: a free one) over the same Redis and key prefix. */
  Server server(int port, String... args) {
    Server server = new Server(port, args);
    servers.add(server);
    return server;
  }

  /** The Java binary and classpath of this JVM, for child JVMs of the tests. */
  static List<String> javaCommand(String mainClass, String... args) {
    List<String> cmd = new ArrayList<>();
    cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    cmd.add("-cp");
    cmd.add(System.getProperty("java.class.path"));
    cmd.add(mainClass);
    cmd.addAll(List.of(args));
    return cmd;
  }

  /** Starts a child process with its output in `log`; killed with the tests at the latest. */
  static Process spawn(Path log, String... command) throws IOException {
    return spawn(log, List.of(command));
  }

  static Process spawn(Path log, List<String> command) throws IOException {
    Process p =
        new ProcessBuilder(command)
            .redirectErrorStream(true)
            .redirectOutput(log.toFile())
            .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
            .start();
    CHILDREN.add(p);
    p.onExit().thenRun(() -> CHILDREN.remove(p));
    return p;
  }

  static String read(Path file) {
    try {
      return Files.exists(file) ? Files.readString(file, StandardCharsets.UTF_8) : "";
    } catch (IOException e) {
      return "";
    }
  }

  /** Polls `condition` every 20 ms until true; fails after `limit`. */
  static void waitFor(String what, BooleanSupplier condition, Duration limit) {
    waitFor(what, condition, limit, null, null);
  }

  private static void waitFor(
      String what, BooleanSupplier condition, Duration limit, Process process, Path log) {
    long deadline = System.nanoTime() + limit.toNanos();
    while (!condition.getAsBoolean()) {
      if (process != null && !process.isAlive()) {
        throw new AssertionError(what + ": the process exited early\n" + read(log));
      }
      if (System.nanoTime() > deadline) {
        throw new AssertionError(
            "timed out after " + limit + " waiting for " + what + (log == null ? "" : "\n" + read(log)));
      }
      try {
        Thread.sleep(20);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new AssertionError("interrupted waiting for " + what, e);
      }
    }
  }

  static String binary() {
    String bin = System.getenv("JOBWIRE_BIN");
    if (bin == null || bin.isEmpty()) {
      bin = Path.of("..", "..", "target", "debug", "jobwire").toAbsolutePath().normalize().toString();
    }
    if (!Files.isExecutable(Path.of(bin))) {
      throw new AssertionError(
          "no jobwire binary at " + bin + ": set JOBWIRE_BIN or run cargo build in the repository");
    }
    return bin;
  }

  @Override
  public void close() {
    for (Server s : servers) {
      s.kill();
    }
    redis.destroyForcibly();
    try {
      redis.waitFor(10, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    if (!"1".equals(System.getenv("JOBWIRE_TEST_LOG"))) {
      deleteTree(dir);
    } else {
      System.err.println("logs kept in " + dir);
    }
  }

  private static void deleteTree(Path root) {
    try (var paths = Files.walk(root)) {
      paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException e) {
      // A leftover temp dir is not worth failing a test over.
    }
  }

  /** One jobwire server process. */
  final class Server {
    private final String[] args;
    private final Path log;
    private Process process;
    String address;
    int port;

    private Server(int port, String[] args) {
      this.args = args;
      this.log = dir.resolve("jobwire-" + UUID.randomUUID().toString().substring(0, 8) + ".log");
      start(port);
    }

    /** Starts (again) on `port`, 0 for a free one. */
    void start(int onPort) {
      Path ready = dir.resolve("ready-" + UUID.randomUUID().toString().substring(0, 8));
      List<String> cmd = new ArrayList<>(List.of(binary(), "serve"));
      cmd.addAll(
          List.of(
              "--ready-file", ready.toString(),
              "--listen", "127.0.0.1:" + onPort,
              "--redis-url", "unix://" + dir.resolve("redis.sock"),
              "--key-prefix", keyPrefix,
              "--lease-ttl", "2s"));
      cmd.addAll(List.of(args));
      try {
        process = spawn(log, cmd);
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
      waitFor("jobwire ready", () -> Files.exists(ready), STARTUP, process, log);
      address = read(ready).lines().findFirst().orElseThrow();
      port = Integer.parseInt(address.substring(address.lastIndexOf(':') + 1));
    }

    /** SIGTERM (a graceful drain); returns at once. */
    void terminate() {
      process.destroy();
    }

    /** Waits for the process to exit; its exit status. */
    int awaitExit(Duration limit) throws InterruptedException {
      if (!process.waitFor(limit.toMillis(), TimeUnit.MILLISECONDS)) {
        throw new AssertionError("jobwire still running after " + limit + "\n" + read(log));
      }
      return process.exitValue();
    }

    /** SIGKILL, and waits for it to be gone. */
    void kill() {
      process.destroyForcibly();
      try {
        process.waitFor(10, TimeUnit.SECONDS);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }

    String log() {
      return read(log);
    }
  }
}
