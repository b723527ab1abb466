//! Coalesces concurrent calls of one kind on one queue into one script call.
//!
//! Each script call pays a fixed cost in Redis (its prelude, its keys) that dwarfs the work of
//! one job, so under load the calls that arrive together go together: the first caller becomes
//! the leader and runs a batch; callers arriving meanwhile only enqueue, and the leader runs
//! them as the next batch as soon as the current one returns. An idle queue pays no waiting:
//! a lone call runs at once. Each item is still applied on its own by the script.
//!
//! The leading runs in a task of its own, not in the first caller's future: a caller that goes
//! away (its client disconnected) must not strand the batches of the others. That task is not on
//! the background tracker: it ends by itself once its lane is empty.
//!
//! Used by `intake.rs` (adds) and `acks.rs` (completions), each owning its coalescer.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use tokio::sync::oneshot;

use crate::store::StoreError;

/// Most items one script call carries.
const MAX_BATCH: usize = 256;

type Waiter<R> = oneshot::Sender<Result<R, StoreError>>;

struct Lane<T, R> {
    leader: bool,
    pending: Vec<(T, Waiter<R>)>,
}

/// Gathers the items submitted for one queue (its lane) while that queue's script call runs; each
/// item `T` gets its own answer `R`.
pub(super) struct Coalescer<T, R> {
    lanes: Mutex<HashMap<String, Lane<T, R>>>,
}

impl<T, R> Default for Coalescer<T, R> {
    fn default() -> Self {
        Self { lanes: Mutex::new(HashMap::new()) }
    }
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// Submits `item` for `queue`; `run` applies a batch and returns one answer per item, in
    /// order.
    pub(super) async fn submit<F, Fut>(self: &Arc<Self>, queue: &str, item: T, run: F) -> Result<R, StoreError>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send,
    {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            let lane = lanes.entry(queue.to_owned()).or_insert_with(|| Lane { leader: false, pending: Vec::new() });
            lane.pending.push((item, tx));
            !std::mem::replace(&mut lane.leader, true)
        };
        if lead {
            let this = self.clone();
            let queue = queue.to_owned();
            tokio::spawn(async move { this.lead(&queue, &run).await });
        }
        rx.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the batch was dropped".into())))
    }

    /// Runs batches until nobody is waiting, then gives up the lead.
    async fn lead<F, Fut>(&self, queue: &str, run: &F)
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send,
    {
        loop {
            let batch: Vec<(T, Waiter<R>)> = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
                let Some(lane) = lanes.get_mut(queue) else { return };
                if lane.pending.is_empty() {
                    lanes.remove(queue);
                    return;
                }
                let take = lane.pending.len().min(MAX_BATCH);
                lane.pending.drain(..take).collect()
            };
            let (items, waiters): (Vec<T>, Vec<Waiter<R>>) = batch.into_iter().unzip();
            match run(items).await {
                Ok(answers) => {
                    let mut answers = answers.into_iter();
                    for waiter in waiters {
                        let answer = answers.next().ok_or_else(|| StoreError::Corrupt("a batch answered short".into()));
                        let _ = waiter.send(answer);
                    }
                }
                Err(e) => {
                    for waiter in waiters {
                        let _ = waiter.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_calls_share_script_calls_and_keep_their_answers() {
        let coalescer: Arc<Coalescer<u32, u32>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let run = move |items: Vec<u32>| {
            let calls = counter.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(items.into_iter().map(|i| i * 10).collect())
            }
        };
        let answers = futures::future::join_all((0..50).map(|i| coalescer.submit("q", i, run.clone()))).await;
        let answers: Vec<u32> = answers.into_iter().map(|a| a.expect("answer")).collect();
        assert_eq!(answers, (0..50).map(|i| i * 10).collect::<Vec<_>>());
        assert!(calls.load(Ordering::SeqCst) < 50, "calls were coalesced");
        tokio::task::yield_now().await;
        assert!(coalescer.lanes.lock().expect("lock").is_empty(), "the lane is released");
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_strand_the_others() {
        let coalescer: Arc<Coalescer<u32, u32>> = Arc::default();
        let slow = |items: Vec<u32>| async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok(items)
        };
        // The first caller leads, then is dropped mid-batch (its client went away).
        let first = tokio::spawn({
            let c = coalescer.clone();
            async move { c.submit("q", 1, slow).await }
        });
        tokio::task::yield_now().await;
        first.abort();
        let second = tokio::time::timeout(std::time::Duration::from_secs(2), coalescer.submit("q", 2, slow)).await;
        assert_eq!(second.expect("not stranded").expect("answer"), 2);
    }
}
