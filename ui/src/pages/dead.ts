// Dead letters of a queue, grouped by error (ListDeadJobGroups), each group with its count,
// newest job and example error, and "retry all of this group" (RetryJobs on a query of the
// dead jobs whose error_group is the group's). Live: refreshed on the queue's events.

import { h, fill, link } from "../dom";
import { queues } from "../api";
import { count, short, time } from "../format";
import { follow, throttle } from "../live";
import { confirmed, fail, say, table, type Page } from "../page";
import { JobState } from "../gen/jobwire/v1/jobwire_pb";

export function deadPage(page: Page): void {
  const queue = page.path[0] ?? "";
  const body = h("div", null, h("p", null, "Loading…"));
  fill(
    page.root,
    h("h1", { class: "name" }, `Dead letters of ${queue}`),
    h("p", null, link("/queue/" + encodeURIComponent(queue) + "?state=dead", "All dead jobs of this queue")),
    body,
  );

  const retryGroup = (group: string, size: bigint) => async () => {
    if (!confirmed(`Retry the ${count(size)} dead job(s) of the group "${short(group, 80)}"?`)) return;
    try {
      let applied = 0n;
      let skipped = 0n;
      for (;;) {
        const answer = await queues.retryJobs({
          selection: { selection: { case: "query", value: { queue, state: JobState.DEAD, filter: { errorGroup: group } } } },
        });
        applied += answer.outcome?.applied ?? 0n;
        skipped += answer.outcome?.skipped ?? 0n;
        if (!answer.outcome?.more) break;
      }
      say(`Retried ${count(applied)} job(s)${skipped ? `, ${count(skipped)} skipped` : ""}.`);
      await refresh();
    } catch (error) {
      fail(error);
    }
  };

  const refresh = async () => {
    try {
      const answer = await queues.listDeadJobGroups({ queue });
      if (answer.groups.length === 0) {
        fill(body, h("p", null, "No dead job."));
        return;
      }
      fill(
        body,
        answer.complete ? null : h("p", { class: "note" }, `Grouped from the newest ${count(answer.examined)} dead jobs.`),
        table(
          ["error group", "jobs", "newest", "oldest", "example", ""],
          answer.groups.map((g, i) => [
            h("span", { class: "error-text" }, link(`/queue/${encodeURIComponent(queue)}?state=dead&group=${encodeURIComponent(g.group)}`, g.group || "(no error)")),
            count(g.count),
            h("span", null, link("/job/" + encodeURIComponent(g.newestJobId), time(g.newestAt))),
            time(g.oldestAt),
            h("span", { class: "error-text" }, short(g.example, 200)),
            h("button", { type: "button", id: `retry-group-${i}`, onclick: retryGroup(g.group, g.count) }, "Retry all of this group"),
          ]),
          "Dead jobs by error",
        ),
      );
    } catch (error) {
      fail(error);
    }
  };

  void refresh();
  const poke = throttle(refresh, 2000, page.signal);
  void follow((signal) => queues.subscribe({ queue }, { signal }), poke, page.signal, (why) => fail(why));
}
