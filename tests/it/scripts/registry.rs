//! queue_admit.lua: the registry of queues held to a cap (`--max-queues`), checked and added in
//! one call; queues_register.lua (the heartbeat's discovery) registers without it;
//! queue_retire.lua drops what is left of a queue that holds nothing, before it leaves.

use std::time::Duration;

use jobwire::store::Listing;

use super::{Case, Job, QUEUE};

#[tokio::test]
async fn a_queue_is_admitted_below_the_cap_and_a_known_one_at_it() {
    let case = Case::start().await;
    assert!(case.admit_queue(QUEUE, 2).await.expect("admit"), "an empty registry admits");
    assert!(case.admit_queue(QUEUE, 2).await.expect("admit"), "a queue admitted again stays");
    assert!(case.admit_queue("other", 2).await.expect("admit"), "the second of two");
    assert_eq!(case.registered_queues().await, ["other", QUEUE]);
    assert!(case.admit_queue(QUEUE, 2).await.expect("admit"), "a known queue at the cap is in");
    case.assert_invariants().await;
}

#[tokio::test]
async fn at_the_cap_a_new_queue_is_refused_and_nothing_is_written() {
    let case = Case::start().await;
    case.register_queue("found").await.expect("discovery registers without a cap");
    assert!(case.admit_queue(QUEUE, 2).await.expect("admit"));
    assert!(!case.admit_queue("third", 2).await.expect("admit"), "a third queue over a cap of two");
    assert!(!case.admit_queue("third", 1).await.expect("admit"), "and under a lower cap");
    assert_eq!(case.registered_queues().await, ["found", QUEUE], "the refused queue is not in the registry");
    case.assert_invariants().await;
}

/// queue_retire.lua and `Instances::retire_queue`: a queue leaves the registry only when it
/// holds nothing, and the first add after marks it again and asks to be registered.
#[tokio::test]
async fn a_queue_that_holds_nothing_leaves_the_registry_and_its_next_add_asks_to_register_it() {
    let case = Case::start().await;
    let job = Job::plain();
    assert!(case.add_registers_again(&job).await, "the first add of a queue marks it");
    assert!(!case.add_registers_again(&Job::plain()).await, "a marked queue asks nothing");
    case.register_queue(QUEUE).await.expect("register");
    assert!(!case.retire_queue().await, "a queue holding jobs stays");
    assert_eq!(case.registered_queues().await, [QUEUE]);
    case.purge(&[Listing::Waiting]).await;
    case.pause(true).await;
    assert!(!case.retire_queue().await, "a paused queue holds a setting");
    case.pause(false).await;
    assert!(case.retire_queue().await, "empty: it goes");
    assert!(case.registered_queues().await.is_empty());
    assert_eq!(case.queue_key_count().await, 0, "nothing of it is left in Redis");
    assert!(case.add_registers_again(&Job::plain()).await, "the next add finds it unmarked");
    case.assert_invariants().await;
}

#[tokio::test]
async fn a_live_tombstone_or_a_session_keeps_a_queue_in_the_registry() {
    let case = Case::start().await;
    case.add(&Job::plain().keyed("order-1", Duration::from_secs(3600))).await;
    case.register_queue(QUEUE).await.expect("register");
    case.purge(&[Listing::Waiting]).await;
    assert!(!case.retire_queue().await, "the key is remembered for its hour");
    assert_eq!(case.registered_queues().await, [QUEUE]);
    let other = Case::start().await;
    other.session_create("s", "{}", Duration::from_secs(60), 1).await;
    other.register_queue(QUEUE).await.expect("register");
    assert!(!other.retire_queue().await, "a session holds the queue");
    assert_eq!(other.registered_queues().await, [QUEUE]);
}
