// The overview: every queue with its counts, throughput and failure rate over the last minutes
// and the hour, the activity chart, oldest waiting age, paused, and Redis's memory (as the
// answering server last read it, with ListQueues). Live: it follows SubscribeQueues
// over the known queues and refreshes the figures the events touch, at most once a second; the
// list of queues is also read every 5 s (a new queue has no events on the stream yet) and the
// chart every 30 s (minutes roll over without events).

import { h, fill, link } from "../dom";
import { queues } from "../api";
import { age, bytes, count, seconds } from "../format";
import { FOLLOWED, followQueues, throttle, every } from "../live";
import { fail, table, type Page } from "../page";
import { activityChart, sumMinutes } from "../chart";
import type { QueueActivity, QueueStats, RedisMemory } from "../gen/jobwire/v1/jobwire_pb";

function lastMinutes(activity: QueueActivity | undefined, n: number) {
  const minutes = activity?.minutes.slice(-n) ?? [];
  let completed = 0;
  let failed = 0;
  for (const m of minutes) {
    completed += Number(m.completed);
    failed += Number(m.failed);
  }
  const rate = completed + failed === 0 ? "—" : `${((100 * failed) / (completed + failed)).toFixed(1)} %`;
  return { completed, failed, rate };
}

/** Redis's memory in one line: used, of its maxmemory, and whether adds are refused for it. */
function memoryLine(el: HTMLElement, m: RedisMemory | undefined): void {
  if (!m) {
    fill(el, "Redis memory: not read yet.");
    return;
  }
  const used = Number(m.usedBytes);
  const max = Number(m.maxBytes);
  fill(
    el,
    "Redis memory: ",
    h("strong", { id: "redis-used" }, bytes(used)),
    " used",
    max > 0 ? ` of ${bytes(max)} (${((100 * used) / max).toFixed(1)} %)` : " (no maxmemory: nothing is refused for memory)",
    m.full ? [" ", h("span", { class: "badge paused", id: "redis-full" }, "full: adds are refused")] : null,
  );
}

export function overview(page: Page): void {
  const rows = h("div", null, h("p", null, "Loading…"));
  const memory = h("p", { class: "memory", id: "redis-memory" });
  const chartBox = h("div", { class: "chart", id: "activity-chart" });
  const totals = h("p", { class: "totals" });
  fill(
    page.root,
    h("h1", null, "Queues"),
    memory,
    rows,
    h("h2", null, "Activity"),
    totals,
    chartBox,
  );
  const draw = activityChart(chartBox, page.signal);
  let known: QueueStats[] = [];
  let activity = new Map<string, QueueActivity>();

  const render = () => {
    if (known.length === 0) {
      fill(rows, h("p", null, "No queue yet: add a job and it shows here."));
      return;
    }
    fill(
      rows,
      table(
        ["queue", "waiting", "active", "delayed", "dead", "done 5 min", "failed 5 min", "done 1 h", "failure rate 1 h", "oldest waiting", "state"],
        known.map((q) => {
          const five = lastMinutes(activity.get(q.queue), 5);
          const hour = lastMinutes(activity.get(q.queue), 61);
          return [
            h("span", { class: "name" }, link("/queue/" + encodeURIComponent(q.queue), q.queue)),
            count(q.waiting),
            count(q.active),
            count(q.delayed),
            Number(q.dead) > 0 ? link("/dead/" + encodeURIComponent(q.queue), count(q.dead)) : "0",
            count(five.completed),
            count(five.failed),
            count(hour.completed),
            hour.rate,
            Number(q.waiting) > 0 ? age(seconds(q.oldestWaitingAge)) : "—",
            q.paused ? h("span", { class: "badge paused" }, "paused") : "running",
          ];
        }),
        "Every queue, live",
      ),
    );
  };

  const refreshActivity = async () => {
    if (known.length === 0) return;
    try {
      const answer = await queues.getQueueActivity({ queues: known.slice(0, FOLLOWED).map((q) => q.queue) });
      activity = new Map(answer.queues.map((a) => [a.queue, a]));
      const sums = sumMinutes(answer.queues);
      draw(sums);
      const add = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
      totals.textContent = `Last hour, all queues: ${count(add(sums[1]))} added, ${count(add(sums[2]))} completed, ${count(add(sums[3]))} failed.`;
      render();
    } catch (error) {
      fail(error);
    }
  };

  const refresh = async () => {
    try {
      const answer = await queues.listQueues({});
      known = answer.queues;
      memoryLine(memory, answer.redisMemory);
      render();
      resubscribe();
      if (activity.size === 0) pokeActivity();
    } catch (error) {
      fail(error);
    }
  };

  /** Follows the queues listed now; a queue that appears later is followed from its listing. */
  const follows = followQueues(
    () => {
      pokeFigures();
      pokeActivity();
    },
    page.signal,
    (why) => fail(why),
  );
  const resubscribe = () => follows(known.map((q) => q.queue));

  const pokeFigures = throttle(refresh, 1000, page.signal);
  const pokeActivity = throttle(refreshActivity, 5000, page.signal);
  // A queue that is new has no events yet on the stream: the list is read again every 5 s too.
  every(refresh, 5000, page.signal);
  // The minute rolls over with nothing happening: the chart is read again every 30 s.
  every(refreshActivity, 30_000, page.signal);
}
