// Sessions: a queue's sessions a page at a time, and one session: its state (pretty JSON), its
// counts, and its line of jobs in order: first those it has released (running, then waiting or
// delayed in the queue: ListJobs with the session filter, by id, which is add order), then those
// still pending inside it, next to be released first (ListSessionJobs), marked "pending"; then
// its finished jobs by state.

import { h, fill, link } from "../dom";
import { queues, sessions } from "../api";
import { ago, count, seconds, age } from "../format";
import { follow, throttle } from "../live";
import { fail, stateName, table, valueView, type Page } from "../page";
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

// The listings of a session's released jobs, in the order its line shows them.
const RELEASED = [JobState.ACTIVE, JobState.WAITING, JobState.DELAYED];
// The listings of its finished jobs, shown by state after the line.
const FINISHED = [
  { state: JobState.COMPLETED, name: "completed" },
  { state: JobState.DEAD, name: "dead" },
];

// One job of the line: a link to it, its type, and where it is (a job state, or "pending").
function lineItem(id: string, type: string, where: string): HTMLElement {
  return h("li", { class: "name" }, link("/job/" + encodeURIComponent(id), id), ` ${type} `,
    h("span", { class: `badge state-${where}` }, where));
}

export function sessionPage(page: Page): void {
  const sessionId = page.path[0] ?? "";
  const queue = sessionId.slice(0, sessionId.indexOf("/"));
  const body = h("div", null, h("p", null, "Loading…"));
  fill(page.root, h("h1", { class: "name" }, `Session ${sessionId}`), body);

  const refresh = async () => {
    try {
      const [answer, line, ...lists] = await Promise.all([
        sessions.getSession({ sessionId }),
        sessions.listSessionJobs({ sessionId, pageSize: 100 }),
        ...[...RELEASED, ...FINISHED.map((f) => f.state)].map((state) =>
          queues.listJobs({ queue, state, pageSize: 100, filter: { sessionId } }),
        ),
      ]);
      const s = answer.session;
      if (!s) return;
      const released = lists.slice(0, RELEASED.length).flatMap((l) => l.jobs);
      released.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const finished = lists.slice(RELEASED.length);
      const more = Number(s.pendingJobs) - line.pendingJobs.length;
      fill(
        body,
        h("p", null, link("/queue/" + encodeURIComponent(queue), `Queue ${queue}`)),
        table(
          ["version", "running", "queued", "pending inside", "max at once", "created", "updated", "ttl"],
          [[count(s.version), count(s.runningJobs), count(s.queuedJobs), count(s.pendingJobs), String(s.maxConcurrency), ago(s.createdAt), ago(s.updatedAt), age(seconds(s.ttl))]],
          "The session",
        ),
        valueView("State", s.state),
        h("h2", null, "Jobs in order"),
        released.length + line.pendingJobs.length === 0
          ? h("p", null, "No job running or waiting.")
          : h("ol", { class: "plain", id: "session-line" },
              released.map((j) => lineItem(j.id, j.type, stateName(j.state))),
              line.pendingJobs.map((j) => lineItem(j.id, j.type, "pending"))),
        line.nextPageToken && more > 0 ? h("p", { class: "note" }, `and ${count(more)} more pending after these.`) : null,
        finished.map((list, i) => {
          const jobs = list.jobs;
          return jobs.length === 0
            ? null
            : h("section", null, h("h3", null, `${FINISHED[i]?.name ?? ""} (${jobs.length}${list.nextPageToken ? "+" : ""})`),
                h("ol", { class: "plain" }, jobs.map((j) => h("li", { class: "name" }, link("/job/" + encodeURIComponent(j.id), j.id), ` ${j.type}`))));
        }),
      );
    } catch (error) {
      fail(error);
    }
  };
  void refresh();
  const poke = throttle(refresh, 1000, page.signal);
  void follow((signal) => queues.subscribe({ queue }, { signal }), poke, page.signal, (why) => fail(why));
}
