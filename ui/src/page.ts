// What every page gets from the router, and the few pieces pages share: the message line
// (errors and outcomes, as text), the value viewer for payloads and results, state names.

import { h, type Child } from "./dom";
import { describe } from "./api";
import { bytes, valueText } from "./format";
import { JobState } from "./gen/jobwire/v1/jobwire_pb";

export interface Page {
  /** The element the page draws into. */
  root: HTMLElement;
  /** Fires when the operator leaves the page: streams and timers stop. */
  signal: AbortSignal;
  /** The route's parts after the page's name, decoded. */
  path: string[];
  /** The route's query. */
  params: URLSearchParams;
}

/** Shows one line at the top: an error (red) or what an action did. */
export function say(text: string, kind: "error" | "info" = "info"): void {
  const line = document.getElementById("message");
  if (!line) return;
  line.textContent = text;
  line.className = kind;
  line.hidden = text === "";
}

export function fail(error: unknown): void {
  say(describe(error), "error");
}

/** The states a queue lists, in the order the tabs show them. */
export const LISTINGS: { state: JobState; name: string }[] = [
  { state: JobState.WAITING, name: "waiting" },
  { state: JobState.DELAYED, name: "delayed" },
  { state: JobState.ACTIVE, name: "active" },
  { state: JobState.COMPLETED, name: "completed" },
  { state: JobState.DEAD, name: "dead" },
  { state: JobState.CANCELLED, name: "cancelled" },
];

export function stateName(state: JobState): string {
  return JobState[state]?.toLowerCase() ?? "unknown";
}

/** Shown of a value before "show all": enough to read, small enough for any page. */
const SHOWN = 16 * 1024;

/** A payload, result or error as text in a <pre>, cut with a button to see all of it. */
export function valueView(label: string, value: Uint8Array | string): HTMLElement {
  const size = typeof value === "string" ? new TextEncoder().encode(value).length : value.length;
  const text = valueText(value);
  const pre = h("pre", { class: "value", tabindex: 0, "aria-label": label });
  const section = h("section", { class: "value-box" }, h("h3", null, `${label} `, h("small", null, bytes(size))), pre);
  if (size === 0) {
    pre.textContent = "(empty)";
    return section;
  }
  if (text.length <= SHOWN) {
    pre.textContent = text;
    return section;
  }
  pre.textContent = text.slice(0, SHOWN) + "\n…";
  const more = h("button", {
    type: "button",
    onclick: () => {
      pre.textContent = text;
      more.remove();
    },
  }, `Show all (${bytes(size)})`);
  section.append(more);
  return section;
}

/** A table inside a box that scrolls sideways on a narrow screen instead of breaking the page. */
export function table(head: string[], rows: Child[][], caption?: string): HTMLElement {
  return h(
    "div",
    { class: "table-box" },
    h(
      "table",
      null,
      caption ? h("caption", null, caption) : null,
      head.some((name) => name !== "") ? h("thead", null, h("tr", null, head.map((name) => h("th", { scope: "col" }, name)))) : null,
      h("tbody", null, rows.map((cells) => h("tr", null, cells.map((cell) => h("td", null, cell))))),
    ),
  );
}

/** Asks before a destructive action (the browser's own dialog: keyboard usable everywhere). */
export function confirmed(question: string): boolean {
  return window.confirm(question);
}
