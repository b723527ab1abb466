// Schedules: every schedule of every queue the token may see, with its timetable (cron and time
// zone, or interval; start, end, jitter), its next fires, its last fire and job, how many jobs it
// added or skipped, paused or not; and, for a token that may act, pause / resume, trigger now
// and delete. ListSchedules names one queue, so the page lists the queues (ListQueues) and reads
// each one's schedules, a few queues at a time.
//
// Live: it follows SubscribeQueues over the queues that hold schedules, so a fire (a job added)
// shows within a second, and reads everything again every 5 s, since a pause, an upsert or a
// delete by someone else makes no queue event. Nothing runs once the page is left.

import { h, fill, link, type Child } from "../dom";
import { mayAct, queues, schedules } from "../api";
import { count, short, span, time, toDate, until } from "../format";
import { every, followQueues, throttle } from "../live";
import { confirmed, fail, say, table, type Page } from "../page";
import type { Schedule, ScheduleDefinition } from "../gen/jobwire/v1/schedules_pb";

/** Queues whose schedules are read at once. */
const PARALLEL = 8;
/** Schedules read per call (ListSchedules takes up to 1,000). */
const PAGE_SIZE = 1000;

/** Every schedule of `queue`, over its pages. */
async function schedulesOf(queue: string, signal: AbortSignal): Promise<Schedule[]> {
  const all: Schedule[] = [];
  let pageToken = "";
  do {
    const answer = await schedules.listSchedules({ queue, pageSize: PAGE_SIZE, pageToken }, { signal });
    all.push(...answer.schedules);
    pageToken = answer.nextPageToken;
  } while (pageToken && !signal.aborted);
  return all;
}

/** Runs `task` over `items`, at most `parallel` at a time, keeping the order of `items`. */
async function mapLimited<T, R>(items: T[], parallel: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, items.length) }, lane));
  return results;
}

/** A schedule's timetable in one line: `cron 0 30 2 * * * (Europe/Berlin)` or `every 30s`. */
export function timetable(d: ScheduleDefinition | undefined): string {
  if (!d) return "—";
  const parts: string[] = [];
  if (d.timing.case === "cron") parts.push(`cron ${d.timing.value} (${d.timeZone || "UTC"})`);
  else if (d.timing.case === "every") parts.push(`every ${span(d.timing.value)}`);
  if (d.start) parts.push(`from ${time(d.start)}`);
  if (d.end) parts.push(`until ${time(d.end)}`);
  if (d.jitter) parts.push(`jitter ${span(d.jitter)}`);
  return parts.join(", ");
}

/** The next fire, how soon, and the due times after it (`upcoming_fires`). */
function nextFires(s: Schedule, now: number): Child {
  if (!s.nextFireAt) return s.paused ? "paused" : "none left";
  const next = toDate(s.nextFireAt)?.getTime();
  const later = s.upcomingFires.filter((t) => toDate(t)?.getTime() !== next);
  return [
    time(s.nextFireAt),
    h("br"),
    h("small", null, until(s.nextFireAt, now)),
    later.length ? h("ol", { class: "plain later", "aria-label": "then" }, later.map((t) => h("li", null, h("small", null, time(t))))) : null,
  ];
}

/** The `data-schedule` value of a schedule's row and buttons: `queue/name` (neither holds `/`). */
function key(d: ScheduleDefinition): string {
  return `${d.queue}/${d.name}`;
}

export function schedulesPage(page: Page): void {
  const body = h("div", null, h("p", null, "Loading…"));
  fill(
    page.root,
    h("h1", null, "Schedules"),
    h("p", { class: "note" }, "Jobs the servers add on a timetable. Set one with ", h("code", null, "jobwire schedule set"), "."),
    body,
  );

  const act = (what: "pause" | "resume" | "trigger" | "delete", d: ScheduleDefinition) => async () => {
    const which = `${d.name} of ${d.queue}`;
    if (what === "delete" && !confirmed(`Delete the schedule ${which}? Jobs it added stay.`)) return;
    try {
      const target = { queue: d.queue, name: d.name };
      if (what === "pause") await schedules.pauseSchedule(target);
      if (what === "resume") await schedules.resumeSchedule(target);
      if (what === "delete") await schedules.deleteSchedule(target);
      if (what === "trigger") {
        const { jobId } = await schedules.triggerSchedule(target);
        say(`${which} triggered: job ${jobId} added.`);
      } else {
        say({ pause: `${which} paused.`, resume: `${which} resumed.`, delete: `${which} deleted.` }[what]);
      }
      await refresh();
    } catch (error) {
      fail(error);
    }
  };

  const actions = (s: Schedule, d: ScheduleDefinition) => {
    // A token that may not act is offered no action (the server would refuse it).
    if (!mayAct()) return null;
    const button = (what: "pause" | "resume" | "trigger" | "delete", label: string) =>
      h("button", { type: "button", "data-action": what, "data-schedule": key(d), onclick: act(what, d) }, label);
    return [
      s.paused ? button("resume", "Resume") : button("pause", "Pause"),
      button("trigger", "Trigger now"),
      button("delete", "Delete"),
    ];
  };

  const draw = (listed: Schedule[]) => {
    if (listed.length === 0) {
      fill(body, h("p", { id: "no-schedules" }, "No schedule in any queue."));
      return;
    }
    const now = Date.now();
    fill(
      body,
      table(
        ["schedule", "job type", "timetable", "next fire", "last fire", "jobs added", "state", mayAct() ? "actions" : ""],
        listed.map((s) => {
          const d = s.definition;
          if (!d) return ["—"];
          return [
            [
              h("strong", { class: "name", "data-schedule": key(d) }, d.name),
              h("br"),
              h("small", { class: "name" }, "in ", link("/queue/" + encodeURIComponent(d.queue), d.queue)),
            ],
            h("span", { class: "name" }, d.template?.type ?? "—"),
            h("span", { class: "spec" }, short(timetable(d), 200)),
            nextFires(s, now),
            s.lastJobId
              ? [time(s.lastFireAt), h("br"), h("small", null, "job ", link("/job/" + encodeURIComponent(s.lastJobId), s.lastJobId.slice(s.lastJobId.lastIndexOf("/") + 1)))]
              : "—",
            [count(s.fires), s.skipped > 0n ? h("small", null, ` (${count(s.skipped)} skipped)`) : null],
            s.paused ? h("span", { class: "badge paused" }, "paused") : "running",
            actions(s, d),
          ];
        }),
        "Every schedule, live",
      ),
    );
  };

  const refresh = async () => {
    try {
      const names = (await queues.listQueues({}, { signal: page.signal })).queues.map((q) => q.queue);
      const perQueue = await mapLimited(names, PARALLEL, (queue) => schedulesOf(queue, page.signal));
      if (page.signal.aborted) return;
      const listed = perQueue.flat();
      listed.sort((a, b) => (a.definition ? key(a.definition) : "").localeCompare(b.definition ? key(b.definition) : ""));
      draw(listed);
      resubscribe(names.filter((_, i) => (perQueue[i]?.length ?? 0) > 0));
    } catch (error) {
      if (!page.signal.aborted) fail(error);
    }
  };

  const poke = throttle(refresh, 1000, page.signal);
  /** Follows the queues that hold schedules now, so each fire refreshes the page. */
  const resubscribe = followQueues(poke, page.signal, (why) => fail(why));
  every(refresh, 5000, page.signal);
}
