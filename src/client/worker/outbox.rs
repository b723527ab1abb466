//! The sending side of a Work stream: acks and `started` marks wait here and go out gathered
//! into one message whenever the transport takes the next one.
//!
//! An ack has either a caller waiting for its answer (`ack`) or none (`send_all`: handlers'
//! completions and failures, those done together in one message). One without a caller stays here until answered: answered
//! UNAVAILABLE, it is sent again (50 ms doubling to 1 s, for as long as the stream lives);
//! refused, it is logged; `unsettled` counts them, for a worker that leaves only once its acks
//! are answered.
//!
//! A `started` mark wakes nothing by itself: it goes out with the next message, usually the one
//! carrying the job's own ack when the handler returns at once, so a short job costs one message
//! and not two. A handler still running after its first poll has its mark sent then (`flush`),
//! so the server knows at once that a job reached a handler (a crash then counts as a lost
//! delivery).

use std::sync::{Weak, atomic::AtomicUsize};

use foldhash::HashMap;

use super::{acker::FIRST_RETRY, acker::next_retry, *};

/// What wakes the request stream.
enum Outgoing {
    Ack(proto::WorkAck),
    /// Acks of jobs done together, for one message.
    Acks(Vec<proto::WorkAck>),
    /// Send the `started` marks waiting, even with no ack to carry them.
    Flush,
}

/// An ack sent and not answered yet.
enum Unanswered {
    /// Someone waits for the answer.
    Caller(oneshot::Sender<proto::WorkAnswer>),
    /// Nobody does: kept to be sent again after `retry` if the answer is UNAVAILABLE.
    Kept { ack: Ack, retry: Duration },
}

/// The sending side of a Work stream (see the module doc).
pub(super) struct Outbox {
    queue: mpsc::UnboundedSender<Outgoing>,
    next_ack_id: AtomicU64,
    unanswered: Mutex<HashMap<u64, Unanswered>>,
    /// Lease tokens of jobs handed to a handler, not yet sent; shared with the request stream.
    started: Arc<Mutex<Vec<String>>>,
    /// The stream was opened with prefetch: jobs handed to a handler are reported.
    report_started: bool,
    /// Acks without a caller not answered yet (or waiting to be sent again).
    unsettled: AtomicUsize,
    /// This outbox, for the timers that send an ack again.
    this: Weak<Outbox>,
}

impl Outbox {
    /// An outbox and the request stream of its Work call: `open`, then whatever is waiting.
    pub(super) fn open(
        open: proto::WorkOpen,
        report_started: bool,
    ) -> (Arc<Self>, impl Stream<Item = proto::WorkRequest> + Send + 'static) {
        let (queue, waiting_out) = mpsc::unbounded_channel();
        let started: Arc<Mutex<Vec<String>>> = Arc::default();
        let first = proto::WorkRequest { message: Some(work_request::Message::Open(open)) };
        let rest = futures::stream::unfold((waiting_out, started.clone()), |(mut waiting_out, started)| async move {
            loop {
                let mut acks = proto::WorkAcks::default();
                let mut add = |item| match item {
                    Outgoing::Ack(ack) => acks.acks.push(ack),
                    Outgoing::Acks(more) => acks.acks.extend(more),
                    Outgoing::Flush => {}
                };
                add(waiting_out.recv().await?);
                while let Ok(item) = waiting_out.try_recv() {
                    add(item);
                }
                // Taken after the acks: a job's mark is in the list before its ack is queued.
                acks.started = std::mem::take(&mut *started.lock().unwrap_or_else(|e| e.into_inner()));
                if !acks.acks.is_empty() || !acks.started.is_empty() {
                    let message = proto::WorkRequest { message: Some(work_request::Message::Acks(acks)) };
                    return Some((message, (waiting_out, started)));
                }
            }
        });
        let outbox = Arc::new_cyclic(|this| Self {
            queue,
            next_ack_id: AtomicU64::new(1),
            unanswered: Mutex::default(),
            started,
            report_started,
            unsettled: AtomicUsize::new(0),
            this: this.clone(),
        });
        (outbox, futures::stream::once(async move { first }).chain(rest))
    }

    /// Sends one ack and waits for its answer.
    pub(super) async fn ack(&self, ack: Ack) -> Result<(), Status> {
        let ack_id = self.next_ack_id.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer) = oneshot::channel();
        self.lock().insert(ack_id, Unanswered::Caller(answer_tx));
        if self.queue.send(Outgoing::Ack(proto::WorkAck { ack_id, ack: Some(ack) })).is_err() {
            self.lock().remove(&ack_id);
            return Err(Status::unavailable("the work stream ended"));
        }
        let answer = answer.await.map_err(|_| Status::unavailable("the work stream ended before the answer"))?;
        match answer.code {
            0 => Ok(()),
            code => Err(Status::new(Code::from(code), answer.message)),
        }
    }

    /// Sends acks nobody waits for, in one message; each is kept until answered (see the
    /// module doc).
    pub(super) fn send_all(&self, acks: Vec<Ack>) {
        self.unsettled.fetch_add(acks.len(), Ordering::Relaxed);
        self.send_kept(acks, FIRST_RETRY);
    }

    fn send_kept(&self, acks: Vec<Ack>, retry: Duration) {
        let count = u64::try_from(acks.len()).unwrap_or(u64::MAX);
        let first = self.next_ack_id.fetch_add(count, Ordering::Relaxed);
        let acks: Vec<proto::WorkAck> = {
            let mut unanswered = self.lock();
            (first..)
                .zip(acks)
                .map(|(ack_id, ack)| {
                    unanswered.insert(ack_id, Unanswered::Kept { ack: ack.clone(), retry });
                    proto::WorkAck { ack_id, ack: Some(ack) }
                })
                .collect()
        };
        let sent = acks.len();
        if self.queue.send(Outgoing::Acks(acks)).is_err() {
            // The stream ended: the server gave its jobs back.
            let mut unanswered = self.lock();
            for ack_id in first..first.saturating_add(count) {
                unanswered.remove(&ack_id);
            }
            self.unsettled.fetch_sub(sent, Ordering::Relaxed);
        }
    }

    /// Acks sent with `send` and not answered yet.
    pub(super) fn unsettled(&self) -> usize {
        self.unsettled.load(Ordering::Relaxed)
    }

    pub(super) fn started(&self, lease_token: &str) {
        if self.report_started {
            self.started.lock().unwrap_or_else(|e| e.into_inner()).push(lease_token.to_owned());
        }
    }

    pub(super) fn flush(&self) {
        if self.report_started {
            let _ = self.queue.send(Outgoing::Flush);
        }
    }

    pub(super) fn answered(&self, answers: Vec<proto::WorkAnswer>) {
        let mut settled = Vec::new();
        {
            let mut unanswered = self.lock();
            for answer in answers {
                match unanswered.remove(&answer.ack_id) {
                    Some(Unanswered::Caller(caller)) => {
                        let _ = caller.send(answer);
                    }
                    Some(Unanswered::Kept { ack, retry }) => settled.push((answer, ack, retry)),
                    None => {}
                }
            }
        }
        for (answer, ack, retry) in settled {
            match Code::from(answer.code) {
                Code::Ok => {}
                Code::Unavailable => {
                    debug!(message = %answer.message, ?retry, "ack not answered; retrying");
                    let this = self.this.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(retry).await;
                        if let Some(outbox) = this.upgrade() {
                            outbox.send_kept(vec![ack], next_retry(retry));
                        }
                    });
                    continue;
                }
                code => {
                    let job_id = match &ack {
                        Ack::Complete(req) => req.job_id.as_str(),
                        Ack::Fail(req) => req.job_id.as_str(),
                        _ => "",
                    };
                    let status = Status::new(code, answer.message);
                    warn!(%job_id, %status, "ack failed");
                }
            }
            self.unsettled.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Unanswered>> {
        self.unanswered.lock().unwrap_or_else(|e| e.into_inner())
    }
}
