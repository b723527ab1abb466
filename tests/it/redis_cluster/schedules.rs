//! Schedules on a cluster: one schedule on a queue of each master, made through instance A
//! before instance B starts, so B learns them from its resync (one pipeline of HSCANs per
//! slot: the cluster client refuses a pipeline that spans slots, and one that did would have
//! left B's share of the schedules unread and unfired). Each schedule fires every second
//! over a window, through both instances (each fires those it owns), and adds exactly one job
//! per due time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobwire::proto::{self, JobState, schedule_service_client::ScheduleServiceClient};

use super::{Cluster, lifecycle::one_queue_per_master};
use crate::harness::{Client, ServerBuilder, eventually, unique_prefix};

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis()).expect("fits")
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: 0 }
}

/// The due times (ms, from the job ids' ULIDs) of the waiting jobs of `queue`, sorted.
async fn due_times(client: &mut Client, queue: &str) -> Vec<i64> {
    let request = proto::ListJobsRequest {
        queue: queue.into(),
        state: JobState::Waiting as i32,
        page_size: 100,
        ..Default::default()
    };
    let page = client.list_jobs(request).await.expect("list").into_inner();
    let mut dues: Vec<i64> = page
        .jobs
        .iter()
        .map(|job| {
            let ulid: ulid::Ulid = job.id.rsplit('/').next().expect("an id").parse().expect("a ULID");
            i64::try_from(ulid.timestamp_ms()).expect("fits")
        })
        .collect();
    dues.sort_unstable();
    dues
}

#[tokio::test]
async fn schedules_on_every_master_fire_once_per_due_time_through_two_instances() {
    const FIRES: i64 = 4;
    let cluster = Cluster::start();
    let prefix = unique_prefix();
    let a = ServerBuilder::new(&cluster).prefix(&prefix).start().await;
    let queues: Vec<String> = one_queue_per_master(&cluster).into_iter().map(|(q, _)| q).collect();
    // Whole seconds, far enough ahead for B to start and read the schedules first.
    let t0 = (now_ms() / 1000 + 4) * 1000;
    let mut admin = ScheduleServiceClient::new(a.channel().await);
    for queue in &queues {
        let definition = proto::ScheduleDefinition {
            queue: queue.clone(),
            name: "tick".into(),
            template: Some(proto::JobTemplate { r#type: "tick".into(), ..Default::default() }),
            timing: Some(proto::schedule_definition::Timing::Every(prost_types::Duration { seconds: 1, nanos: 0 })),
            start: Some(timestamp(t0)),
            end: Some(timestamp(t0 + FIRES * 1000)),
            ..Default::default()
        };
        admin.upsert_schedule(proto::UpsertScheduleRequest { schedule: Some(definition) }).await.expect("upsert");
    }
    let b = ServerBuilder::new(&cluster).prefix(&prefix).start().await;
    let expected: Vec<i64> = (0..FIRES).map(|k| t0 + k * 1000).collect();
    let client = a.client().await;
    for queue in &queues {
        eventually(Duration::from_secs(20), "every due time of the window to fire", || {
            let (mut client, queue) = (client.clone(), queue.clone());
            let expected = expected.len();
            async move { due_times(&mut client, &queue).await.len() >= expected }
        })
        .await;
    }
    // A second past the window's end: a due time fired twice would show by now.
    tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(1)).await;
    let mut via_b = b.client().await;
    for queue in &queues {
        assert_eq!(due_times(&mut via_b, queue).await, expected, "{queue}: one job per due time, none twice");
        a.assert_invariants(queue).await;
    }
    a.stop().await;
    b.stop().await;
}
