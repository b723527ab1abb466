//! Coalesces concurrent calls of one kind on one queue into one script call.
//!
//! Each script call pays a fixed cost in Redis (its prelude, its keys) that dwarfs the work of
//! one job, so under load the calls that arrive together go together: the first caller becomes
//! the leader and runs a batch; callers arriving meanwhile only enqueue, and the leader runs
//! them as the next batch as soon as the current one returns. An idle queue pays no waiting:
//! a lone call runs at once. Each item is still applied on its own by the script.
//!
//! A caller that finds its lane idle leads the next batch in its own future: no task to spawn,
//! and no wake-up to hear its answer, which at low concurrency are most of what the coalescing
//! costs besides the call. Items are taken in (`enqueue`) apart from awaiting their answer
//! (`Ticket::answer`), so items taken in together before the first answer is awaited (the acks
//! of one Work message) go in that one batch. Callers arriving while it runs wait for the next
//! batch, which runs in a task of its own, as every later one does until the lane is idle again.
//! A caller that goes away (its client disconnected) must not strand a batch: when a leading
//! ticket is dropped before its batch is done (or before it was awaited at all), the rest of
//! the batch goes on in a task of its own (`Detached`), so the call still finishes, answers and
//! hands the lead on. Those tasks are not on the background tracker: they end by themselves
//! once their lane is idle.
//!
//! A coalescer may let more than one batch of a lane run at once (`with_leaders`): an item that
//! finds fewer running leads a batch of its own at once, and a leader whose batch is done goes on
//! with what is pending. The completions' coalescer runs two, so that Redis runs one batch while
//! the server settles the one before it and the worker runs its jobs; adds run one.
//!
//! Used by `intake.rs` (adds) and `acks.rs` (completions), each owning its coalescer.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tokio::sync::oneshot;

use crate::store::StoreError;

/// Most items one script call carries.
const MAX_BATCH: usize = 256;

type Waiter<R> = oneshot::Sender<Result<R, StoreError>>;

struct Lane<T, R> {
    /// Batches of the lane running (or about to): at most the coalescer's `most_leaders`.
    leaders: usize,
    pending: Vec<(T, Waiter<R>)>,
}

/// Gathers the items submitted for one queue (its lane) while that queue's script call runs; each
/// item `T` gets its own answer `R`.
pub(super) struct Coalescer<T, R> {
    lanes: Mutex<HashMap<String, Lane<T, R>>>,
    most_leaders: usize,
}

impl<T, R> Default for Coalescer<T, R> {
    /// One batch of a lane at a time.
    fn default() -> Self {
        Self::with_leaders(1)
    }
}

impl<T, R> Coalescer<T, R> {
    /// Up to `most` batches of a lane at once (at least one): an item that finds fewer running
    /// leads one of its own at once, so Redis runs one batch while the server settles another.
    pub(super) fn with_leaders(most: usize) -> Self {
        Self { lanes: Mutex::new(HashMap::new()), most_leaders: most.max(1) }
    }
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// Submits `item` for `queue` and waits for its answer; `run` applies a batch and returns
    /// one answer per item, in order.
    pub(super) async fn submit<F, Fut>(self: &Arc<Self>, queue: &str, item: T, run: F) -> Result<R, StoreError>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send + 'static,
    {
        self.enqueue(queue, item, run).answer().await
    }

    /// Takes `item` in for `queue`'s next batch at once; its answer comes with the ticket. `run`
    /// applies a batch (used when this item's ticket leads it). The other items of a batch wait
    /// for its leading ticket: poll the tickets of items taken in together together (as a
    /// `FuturesUnordered` does), or drop the ones not awaited.
    pub(super) fn enqueue<F, Fut>(self: &Arc<Self>, queue: &str, item: T, run: F) -> Ticket<R>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send + 'static,
    {
        let (tx, answer) = oneshot::channel();
        let leads = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            // A busy lane is found without allocating its name; only an idle queue's gets one.
            match lanes.get_mut(queue) {
                Some(lane) => {
                    lane.pending.push((item, tx));
                    let leads = lane.leaders < self.most_leaders;
                    lane.leaders += usize::from(leads);
                    leads
                }
                None => {
                    lanes.insert(queue.to_owned(), Lane { leaders: 1, pending: vec![(item, tx)] });
                    true
                }
            }
        };
        // The lane ran fewer batches than it may: this ticket leads the next one (its own item,
        // and any taken in before it runs), then hands the lead on to a task if more are waiting.
        let lead = leads.then(|| {
            let this = self.clone();
            let queue = queue.to_owned();
            Detached::new(async move {
                // A batch that found nothing pending (another leader took it) gave the lead up.
                if this.run_batch(&queue, &run).await && this.hand_on(&queue) {
                    tokio::spawn(async move { this.lead(&queue, &run).await });
                }
            })
        });
        Ticket { answer, lead }
    }

    /// Runs batches until nobody is waiting, then gives up the lead.
    async fn lead<F, Fut>(&self, queue: &str, run: &F)
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send,
    {
        while self.run_batch(queue, run).await {}
    }

    /// After the batch led inline: whether callers are waiting (the lead goes on, in a task);
    /// else this lead is given up.
    fn hand_on(&self, queue: &str) -> bool {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        match lanes.get(queue) {
            Some(lane) if !lane.pending.is_empty() => true,
            Some(_) => {
                Self::give_up_lead(&mut lanes, queue);
                false
            }
            None => false,
        }
    }

    /// One leader of `queue`'s lane stops; the last one releases the lane.
    fn give_up_lead(lanes: &mut HashMap<String, Lane<T, R>>, queue: &str) {
        if let Some(lane) = lanes.get_mut(queue) {
            lane.leaders = lane.leaders.saturating_sub(1);
            if lane.leaders == 0 {
                lanes.remove(queue);
            }
        }
    }

    /// Runs the next batch of `queue` and answers its callers; false (and the lead given up) when
    /// nobody was waiting.
    async fn run_batch<F, Fut>(&self, queue: &str, run: &F) -> bool
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send,
    {
        let batch: Vec<(T, Waiter<R>)> = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            let Some(lane) = lanes.get_mut(queue) else { return false };
            if lane.pending.is_empty() {
                Self::give_up_lead(&mut lanes, queue);
                return false;
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
        true
    }
}

/// The answer to one item taken in; the ticket of an item that found its lane running fewer
/// batches than it may also leads that lane's next batch.
pub(super) struct Ticket<R> {
    answer: oneshot::Receiver<Result<R, StoreError>>,
    lead: Option<Detached>,
}

impl<R> Ticket<R> {
    /// Runs the batch this ticket leads, if it leads one, and waits for the item's answer.
    pub(super) async fn answer(self) -> Result<R, StoreError> {
        let Ticket { answer, lead } = self;
        if let Some(lead) = lead {
            lead.await;
        }
        answer.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the batch was dropped".into())))
    }
}

/// A future run inline by its caller that, if the caller drops it before it is done (or without
/// polling it at all), finishes in a task of its own (or is dropped with the runtime, when there
/// is none any more).
struct Detached {
    future: Option<Pin<Box<dyn Future<Output = ()> + Send + 'static>>>,
}

impl Detached {
    fn new(future: impl Future<Output = ()> + Send + 'static) -> Self {
        Self { future: Some(Box::pin(future)) }
    }
}

impl Future for Detached {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(future) = self.future.as_mut() else { return Poll::Ready(()) };
        let done = future.as_mut().poll(cx);
        if done.is_ready() {
            self.future = None;
        }
        done
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if let (Some(future), Ok(runtime)) = (self.future.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(future);
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
    async fn with_two_leaders_a_second_batch_runs_beside_the_first_and_a_third_waits() {
        let coalescer: Arc<Coalescer<u32, u32>> = Arc::new(Coalescer::with_leaders(2));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let run = {
            let (running, most, batches) = (running.clone(), most.clone(), batches.clone());
            move |items: Vec<u32>| {
                let (running, most, batches) = (running.clone(), most.clone(), batches.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    batches.lock().expect("lock").push(items.clone());
                    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(items)
                }
            }
        };
        let submit = |i: u32| {
            let (c, run) = (coalescer.clone(), run.clone());
            tokio::spawn(async move { c.submit("q", i, run).await })
        };
        let mut callers = Vec::new();
        for i in 0..4 {
            callers.push(submit(i));
            // Each caller finds the batches of those before it running.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for (i, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.await.expect("caller").expect("answer"), u32::try_from(i).expect("small"));
        }
        assert_eq!(most.load(Ordering::SeqCst), 2, "two batches at once, never three");
        assert_eq!(*batches.lock().expect("lock"), [vec![0], vec![1], vec![2, 3]]);
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

    #[tokio::test]
    async fn items_taken_in_before_any_answer_is_awaited_share_one_batch() {
        let coalescer: Arc<Coalescer<u32, u32>> = Arc::default();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let run = {
            let batches = batches.clone();
            move |items: Vec<u32>| {
                batches.lock().expect("lock").push(items.clone());
                async move { Ok(items.into_iter().map(|i| i + 1).collect()) }
            }
        };
        let tickets: Vec<_> = (0..5).map(|i| coalescer.enqueue("q", i, run.clone())).collect();
        // Polled in reverse: the leading ticket, the first, is polled last.
        let answers = futures::future::join_all(tickets.into_iter().rev().map(Ticket::answer));
        let answers = tokio::time::timeout(std::time::Duration::from_secs(2), answers).await.expect("answered");
        let answers: Vec<u32> = answers.into_iter().map(|a| a.expect("answer")).collect();
        assert_eq!(answers, [5, 4, 3, 2, 1]);
        assert_eq!(*batches.lock().expect("lock"), [vec![0, 1, 2, 3, 4]]);
    }

    #[tokio::test]
    async fn a_leading_ticket_dropped_unawaited_still_runs_its_batch() {
        let coalescer: Arc<Coalescer<u32, u32>> = Arc::default();
        let run = |items: Vec<u32>| async move { Ok(items) };
        let leader = coalescer.enqueue("q", 1, run);
        let follower = coalescer.enqueue("q", 2, run);
        drop(leader);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(2), follower.answer()).await;
        assert_eq!(answer.expect("not stranded").expect("answer"), 2);
    }

    #[tokio::test]
    async fn a_lone_call_runs_in_its_callers_task() {
        let coalescer: Arc<Coalescer<u32, Option<tokio::task::Id>>> = Arc::default();
        let run = |items: Vec<u32>| async move { Ok(items.iter().map(|_| tokio::task::try_id()).collect()) };
        let caller = tokio::spawn({
            let c = coalescer.clone();
            async move { (tokio::task::id(), c.submit("q", 1, run).await) }
        });
        let (caller_id, ran_in) = caller.await.expect("caller");
        assert_eq!(ran_in.expect("answer"), Some(caller_id));
        assert!(coalescer.lanes.lock().expect("lock").is_empty(), "the lane is released");
    }

    #[tokio::test]
    async fn a_batch_led_inline_finishes_when_its_caller_goes_away() {
        let coalescer: Arc<Coalescer<u32, u32>> = Arc::default();
        let (started_tx, started) = oneshot::channel::<()>();
        let started_tx = Arc::new(Mutex::new(Some(started_tx)));
        let (finished_tx, finished) = tokio::sync::mpsc::unbounded_channel::<Vec<u32>>();
        let run = move |items: Vec<u32>| {
            let (started_tx, finished_tx) = (started_tx.clone(), finished_tx.clone());
            async move {
                if let Some(tx) = started_tx.lock().expect("lock").take() {
                    let _ = tx.send(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let _ = finished_tx.send(items.clone());
                Ok(items)
            }
        };
        let first = tokio::spawn({
            let (c, run) = (coalescer.clone(), run.clone());
            async move { c.submit("q", 1, run).await }
        });
        started.await.expect("the batch started");
        first.abort();
        let mut finished = finished;
        let done = tokio::time::timeout(std::time::Duration::from_secs(2), finished.recv()).await;
        assert_eq!(done.expect("the batch went on without its caller"), Some(vec![1]));
        let next = tokio::time::timeout(std::time::Duration::from_secs(2), coalescer.submit("q", 2, run)).await;
        assert_eq!(next.expect("the lane was handed on").expect("answer"), 2);
    }
}
