// One job: everything GetJobInfo tells (payload, result, last error and progress as text,
// pretty-printed, large values cut with a way to see all), attempts and lost deliveries, its
// session and the worker stream holding it, the timeline of its events, and retry / cancel /
// delete. Live: the timeline follows Subscribe on the job's queue from the job's creation (the
// events kept then replay first), and each event of this job refreshes the rest.

import { h, fill, link } from "../dom";
import { Code, isCode, mayAct, queues } from "../api";
import { count, time, ulidTime } from "../format";
import { follow, throttle } from "../live";
import { confirmed, fail, say, stateName, table, valueView, type Page } from "../page";
import { JobEventType, JobState, type JobEvent, type JobInfo } from "../gen/jobwire/v1/jobwire_pb";

/** Timeline entries kept on the page. */
const TIMELINE = 500;

export function jobPage(page: Page): void {
  const jobId = page.path[0] ?? "";
  // The queue's name: a job id names its shard (`orders~7/...`) when the queue is sharded.
  const queue = jobId.slice(0, jobId.lastIndexOf("/")).split("~", 1)[0] ?? "";
  const head = h("div");
  const body = h("div", null, h("p", null, "Loading…"));
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const timelineNote = h("p", { class: "note" });
  const events: JobEvent[] = [];
  fill(page.root, head, body, h("h2", null, "Timeline"), timelineNote, timeline);

  const act = (what: string, run: () => Promise<unknown>) => async () => {
    if (!confirmed(`${what} ${jobId}?`)) return;
    try {
      await run();
      say(`${what}: done.`);
      await refresh();
    } catch (error) {
      fail(error);
    }
  };

  const draw = (job: JobInfo) => {
    const buttons = [];
    // A token that may not act is offered no action (the server would refuse it).
    const actions = mayAct();
    if (actions && job.state === JobState.DEAD) {
      buttons.push(h("button", { type: "button", id: "job-retry", onclick: act("Retry", () => queues.retryJob({ jobId })) }, "Retry"));
    }
    if (actions && [JobState.WAITING, JobState.DELAYED, JobState.RETRYING, JobState.ACTIVE].includes(job.state)) {
      buttons.push(h("button", { type: "button", id: "job-cancel", onclick: act("Cancel", () => queues.cancelJob({ jobId })) }, "Cancel"));
    }
    if (actions && job.state !== JobState.ACTIVE) {
      buttons.push(h("button", { type: "button", id: "job-delete", onclick: act("Delete", () => queues.deleteJob({ jobId })) }, "Delete"));
    }
    fill(
      head,
      h("h1", { class: "name" }, jobId),
      h("p", null, h("span", { class: `badge state-${stateName(job.state)}`, id: "job-state" }, stateName(job.state)), " ", buttons),
    );
    const headers = Object.entries(job.headers).sort(([a], [b]) => a.localeCompare(b));
    fill(
      body,
      table(
        ["", ""],
        [
          ["queue", h("span", { class: "name" }, link("/queue/" + encodeURIComponent(job.queue), job.queue))],
          ["type", h("span", { class: "name" }, job.type)],
          ["priority", String(job.priority)],
          ["attempts", `${job.attempts} of ${job.maxAttempts}`],
          ["lost deliveries", count(job.lostDeliveries)],
          ["added", time(job.createdAt)],
          ["started", time(job.startedAt)],
          ["finished", time(job.finishedAt)],
          ["runs at", time(job.runAt)],
          ["session", job.sessionId ? h("span", { class: "name" }, link("/session/" + encodeURIComponent(job.sessionId), job.sessionId)) : "—"],
          ["held by", job.workerStream ? h("span", { class: "name" }, link("/workers", job.workerStream)) : "—"],
          ["idempotency key", h("span", { class: "name" }, job.idempotencyKey || "—")],
          ["headers", headers.length ? h("ul", { class: "plain" }, headers.map(([k, v]) => h("li", { class: "name" }, `${k}: ${v}`))) : "—"],
        ],
        "The job",
      ),
      job.lastError ? valueView("Last error", job.lastError) : null,
      valueView("Payload", job.payload),
      job.state === JobState.COMPLETED ? valueView("Result", job.result) : null,
      job.progress.length ? valueView("Progress", job.progress) : null,
    );
  };

  const refresh = async () => {
    try {
      const answer = await queues.getJobInfo({ jobId });
      if (answer.job) draw(answer.job);
    } catch (error) {
      if (isCode(error, Code.NotFound)) {
        fill(head, h("h1", { class: "name" }, jobId));
        fill(body, h("p", null, "This job does not exist, or is no longer retained."));
        return;
      }
      fail(error);
    }
  };

  const drawTimeline = () => {
    fill(
      timeline,
      events.map((e) =>
        h(
          "li",
          null,
          h("time", null, time(e.time)),
          " ",
          h("strong", null, JobEventType[e.type]?.toLowerCase() ?? "?"),
          e.attempt ? ` (attempt ${e.attempt})` : "",
          e.error ? h("span", { class: "error-text" }, " — ", e.error.split("\n", 1)[0] ?? "") : "",
          e.nextRunAt ? ` — runs at ${time(e.nextRunAt)}` : "",
        ),
      ),
    );
  };

  void refresh();
  const poke = throttle(refresh, 500, page.signal);
  // From the job's creation: the kept events replay first. When they are trimmed already, the
  // server refuses the cursor and the timeline starts now instead.
  const created = ulidTime(jobId);
  let cursor = created === undefined ? "" : `${Math.max(0, created - 1)}-0`;
  void follow(
    (signal) => queues.subscribe({ queue, cursor }, { signal }),
    (message) => {
      const e = message.event;
      if (!e) return;
      cursor = e.cursor;
      if (e.jobId !== jobId) return;
      events.push(e);
      if (events.length > TIMELINE) events.shift();
      drawTimeline();
      poke();
    },
    page.signal,
    (why) => {
      if (why.startsWith(Code[Code.OutOfRange])) {
        cursor = "";
        timelineNote.textContent = "Events before now are no longer kept; the timeline starts here.";
        return;
      }
      fail(why);
    },
  );
}
