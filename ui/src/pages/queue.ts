// A queue: its counts, its settings (`settings.ts`), its jobs by state a page at a time, filters
// (type, id, error text, time), bulk retry / cancel / delete on a selection or on everything
// matching the filter, and pause / resume. Live: it follows Subscribe on the queue and refreshes
// the counts and the page shown at most once a second. The route's query holds the state and
// the filter, so a filtered view can be linked and the back button works.

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { h, fill, link } from "../dom";
import { mayAct, queues } from "../api";
import { ago, count, short, time } from "../format";
import { follow, throttle } from "../live";
import { LISTINGS, confirmed, fail, say, stateName, table, type Page } from "../page";
import { settingsSection } from "./settings";
import {
  JobFilterSchema,
  JobSelectionSchema,
  JobState,
  type JobFilter,
  type JobInfo,
  type BulkOutcome,
  type QueueStats,
} from "../gen/jobwire/v1/jobwire_pb";

const PAGE_SIZE = 50;

/** The filter fields and the query parameters that hold them. */
const FIELDS = [
  { key: "type", label: "Type", placeholder: "exact handler name" },
  { key: "id", label: "Id contains", placeholder: "part of the job id" },
  { key: "error", label: "Error contains", placeholder: "text of the last error" },
  { key: "group", label: "Error group", placeholder: "as in dead letters" },
  { key: "after", label: "Added after", placeholder: "", type: "datetime-local" },
  { key: "before", label: "Added before", placeholder: "", type: "datetime-local" },
] as const;

export function filterOf(params: URLSearchParams): JobFilter | undefined {
  const at = (key: string) => {
    const value = params.get(key);
    return value ? timestampFromDate(new Date(value)) : undefined;
  };
  const filter = create(JobFilterSchema, {
    type: params.get("type") ?? "",
    idContains: params.get("id") ?? "",
    errorContains: params.get("error") ?? "",
    errorGroup: params.get("group") ?? "",
    createdAfter: at("after"),
    createdBefore: at("before"),
    sessionId: params.get("session") ?? "",
  });
  const empty = FIELDS.every((f) => !params.get(f.key)) && !params.get("session");
  return empty ? undefined : filter;
}

function counts(stats: QueueStats): Record<string, bigint> {
  return {
    waiting: stats.waiting,
    delayed: stats.delayed,
    active: stats.active,
    completed: stats.completed,
    dead: stats.dead,
    cancelled: stats.cancelled,
  };
}

function outcomeText(what: string, o: BulkOutcome | undefined): string {
  if (!o) return `${what}: no answer`;
  return `${what}: ${count(o.applied)} done, ${count(o.skipped)} skipped${o.more ? " (more remain: run it again)" : ""}.`;
}

export function queuePage(page: Page): void {
  const queue = page.path[0] ?? "";
  const state = LISTINGS.find((l) => l.name === page.params.get("state"))?.state ?? JobState.WAITING;
  const filter = filterOf(page.params);
  const route = (params: URLSearchParams) => "/queue/" + encodeURIComponent(queue) + "?" + params.toString();

  const header = h("div", { class: "queue-head" });
  const tabs = h("nav", { class: "tabs", "aria-label": "Job states" });
  const list = h("div", null, h("p", null, "Loading…"));
  const pager = h("div", { class: "pager" });
  const selected = new Set<string>();
  let jobs: JobInfo[] = [];
  let tokens: string[] = [page.params.get("page") ?? ""];
  let next = "";

  const form = h(
    "form",
    {
      class: "filter",
      role: "search",
      onsubmit: (event: Event) => {
        event.preventDefault();
        const data = new FormData(form);
        const params = new URLSearchParams({ state: stateName(state) });
        for (const f of FIELDS) {
          const value = String(data.get(f.key) ?? "").trim();
          if (value) params.set(f.key, value);
        }
        const session = page.params.get("session");
        if (session) params.set("session", session);
        window.location.hash = route(params);
      },
    },
    FIELDS.map((f) =>
      h(
        "label",
        null,
        f.label,
        h("input", {
          name: f.key,
          type: "type" in f ? f.type : "text",
          placeholder: f.placeholder,
          value: page.params.get(f.key) ?? "",
          maxlength: 256,
        }),
      ),
    ),
    h("div", { class: "buttons" },
      h("button", { type: "submit" }, "Filter"),
      h("a", { href: "#" + route(new URLSearchParams({ state: stateName(state) })), class: "button" }, "Clear"),
    ),
  );

  const bulk = (what: "retry" | "cancel" | "delete", all: boolean) => async () => {
    const selection = create(JobSelectionSchema, {
      selection: all
        ? { case: "query", value: { queue, state, filter } }
        : { case: "ids", value: { jobIds: [...selected] } },
    });
    const which = all ? `every ${stateName(state)} job${filter ? " matching the filter" : ""}` : `${selected.size} selected job(s)`;
    if (!confirmed(`${what} ${which} of ${queue}?`)) return;
    try {
      const call = { retry: queues.retryJobs, cancel: queues.cancelJobs, delete: queues.deleteJobs }[what];
      const answer = await call({ selection });
      say(outcomeText(`${what} ${which}`, answer.outcome));
      selected.clear();
      await refresh();
    } catch (error) {
      fail(error);
    }
  };

  const actions = h("div", { class: "bulk", role: "group", "aria-label": "Bulk actions" });
  const drawActions = () => {
    const none = selected.size === 0;
    const buttons: HTMLButtonElement[] = [];
    // A token that may not act is offered no action (the server would refuse it).
    const add = (label: string, run: () => Promise<void>, disabled: boolean, id: string) => {
      if (mayAct()) buttons.push(h("button", { type: "button", onclick: run, disabled, id }, label));
    };
    if (state === JobState.DEAD) {
      add(`Retry selected (${selected.size})`, bulk("retry", false), none, "retry-selected");
      add(filter ? "Retry all matching" : "Retry all dead", bulk("retry", true), false, "retry-all");
    }
    if ([JobState.WAITING, JobState.DELAYED, JobState.ACTIVE].includes(state)) {
      add(`Cancel selected (${selected.size})`, bulk("cancel", false), none, "cancel-selected");
      add(filter ? "Cancel all matching" : "Cancel all", bulk("cancel", true), false, "cancel-all");
    }
    if (state !== JobState.ACTIVE) {
      add(`Delete selected (${selected.size})`, bulk("delete", false), none, "delete-selected");
      add(filter ? "Delete all matching" : "Delete all", bulk("delete", true), false, "delete-all");
    }
    fill(actions, buttons);
  };

  const drawList = () => {
    if (jobs.length === 0) {
      fill(list, h("p", null, filter ? "No job on this page matches the filter." : `No ${stateName(state)} job.`));
      drawActions();
      return;
    }
    const all = h("input", {
      type: "checkbox",
      "aria-label": "Select every job of this page",
      onchange: () => {
        for (const j of jobs) (all.checked ? selected.add(j.id) : selected.delete(j.id));
        drawList();
      },
    });
    all.checked = jobs.every((j) => selected.has(j.id));
    fill(
      list,
      table(
        [ "", "job", "type", "attempts", "added", state === JobState.DEAD || state === JobState.COMPLETED ? "finished" : "runs", "last error" ],
        jobs.map((job) => {
          const box = h("input", {
            type: "checkbox",
            "aria-label": `Select ${job.id}`,
            onchange: () => {
              (box.checked ? selected.add(job.id) : selected.delete(job.id));
              drawActions();
            },
          });
          box.checked = selected.has(job.id);
          return [
            box,
            h("span", { class: "name" }, link("/job/" + encodeURIComponent(job.id), job.id.slice(job.id.lastIndexOf("/") + 1))),
            h("span", { class: "name" }, job.type),
            `${job.attempts}/${job.maxAttempts}`,
            ago(job.createdAt),
            state === JobState.DEAD || state === JobState.COMPLETED ? time(job.finishedAt) : job.runAt ? time(job.runAt) : "—",
            h("span", { class: "error-text" }, short(job.lastError)),
          ];
        }),
        `${stateName(state)} jobs of ${queue}`,
      ),
      h("p", { class: "select-all" }, all, " select this page"),
    );
    drawActions();
  };

  const drawPager = () => {
    const params = (token: string) => {
      const p = new URLSearchParams(page.params);
      if (token) p.set("page", token);
      else p.delete("page");
      return p;
    };
    fill(
      pager,
      tokens.length > 1 ? h("a", { class: "button", href: "#" + route(params(tokens[tokens.length - 2] ?? "")), onclick: () => { tokens = tokens.slice(0, -1); } }, "← Previous") : null,
      next ? h("a", { class: "button", href: "#" + route(params(next)), id: "next-page" }, "Next →") : null,
    );
  };

  const drawHeader = (stats: QueueStats) => {
    const byState = counts(stats);
    fill(
      header,
      h("h1", { class: "name" }, queue),
      h(
        "p",
        null,
        stats.paused ? h("span", { class: "badge paused", id: "paused-badge" }, "paused") : h("span", { class: "badge" }, "running"),
        " ",
        mayAct()
          ? h("button", { type: "button", id: "pause-toggle", onclick: () => togglePause(stats.paused) }, stats.paused ? "Resume" : "Pause")
          : null,
        " ",
        link("/dead/" + encodeURIComponent(queue), "Dead letters by error"),
        " · ",
        link("/sessions/" + encodeURIComponent(queue), `Sessions (${count(stats.sessions)})`),
      ),
      stats.concurrencyLimit !== undefined
        ? h(
            "p",
            { id: "concurrency" },
            `At most ${count(stats.concurrencyLimit)} active at once (the concurrency setting): `,
            h("strong", { id: "held-back" }, count(stats.heldByConcurrency)),
            " ready jobs held back by it now.",
          )
        : null,
    );
    fill(
      tabs,
      LISTINGS.map((l) =>
        h(
          "a",
          {
            href: "#" + route(new URLSearchParams({ state: l.name })),
            "aria-current": l.state === state ? "page" : null,
            id: `tab-${l.name}`,
          },
          `${l.name} `,
          h("span", { class: "count", "data-state": l.name }, count(byState[l.name] ?? 0n)),
        ),
      ),
    );
  };

  const togglePause = async (paused: boolean) => {
    try {
      if (paused) await queues.resumeQueue({ queue });
      else await queues.pauseQueue({ queue });
      say(paused ? `${queue} resumed.` : `${queue} paused: it delivers nothing until resumed.`);
      await refresh();
    } catch (error) {
      fail(error);
    }
  };

  const refresh = async () => {
    try {
      const [stats, listing] = await Promise.all([
        queues.stats({ queue }),
        queues.listJobs({ queue, state, pageSize: PAGE_SIZE, pageToken: tokens[tokens.length - 1] ?? "", filter }),
      ]);
      if (stats.stats) drawHeader(stats.stats);
      jobs = listing.jobs;
      next = listing.nextPageToken;
      drawList();
      drawPager();
    } catch (error) {
      fail(error);
    }
  };

  fill(page.root, header, settingsSection(queue, page.signal, () => void refresh()), tabs, form, actions, list, pager);
  void refresh();
  const poke = throttle(refresh, 1000, page.signal);
  void follow((signal) => queues.subscribe({ queue }, { signal }), poke, page.signal, (why) => fail(why));
}
