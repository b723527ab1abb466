/**
 * The TypeScript side of the cross-language test (tests/crosslang/run.sh). It imports the
 * repository's own client from clients/typescript/src and runs with that package's tsx
 * (`node --import tsx`, from clients/typescript). Subcommands:
 *
 *   work      a Worker serving calc, digest and crash-me jobs; results name "typescript"
 *   produce   adds calc and digest jobs, awaits every result, compares it to what it computes
 *             itself from the payload (the worker is in another language)
 *
 * The job types and their results mirror crosslang.py (see its docstring) and are written
 * again here on purpose, so each language checks the other's answers. Every wait is bounded;
 * `produce` exits 0 when every result matched, 1 otherwise.
 */
import { isDeepStrictEqual, parseArgs } from "node:util";
import { createHash } from "node:crypto";
import { renameSync, writeFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

import { Client, Worker, type ActiveJob } from "../../clients/typescript/src";

const LANG = "typescript";

interface CalcPayload {
  n: number;
  text: string;
}

/** Same text as crosslang.py: 2-, 3- and 4-byte UTF-8 characters. */
const calcText = (i: number): string => `naïve ✓ 🚀 日本語 #${i}`;
/** n*n needs more than 32 bits and stays exact in a JS number. */
const calcN = (i: number): number => 30_000_000 + i;
/** Bytes that are not UTF-8 (every value 0-255, NULs included). */
const digestPayload = (i: number): Buffer => Buffer.from(Array.from({ length: 1000 }, (_, k) => (k * 7 + i) % 256));

function calc(payload: CalcPayload, jobId: string, headers: Readonly<Record<string, string>>, lang: string): object {
  return {
    lang,
    job_id: jobId,
    square: payload.n * payload.n,
    reversed: [...payload.text].reverse().join(""), // by code point, like Python's text[::-1]
    utf8_bytes: Buffer.byteLength(payload.text, "utf8"),
    header: headers["x-crosslang"] ?? "",
  };
}

function digest(payload: Uint8Array, jobId: string, lang: string): object {
  return { lang, job_id: jobId, sha256: createHash("sha256").update(payload).digest("hex"), size: payload.length };
}

const say = (line: string): void => {
  process.stdout.write(line + "\n");
};

async function work(addr: string, queue: string, hangMarker: string | undefined): Promise<number> {
  const worker = new Worker({
    address: addr,
    queues: [queue],
    concurrency: 4,
    workerId: `crosslang-typescript-${process.pid}`,
    labels: { lang: LANG },
    reconnect: { initialDelayMs: 100, maxDelayMs: 1000 },
  });
  worker.handle("calc", (job: ActiveJob) => calc(job.json<CalcPayload>(), job.id, job.headers, LANG));
  worker.handle("digest", (job: ActiveJob) => digest(job.payload, job.id, LANG));
  worker.handle("crash-me", async (job: ActiveJob) => {
    if (hangMarker !== undefined) {
      // Tell run.sh this job is running here, then hang until run.sh kills the process.
      writeFileSync(`${hangMarker}.tmp`, job.id);
      renameSync(`${hangMarker}.tmp`, hangMarker);
      say(`holding ${job.id} (attempt ${job.attempt}); waiting to be killed`);
      await sleep(600_000, undefined, { signal: job.signal });
    }
    return { lang: LANG, job_id: job.id, attempt: job.attempt, lost_deliveries: job.lostDeliveries };
  });
  say(`typescript worker pid ${process.pid} serving ${queue} on ${addr}`);
  await worker.run(); // until SIGTERM
  say("typescript worker stopped");
  return 0;
}

async function produce(addr: string, queue: string, expectLang: string, count: number, timeoutMs: number): Promise<number> {
  const client = new Client({ address: addr, deadlineMs: 10_000 });
  try {
    // calc jobs in one AddJobs call, digest jobs one AddJob each.
    const specs = Array.from({ length: count }, (_, i) => ({
      queue,
      type: "calc",
      payload: { n: calcN(i), text: calcText(i) },
      headers: { "x-crosslang": `from-typescript-${i}` },
    }));
    const added = await client.addMany(specs);
    const ids: string[] = [];
    for (const [i, r] of added.entries()) {
      if (!r.ok) {
        say(`addMany rejected entry ${i}: ${r.code} ${r.message}`);
        return 1;
      }
      ids.push(r.id);
    }
    const nDigest = 3;
    for (let i = 0; i < nDigest; i++) ids.push((await client.add(queue, "digest", digestPayload(i))).id);

    const results = await Promise.allSettled(ids.map((id) => client.waitForResult(id, { timeoutMs })));
    let good = 0;
    results.forEach((r, k) => {
      const id = ids[k]!;
      if (r.status === "rejected") {
        say(`job ${id}: no result: ${String(r.reason)}`);
        return;
      }
      const want =
        k < count
          ? calc({ n: calcN(k), text: calcText(k) }, id, { "x-crosslang": `from-typescript-${k}` }, expectLang)
          : digest(digestPayload(k - count), id, expectLang);
      const got: unknown = r.value.json();
      if (isDeepStrictEqual(got, want)) good++;
      else say(`MISMATCH result of ${id}:\n  got  ${JSON.stringify(got)}\n  want ${JSON.stringify(want)}`);
    });
    say(`${good}/${ids.length} results match (${count} calc, ${nDigest} digest, done by ${expectLang})`);
    return good === ids.length ? 0 : 1;
  } finally {
    client.close();
  }
}

async function main(): Promise<number> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      addr: { type: "string" },
      queue: { type: "string" },
      "expect-lang": { type: "string" },
      count: { type: "string", default: "10" },
      timeout: { type: "string", default: "40" },
      "hang-marker": { type: "string" },
    },
  });
  const [command] = positionals;
  const { addr, queue } = values;
  if (addr === undefined || queue === undefined) throw new Error("--addr and --queue are required");
  switch (command) {
    case "work":
      return work(addr, queue, values["hang-marker"]);
    case "produce": {
      const expectLang = values["expect-lang"];
      if (expectLang === undefined) throw new Error("produce needs --expect-lang");
      return produce(addr, queue, expectLang, Number(values.count), Number(values.timeout) * 1000);
    }
    default:
      throw new Error(`unknown command ${String(command)}: use work or produce`);
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  },
);
