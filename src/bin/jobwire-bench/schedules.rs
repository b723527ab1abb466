//! j. Schedule lateness: many schedules every second, fired by two server instances racing for
//! each due time, and how late each job is ready after its due time: the `time` of its WAITING
//! event (Redis's clock, when the fire's function ran, or for a fire claimed ahead the release's)
//! less the due time its job id holds (the ULID's timestamp). The check: every due time of
//! every schedule in the window added exactly one job.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, ensure};
use futures::StreamExt;
use jobwire::{client::NewSchedule, proto};

use crate::{Bench, results::Recorder};

const QUEUE: &str = "bench-j";
/// Upserts in flight at once.
const UPSERTS_AT_ONCE: usize = 32;

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Bench {
    pub(crate) async fn schedule_lateness(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let first = self.fresh_server().await?;
        let second = self.another_server(&[]).await?;
        let client = first.client().await?;
        let (schedules, seconds) = (self.sizes.schedules, self.sizes.schedule_seconds);
        // Every event of the queue from now on, read while the schedules fire.
        let mut events = client
            .raw()
            .subscribe(proto::SubscribeRequest { queue: QUEUE.into(), cursor: String::new() })
            .await?
            .into_inner();
        // Due times from t0 (on a whole second, 2 s ahead and a second more per 100 schedules:
        // the upserts below must all be done by then, even by a debug build on a busy machine)
        // for `seconds` seconds.
        let t0 = (epoch_ms(SystemTime::now()) / 1000 + 2 + i64::try_from(schedules / 100)?) * 1000;
        let end = t0 + i64::try_from(seconds).unwrap_or(i64::MAX) * 1000;
        let at = |ms: i64| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        // UPSERTS_AT_ONCE at a time: one after the other, 1,000 upserts outlasted even that lead on
        // a machine at load 10, and the first due time had no schedule yet.
        let upserts = futures::stream::iter(0..schedules).map(|n| {
            let client = &client;
            async move {
                let schedule = NewSchedule::every(QUEUE, &format!("s{n}"), "bench", Duration::from_secs(1))
                    .start(at(t0))
                    .end(at(end));
                client.upsert_schedule(schedule).await.with_context(|| format!("schedule s{n}"))
            }
        });
        let done: Vec<_> = upserts.buffer_unordered(UPSERTS_AT_ONCE).collect().await;
        done.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        ensure!(epoch_ms(SystemTime::now()) < t0, "the upserts outlasted the lead: the first due time has passed");
        let expected = schedules * seconds;
        let mut lateness = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
        let mut seen: HashSet<String> = HashSet::new();
        let mut per_due: HashMap<i64, u64> = HashMap::new();
        // Ten seconds past the last due time (the upserts may end long before t0).
        let last_due_in = Duration::from_millis(u64::try_from(end - epoch_ms(SystemTime::now())).unwrap_or(0));
        let deadline = tokio::time::Instant::now() + last_due_in + Duration::from_secs(10);
        while seen.len() < usize::try_from(expected).unwrap_or(usize::MAX) {
            let next = tokio::time::timeout_at(deadline, events.next()).await;
            let Ok(Some(message)) = next else { break };
            let Some(event) = message?.event else { continue };
            if event.r#type() != proto::JobEventType::Waiting {
                continue;
            }
            let ulid: ulid::Ulid = event.job_id.rsplit('/').next().unwrap_or_default().parse()?;
            let due = i64::try_from(ulid.timestamp_ms())?;
            let added = event.time.and_then(|t| SystemTime::try_from(t).ok()).map(epoch_ms).context("an event time")?;
            ensure!(seen.insert(event.job_id.clone()), "job {} added twice", event.job_id);
            *per_due.entry(due).or_default() += 1;
            #[expect(clippy::cast_precision_loss, reason = "milliseconds of lateness")]
            lateness.push((added - due) as f64);
        }
        let counts: Vec<(i64, u64)> = {
            let mut c: Vec<_> = per_due.into_iter().collect();
            c.sort_unstable();
            c
        };
        let dues: Vec<i64> = (0..i64::try_from(seconds)?).map(|k| t0 + k * 1000).collect();
        ensure!(
            counts.iter().map(|(d, _)| *d).collect::<Vec<_>>() == dues && counts.iter().all(|(_, n)| *n == schedules),
            "not one job per schedule and due time: {counts:?}"
        );
        let stats = client.stats(QUEUE).await?;
        ensure!(stats.waiting == expected, "{} jobs waiting, not {expected}", stats.waiting);
        for n in 0..schedules {
            client.delete_schedule(QUEUE, &format!("s{n}")).await?;
        }
        second.stop().await;
        first.stop().await;
        out.latencies(&format!("lateness, {schedules} schedules every 1 s, 2 instances"), &lateness, None, Some(10.0));
        Ok(())
    }
}
