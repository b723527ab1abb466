//! queue_admit.lua: the registry of queues held to a cap (`--max-queues`), checked and added in
//! one call; queues_register.lua (the heartbeat's discovery) registers without it.

use super::{Case, QUEUE};

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
