//! Scenario f: Redis memory per waiting job, plain and with what the clients add by default
//! (a traceparent header, a generated idempotency key) or a caller's key, and which keys hold
//! it.

use anyhow::ensure;
use jobwire::client::NewJob;

use crate::{
    Bench, JOB_TYPE,
    load::{add_in_bulk, job, payload},
    results::{Recorder, Target, num},
};

impl Bench {
    pub(crate) async fn memory(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let n = self.sizes.memory_jobs;
        let server = self.fresh_server().await?;
        let client = server.client().await?;
        // The plain job; with the typed client's default traceparent header; with that and the
        // key `Client::add` generates (what it sends by default); the plain job with the key
        // every client generates by default (Python and TypeScript send no traceparent), and
        // with a key the caller chose (remembered for a day, not minutes).
        let variants = [
            ("bench-f1", "waiting job, 100-byte payload", Some(Target::AtMost(300.0))),
            ("bench-f2", "+ traceparent header (NewJob default)", None),
            ("bench-f3", "+ generated idempotency key (as Client::add sends)", None),
            ("bench-f4", "waiting job + the clients' generated key", Some(Target::AtMost(400.0))),
            ("bench-f5", "waiting job + a key the caller chose", None),
        ];
        for (v, (queue, name, target)) in variants.into_iter().enumerate() {
            let make = |i: u64| {
                let plain = job(queue, i);
                match v {
                    0 => plain,
                    1 => NewJob::new(queue, JOB_TYPE).payload(payload(i)),
                    2 => NewJob::new(queue, JOB_TYPE).payload(payload(i)).generated_idempotency_key(),
                    3 => plain.generated_idempotency_key(),
                    _ => plain.idempotency_key(&format!("order-{i:020}")),
                }
            };
            // A first job registers the queue and creates its keys: not part of the delta.
            client.raw().add_job(make(u64::MAX).into_request()).await?;
            let before = self.redis.info_number("memory", "used_memory").await?;
            add_in_bulk(&client, n, make).await?;
            let after = self.redis.info_number("memory", "used_memory").await?;
            ensure!(client.stats(queue).await?.waiting == n + 1, "jobs missing");
            if v == 0 || v == 3 {
                self.explain_memory(queue, n).await?;
            }
            out.record(name, "bytes/job", target, (after - before) / n as f64);
        }
        server.stop().await;
        Ok(())
    }
}

impl Bench {
    /// Prints the memory of each key of `queue` per job (MEMORY USAGE, exact), so a miss can be
    /// traced to a structure. Keys are found by the queue's hash tag, without knowing the layout.
    pub(crate) async fn explain_memory(&self, queue: &str, n: u64) -> anyhow::Result<()> {
        let mut conn = self.redis.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*{{{queue}}}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut sizes = Vec::new();
        for key in keys {
            let bytes: Option<u64> =
                redis::cmd("MEMORY").arg("USAGE").arg(&key).arg("SAMPLES").arg(0).query_async(&mut conn).await?;
            sizes.push((bytes.unwrap_or(0), key));
        }
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let listed: Vec<String> =
            sizes.iter().take(6).map(|(bytes, key)| format!("{key} {}", num(*bytes as f64 / n as f64))).collect();
        eprintln!("    memory by key, bytes per job: {}", listed.join(", "));
        Ok(())
    }
}
