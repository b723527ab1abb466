/**
 * Example worker: serves the "emails" and "reports" queues.
 *
 *   JOBWIRE_ADDR=127.0.0.1:50051 npx tsx examples/worker.ts
 *
 * Stop it with Ctrl-C or SIGTERM: running jobs finish and are acknowledged first.
 * (In your project, import from "@jobwire/client" instead of "../src".)
 */
import { setTimeout as sleep } from "node:timers/promises";

import { PermanentError, RetryAfterError, Worker, consoleLogger } from "../src";

interface Welcome {
  to: string;
  name: string;
}

interface ReportRequest {
  /** How long the (simulated) report takes. */
  ms: number;
}

async function main(): Promise<void> {
  const worker = new Worker({
    queues: ["emails", "reports"], // "emails" jobs go first when both have work
    concurrency: 8,
    logger: process.env["JOBWIRE_LOG"] === "debug" ? consoleLogger : undefined,
  });

  worker.handle("send-welcome", async (job) => {
    const { to, name } = job.json<Welcome>();
    if (!to.includes("@")) throw new PermanentError(`not an email address: ${to}`); // no retry
    if (to.endsWith("@busy.example")) throw new RetryAfterError(5_000, "mail server busy"); // retry in 5 s
    await sleep(50, undefined, { signal: job.signal }); // pretend to talk to SMTP
    return { messageId: `<${job.id}@example>`, greeted: name };
  });

  worker.handle("build-report", async (job) => {
    const { ms } = job.json<ReportRequest>();
    console.log(`report ${job.id}: started (attempt ${job.attempt}/${job.maxAttempts})`);
    // Long work: keep the lease ahead of the job's timeout, and stop early if revoked.
    const until = Date.now() + ms;
    while (Date.now() < until) {
      await job.extend(30_000);
      await sleep(Math.min(200, until - Date.now()), undefined, { signal: job.signal });
    }
    console.log(`report ${job.id}: done`);
    return Buffer.from(`report of ${ms} ms\n`); // bytes are stored as-is
  });

  console.log(`worker ${worker.workerId} serving ${worker.queues.join(", ")}`);
  await worker.run(); // until SIGTERM / SIGINT
  console.log("worker stopped");
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
