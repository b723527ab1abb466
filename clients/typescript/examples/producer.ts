/**
 * Example producer: adds a few jobs and waits for their results.
 *
 *   JOBWIRE_ADDR=127.0.0.1:50051 npx tsx examples/producer.ts
 *
 * Run examples/worker.ts alongside it. (In your project, import from "@jobwire/client".)
 */
import { Client, JobDeadError, RpcError } from "../src";

async function main(): Promise<void> {
  const client = new Client({ deadlineMs: 5_000 });
  try {
    // One job, then its result. The idempotency key makes a repeat of this add a no-op.
    const welcome = await client.add(
      "emails",
      "send-welcome",
      { to: "ada@example.com", name: "Ada" },
      { idempotencyKey: "welcome:ada@example.com", maxAttempts: 5 },
    );
    console.log(`added ${welcome.id}${welcome.duplicate ? " (duplicate)" : ""}`);
    const sent = await client.waitForResult(welcome.id, { timeoutMs: 30_000 });
    const { messageId } = sent.json<{ messageId: string }>();
    console.log(`welcome sent: ${messageId}`);

    // Many jobs in one call; each entry is accepted or rejected on its own.
    const results = await client.addMany([
      { queue: "reports", type: "build-report", payload: { ms: 300 }, timeoutMs: 10_000 },
      { queue: "reports", type: "build-report", payload: { ms: 600 }, priority: 1 },
      { queue: "emails", type: "send-welcome", payload: { to: "nobody", name: "?" }, maxAttempts: 3 },
    ]);
    for (const r of results) {
      if (!r.ok) {
        console.log(`rejected: ${r.message}`);
        continue;
      }
      try {
        const result = await client.waitForResult(r.id, { timeoutMs: 30_000 });
        console.log(`${r.id}: ${result.text().trim()}`);
      } catch (err) {
        if (err instanceof JobDeadError) console.log(`${r.id}: dead: ${err.lastError}`);
        else throw err;
      }
    }

    for (const q of await client.listQueues()) {
      console.log(`queue ${q.queue}: ${q.waiting} waiting, ${q.active} active, ${q.completed} completed, ${q.dead} dead`);
    }
  } catch (err) {
    if (err instanceof RpcError) console.error(`jobwire said ${err.codeName}: ${err.details}`);
    throw err;
  } finally {
    client.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
