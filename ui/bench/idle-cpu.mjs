// The dashboard's idle cost (BENCHMARKS.md, "Dashboard"): CPU of the jobwire server and of its
// redis-server while nothing happens, with no page open, with the overview open, with a queue
// page open, with the schedules page open, and closed again. Run from ui/ after
// `cargo build --release`:
//   node bench/idle-cpu.mjs [seconds per window, default 60]
// It starts its own `jobwire serve` (embedded Redis in a temp dir) and headless chromium, and
// stops both when it ends.

import { spawn, execFile } from "node:child_process";
import { mkdtempSync, existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.env.JOBWIRE_BIN ?? resolve(here, "../../target/release/jobwire");
const seconds = Number(process.argv[2] ?? 60);
const run = promisify(execFile);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TICKS = 100; // USER_HZ on Linux

/** utime + stime of a process, in seconds. */
function cpu(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

function children(pid) {
  const out = [];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const list = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim();
    if (list) out.push(...list.split(" ").map(Number));
  }
  return out;
}

const dir = mkdtempSync(join(tmpdir(), "jobwire-idle-"));
const ready = join(dir, "ready");
const server = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data"), "--ready-file", ready], {
  stdio: "ignore",
});
let browser;
try {
  while (!existsSync(ready)) await sleep(50);
  const addr = readFileSync(ready, "utf8").split("\n")[0];
  const jobwire = (...args) => run(bin, [...args, "--addr", addr]);
  for (;;) {
    try {
      await jobwire("stats");
      break;
    } catch {
      await sleep(100);
    }
  }
  for (const queue of ["emails", "billing", "reports"]) {
    for (let i = 0; i < 20; i++) await jobwire("add", "--queue", queue, "--type", "t", "--payload", `{"n":${i}}`);
  }
  // Two schedules that do not fire during the run, so the schedules page has rows to read.
  await jobwire("schedule", "set", "nightly", "--queue", "reports", "--type", "t", "--cron", "0 30 2 * * *");
  await jobwire("schedule", "set", "weekly", "--queue", "emails", "--type", "t", "--every", "7d");
  const redis = children(server.pid).find((pid) => readFileSync(`/proc/${pid}/comm`, "utf8").startsWith("redis"));
  const window = async (label) => {
    await sleep(3000);
    const before = [cpu(server.pid), cpu(redis)];
    await sleep(seconds * 1000);
    const after = [cpu(server.pid), cpu(redis)];
    const pct = (i) => ((100 * (after[i] - before[i])) / seconds).toFixed(2);
    console.log(`${label.padEnd(24)} server ${pct(0)} %  redis-server ${pct(1)} %  (of one core, ${seconds} s)`);
  };
  await window("no page open");
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(`http://${addr}/`);
  await window("overview open");
  await page.goto(`http://${addr}/#/queue/emails`);
  await window("queue page open");
  await page.goto(`http://${addr}/#/schedules`);
  await window("schedules page open");
  await browser.close();
  browser = undefined;
  await window("page closed again");
} finally {
  await browser?.close();
  server.kill("SIGTERM");
  await new Promise((r) => server.once("exit", r));
  rmSync(dir, { recursive: true, force: true });
}
