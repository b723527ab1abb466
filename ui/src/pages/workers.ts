// Workers: every connected worker stream by instance, with its labels, queues, credit and the
// jobs it holds now. The worker list is what each instance publishes about once a second, so
// this page reads it again every two seconds while it is shown (workers make no queue events).
// The held jobs are the active jobs of the streams' queues, matched by JobInfo.worker_stream.

import { h, fill, link } from "../dom";
import { queues } from "../api";
import { ago } from "../format";
import { every } from "../live";
import { fail, table, type Page } from "../page";
import { JobState, type JobInfo, type WorkerInfo } from "../gen/jobwire/v1/jobwire_pb";

export function workersPage(page: Page): void {
  const body = h("div", null, h("p", null, "Loading…"));
  fill(page.root, h("h1", null, "Workers"), body);

  const refresh = async () => {
    try {
      const workers = (await queues.listWorkers({})).workers;
      const served = [...new Set(workers.flatMap((w) => w.queues))];
      const held = new Map<string, JobInfo[]>();
      const pages = await Promise.all(
        served.map((queue) => queues.listJobs({ queue, state: JobState.ACTIVE, pageSize: 1000 })),
      );
      for (const job of pages.flatMap((p) => p.jobs)) {
        const list = held.get(job.workerStream) ?? [];
        list.push(job);
        held.set(job.workerStream, list);
      }
      draw(workers, held);
    } catch (error) {
      fail(error);
    }
  };

  const draw = (workers: WorkerInfo[], held: Map<string, JobInfo[]>) => {
    if (workers.length === 0) {
      fill(body, h("p", null, "No worker stream is connected."));
      return;
    }
    const byInstance = new Map<string, WorkerInfo[]>();
    for (const w of workers) byInstance.set(w.instance, [...(byInstance.get(w.instance) ?? []), w]);
    fill(
      body,
      [...byInstance].map(([instance, streams]) =>
        h(
          "section",
          null,
          h("h2", { class: "name" }, `Instance ${instance}`),
          table(
            ["stream", "worker", "labels", "queues", "credit", "holds", "connected", "jobs held"],
            streams.map((w) => {
              const jobs = held.get(w.streamId) ?? [];
              return [
                h("span", { class: "name" }, w.streamId),
                h("span", { class: "name" }, w.workerId || "—"),
                h("span", { class: "name" }, Object.entries(w.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "—"),
                h("span", { class: "name" }, w.queues.map((q, i) => [i ? ", " : "", link("/queue/" + encodeURIComponent(q), q)])),
                String(w.maxInFlight),
                String(w.inFlight),
                ago(w.connectedAt),
                jobs.length
                  ? h("ul", { class: "plain" }, jobs.slice(0, 20).map((j) => h("li", { class: "name" }, link("/job/" + encodeURIComponent(j.id), j.id))), jobs.length > 20 ? h("li", null, `and ${jobs.length - 20} more`) : null)
                  : "—",
              ];
            }),
          ),
        ),
      ),
    );
  };

  every(refresh, 2000, page.signal);
}
