// Sessions: a queue's sessions a page at a time, and one session: its state (pretty JSON), its
// counts, and its jobs by state in their order (ListJobs with the session filter). Jobs still
// waiting inside the session are counted (pending) but not listed: no listing holds them yet.

import { h, fill, link } from "../dom";
import { queues, sessions } from "../api";
import { ago, count, seconds, age } from "../format";
import { follow, throttle } from "../live";
import { fail, table, valueView, type Page } from "../page";
import { JobState } from "../gen/jobwire/v1/jobwire_pb";

export function sessionsPage(page: Page): void {
  const queue = page.path[0] ?? "";
  const token = page.params.get("page") ?? "";
  const body = h("div", null, h("p", null, "Loading…"));
  fill(page.root, h("h1", { class: "name" }, `Sessions of ${queue}`), body);
  void (async () => {
    try {
      const answer = await sessions.listSessions({ queue, pageSize: 100, pageToken: token });
      fill(
        body,
        answer.sessions.length === 0
          ? h("p", null, "No session.")
          : table(
              ["session", "version", "running", "queued", "pending", "updated", "ttl"],
              answer.sessions.map((s) => [
                h("span", { class: "name" }, link("/session/" + encodeURIComponent(s.id), s.id)),
                count(s.version),
                count(s.runningJobs),
                count(s.queuedJobs),
                count(s.pendingJobs),
                ago(s.updatedAt),
                age(seconds(s.ttl)),
              ]),
              `Sessions of ${queue}`,
            ),
        answer.nextPageToken
          ? h("a", { class: "button", href: `#/sessions/${encodeURIComponent(queue)}?page=${encodeURIComponent(answer.nextPageToken)}` }, "Next →")
          : null,
      );
    } catch (error) {
      fail(error);
    }
  })();
}

const SESSION_STATES = [
  { state: JobState.ACTIVE, name: "running" },
  { state: JobState.WAITING, name: "waiting" },
  { state: JobState.DELAYED, name: "delayed" },
  { state: JobState.COMPLETED, name: "completed" },
  { state: JobState.DEAD, name: "dead" },
];

export function sessionPage(page: Page): void {
  const sessionId = page.path[0] ?? "";
  const queue = sessionId.slice(0, sessionId.indexOf("/"));
  const body = h("div", null, h("p", null, "Loading…"));
  fill(page.root, h("h1", { class: "name" }, `Session ${sessionId}`), body);

  const refresh = async () => {
    try {
      const [answer, ...lists] = await Promise.all([
        sessions.getSession({ sessionId }),
        ...SESSION_STATES.map((s) =>
          queues.listJobs({ queue, state: s.state, pageSize: 100, filter: { sessionId } }),
        ),
      ]);
      const s = answer.session;
      if (!s) return;
      fill(
        body,
        h("p", null, link("/queue/" + encodeURIComponent(queue), `Queue ${queue}`)),
        table(
          ["version", "running", "queued", "pending inside", "max at once", "created", "updated", "ttl"],
          [[count(s.version), count(s.runningJobs), count(s.queuedJobs), count(s.pendingJobs), String(s.maxConcurrency), ago(s.createdAt), ago(s.updatedAt), age(seconds(s.ttl))]],
          "The session",
        ),
        valueView("State", s.state),
        h("h2", null, "Jobs"),
        SESSION_STATES.map((st, i) => {
          const jobs = lists[i]?.jobs ?? [];
          return jobs.length === 0
            ? null
            : h("section", null, h("h3", null, `${st.name} (${jobs.length}${lists[i]?.nextPageToken ? "+" : ""})`),
                h("ol", { class: "plain" }, jobs.map((j) => h("li", { class: "name" }, link("/job/" + encodeURIComponent(j.id), j.id), ` ${j.type}`))));
        }),
        Number(s.pendingJobs) > 0 ? h("p", { class: "note" }, `${count(s.pendingJobs)} job(s) wait inside the session, in add order, not listed here.`) : null,
      );
    } catch (error) {
      fail(error);
    }
  };
  void refresh();
  const poke = throttle(refresh, 1000, page.signal);
  void follow((signal) => queues.subscribe({ queue }, { signal }), poke, page.signal, (why) => fail(why));
}
