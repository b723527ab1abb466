//! The sending side of a Work stream: acks and `started` marks wait here and go out gathered
//! into one message whenever the transport takes the next one.

use super::*;

/// What waits to go out on a Work stream.
enum Outgoing {
    Ack(proto::WorkAck),
    Started(String),
}

/// The sending side of a Work stream: acks wait here, each with the caller waiting for its
/// answer, and go out gathered into one message whenever the transport takes the next one.
pub(super) struct Outbox {
    queue: mpsc::UnboundedSender<Outgoing>,
    next_ack_id: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<proto::WorkAnswer>>>,
    /// The stream was opened with prefetch: jobs handed to a handler are reported.
    report_started: bool,
}

impl Outbox {
    /// An outbox and the request stream of its Work call: `open`, then whatever is waiting.
    pub(super) fn open(
        open: proto::WorkOpen,
        report_started: bool,
    ) -> (Arc<Self>, impl Stream<Item = proto::WorkRequest> + Send + 'static) {
        let (queue, waiting_out) = mpsc::unbounded_channel();
        let first = proto::WorkRequest { message: Some(work_request::Message::Open(open)) };
        let rest = futures::stream::unfold(waiting_out, |mut waiting_out| async move {
            let mut acks = proto::WorkAcks::default();
            let mut add = |item| match item {
                Outgoing::Ack(ack) => acks.acks.push(ack),
                Outgoing::Started(token) => acks.started.push(token),
            };
            add(waiting_out.recv().await?);
            while let Ok(item) = waiting_out.try_recv() {
                add(item);
            }
            Some((proto::WorkRequest { message: Some(work_request::Message::Acks(acks)) }, waiting_out))
        });
        let outbox = Self { queue, next_ack_id: AtomicU64::new(1), waiting: Mutex::default(), report_started };
        (Arc::new(outbox), futures::stream::once(async move { first }).chain(rest))
    }

    /// Sends one ack and waits for its answer.
    pub(super) async fn ack(&self, ack: Ack) -> Result<(), Status> {
        let ack_id = self.next_ack_id.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer) = oneshot::channel();
        self.lock().insert(ack_id, answer_tx);
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

    pub(super) fn started(&self, lease_token: &str) {
        if self.report_started {
            let _ = self.queue.send(Outgoing::Started(lease_token.to_owned()));
        }
    }

    pub(super) fn answered(&self, answers: Vec<proto::WorkAnswer>) {
        let mut waiting = self.lock();
        for answer in answers {
            if let Some(caller) = waiting.remove(&answer.ack_id) {
                let _ = caller.send(answer);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<proto::WorkAnswer>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}
