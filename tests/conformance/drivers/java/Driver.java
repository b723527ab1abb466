/*
 * The Java driver of the conformance suite (tests/conformance/README.md): one actor's requests,
 * one JSON object per line on stdin, each answered by one line on stdout, carried out through the
 * Java client's public API (clients/java; `driver build` compiles this file against its classes
 * and runtime dependencies). complete_with_token alone goes through the client's channel with the
 * generated stub, as the README's wire step says.
 */

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.grpc.CallOptions;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.ProtoUtils;
import io.grpc.stub.ClientCalls;
import io.jobwire.client.AddResult;
import io.jobwire.client.Job;
import io.jobwire.client.JobCancelledException;
import io.jobwire.client.JobDeadException;
import io.jobwire.client.JobFailure;
import io.jobwire.client.JobwireClient;
import io.jobwire.client.JobwireException;
import io.jobwire.client.NewJob;
import io.jobwire.client.NewSession;
import io.jobwire.client.RateLimitedException;
import io.jobwire.client.Subscription;
import io.jobwire.client.WaitTimeoutException;
import io.jobwire.client.Worker;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import jobwire.v1.Jobwire.CompleteJobRequest;
import jobwire.v1.Jobwire.CompleteJobResponse;
import jobwire.v1.Jobwire.JobEvent;
import jobwire.v1.Jobwire.JobInfo;
import jobwire.v1.Jobwire.Session;

public final class Driver {
  private static final Gson GSON = new GsonBuilder().disableHtmlEscaping().serializeNulls().create();

  /** A request that failed with a gRPC code. */
  static final class Refused extends Exception {
    private static final long serialVersionUID = 1L;
    final String code;

    Refused(String code, String message) {
      super(message);
      this.code = code;
    }
  }

  private final String lang = System.getenv("CONFORMANCE_LANG");
  private final JobwireClient client;
  private final ScheduleOps schedules;
  private Worker worker;
  private Calls calls;
  private Subscription subscription;
  private LinkedBlockingQueue<JobEvent> events;

  Driver(JobwireClient client) {
    this.client = client;
    this.schedules = new ScheduleOps(client);
  }

  // ---- values ------------------------------------------------------------------------------

  static String text(JsonObject r, String key) {
    return r.has(key) && !r.get(key).isJsonNull() ? r.get(key).getAsString() : "";
  }

  static long number(JsonObject r, String key, long fallback) {
    return r.has(key) && !r.get(key).isJsonNull() ? r.get(key).getAsLong() : fallback;
  }

  /** The request's timeout_ms, or 10 s. */
  static Duration waitOf(JsonObject r) {
    return Duration.ofMillis(number(r, "timeout_ms", 10_000));
  }

  /** A JSON value of the request, as compact JSON text ({} when absent). */
  static String json(JsonObject r, String key) {
    return r.has(key) ? GSON.toJson(r.get(key)) : "{}";
  }

  /** The value of a future, or a Refused with the client's code. */
  static <T> T join(java.util.concurrent.CompletableFuture<T> future) throws Refused {
    try {
      return future.join();
    } catch (CompletionException e) {
      throw refused(e.getCause());
    }
  }

  static Refused refused(Throwable e) {
    if (e instanceof JobwireException j && j.code() != null) {
      return new Refused(j.code().name(), j.getMessage());
    }
    if (e instanceof StatusRuntimeException s) {
      return new Refused(s.getStatus().getCode().name(), s.getStatus().getDescription());
    }
    return new Refused(Status.Code.UNKNOWN.name(), String.valueOf(e));
  }

  // ---- producer ops ------------------------------------------------------------------------

  JsonObject add(JsonObject r) throws Refused {
    NewJob job = NewJob.of(text(r, "queue"), text(r, "type")).payload(json(r, "payload"));
    if (r.has("headers")) {
      for (Map.Entry<String, JsonElement> h : r.getAsJsonObject("headers").entrySet()) {
        job = job.header(h.getKey(), h.getValue().getAsString());
      }
    }
    if (r.has("max_attempts")) {
      job = job.maxAttempts((int) number(r, "max_attempts", 0));
    }
    if (r.has("backoff_ms")) {
      job = job.fixedBackoff(Duration.ofMillis(number(r, "backoff_ms", 0)));
    }
    if (r.has("timeout_ms")) {
      job = job.timeout(Duration.ofMillis(number(r, "timeout_ms", 0)));
    }
    if (r.has("session")) {
      job = job.session(text(r, "session"));
    }
    if (r.has("idempotency_key")) {
      job = job.idempotencyKey(text(r, "idempotency_key"));
    }
    if (r.has("rate_key")) {
      job = job.rateKey(text(r, "rate_key"));
    }
    if (r.has("concurrency_key")) {
      job = job.concurrencyKey(text(r, "concurrency_key"));
    }
    AddResult added = join(client.add(job));
    JsonObject out = new JsonObject();
    out.addProperty("job_id", added.id());
    out.addProperty("duplicate", added.duplicate());
    return out;
  }

  JsonObject awaitEnd(JsonObject r) throws Refused {
    JsonObject out = new JsonObject();
    try {
      byte[] result = client.awaitResult(text(r, "job"), waitOf(r)).join();
      out.addProperty("state", "COMPLETED");
      out.addProperty("result", new String(result, StandardCharsets.UTF_8));
    } catch (CompletionException e) {
      Throwable cause = e.getCause();
      if (cause instanceof JobDeadException dead) {
        out.addProperty("state", "DEAD");
        out.addProperty("error", dead.lastError());
      } else if (cause instanceof JobCancelledException) {
        out.addProperty("state", "CANCELLED");
      } else if (cause instanceof WaitTimeoutException) {
        throw new Refused("DEADLINE_EXCEEDED", cause.getMessage());
      } else {
        throw refused(cause);
      }
    }
    return out;
  }

  JsonObject info(JsonObject r) throws Refused {
    JobInfo info = join(client.info(text(r, "job")));
    JsonObject out = new JsonObject();
    out.addProperty("state", info.getState().name().replaceFirst("^JOB_STATE_", ""));
    out.addProperty("attempts", info.getAttempts());
    out.addProperty("lost_deliveries", info.getLostDeliveries());
    out.addProperty("result", info.getResult().toStringUtf8());
    out.addProperty("last_error", info.getLastError());
    out.addProperty("progress", info.getProgress().toStringUtf8());
    return out;
  }

  static JsonObject session(Session s) {
    JsonObject out = new JsonObject();
    out.addProperty("session_id", s.getId());
    out.addProperty("state", s.getState());
    out.addProperty("version", s.getVersion());
    return out;
  }

  JsonObject sessionCreate(JsonObject r) throws Refused {
    NewSession s = NewSession.in(text(r, "queue")).state(json(r, "state"));
    if (r.has("name")) {
      s = s.name(text(r, "name"));
    }
    if (r.has("max_concurrency")) {
      s = s.maxConcurrency((int) number(r, "max_concurrency", 1));
    }
    return session(join(client.sessions().create(s)));
  }

  JsonObject sessionUpdate(JsonObject r) throws Refused {
    String id = text(r, "session");
    long version =
        r.has("expected_version")
            ? join(client.sessions().replaceState(id, json(r, "state"), number(r, "expected_version", 0)))
            : join(client.sessions().replaceState(id, json(r, "state")));
    JsonObject out = new JsonObject();
    out.addProperty("version", version);
    return out;
  }

  JsonObject subscribeStart(JsonObject r) {
    subscribeStop();
    events = new LinkedBlockingQueue<>();
    LinkedBlockingQueue<JobEvent> into = events;
    subscription = client.subscribe(text(r, "queue"), text(r, "cursor"), into::add);
    return new JsonObject();
  }

  static JsonObject event(JobEvent e) {
    JsonObject out = new JsonObject();
    out.addProperty("job_id", e.getJobId());
    out.addProperty("type", e.getType().name().replaceFirst("^JOB_EVENT_TYPE_", ""));
    out.addProperty("attempt", e.getAttempt());
    return out;
  }

  JsonObject subscribeTake(JsonObject r) throws Refused, InterruptedException {
    if (subscription == null) {
      throw new Refused("FAILED_PRECONDITION", "no subscription");
    }
    long deadline = System.nanoTime() + waitOf(r).toNanos();
    JsonArray taken = new JsonArray();
    String cursor = "";
    while (taken.size() < number(r, "count", 1)) {
      JobEvent e = events.poll(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
      if (e == null) {
        if (subscription.done().isCompletedExceptionally()) {
          join(subscription.done());
        }
        throw new Refused("DEADLINE_EXCEEDED", "fewer events than asked for");
      }
      taken.add(event(e));
      cursor = e.getCursor();
    }
    JsonObject out = new JsonObject();
    out.add("events", taken);
    out.addProperty("cursor", cursor);
    if (r.has("quiet_ms")) {
      JsonArray extra = new JsonArray();
      long quietEnd = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(number(r, "quiet_ms", 0));
      JobEvent e;
      while ((e = events.poll(Math.max(0, quietEnd - System.nanoTime()), TimeUnit.NANOSECONDS)) != null) {
        extra.add(event(e));
      }
      out.add("extra", extra);
    }
    return out;
  }

  void subscribeStop() {
    if (subscription != null) {
      subscription.close();
      subscription = null;
    }
  }

  JsonObject completeWithToken(JsonObject r) throws Refused {
    CompleteJobRequest request =
        CompleteJobRequest.newBuilder()
            .setJobId(text(r, "job"))
            .setLeaseToken(text(r, "token"))
            .setResult(com.google.protobuf.ByteString.copyFromUtf8(json(r, "result")))
            .build();
    // The client ships no generated stubs (clients/java/.../Rpc.java): the method by hand.
    MethodDescriptor<CompleteJobRequest, CompleteJobResponse> method =
        MethodDescriptor.<CompleteJobRequest, CompleteJobResponse>newBuilder()
            .setType(MethodDescriptor.MethodType.UNARY)
            .setFullMethodName("jobwire.v1.QueueService/CompleteJob")
            .setRequestMarshaller(ProtoUtils.marshaller(CompleteJobRequest.getDefaultInstance()))
            .setResponseMarshaller(ProtoUtils.marshaller(CompleteJobResponse.getDefaultInstance()))
            .build();
    try {
      ClientCalls.blockingUnaryCall(client.channel(), method, CallOptions.DEFAULT, request);
    } catch (StatusRuntimeException e) {
      throw refused(e);
    }
    return new JsonObject();
  }

  // ---- worker ------------------------------------------------------------------------------

  /** Every handler call per job, and the releases of blocked ones. */
  static final class Calls {
    private final Map<String, List<JsonObject>> byJob = new HashMap<>();
    private final Map<String, Semaphore> releases = new HashMap<>();

    synchronized int begin(String job, JsonObject call) {
      List<JsonObject> list = byJob.computeIfAbsent(job, k -> new ArrayList<>());
      list.add(call);
      return list.size();
    }

    synchronized void end(JsonObject call, String how) {
      call.addProperty("ended", how);
    }

    /** One permit frees one blocked call, now or later. */
    synchronized Semaphore releaseOf(String job) {
      return releases.computeIfAbsent(job, k -> new Semaphore(0));
    }

    /** Polls (every 10 ms) until the job's n-th call has started (or ended). */
    JsonObject waitFor(JsonObject r) throws Refused, InterruptedException {
      String job = text(r, "job");
      int n = (int) Math.max(1, number(r, "invocation", 1));
      boolean ended = text(r, "until").equals("ended");
      long deadline = System.nanoTime() + waitOf(r).toNanos();
      while (true) {
        synchronized (this) {
          List<JsonObject> list = byJob.getOrDefault(job, List.of());
          if (list.size() >= n && (!ended || !list.get(n - 1).get("ended").isJsonNull())) {
            JsonArray all = new JsonArray();
            list.forEach(c -> all.add(c.deepCopy()));
            JsonObject out = new JsonObject();
            out.add("invocations", all);
            return out;
          }
        }
        if (System.nanoTime() > deadline) {
          throw new Refused("DEADLINE_EXCEEDED", "call " + n + " of " + job + " not reached");
        }
        Thread.sleep(10);
      }
    }
  }

  static boolean blocks(JsonElement block, int invocation) {
    if (block == null || block.isJsonNull()) {
      return false;
    }
    if (block.isJsonPrimitive()) {
      return block.getAsBoolean();
    }
    for (JsonElement n : block.getAsJsonArray()) {
      if (n.getAsInt() == invocation) {
        return true;
      }
    }
    return false;
  }

  /** The conformance handler (README: "Worker ops"). */
  byte[] handle(Job job, Calls calls, boolean hold) throws Exception {
    JsonObject p = JsonParser.parseString(job.text()).getAsJsonObject();
    JsonObject call = new JsonObject();
    call.addProperty("attempt", job.attempt());
    call.addProperty("lost_deliveries", job.lostDeliveries());
    call.addProperty("token", job.leaseToken());
    JsonArray seen = null;
    if (job.session().isPresent()) {
      call.addProperty("session_state", job.session().get().getState());
      call.addProperty("session_version", job.session().get().getVersion());
      JsonElement state = JsonParser.parseString(job.session().get().getState());
      JsonElement list = state.isJsonObject() ? state.getAsJsonObject().get("seen") : null;
      seen = list != null && list.isJsonArray() ? list.getAsJsonArray() : new JsonArray();
    } else {
      call.add("session_state", JsonNull.INSTANCE);
      call.add("session_version", JsonNull.INSTANCE);
    }
    call.add("ended", JsonNull.INSTANCE);
    int invocation = calls.begin(job.id(), call);
    String ended = "returned";
    try {
      if (hold || blocks(p.get("block"), invocation)) {
        try {
          calls.releaseOf(job.id()).acquire();
        } catch (InterruptedException e) {
          ended = "cancelled"; // revoked, stream lost or stopping: the worker interrupted us
          throw e;
        }
      }
      if (invocation == 1 && p.has("rate_limited_ms")) {
        ended = "rate_limited";
        throw new RateLimitedException(Duration.ofMillis(p.get("rate_limited_ms").getAsLong()));
      }
      if (p.has("progress")) {
        ended = "failed";
        job.progress(GSON.toJson(p.get("progress"))).join();
        ended = "returned";
      }
      if (p.has("fail_attempts") && job.attempt() <= p.get("fail_attempts").getAsLong()) {
        ended = "failed";
        throw JobFailure.retry("failed attempt " + job.attempt());
      }
      if (p.has("permanent")) {
        ended = "failed";
        throw JobFailure.permanent(p.get("permanent").getAsString());
      }
      if (p.has("append")) {
        JsonArray next = seen == null ? new JsonArray() : seen.deepCopy();
        next.add(p.get("append"));
        JsonObject state = new JsonObject();
        state.add("seen", next);
        job.setSessionState(GSON.toJson(state));
      }
      JsonObject result = new JsonObject();
      result.addProperty("lang", lang);
      result.addProperty("job_id", job.id());
      result.addProperty("type", job.type());
      result.addProperty("attempt", job.attempt());
      result.addProperty("lost_deliveries", job.lostDeliveries());
      result.addProperty("header", job.headers().getOrDefault("x-conformance", ""));
      result.add("seen", seen == null ? JsonNull.INSTANCE : seen);
      if (p.has("calc")) {
        JsonObject calc = p.getAsJsonObject("calc");
        long n = calc.get("n").getAsLong();
        String text = calc.get("text").getAsString();
        result.addProperty("square", n * n);
        result.addProperty("reversed", new StringBuilder(text).reverse().toString()); // by code point
        result.addProperty("utf8_bytes", text.getBytes(StandardCharsets.UTF_8).length);
      }
      return GSON.toJson(result).getBytes(StandardCharsets.UTF_8);
    } finally {
      calls.end(call, ended);
    }
  }

  JsonObject workerStart(JsonObject r) throws Refused {
    if (worker != null) {
      throw new Refused("FAILED_PRECONDITION", "a worker runs already");
    }
    List<String> queues = new ArrayList<>();
    r.getAsJsonArray("queues").forEach(q -> queues.add(q.getAsString()));
    boolean hold = r.has("hold") && r.get("hold").getAsBoolean();
    Calls mine = new Calls();
    worker =
        Worker.builder(client)
            .queues(queues.toArray(String[]::new))
            .concurrency((int) number(r, "concurrency", 1))
            .workerId("conformance-java-" + System.getenv("CONFORMANCE_ACTOR"))
            .handle("conf", job -> handle(job, mine, hold))
            .build()
            .start();
    calls = mine;
    return new JsonObject();
  }

  JsonObject workerOp(String op, JsonObject r) throws Refused, InterruptedException {
    if (worker == null) {
      throw new Refused("FAILED_PRECONDITION", "no worker runs");
    }
    switch (op) {
      case "worker_stop":
        worker.close();
        worker = null;
        return new JsonObject();
      case "release":
        calls.releaseOf(text(r, "job")).release();
        return new JsonObject();
      default:
        return calls.waitFor(r);
    }
  }

  // ---- the loop ----------------------------------------------------------------------------

  JsonObject serve(JsonObject r) throws Refused, InterruptedException {
    String op = text(r, "op");
    switch (op) {
      case "add":
        return add(r);
      case "await":
        return awaitEnd(r);
      case "info":
        return info(r);
      case "cancel":
        join(client.cancel(text(r, "job")));
        return new JsonObject();
      case "session_create":
        return sessionCreate(r);
      case "session_get":
        return session(join(client.sessions().get(text(r, "session"))));
      case "session_update":
        return sessionUpdate(r);
      case "subscribe_start":
        return subscribeStart(r);
      case "subscribe_take":
        return subscribeTake(r);
      case "subscribe_stop":
        subscribeStop();
        return new JsonObject();
      case "complete_with_token":
        return completeWithToken(r);
      case "worker_start":
        return workerStart(r);
      case "worker_stop":
      case "release":
      case "wait_handler":
        return workerOp(op, r);
      default:
        JsonObject scheduled = schedules.serve(op, r);
        if (scheduled == null) {
          throw new Refused("UNIMPLEMENTED", "unknown op " + op);
        }
        return scheduled;
    }
  }

  public static void main(String[] argv) throws Exception {
    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    try (JobwireClient client = JobwireClient.builder().target(System.getenv("JOBWIRE_ADDR")).build()) {
      Driver driver = new Driver(client);
      BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
      String line;
      while ((line = in.readLine()) != null) {
        JsonObject request = JsonParser.parseString(line).getAsJsonObject();
        JsonObject reply;
        try {
          reply = driver.serve(request);
          reply.addProperty("ok", true);
        } catch (Refused e) {
          reply = new JsonObject();
          reply.addProperty("ok", false);
          reply.addProperty("code", e.code);
          reply.addProperty("message", e.getMessage());
        }
        reply.add("id", request.get("id"));
        out.println(GSON.toJson(reply));
      }
      // EOF: stop gracefully.
      driver.subscribeStop();
      if (driver.worker != null) {
        driver.worker.close();
      }
    }
    System.exit(0);
  }
}
