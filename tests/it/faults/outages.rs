//! Scenarios 4 to 6: Redis taken away under load, with jobwire left running. Killed (`kill -9`)
//! and restarted from its AOF fsynced always (nothing acknowledged may be lost); crashed with
//! the machine under `appendfsync everysec` (the kill, plus the AOF cut back by the last second
//! it had not fsynced: the window is measured, how many acknowledged adds and completions went);
//! and paused (SIGSTOP) for longer than the lease TTL (nothing reaped, nothing
//! run twice). Clients see UNAVAILABLE meanwhile, health turns NOT_SERVING and back, and the same
//! jobwire process serves on.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jobwire::redis_server::AppendFsync;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use super::{Books, Figures, RATE, Run, assert_clean, balance, in_flight_during, start, wait_health};
use crate::harness::{Redis, unique_prefix};

/// What `appendfsync everysec` may leave unsynced when the machine crashes.
const UNSYNCED: Duration = Duration::from_secs(1);
/// The suite's Redis timeout (`serve_args`): a call lasting longer fails with UNAVAILABLE.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// The size of Redis's growing AOF file over time, sampled every 20 ms, to cut it back as a crash
/// of the machine would.
struct AofGrowth {
    file: PathBuf,
    sizes: Arc<Mutex<Vec<(Instant, u64)>>>,
    sampler: tokio::task::JoinHandle<()>,
}

impl AofGrowth {
    fn watch(redis: &Redis) -> Self {
        let dir = redis.dir().join("appendonlydir");
        let file = std::fs::read_dir(&dir)
            .expect("appendonlydir")
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.to_string_lossy().ends_with(".incr.aof"))
            .expect("an incremental AOF file");
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let sampler = tokio::spawn({
            let (file, sizes) = (file.clone(), sizes.clone());
            async move {
                loop {
                    let size = std::fs::metadata(&file).map_or(0, |m| m.len());
                    sizes.lock().expect("sizes").push((Instant::now(), size));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self { file, sizes, sampler }
    }

    /// Cuts the file back to its size `unsynced` before `crash`: what a machine crash takes of
    /// what Redis had written but not yet fsynced. Returns the bytes cut.
    fn lose_tail(self, crash: Instant, unsynced: Duration) -> u64 {
        self.sampler.abort();
        let sizes = self.sizes.lock().expect("sizes");
        let (_, synced) =
            *sizes.iter().rev().find(|(at, _)| *at + unsynced <= crash).expect("sizes sampled long enough before");
        let file = std::fs::OpenOptions::new().write(true).open(&self.file).expect("open the AOF");
        let written = file.metadata().expect("AOF size").len();
        file.set_len(synced).expect("cut the AOF");
        written - synced
    }
}

/// Kills Redis mid-run (after `crash` did what else the crash takes), restarts it a second
/// later from its AOF, and balances the books; the recovery is from the restart to the first
/// add accepted again.
async fn kill_and_restart(redis: &mut Redis, run: &mut Run, crash: impl FnOnce(Instant)) -> (Figures, Instant) {
    let pid = run.server.pid();
    redis.kill();
    let killed = Instant::now();
    crash(killed);
    let not_serving = wait_health(run.server.addr, ServingStatus::NotServing, Duration::from_secs(5)).await;
    // The outage lasts a second: the fault itself, not a wait for something to settle.
    tokio::time::sleep_until((killed + Duration::from_secs(1)).into()).await;
    // The restart returns once Redis answers a PING; jobwire may take an add in that moment, so
    // the first add accepted again is looked for from the moment the restart began.
    let restarting = Instant::now();
    tokio::task::block_in_place(|| redis.restart());
    let restarted = Instant::now();
    let serving = wait_health(run.server.addr, ServingStatus::Serving, Duration::from_secs(10)).await;
    (&mut run.producer).await.expect("producer");
    let window = killed..restarted + REDIS_TIMEOUT;
    let mut figures = balance(&run.books, run.server.addr, restarted, in_flight_during(window)).await;
    let back = run.books.first_ok_after_refusal(restarting).expect("an add refused during the outage succeeded later");
    figures.recovery = back.saturating_duration_since(restarted);
    assert!(run.server.child.try_wait().expect("try_wait").is_none(), "jobwire kept running");
    assert_eq!(run.server.pid(), pid);
    println!(
        "faults: redis outage: NOT_SERVING {:.1}s after the kill, SERVING {:.1}s after the restart",
        (not_serving - killed).as_secs_f64(),
        (serving - restarted).as_secs_f64()
    );
    (figures, killed)
}

/// Every add refused during an outage was refused with UNAVAILABLE, and some were.
fn assert_unavailable_only(books: &Books) {
    assert!(books.refused(Code::Unavailable) > 0, "no add saw the outage");
    let others: usize = [Code::Internal, Code::Unknown, Code::DeadlineExceeded, Code::ResourceExhausted]
        .into_iter()
        .map(|code| books.refused(code))
        .sum();
    assert_eq!(others, 0, "adds refused with codes other than UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_9_with_appendfsync_always_loses_no_acknowledged_add() {
    let mut redis = Redis::start_config(|c| c.appendonly(true).appendfsync(AppendFsync::Always));
    let prefix = unique_prefix();
    let mut run = start(&redis, &prefix, &[]).await;
    let (figures, _) = kill_and_restart(&mut redis, &mut run, |_| {}).await;
    run.fleet.stop().await;
    figures.print("redis-kill-fsync-always", &format!("unavailable={}", run.books.refused(Code::Unavailable)));
    assert_unavailable_only(&run.books);
    assert_clean(&figures, &redis.url(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crash_with_appendfsync_everysec_loses_at_most_about_a_second() {
    let mut redis = Redis::start_config(|c| c.appendonly(true).appendfsync(AppendFsync::EverySec));
    let prefix = unique_prefix();
    // A `kill -9` of Redis alone loses nothing here either: what Redis wrote to its AOF is in
    // the page cache. A crash of the machine also takes what was not fsynced yet: up to a second.
    let aof = AofGrowth::watch(&redis);
    let mut run = start(&redis, &prefix, &[]).await;
    let mut cut = 0;
    let (figures, _) = kill_and_restart(&mut redis, &mut run, |killed| cut = aof.lose_tail(killed, UNSYNCED)).await;
    run.fleet.stop().await;
    // Completions Redis forgot, the job back as it was a second before: waiting, or active and
    // leased to the live instance that no longer holds it, whose reconciliation returns it; either
    // way it runs again although its earlier run had been acknowledged.
    let completions_lost = figures.unexplained.len() + usize::try_from(figures.stuck).expect("stuck fits");
    figures.print(
        "redis-crash-fsync-everysec",
        &format!(
            "unsynced={}s aof_bytes_lost={cut} unavailable={} acknowledged_adds_lost={} completions_lost={completions_lost}",
            UNSYNCED.as_secs(),
            run.books.refused(Code::Unavailable),
            figures.lost.len()
        ),
    );
    assert_unavailable_only(&run.books);
    let second = usize::try_from(RATE).expect("rate fits");
    assert!(figures.lost.len() <= second * 3 / 2, "lost more than about a second of adds: {}", figures.lost.len());
    assert!(completions_lost <= second * 3 / 2, "lost more than about a second of completions: {completions_lost}");
    assert_eq!(figures.stuck, 0, "jobs left waiting or active");
    assert!(figures.phantoms.is_empty(), "jobs ran that no add accepted: {:?}", figures.phantoms);
    crate::harness::assert_invariants_at(&redis.url(), &prefix, super::QUEUE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_longer_than_the_lease_ttl() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    let run = start(&redis, &prefix, &[]).await;
    redis.signal(libc::SIGSTOP);
    let paused = Instant::now();
    let not_serving = wait_health(run.server.addr, ServingStatus::NotServing, Duration::from_secs(3)).await;
    // Past the 2 s lease TTL: every heartbeat looks stale when Redis wakes up.
    tokio::time::sleep_until((paused + Duration::from_secs(3)).into()).await;
    redis.signal(libc::SIGCONT);
    let resumed = Instant::now();
    let serving = wait_health(run.server.addr, ServingStatus::Serving, Duration::from_secs(10)).await;

    run.producer.await.expect("producer");
    let window = paused..resumed + REDIS_TIMEOUT;
    let mut figures = balance(&run.books, run.server.addr, resumed, in_flight_during(window)).await;
    run.fleet.stop().await;
    figures.recovery = serving - resumed;
    figures.print(
        "redis-pause",
        &format!(
            "pause=3.0s not_serving_after={:.1}s unavailable={}",
            (not_serving - paused).as_secs_f64(),
            run.books.refused(Code::Unavailable)
        ),
    );
    assert_unavailable_only(&run.books);
    assert_clean(&figures, &redis.url(), &prefix).await;
}
