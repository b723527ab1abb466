//! Unit tests of the hub's credit planning, refills and prefetch.

use super::*;

fn spec(queues: &[&str], credit: u32) -> WorkerSpec {
    WorkerSpec {
        worker_id: "w".into(),
        labels: Vec::new(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        max_in_flight: credit,
        prefetch: 0,
    }
}

#[test]
fn plan_spreads_credit_fairly_and_reserves_it() {
    let hub = Hub::new("i1");
    let (tx, _rx1) = mpsc::channel(16);
    let (a, _) = hub.open(spec(&["q"], 2), tx).expect("open");
    let (tx, _rx2) = mpsc::channel(16);
    let (b, _) = hub.open(spec(&["q"], 2), tx).expect("open");
    let tokens = hub.plan("q", 10);
    assert_eq!(tokens.len(), 4);
    let streams: Vec<u64> = tokens.iter().map(LeaseToken::stream).collect();
    assert_eq!(streams.iter().filter(|s| **s == a).count(), 2);
    assert_eq!(streams.iter().filter(|s| **s == b).count(), 2);
    assert_ne!(streams[0], streams[1], "alternates between streams");
    assert!(hub.plan("q", 10).is_empty(), "credit stays reserved until the round settles");
    hub.deliver(&tokens, Vec::new());
    assert_eq!(hub.plan("q", 10).len(), 4, "unused reservations come back");
}

/// A delivery of `queue` handed to the stream planned by `token`.
fn delivered(hub: &Hub, queue: &str, token: &LeaseToken, ulid: &str) -> JobId {
    let job_id = JobId::new(queue, ulid);
    let delivery = Delivery {
        job_id: job_id.clone(),
        job_type: "t".into(),
        payload: Vec::new(),
        headers: Vec::new(),
        priority: 0,
        attempt: 1,
        max_attempts: 1,
        lost_deliveries: 0,
        lease_token: token.clone(),
        deadline: SystemTime::now(),
        created_at: SystemTime::now(),
        session: None,
        trace: None,
    };
    assert!(hub.deliver(std::slice::from_ref(token), vec![delivery]).is_empty());
    job_id
}

#[test]
fn a_refill_replaces_the_acked_delivery_only_while_no_other_stream_has_free_credit() {
    let hub = Hub::new("i1");
    let (tx, _rx1) = mpsc::channel(16);
    let (a, _) = hub.open(spec(&["q"], 1), tx).expect("open");
    let tokens = hub.plan("q", 1);
    assert_eq!(tokens[0].stream(), a);
    let held = delivered(&hub, "q", &tokens[0], "j1");
    let (tx, _rx2) = mpsc::channel(16);
    hub.open(spec(&["q"], 1), tx).expect("open");
    assert!(hub.refill(&held, &tokens[0]).is_none(), "the other stream has free credit");
    let other = hub.plan("q", 1);
    delivered(&hub, "q", &other[0], "j2");
    let refill = hub.refill(&held, &tokens[0]).expect("everyone busy: the acking stream refills");
    assert_eq!(refill.stream(), a);
    assert!(hub.plan("q", 10).is_empty(), "the refill holds the credit the ack frees");
    let stranger = LeaseToken::new("i1", a, 999);
    assert!(hub.refill(&held, &stranger).is_none(), "not the delivery the stream holds");
    hub.revoke(&held, &tokens[0], RevokeReason::Timeout);
    assert!(hub.refill(&held, &tokens[0]).is_none(), "a revoked delivery");
    hub.deliver(&[refill], Vec::new());
}

#[test]
fn a_refill_keeps_queue_order_and_stops_with_drain() {
    let hub = Hub::new("i1");
    let (tx, _rx) = mpsc::channel(16);
    hub.open(spec(&["high", "low"], 1), tx).expect("open");
    hub.set_drained("high", true);
    let token = hub.plan("low", 1).remove(0);
    let held = delivered(&hub, "low", &token, "j1");
    hub.wake("high");
    assert!(hub.refill(&held, &token).is_none(), "the earlier queue has work");
    hub.set_drained("high", true);
    let refill = hub.refill(&held, &token).expect("the earlier queue is drained");
    hub.deliver(&[refill], Vec::new());
    hub.set_drained("low", true);
    assert!(hub.refill(&held, &token).is_none(), "the queue was found drained");
    hub.wake("low");
    hub.drain_all(Duration::from_secs(1));
    assert!(hub.refill(&held, &token).is_none(), "draining");
}

#[test]
fn a_queue_woken_during_a_short_lease_call_stays_undrained() {
    let hub = Hub::new("i1");
    let (tx, _rx) = mpsc::channel(16);
    hub.open(spec(&["high", "low"], 1), tx).expect("open");
    let since = hub.wakes("high");
    hub.wake("high");
    hub.found_empty("high", since);
    assert!(hub.plan("low", 1).is_empty(), "work came while the call looked: high is not drained");
    hub.found_empty("high", hub.wakes("high"));
    assert_eq!(hub.plan("low", 1).len(), 1);
}

#[test]
fn prefetch_adds_to_a_streams_credit() {
    let hub = Hub::new("i1");
    let (tx, _rx) = mpsc::channel(16);
    hub.open(WorkerSpec { prefetch: 2, ..spec(&["q"], 1) }, tx).expect("open");
    assert_eq!(hub.plan("q", 10).len(), 3);
}

#[test]
fn later_queues_wait_until_earlier_ones_are_drained() {
    let hub = Hub::new("i1");
    let (tx, _rx) = mpsc::channel(16);
    hub.open(spec(&["high", "low"], 1), tx).expect("open");
    assert!(hub.plan("low", 10).is_empty());
    hub.set_drained("high", true);
    assert_eq!(hub.plan("low", 10).len(), 1);
}

#[test]
fn a_prefetched_delivery_is_marked_started_by_its_token_alone() {
    let hub = Hub::new("i1");
    let (tx, _rx) = mpsc::channel(16);
    let (id, _) = hub.open(WorkerSpec { prefetch: 1, ..spec(&["q"], 1) }, tx).expect("open");
    let tokens = hub.plan("q", 2);
    let first = delivered(&hub, "q", &tokens[0], "j1");
    delivered(&hub, "q", &tokens[1], "j2");
    hub.mark_started(id, &tokens[1]);
    hub.mark_started(id, &LeaseToken::new("i1", id, 999));
    let (held, _) = hub.close(id);
    let started: Vec<(&str, bool)> = held.iter().map(|h| (h.job_id.ulid.as_str(), h.started)).collect();
    assert_eq!(started, [("j1", false), ("j2", true)]);
    assert_eq!(held[0].job_id, first);
}

#[test]
fn a_revoked_delivery_keeps_its_credit_beside_a_new_delivery_of_the_same_job() {
    let hub = Hub::new("i1");
    let (tx, _rx) = mpsc::channel(16);
    hub.open(spec(&["q"], 2), tx).expect("open");
    let old = hub.plan("q", 1).remove(0);
    let job = delivered(&hub, "q", &old, "j1");
    hub.revoke(&job, &old, RevokeReason::LeaseLost);
    let new = hub.plan("q", 1).remove(0);
    delivered(&hub, "q", &new, "j1");
    assert!(hub.plan("q", 1).is_empty(), "both deliveries hold credit until answered");
    assert!(hub.holds(&job, &old) && hub.holds(&job, &new));
    assert!(hub.release(&job, &old).is_some_and(|r| r.revoked), "the revoked one answered");
    assert!(hub.holds(&job, &new), "the new delivery is still held");
    assert_eq!(hub.plan("q", 1).len(), 1);
}
