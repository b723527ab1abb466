//! Scenario 9: Redis full in the middle of a run. Under load, Redis's `maxmemory` is cut to what
//! it uses at that moment (`noeviction`), as when the data outgrows it: adds are refused with
//! RESOURCE_EXHAUSTED (by Redis itself at first, then by the server's watermark), and the
//! producer retries each until it is accepted, so a refused add is counted refused, never lost.
//! Leases and acks go on meanwhile, retained history is shed until there is room, and adds
//! resume within seconds, with no restart; health stays SERVING throughout, and `jobwire doctor`
//! finds Redis clean at the end.

use std::time::{Duration, Instant};

use jobwire::client::Client;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use super::{QUEUE, assert_clean, balance, health, start};
use crate::harness::{Redis, run_jobwire, unique_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_full_in_the_middle_of_a_run() {
    let redis = Redis::start();
    let prefix = unique_prefix();
    // Idempotency tombstones are never shed (they go with their window): kept 5 s here, as
    // the producer's keys are only there for its retries.
    let run = start(&redis, &prefix, &["--idempotency-window", "5s"]).await;
    let (server, books) = (&run.server, &run.books);

    let mut admin =
        redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("connect");
    let info: redis::InfoDict = redis::cmd("INFO").arg("memory").query_async(&mut admin).await.expect("info");
    let used: u64 = info.get("used_memory").expect("used_memory");
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .arg("maxmemory")
        .arg(used)
        .query_async(&mut admin)
        .await
        .expect("config set");
    let fault = Instant::now();

    // Until adds are accepted again: health is asked every 50 ms and must say SERVING.
    let mut not_serving = 0;
    let back = loop {
        if let Some(back) = books.first_ok_after_refusal(fault).filter(|_| books.refused(Code::ResourceExhausted) > 0) {
            break back;
        }
        assert!(fault.elapsed() < Duration::from_secs(20), "adds were not accepted again within 20 s");
        if health(server.addr).await != ServingStatus::Serving {
            not_serving += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    run.producer.await.expect("producer");
    let mut figures = balance(books, server.addr, fault, |_| false).await;
    figures.recovery = back - fault;
    run.fleet.stop().await;
    let stats = Client::connect(&format!("http://{}", server.addr)).await.expect("connect").stats(QUEUE).await;
    let stats = stats.expect("stats");
    let refused = books.refused(Code::ResourceExhausted);
    figures.print(
        "redis-full",
        &format!(
            "maxmemory={}KiB refused={refused} shed_completed={} shed_events={} gone_after_completion={} \
             not_serving={not_serving} unavailable={}",
            used >> 10,
            stats.completed_shed,
            stats.events_shed,
            figures.shed,
            books.refused(Code::Unavailable)
        ),
    );
    assert_eq!(not_serving, 0, "health left SERVING while Redis was full");
    assert!(refused > 0, "no add was refused for memory");
    // UNAVAILABLE is a Redis call past the suite's 500 ms timeout, which a busy machine sees
    // now and then, full or not; a full Redis itself is never answered with anything but
    // RESOURCE_EXHAUSTED (it was INTERNAL before the fix).
    let others: Vec<(Code, usize)> =
        [Code::Internal, Code::Unknown].into_iter().map(|c| (c, books.refused(c))).filter(|(_, n)| *n > 0).collect();
    assert!(others.is_empty(), "adds refused with codes other than RESOURCE_EXHAUSTED: {others:?}");
    assert!(stats.completed_shed > 0, "retained history gave way");
    assert_eq!(figures.duplicates, 0, "nothing runs twice for memory");
    assert_clean(&figures, &redis.url(), &prefix).await;
    let doctor =
        run_jobwire(&["doctor", "--redis-url", &redis.url(), "--key-prefix", &prefix], Duration::from_secs(60)).await;
    assert_eq!(doctor.code, Some(0), "doctor: {}\n{}", doctor.stdout, doctor.stderr);
}
