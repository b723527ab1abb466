// The dashboard in a real browser (Debian's chromium, headless, driven by playwright-core)
// against a real `jobwire serve` with its own embedded Redis. Jobs are added and run through the
// jobwire CLI (the public API); the page is only ever read and clicked, as an operator would.
// Screenshots of every page go to test-artifacts/ (not committed).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, mkdirSync, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.env.JOBWIRE_BIN ?? resolve(here, "../../target/debug/jobwire");
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const artifacts = resolve(here, "../test-artifacts");
const run = promisify(execFile);

let dir;
let server;
let addr;
let browser;
const workers = [];

/** Waits for `condition()` to be truthy, polling every 50 ms, for at most `ms`. */
async function until(what, condition, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function jobwire(...args) {
  const { stdout } = await run(bin, [...args, "--addr", addr], { maxBuffer: 8 << 20 });
  return stdout.trim();
}

async function add(queue, type, payload = "{}", extra = []) {
  return jobwire("add", "--queue", queue, "--type", type, "--payload", payload, ...extra);
}

async function stats(queue) {
  return JSON.parse(await jobwire("stats", queue, "--json"))[0];
}

/** Starts `jobwire work` on `queue` running `script` (sh), until the suite ends. */
function work(queue, script, ...flags) {
  const child = spawn(bin, ["work", "--addr", addr, "--queue", queue, ...flags, "--", "sh", "-c", script], {
    stdio: "ignore",
  });
  workers.push(child);
  return child;
}

async function stop(child) {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}

/** A page at `width` x `height` that fails the test on any console error (a CSP refusal too). */
async function open(route, width = 1280, height = 800) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  page.errors = [];
  page.on("console", (m) => m.type() === "error" && page.errors.push(m.text()));
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("dialog", (d) => d.accept());
  await page.goto(`http://${addr}/${route}`);
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}

/** The page never grows wider than its window (long names and values wrap or scroll inside). */
async function fitsWidth(page) {
  return page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
}

before(async () => {
  assert.ok(existsSync(bin), `no jobwire binary at ${bin} (cargo build first, or set JOBWIRE_BIN)`);
  rmSync(artifacts, { recursive: true, force: true });
  mkdirSync(artifacts, { recursive: true });
  dir = mkdtempSync(join(tmpdir(), "jobwire-ui-"));
  const ready = join(dir, "ready");
  server = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data"), "--ready-file", ready], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, JOBWIRE_LOG: "warn" },
  });
  addr = await until("the server's ready file", () => existsSync(ready) && readFileSync(ready, "utf8").split("\n")[0]);
  await until("the server to answer", async () => {
    try {
      await jobwire("stats");
      return true;
    } catch {
      return false;
    }
  });
  browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  for (const child of workers) await stop(child);
  if (server) await stop(server);
  rmSync(dir, { recursive: true, force: true });
});

test("the overview follows new jobs without a reload", async () => {
  await add("emails", "welcome");
  const page = await open("");
  await page.evaluate(() => (window.notReloaded = true));
  const row = page.locator("tr", { has: page.locator('a[href="#/queue/emails"]') });
  await until("the emails row", () => row.count());
  assert.equal(await row.locator("td").nth(1).textContent(), "1");
  for (let i = 0; i < 4; i++) await add("emails", "welcome", JSON.stringify({ to: `user${i}@example.com` }));
  await until("the waiting count to move to 5", async () => (await row.locator("td").nth(1).textContent()) === "5");
  await add("reports", "daily");
  await until("a queue that appears later", () => page.locator('a[href="#/queue/reports"]').count());
  // Redis's memory, as ListQueues carries it: the embedded Redis has no maxmemory.
  await until("Redis's memory read", async () => /^\d+(\.\d)? (KiB|MiB)$/.test(await page.locator("#redis-used").textContent()));
  assert.match(await page.locator("#redis-memory").textContent(), /no maxmemory/);
  assert.equal(await page.evaluate(() => window.notReloaded), true, "no reload happened");
  // By keyboard: a focused link opens its queue on Enter, and the filter takes Enter too.
  await page.locator('a[href="#/queue/emails"]').focus();
  await page.keyboard.press("Enter");
  await until("the queue page", () => page.locator("#tab-waiting").count());
  await page.locator('input[name="type"]').focus();
  await page.keyboard.type("welcome");
  await page.keyboard.press("Enter");
  await until("the filter in the route", () => page.url().includes("type=welcome"));
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("a dead job is opened and retried, and dead letters group by error", async () => {
  for (let i = 0; i < 3; i++) await add("billing", "charge", JSON.stringify({ invoice: i }));
  const failing = work("billing", 'echo "card 4242 declined on attempt $JOBWIRE_ATTEMPT" >&2; exit 65');
  await until("three dead jobs", async () => (await stats("billing")).dead === 3);
  await stop(failing);

  const dead = await open("#/dead/billing");
  await until("the group", () => dead.getByText("card # declined on attempt #").count());
  assert.equal(await dead.locator("tbody tr").count(), 1, "the numbers fold: one group");
  assert.equal(await dead.locator("tbody tr td").nth(1).textContent(), "3");
  await shot(dead, "dead-letters");

  const page = await open("#/queue/billing?state=dead");
  const first = page.locator("tbody a").first();
  await until("a dead job listed", () => first.count());
  await first.click();
  await until("the job page", async () => (await page.locator("#job-state").textContent()) === "dead");
  assert.match(await page.locator("pre.value").first().textContent(), /declined/);
  await shot(page, "job");
  await page.locator("#job-retry").click();
  await until("the job to be waiting again", async () => (await page.locator("#job-state").textContent()) === "waiting");
  assert.equal((await stats("billing")).dead, 2);
  assert.deepEqual(page.errors, []);
  await page.close();

  await until("the group to count two", async () => (await dead.locator("tbody tr td").nth(1).textContent()) === "2");
  await dead.locator("#retry-group-0").click();
  await until("no dead job left", async () => (await stats("billing")).dead === 0);
  await until("the page to say so", () => dead.getByText("No dead job.").count());
  assert.deepEqual(dead.errors, []);
  await dead.close();
});

test("a filtered set is deleted in bulk, and the queue is paused", async () => {
  for (let i = 0; i < 5; i++) await add("bulk", "keep");
  for (let i = 0; i < 5; i++) await add("bulk", "drop");
  const page = await open("#/queue/bulk");
  await until("ten waiting", async () => (await page.locator('#tab-waiting .count').textContent()) === "10");
  await page.fill('input[name="type"]', "drop");
  await page.press('input[name="type"]', "Enter");
  await until("the filtered list", async () => (await page.locator("tbody tr").count()) === 5);
  await shot(page, "queue-filtered");
  await page.locator("#delete-all").click();
  await until("five left", async () => (await stats("bulk")).waiting === 5);
  await until("the page to show it", async () => (await page.locator('#tab-waiting .count').textContent()) === "5");
  assert.equal(await page.locator("tbody tr").count(), 0, "no job of type drop is left");

  await page.locator("#pause-toggle").click();
  await until("the paused badge", () => page.locator("#paused-badge").count());
  assert.equal((await stats("bulk")).paused, true);
  await shot(page, "queue");
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("schedules are listed live, paused and resumed, triggered and deleted", async () => {
  await jobwire("schedule", "set", "tick", "--queue", "timed", "--type", "tick", "--every", "1s");
  await jobwire("schedule", "set", "nightly", "--queue", "timed", "--type", "report", "--cron", "0 30 2 * * *", "--tz", "Europe/Berlin");
  const page = await open("#/schedules");
  await page.evaluate(() => (window.notReloaded = true));
  const row = (name) => page.locator("tr", { has: page.locator(`strong[data-schedule="timed/${name}"]`) });
  const cell = (name, i) => row(name).locator("td").nth(i).textContent();
  await until("both schedules", async () => (await row("tick").count()) === 1 && (await row("nightly").count()) === 1);
  assert.match(await cell("tick", 2), /^every 1s/);
  assert.match(await cell("nightly", 2), /^cron 0 30 2 \* \* \* \(Europe\/Berlin\)$/);
  assert.match(await cell("nightly", 3), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZin \d+ (min|h)/);
  // The next fires after it: four more nights at 02:30 in Berlin (01:30Z in winter, 00:30Z in summer).
  const later = await row("nightly").locator("ol.later li").allTextContents();
  assert.equal(later.length, 4, later.join(" | "));
  for (const t of later) assert.match(t, /^\d{4}-\d\d-\d\d 0[01]:30:00Z$/);

  // Live: the interval's fires count up, and its last job shows, without a reload.
  const fires = async (name) => parseInt((await cell(name, 5)).replace(/,/g, ""), 10);
  await until("a first fire", async () => (await fires("tick")) >= 1);
  const seen = await fires("tick");
  await until("another fire", async () => (await fires("tick")) > seen);
  assert.equal(await row("tick").locator('a[href^="#/job/timed"]').count(), 1, "the last job is linked");

  await row("tick").locator('button[data-action="pause"]').click();
  await until("the paused badge", () => row("tick").locator(".badge.paused").count());
  assert.equal(JSON.parse(await jobwire("schedule", "get", "tick", "--queue", "timed")).paused, true);
  await row("tick").locator('button[data-action="resume"]').click();
  await until("running again", async () => (await row("tick").locator(".badge.paused").count()) === 0);
  assert.equal(JSON.parse(await jobwire("schedule", "get", "tick", "--queue", "timed")).paused, false);

  await row("nightly").locator('button[data-action="trigger"]').click();
  await until("the trigger's job", async () => (await fires("nightly")) === 1);
  assert.match(await page.locator("#message").textContent(), /nightly of timed triggered: job timed\/\S+ added/);
  const nightlyJob = JSON.parse(await jobwire("schedule", "get", "nightly", "--queue", "timed")).last_job_id;
  assert.match(await jobwire("jobs", "timed", "--limit", "1000"), new RegExp(nightlyJob.split("/")[1]));
  await shot(page, "schedules");
  const phone = await open("#/schedules", 390, 844);
  await until("the schedules on a phone", () => phone.locator('strong[data-schedule="timed/nightly"]').count());
  assert.ok(await fitsWidth(phone), "the schedules page fits a phone");
  await shot(phone, "schedules-phone");
  await phone.close();

  await row("nightly").locator('button[data-action="delete"]').click();
  await until("the deleted row gone", async () => (await row("nightly").count()) === 0);
  const left = (await jobwire("schedule", "list", "--queue", "timed", "--json")).split("\n").map((l) => JSON.parse(l).name);
  assert.deepEqual(left, ["tick"]);
  await row("tick").locator('button[data-action="delete"]').click();
  await until("no schedule left", () => page.locator("#no-schedules").count());
  assert.equal(await page.evaluate(() => window.notReloaded), true, "no reload happened");
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("a queue's settings are shown and changed, and a refused value shows by its field", async () => {
  await add("tuned", "t");
  const page = await open("#/queue/tuned");
  await page.locator("#settings > summary").click();
  await until("the settings form", () => page.locator("#settings-form").count());
  const effective = (name) => page.locator(`[data-effective="${name}"]`).textContent();
  assert.equal(await effective("max_attempts"), "3");
  assert.equal(await effective("max_waiting"), "no limit");
  assert.equal(await effective("completed_retention"), "1h");

  await page.fill("#setting-max_waiting", "100");
  await page.fill("#setting-timeout", "45s");
  await page.selectOption("#setting-backoff-kind", "fixed");
  await page.fill("#setting-backoff-base", "2s");
  await page.fill("#setting-concurrency", "1");
  await page.click("#settings-save");
  await until("the new max waiting in effect", async () => (await effective("max_waiting")) === "100");
  await until("the cap in the queue's figures", () => page.locator("#concurrency").count());
  assert.equal(await page.locator("#held-back").textContent(), "0", "nothing is active: nothing held back");
  const saved = JSON.parse(await jobwire("queue", "get", "tuned", "--json")).settings;
  assert.equal(saved.max_waiting, "100");
  assert.equal(saved.timeout, "45s");
  assert.match(saved.backoff, /^fixed:2s/);
  assert.match(await page.locator("#settings > summary").textContent(), /4 set for this queue/);

  // The server refuses a value: its reason shows by the field it names.
  await page.fill("#setting-max_attempts", "0");
  await page.click("#settings-save");
  await until("the reason by the field", async () => /must be from 1 to 1000/.test(await page.locator("#setting-max_attempts-error").textContent()));
  assert.match(await page.locator("#message").textContent(), /InvalidArgument: settings\.max_attempts/);
  // A value that does not read is caught before anything is sent.
  await page.fill("#setting-max_attempts", "");
  await page.fill("#setting-concurrency", "five");
  await page.click("#settings-save");
  await until("the field's own check", async () => /whole number/.test(await page.locator("#setting-concurrency-error").textContent()));
  assert.equal(await page.locator("#setting-max_attempts-error").textContent(), "", "the earlier reason is gone");
  await shot(page, "queue-settings");

  // Emptied fields fall back to the flags again; the rest stay.
  await page.fill("#setting-concurrency", "");
  await page.fill("#setting-max_waiting", "");
  await page.click("#settings-save");
  await until("max waiting cleared", async () => (await effective("max_waiting")) === "no limit");
  await until("the cap gone from the figures", async () => (await page.locator("#concurrency").count()) === 0);
  const after = JSON.parse(await jobwire("queue", "get", "tuned", "--json")).settings;
  assert.equal(after.max_waiting, undefined);
  assert.equal(after.timeout, "45s");
  assert.deepEqual(page.errors, []);
  await page.close();
  const phone = await open("#/queue/tuned", 390, 844);
  await phone.locator("#settings > summary").click();
  await until("the settings on a phone", () => phone.locator("#settings-form").count());
  assert.ok(await fitsWidth(phone), "the settings fit a phone");
  await shot(phone, "queue-settings-phone");
  await phone.close();
});

test("a 128-character queue name and a 1 MiB payload keep the layout, on a laptop and a phone", async () => {
  const queue = "q".repeat(60) + "." + "x".repeat(67);
  const payload = join(dir, "big.json");
  writeFileSync(payload, JSON.stringify({ blob: "y".repeat(1024 * 1024 - 20) }));
  const script = `"$BIN" add --addr ${addr} --queue ${queue} --type big --payload - < "$PAYLOAD"`;
  const { stdout } = await run("sh", ["-c", script], { env: { ...process.env, PAYLOAD: payload, BIN: bin } });
  const id = stdout.trim();
  for (const [width, height, name] of [[1280, 800, "laptop"], [390, 844, "phone"]]) {
    const overview = await open("", width, height);
    await until("the long queue", () => overview.locator(`a[href="#/queue/${queue}"]`).count());
    assert.ok(await fitsWidth(overview), `overview fits at ${name}`);
    await shot(overview, `overview-${name}`);
    await overview.close();
    const job = await open(`#/job/${encodeURIComponent(id)}`, width, height);
    await until("the payload", () => job.getByRole("button", { name: /Show all/ }).count());
    assert.ok(await fitsWidth(job), `job page fits at ${name}`);
    await job.close();
  }
});

test("workers and sessions pages show what exists", async () => {
  await jobwire("sessions", "create", "chat", "--name", "user-7", "--state", '{"turns":3}');
  await add("chat", "reply", '"hi"', ["--session", "chat/user-7"]);
  // The job runs until the test lets it go (a file appears), so the page sees it active.
  const letGo = join(dir, "let-go");
  const busy = work("chat", `until [ -e '${letGo}' ]; do sleep 0.1; done`, "--worker-id", "shot-worker");
  const workersPage = await open("#/workers");
  await until("the held job", () => workersPage.locator('a[href^="#/job/chat"]').count());
  await shot(workersPage, "workers");
  await workersPage.close();
  // Two more jobs wait inside the session (one at a time) behind the running one, in add order.
  const first = (await add("chat", "reply", '"second"', ["--session", "chat/user-7"])).trim();
  const second = (await add("chat", "reply", '"third"', ["--session", "chat/user-7"])).trim();
  const session = await open("#/session/chat%2Fuser-7");
  await until("the state", () => session.getByText('"turns": 3').count());
  const line = session.locator("#session-line li");
  await until("the line of three", async () => (await line.count()) === 3);
  assert.match(await line.nth(0).textContent(), /active/);
  assert.deepEqual(
    [await line.nth(1).textContent(), await line.nth(2).textContent()].map((t) => /pending/.test(t)),
    [true, true],
  );
  assert.equal(await line.nth(1).locator("a").getAttribute("href"), `#/job/${encodeURIComponent(first)}`);
  assert.equal(await line.nth(2).locator("a").getAttribute("href"), `#/job/${encodeURIComponent(second)}`);
  await shot(session, "session");
  await session.close();
  writeFileSync(letGo, "");
  await until("the session's three jobs done", async () => (await stats("chat")).completed >= 3);
  await stop(busy);
  const sessions = await open("#/sessions/chat");
  await until("the session listed", () => sessions.locator('a[href="#/session/chat%2Fuser-7"]').count());
  await shot(sessions, "sessions");
  await sessions.close();
  const overview = await open("");
  await until("the chart", () => overview.locator("#activity-chart canvas").count());
  await until("the totals", async () => /completed/.test(await overview.locator(".totals").textContent()));
  await shot(overview, "overview");
  await overview.close();
});

test("the token goes in the authorization header of every call, never in the URL", async () => {
  const page = await open("");
  await page.fill("#token", "s3cret-token");
  await page.locator("#token").blur();
  await until("the token kept", () => page.evaluate(() => sessionStorage.getItem("jobwire.token")));
  const calls = [];
  page.on("request", (r) => r.url().includes("/jobwire.v1.") && calls.push(r));
  await page.goto(`http://${addr}/#/workers`);
  await until("calls made with the token set", () => calls.length >= 2);
  for (const call of calls) {
    assert.equal(await call.headerValue("authorization"), "Bearer s3cret-token");
    assert.ok(!call.url().includes("s3cret"));
  }
  assert.equal(await page.evaluate(() => sessionStorage.getItem("jobwire.token")), "s3cret-token");
  assert.ok(!page.url().includes("s3cret"));
  const assets = await page.request.get(`http://${addr}/app.js`);
  assert.equal(assets.status(), 200, "assets need no token");
  assert.match(assets.headers()["content-security-policy"], /script-src 'self'/);
  await page.close();
});

test("a reader token is offered no action, and the server refuses one it forces", async () => {
  // A second server that needs tokens: an admin one for the CLI, a reader one for the page.
  const secured = mkdtempSync(join(tmpdir(), "jobwire-ui-auth-"));
  const file = join(secured, "tokens.json");
  const create = async (name, role) =>
    (await run(bin, ["token", "create", "--file", file, "--name", name, "--role", role])).stdout.trim();
  const [adminToken, readerToken] = [await create("ops", "admin"), await create("oncall", "reader")];
  const ready = join(secured, "ready");
  const guarded = spawn(
    bin,
    ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(secured, "data"), "--ready-file", ready, "--auth-tokens", file],
    { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, JOBWIRE_LOG: "warn" } },
  );
  try {
    const at = await until("the secured server", () => existsSync(ready) && readFileSync(ready, "utf8").split("\n")[0]);
    const cli = async (token, ...args) => run(bin, [...args, "--addr", at, "--token", token]);
    await until("the secured server to answer", async () => cli(adminToken, "stats").then(() => true, () => false));
    const jobId = (await cli(adminToken, "add", "--queue", "guarded", "--type", "t", "--payload", "{}")).stdout.trim();
    await cli(adminToken, "schedule", "set", "yearly", "--queue", "guarded", "--type", "t", "--cron", "@yearly");

    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    await page.goto(`http://${at}/#/job/${encodeURIComponent(jobId)}`);
    await page.fill("#token", readerToken);
    await page.locator("#token").blur();
    await until("the job page as the reader", async () => (await page.locator("#job-state").textContent()) === "waiting");
    assert.equal(await page.locator("#job-cancel, #job-delete, #job-retry").count(), 0, "no job action");
    await page.goto(`http://${at}/#/queue/guarded?state=waiting`);
    await until("the queue page as the reader", () => page.locator("tbody a").count());
    assert.equal(await page.locator("#pause-toggle, .bulk button").count(), 0, "no queue action");
    await shot(page, "reader");
    // The settings are shown, not offered for editing.
    await page.locator("#settings > summary").click();
    await until("the settings as the reader", () => page.locator('[data-effective="max_attempts"]').count());
    assert.equal(await page.locator("#settings-form, #settings input, #settings select").count(), 0, "no settings form");
    // A schedule is shown with no action.
    await page.goto(`http://${at}/#/schedules`);
    const scheduleRow = page.locator("tr", { has: page.locator('strong[data-schedule="guarded/yearly"]') });
    await until("the schedule as the reader", () => scheduleRow.count());
    assert.equal(await page.locator("button[data-action]").count(), 0, "no schedule action");
    await shot(page, "reader-schedules");
    // Forced past the page, each action is refused by the server, and nothing changed.
    await assert.rejects(cli(readerToken, "cancel", jobId), /PERMISSION_DENIED/);
    await assert.rejects(cli(readerToken, "schedule", "trigger", "yearly", "--queue", "guarded"), /PERMISSION_DENIED/);
    await assert.rejects(cli(readerToken, "schedule", "pause", "yearly", "--queue", "guarded"), /PERMISSION_DENIED/);
    await assert.rejects(cli(readerToken, "schedule", "delete", "yearly", "--queue", "guarded"), /PERMISSION_DENIED/);
    await assert.rejects(cli(readerToken, "queue", "set", "guarded", "--max-waiting", "5"), /PERMISSION_DENIED/);
    assert.equal(JSON.parse((await cli(adminToken, "stats", "guarded", "--json")).stdout)[0].waiting, 1);
    const yearly = JSON.parse((await cli(adminToken, "schedule", "get", "yearly", "--queue", "guarded")).stdout);
    assert.equal(yearly.fires, 0);
    assert.equal(yearly.paused, false);
    const settings = JSON.parse((await cli(adminToken, "queue", "get", "guarded", "--json")).stdout).settings;
    assert.deepEqual(settings, {});
    await page.goto(`http://${at}/#/queue/guarded?state=waiting`);

    // The admin token is offered them.
    await page.fill("#token", adminToken);
    await page.locator("#token").blur();
    await until("the pause button for the admin", () => page.locator("#pause-toggle").count());
    await page.goto(`http://${at}/#/schedules`);
    await until("the schedule's actions for the admin", async () => (await page.locator("button[data-action]").count()) === 3);
    await context.close();
  } finally {
    await stop(guarded);
    rmSync(secured, { recursive: true, force: true });
  }
});
