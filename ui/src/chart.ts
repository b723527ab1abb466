// The activity chart: jobs added, completed and failed per minute (uPlot, drawn on a canvas).

import uPlot from "uplot";
import type { QueueActivity } from "./gen/jobwire/v1/jobwire_pb";
import { toDate } from "./format";

/** Per-minute sums over `activity`'s queues: [minute starts (s), added, completed, failed]. */
export function sumMinutes(activity: QueueActivity[]): [number[], number[], number[], number[]] {
  const byMinute = new Map<number, [number, number, number]>();
  for (const queue of activity) {
    for (const m of queue.minutes) {
      const start = (toDate(m.start)?.getTime() ?? 0) / 1000;
      const sums = byMinute.get(start) ?? [0, 0, 0];
      sums[0] += Number(m.added);
      sums[1] += Number(m.completed);
      sums[2] += Number(m.failed);
      byMinute.set(start, sums);
    }
  }
  const starts = [...byMinute.keys()].sort((a, b) => a - b);
  return [
    starts,
    starts.map((s) => byMinute.get(s)?.[0] ?? 0),
    starts.map((s) => byMinute.get(s)?.[1] ?? 0),
    starts.map((s) => byMinute.get(s)?.[2] ?? 0),
  ];
}

/** A chart in `box`, resized with it; `update` redraws it with new data. */
export function activityChart(box: HTMLElement, signal: AbortSignal) {
  const size = () => ({ width: Math.max(240, box.clientWidth), height: 220 });
  const plot = new uPlot(
    {
      ...size(),
      title: "Jobs per minute, last hour",
      scales: { x: { time: true } },
      series: [
        {},
        { label: "added", stroke: "#3b6ea5", width: 2 },
        { label: "completed", stroke: "#2f8f4e", width: 2 },
        { label: "failed", stroke: "#c0392b", width: 2 },
      ],
      axes: [{}, { label: "jobs" }],
    },
    [[], [], [], []],
    box,
  );
  const resize = () => plot.setSize(size());
  window.addEventListener("resize", resize);
  signal.addEventListener("abort", () => {
    window.removeEventListener("resize", resize);
    plot.destroy();
  });
  return (data: [number[], number[], number[], number[]]) => plot.setData(data);
}
