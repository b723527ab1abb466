// Formatting of times, sizes and values for display. Values (payloads, results, errors) are
// shown as text: JSON pretty-printed when it parses, other UTF-8 as is, anything else as hex.

import type { Timestamp, Duration } from "@bufbuild/protobuf/wkt";

export function toDate(t: Timestamp | undefined): Date | undefined {
  if (!t) return undefined;
  return new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6));
}

export function time(t: Timestamp | undefined): string {
  const d = toDate(t);
  return d ? d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "—";
}

/** "in 3 s" style, for a time soon to come ("now" once it has passed). */
export function until(t: Timestamp | undefined, now = Date.now()): string {
  const d = toDate(t);
  if (!d) return "—";
  const s = (d.getTime() - now) / 1000;
  return s <= 0 ? "now" : "in " + age(s);
}

/** "3 s ago" style, for a recent time. */
export function ago(t: Timestamp | undefined, now = Date.now()): string {
  const d = toDate(t);
  return d ? age((now - d.getTime()) / 1000) + " ago" : "—";
}

export function seconds(d: Duration | undefined): number {
  return d ? Number(d.seconds) + d.nanos / 1e9 : 0;
}

const SPAN_UNITS: [string, number][] = [
  ["d", 86_400_000],
  ["h", 3_600_000],
  ["m", 60_000],
  ["s", 1000],
  ["ms", 1],
];

/** A duration exactly, in the units `parseSpan` reads back: `1h30m`, `45s`, `250ms`, `0s`. */
export function span(d: Pick<Duration, "seconds" | "nanos"> | undefined): string {
  if (!d) return "—";
  let ms = Number(d.seconds) * 1000 + Math.round(d.nanos / 1e6);
  if (ms === 0) return "0s";
  let text = "";
  for (const [unit, size] of SPAN_UNITS) {
    const n = Math.floor(ms / size);
    if (n > 0) text += `${n}${unit}`;
    ms -= n * size;
  }
  return text;
}

/**
 * A duration typed as `span` writes it (units d, h, m, s, ms, in any combination, such as
 * `1h30m`), as whole milliseconds; undefined when the text is not one.
 */
export function parseSpan(text: string): { seconds: bigint; nanos: number } | undefined {
  const trimmed = text.replace(/\s+/g, "");
  if (!/^(\d+(d|h|ms|m|s))+$/.test(trimmed)) return undefined;
  let ms = 0;
  for (const [, n, unit] of trimmed.matchAll(/(\d+)(d|h|ms|m|s)/g)) {
    const size = SPAN_UNITS.find(([u]) => u === unit)?.[1] ?? 0;
    ms += Number(n) * size;
  }
  if (!Number.isSafeInteger(ms)) return undefined;
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
}

/** A duration in seconds, in its largest sensible unit. */
export function age(s: number): string {
  if (s < 1) return `${Math.max(0, Math.round(s * 1000))} ms`;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function count(n: bigint | number): string {
  return Number(n).toLocaleString("en-US");
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A value as readable text: pretty JSON, plain text, or hex for binary. */
export function valueText(value: Uint8Array | string): string {
  let text: string;
  if (typeof value === "string") {
    text = value;
  } else {
    try {
      text = utf8.decode(value);
    } catch {
      return hex(value);
    }
  }
  const trimmed = text.trim();
  if (trimmed.startsWith("{") || trimmed.startsWith("[") || trimmed.startsWith('"')) {
    try {
      return JSON.stringify(JSON.parse(trimmed), null, 2);
    } catch {
      return text;
    }
  }
  return text;
}

function hex(value: Uint8Array): string {
  const shown = value.subarray(0, 4096);
  const pairs = Array.from(shown, (b) => b.toString(16).padStart(2, "0"));
  const lines: string[] = [];
  for (let i = 0; i < pairs.length; i += 32) lines.push(pairs.slice(i, i + 32).join(" "));
  return `(binary, ${bytes(value.length)})\n` + lines.join("\n") + (value.length > shown.length ? "\n…" : "");
}

/** One line of a possibly long text, cut to `max` characters. */
export function short(text: string, max = 120): string {
  const line = text.split("\n", 1)[0] ?? "";
  return line.length > max ? line.slice(0, max - 1) + "…" : line;
}

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** When a job was created, read from its id's ULID (its first 10 characters are the ms). */
export function ulidTime(jobId: string): number | undefined {
  const ulid = jobId.slice(jobId.lastIndexOf("/") + 1).toUpperCase();
  if (ulid.length !== 26) return undefined;
  let ms = 0;
  for (const c of ulid.slice(0, 10)) {
    const v = CROCKFORD.indexOf(c);
    if (v < 0) return undefined;
    ms = ms * 32 + v;
  }
  return ms;
}
