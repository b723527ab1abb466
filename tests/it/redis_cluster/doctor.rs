//! `jobwire doctor` against a cluster: damage planted by hand on a queue of each master (on the
//! master itself, over its own socket) is found by the doctor's SCAN, which goes master by
//! master, and `--repair` mends it with each queue's functions, which run on the master of the
//! queue's slot; a second run is clean and so is the invariant check of every queue.

use std::collections::BTreeSet;

use super::{Cluster, lifecycle::one_queue_per_master, on_node};
use crate::{
    doctor::doctor,
    harness::{RedisBackend, ServerBuilder, Worker, assert_invariants_at, job, unique_prefix},
};

#[tokio::test]
async fn doctor_finds_and_repairs_damage_on_every_master() {
    let cluster = Cluster::start();
    let prefix = unique_prefix();
    let server = ServerBuilder::new(&cluster).prefix(&prefix).start().await;
    let queues = one_queue_per_master(&cluster);
    let mut client = server.client().await;
    for (queue, _) in &queues {
        for i in 0..3 {
            client.add_job(job(queue, "t", format!("{i}").as_bytes())).await.expect("add");
        }
        let mut worker = Worker::open(&server, &[queue], 1).await;
        let first = worker.job().await;
        worker.complete(&first, b"done").await.expect("complete");
    }
    server.stop().await;
    let (code, clean) = doctor(&cluster, &prefix, false).await;
    assert_eq!(code, Some(0), "a normal workload is clean: {clean:#}");

    for (queue, master) in &queues {
        let node = &cluster.nodes[*master];
        let key = |name: &str| format!("{prefix}:{{{queue}}}:{name}");
        let ready: Vec<String> = on_node(node, redis::cmd("LRANGE").arg(key("ready:0")).arg(0).arg(-1)).expect("ready");
        let _: i64 = on_node(node, redis::cmd("ZADD").arg(key("dead")).arg(1).arg(&ready[0])).expect("dead too");
        let completed: Vec<String> =
            on_node(node, redis::cmd("LRANGE").arg(key("completed")).arg(0).arg(-1)).expect("completed");
        let _: i64 = on_node(node, redis::cmd("LREM").arg(key("completed")).arg(0).arg(&completed[0])).expect("lrem");
    }
    let (code, report) = doctor(&cluster, &prefix, false).await;
    assert_eq!(code, Some(1), "{report:#}");
    let damaged: BTreeSet<&str> =
        report["findings"].as_array().expect("findings").iter().filter_map(|f| f["queue"].as_str()).collect();
    let expected: BTreeSet<&str> = queues.iter().map(|(q, _)| q.as_str()).collect();
    assert_eq!(damaged, expected, "damage found on every master: {report:#}");
    let (code, repaired) = doctor(&cluster, &prefix, true).await;
    assert_eq!(code, Some(0), "{repaired:#}");
    let (code, again) = doctor(&cluster, &prefix, false).await;
    assert_eq!(code, Some(0), "a second run is clean: {again:#}");
    for (queue, _) in &queues {
        assert_invariants_at(&cluster.url(), &prefix, queue).await;
    }
}
