//! A sharded queue over the cluster: its three shards on three masters (each shard's keys on the
//! master that owns its slot, `CLUSTER KEYSLOT` distinct), and the flows of `sharded.rs` through
//! two instances, every shard ending with the invariant check; then Subscribe over the three
//! masters resumed per shard, and schedules living on their shards' masters, each firing once
//! per due time.

use std::collections::BTreeSet;

use super::{Cluster, on_node};
use crate::{
    harness::{ServerBuilder, unique_prefix},
    sharded::{events_of_every_shard, flows, schedules_in_their_shards},
};

#[tokio::test]
async fn a_sharded_queue_lives_on_three_masters_and_serves_from_all() {
    let cluster = Cluster::start();
    let prefix = unique_prefix();
    let a = ServerBuilder::new(&cluster).prefix(&prefix).start().await;
    let b = ServerBuilder::new(&cluster).prefix(&prefix).start().await;
    let shards = flows(&a, &b, "orders").await;
    let mut masters = BTreeSet::new();
    let mut slots = BTreeSet::new();
    for shard in &shards {
        let jobs = a.store.keys().queue(shard).jobs().to_owned();
        let master = cluster.master_of(&jobs);
        let held: i64 = on_node(&cluster.nodes[master], redis::cmd("HLEN").arg(&jobs)).expect("HLEN");
        assert!(held > 0, "{shard}'s jobs are on its master");
        let slot: i64 =
            on_node(&cluster.nodes[master], redis::cmd("CLUSTER").arg("KEYSLOT").arg(&jobs)).expect("KEYSLOT");
        slots.insert(slot);
        masters.insert(master);
    }
    assert_eq!(slots.len(), 3, "three slots: {shards:?}");
    assert_eq!(masters.len(), 3, "three masters: {shards:?}");

    // Subscribe follows the shards on three masters; schedules live on their shards' masters.
    assert_eq!(events_of_every_shard(&a, &b, "feed").await.len(), 3);
    let homes = schedules_in_their_shards(&a, &b, "cron").await;
    let masters: BTreeSet<usize> =
        homes.iter().map(|shard| cluster.master_of(&a.store.keys().queue(shard).schedules().to_owned())).collect();
    assert!(masters.len() > 1, "schedules on more than one master: {homes:?}");
}
