//! The `Work` RPC: one bidirectional stream per worker carrying its jobs one way and its acks
//! the other, so an ack costs no call of its own.
//!
//! The stream is the same worker stream as `GetJob`'s (`feed.rs`: credit, pings, drain, revoke,
//! and the guard that hands unacknowledged jobs back when it ends); jobs already waiting go out
//! together in one message. Each ack runs through the same function as its unary RPC
//! (`acks.rs`), concurrently with the others, and is answered by its `ack_id`; answers ready
//! together go out in one message. The completions of one message are all taken in before any
//! runs, so they share one Redis call (`Engine::start_complete`). A refused ack is answered with
//! its status; only a protocol error ends the stream (INVALID_ARGUMENT). The caller's scope is
//! checked on the `open` message's queues (a refusal ends the stream before it opens) and on each
//! ack's job, which is answered PERMISSION_DENIED like any refused ack.
//!
//! Everything runs inside the response stream tonic polls: no task of its own, so nothing
//! outlives the stream, and a worker that stops reading stops its acks from being taken in.

use std::{pin::Pin, sync::Arc, task::Poll, time::Duration};

use foldhash::{HashSet, HashSetExt};

use futures::{FutureExt, Stream, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use tonic::{Status, Streaming};

use super::{acks, auth::Caller, convert, feed::Feed};
use crate::{
    proto::{
        self, get_job_response::Message as JobMessage, work_ack::Ack, work_answer::Result as AckResult,
        work_request::Message as Inbound, work_response::Message as Outbound,
    },
    queue::Engine,
};

pub(super) type WorkStream = Pin<Box<dyn Stream<Item = Result<proto::WorkResponse, Status>> + Send>>;

/// Acks taken in but not answered yet, at most, before the stream stops reading more.
const MAX_PENDING_ACKS: usize = 1024;

/// Reads the `open` message, opens the worker stream and returns the response stream.
pub(super) async fn open(
    engine: Arc<Engine>,
    ping_every: Duration,
    caller: Caller,
    mut inbound: Streaming<proto::WorkRequest>,
) -> Result<WorkStream, Status> {
    let open = match inbound.message().await? {
        Some(proto::WorkRequest { message: Some(Inbound::Open(open)) }) => open,
        Some(_) => return Err(Status::invalid_argument("message: the first message must be `open`")),
        None => return Err(Status::invalid_argument("message: the stream ended before `open`")),
    };
    caller.check(&open)?;
    let spec = convert::worker_spec(open.worker_id, open.labels, open.queues, open.max_in_flight, open.prefetch);
    let feed = Feed::open(&engine, spec, ping_every).await?;
    let work = Work {
        engine,
        caller,
        feed,
        inbound,
        reading: true,
        pending: FuturesUnordered::new(),
        outstanding: HashSet::new(),
    };
    Ok(Box::pin(futures::stream::unfold(Some(work), |work| async move {
        let mut work = work?;
        match work.next().await? {
            Ok(message) => Some((Ok(proto::WorkResponse { message: Some(message) }), Some(work))),
            // A protocol error ends the stream: nothing follows it, and the feed's guard goes.
            Err(status) => Some((Err(status), None)),
        }
    })))
}

/// One open Work stream.
struct Work {
    engine: Arc<Engine>,
    caller: Caller,
    feed: Feed,
    inbound: Streaming<proto::WorkRequest>,
    /// The worker has not closed its side (nor lost the connection).
    reading: bool,
    pending: FuturesUnordered<BoxFuture<'static, proto::WorkAnswer>>,
    /// The ack_ids of the pending acks.
    outstanding: HashSet<u64>,
}

impl Work {
    /// The next message for the worker; an error (a protocol error) ends the stream; None ends
    /// it cleanly: the worker closed its side and every ack it sent is answered, or the engine
    /// ended the stream.
    async fn next(&mut self) -> Option<Result<Outbound, Status>> {
        loop {
            if !self.reading && self.pending.is_empty() {
                return None;
            }
            tokio::select! {
                Some(answer) = self.pending.next(), if !self.pending.is_empty() => {
                    let mut answers = vec![answer];
                    // Those already finished go along. Polled with this task's waker (not
                    // `now_or_never`'s no-op one), so the acks still running wake this task.
                    std::future::poll_fn(|cx| {
                        while let Poll::Ready(Some(answer)) = self.pending.poll_next_unpin(cx) {
                            answers.push(answer);
                        }
                        Poll::Ready(())
                    })
                    .await;
                    for answer in &answers {
                        self.outstanding.remove(&answer.ack_id);
                    }
                    self.feed.sent();
                    return Some(Ok(Outbound::Answers(proto::WorkAnswers { answers })));
                }
                message = self.inbound.message(), if self.reading && self.pending.len() < MAX_PENDING_ACKS => {
                    match message {
                        Ok(Some(request)) => {
                            if let Err(status) = self.take(request) {
                                return Some(Err(status));
                            }
                        }
                        // The worker closed its side or went away: answer what it sent, then end.
                        Ok(None) | Err(_) => self.reading = false,
                    }
                }
                message = self.feed.next() => {
                    return Some(Ok(match message? {
                        JobMessage::Job(job) => {
                            let mut jobs = vec![job];
                            self.feed.ready_jobs(&mut jobs);
                            Outbound::Jobs(proto::WorkJobs { jobs })
                        }
                        JobMessage::Ping(ping) => Outbound::Ping(ping),
                        JobMessage::Drain(drain) => Outbound::Drain(drain),
                        JobMessage::Revoke(revoke) => Outbound::Revoke(revoke),
                    }));
                }
            }
        }
    }

    /// Takes in one message of the worker: marks the started jobs and starts its acks.
    fn take(&mut self, request: proto::WorkRequest) -> Result<(), Status> {
        let acks = match request.message {
            Some(Inbound::Acks(acks)) => acks,
            Some(Inbound::Open(_)) => return Err(Status::invalid_argument("message: `open` was already sent")),
            None => return Err(Status::invalid_argument("message: must be `open` or `acks`")),
        };
        for token in &acks.started {
            self.feed.guard().mark_started(token);
        }
        for ack in acks.acks {
            if !self.outstanding.insert(ack.ack_id) {
                return Err(Status::invalid_argument(format!(
                    "acks.ack_id: {} is still unanswered on this stream",
                    ack.ack_id
                )));
            }
            if let Err(status) = self.caller.check(&ack) {
                let refused = answer(ack.ack_id, Err(status));
                self.pending.push(std::future::ready(refused).boxed());
                continue;
            }
            self.pending.push(match ack.ack {
                // Taken in now, so the completions of one message share one Redis call.
                Some(Ack::Complete(req)) => {
                    let completing = acks::start_complete(&self.engine, req, None);
                    let ack_id = ack.ack_id;
                    async move { answer(ack_id, completing.await.map(|_| None)) }.boxed()
                }
                other => run(self.engine.clone(), ack.ack_id, other).boxed(),
            });
        }
        Ok(())
    }
}

/// Runs one ack (but a completion) through the function of its unary RPC and answers it.
async fn run(engine: Arc<Engine>, ack_id: u64, ack: Option<Ack>) -> proto::WorkAnswer {
    let result = match ack {
        Some(Ack::Complete(req)) => acks::complete(&engine, req, None).await.map(|_| None),
        Some(Ack::Fail(req)) => acks::fail(&engine, req, None).await.map(|r| Some(AckResult::Fail(r))),
        Some(Ack::Progress(req)) => acks::progress(&engine, req).await.map(|_| None),
        Some(Ack::Extend(req)) => acks::extend(&engine, req).await.map(|r| Some(AckResult::Extend(r))),
        Some(Ack::GiveBack(req)) => acks::give_back(&engine, req).await.map(|_| None),
        None => Err(Status::invalid_argument("ack: must be one of complete, fail, progress, extend, give_back")),
    };
    answer(ack_id, result)
}

/// The answer to ack `ack_id`: OK with its result, or its refusal.
fn answer(ack_id: u64, result: Result<Option<AckResult>, Status>) -> proto::WorkAnswer {
    match result {
        Ok(result) => proto::WorkAnswer { ack_id, code: 0, message: String::new(), result },
        Err(status) => {
            proto::WorkAnswer { ack_id, code: status.code() as i32, message: status.message().to_owned(), result: None }
        }
    }
}
