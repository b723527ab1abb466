package io.jobwire.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Status;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import jobwire.v1.Jobwire.JobInfo;
import jobwire.v1.Jobwire.Session;
import org.junit.jupiter.api.Test;

/** Sessions: the calls, the state a handler reads and writes, and both version checks. */
class SessionTest extends Fixture {
  private static final Duration WAIT = Duration.ofSeconds(15);
  private static final Pattern TURNS = Pattern.compile("\"turns\"\\s*:\\s*(\\d+)");

  private static int turns(String state) {
    Matcher m = TURNS.matcher(state);
    assertTrue(m.find(), state);
    return Integer.parseInt(m.group(1));
  }

  @Test
  void createGetUpdateListDelete() {
    String q = queue("sess");
    Sessions sessions = client.sessions();
    Session s =
        Blocking.get(
            sessions.create(
                NewSession.in(q).name("user-7").state("{\"turns\":0}").ttl(Duration.ofHours(1)).maxConcurrency(2)));
    assertEquals(q + "/user-7", s.getId());
    assertEquals(2, s.getMaxConcurrency());
    assertThrows(
        AlreadyExistsException.class, () -> Blocking.get(sessions.create(NewSession.in(q).name("user-7"))));
    long v2 = Blocking.get(sessions.replaceState(s.getId(), "{\"turns\":1}", s.getVersion()));
    assertEquals(s.getVersion() + 1, v2);
    long v3 = Blocking.get(sessions.mergePatch(s.getId(), "{\"name\":\"ada\"}"));
    Session read = Blocking.get(sessions.get(s.getId()));
    assertEquals(v3, read.getVersion());
    assertEquals(1, turns(read.getState()));
    assertTrue(read.getState().contains("ada"), read.getState());
    Session other = Blocking.get(sessions.create(NewSession.in(q)));
    Page<Session> page = Blocking.get(sessions.list(q, 100, ""));
    assertEquals(
        List.of(other.getId(), s.getId()).stream().sorted().toList(),
        page.items().stream().map(Session::getId).sorted().toList());
    Blocking.get(sessions.delete(other.getId()));
    assertThrows(NotFoundException.class, () -> Blocking.get(sessions.get(other.getId())));
  }

  @Test
  void listJobsShowsThePendingJobsInReleaseOrder() {
    String q = queue("line");
    Sessions sessions = client.sessions();
    Session s = Blocking.get(sessions.create(NewSession.in(q)));
    List<String> added = new java.util.ArrayList<>();
    for (int i = 0; i < 4; i++) {
      added.add(Blocking.get(client.add(NewJob.of(q, "step").session(s.getId()))).id());
    }
    List<String> pending = new java.util.ArrayList<>();
    String token = "";
    do {
      Page<JobInfo> page = Blocking.get(sessions.listJobs(s.getId(), 2, token));
      page.items().forEach(j -> pending.add(j.getId()));
      token = page.nextPageToken();
    } while (!token.isEmpty());
    // The first was released to the queue; the rest wait inside the session, in add order.
    assertEquals(added.subList(1, 4), pending);
    assertThrows(NotFoundException.class, () -> Blocking.get(sessions.listJobs(q + "/nobody", 0, "")));
  }

  @Test
  void anUpdateWithAStaleVersionIsAConflictAndWritesNothing() {
    Sessions sessions = client.sessions();
    Session s = Blocking.get(sessions.create(NewSession.in(queue("cas")).state("{\"turns\":0}")));
    Blocking.get(sessions.replaceState(s.getId(), "{\"turns\":1}", s.getVersion()));
    SessionConflictException conflict =
        assertThrows(
            SessionConflictException.class,
            () -> Blocking.get(sessions.replaceState(s.getId(), "{\"turns\":9}", s.getVersion())));
    assertEquals(Status.Code.FAILED_PRECONDITION, conflict.code());
    assertThrows(
        SessionConflictException.class,
        () -> Blocking.get(sessions.mergePatch(s.getId(), "{\"turns\":9}", s.getVersion())));
    assertEquals(1, turns(Blocking.get(sessions.get(s.getId())).getState()));
  }

  @Test
  void handlersReadTheStateAndWriteTheNextOneWithTheCompletion() {
    String q = queue("turns");
    Session s = Blocking.get(client.sessions().create(NewSession.in(q).state("{\"turns\":0}")));
    Worker worker =
        Worker.builder(client)
            .queues(q)
            .concurrency(4)
            .handle(
                "reply",
                job -> {
                  var snapshot = job.session().orElseThrow();
                  int next = turns(snapshot.getState()) + 1;
                  job.setSessionState("{\"turns\":" + next + "}");
                  return utf8("turn " + next + " at version " + snapshot.getVersion());
                })
            .build()
            .start();
    try (worker) {
      for (int i = 1; i <= 3; i++) {
        byte[] r = Blocking.get(client.run(NewJob.inSession(s.getId(), "reply"), WAIT));
        assertTrue(text(r).startsWith("turn " + i + " "), text(r));
      }
      Session after = Blocking.get(client.sessions().get(s.getId()));
      assertEquals(3, turns(after.getState()));
      assertEquals(s.getVersion() + 3, after.getVersion());
    }
  }

  @Test
  void aCompletionAgainstAChangedSessionIsRetriedWithTheFreshState() throws Exception {
    String q = queue("aborted");
    Sessions sessions = client.sessions();
    Session s = Blocking.get(sessions.create(NewSession.in(q).state("{\"turns\":0}")));
    CountDownLatch holding = new CountDownLatch(1);
    CountDownLatch release = new CountDownLatch(1);
    AtomicInteger calls = new AtomicInteger();
    Worker worker =
        Worker.builder(client)
            .queues(q)
            .handle(
                "bump",
                job -> {
                  int seen = turns(job.session().orElseThrow().getState());
                  if (calls.incrementAndGet() == 1) {
                    holding.countDown();
                    release.await();
                  }
                  job.setSessionState("{\"turns\":" + (seen + 1) + "}");
                  return utf8("saw " + seen);
                })
            .build()
            .start();
    try (worker) {
      AddResult added =
          Blocking.get(client.add(NewJob.of(q, "bump").session(s.getId()).fixedBackoff(Duration.ofMillis(10))));
      assertTrue(holding.await(15, TimeUnit.SECONDS));
      // Someone else writes the session while the job runs: its completion must not win.
      Blocking.get(sessions.replaceState(s.getId(), "{\"turns\":10}"));
      release.countDown();
      assertEquals("saw 10", text(Blocking.get(client.awaitResult(added.id(), WAIT))));
      assertEquals(11, turns(Blocking.get(sessions.get(s.getId())).getState()));
      JobInfo info = Blocking.get(client.info(added.id()));
      assertEquals(2, info.getAttempts());
      assertTrue(info.getLastError().contains("session changed"), info.getLastError());
    }
  }
}
