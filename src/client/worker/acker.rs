//! Where a worker stream's acks go, whichever the protocol: a unary call each (`GetJob`), or
//! the outbox of the Work stream.
//!
//! Two ways to ack: the ack methods wait for the answer (what a caller acts on: an extend's
//! deadline, a completion that writes session state, which may be refused for a changed
//! session), and `settle` takes an ack whose answer nobody acts on (a handler's completion or
//! failure): on a Work stream it goes back to the worker's loop, which sends the acks of every
//! job done at the same time in one message (`send_all`), and the outbox keeps them until
//! answered, sending them again while the answer is UNAVAILABLE, so the job's task ends at once
//! and no wake-up is spent bringing the answer back to it; over unary calls it is the call,
//! retried the same way.

use super::*;

/// Where a stream's acks go: a unary call each, or the Work stream's outbox.
#[derive(Clone)]
pub(super) enum Acker {
    Unary(QueueServiceClient<Transport>),
    Stream(Arc<Outbox>),
}

impl Acker {
    pub(super) async fn complete(
        &self,
        req: proto::CompleteJobRequest,
        trace: Option<&TraceContext>,
    ) -> Result<(), Status> {
        match self {
            Self::Unary(client) => client.clone().complete_job(traced(req, trace)).await.map(|_| ()),
            Self::Stream(outbox) => outbox.ack(Ack::Complete(req)).await,
        }
    }

    async fn fail(&self, req: proto::FailJobRequest, trace: Option<&TraceContext>) -> Result<(), Status> {
        match self {
            Self::Unary(client) => client.clone().fail_job(traced(req, trace)).await.map(|_| ()),
            Self::Stream(outbox) => outbox.ack(Ack::Fail(req)).await,
        }
    }

    async fn give_back(&self, req: proto::ReturnJobRequest) -> Result<(), Status> {
        match self {
            Self::Unary(client) => client.clone().return_job(req).await.map(|_| ()),
            Self::Stream(outbox) => outbox.ack(Ack::GiveBack(req)).await,
        }
    }

    pub(super) async fn extend(&self, req: proto::ExtendLeaseRequest) -> Result<(), Status> {
        match self {
            Self::Unary(client) => client.clone().extend_lease(req).await.map(|_| ()),
            Self::Stream(outbox) => outbox.ack(Ack::Extend(req)).await,
        }
    }

    pub(super) async fn progress(&self, req: proto::ReportProgressRequest) -> Result<(), Status> {
        match self {
            Self::Unary(client) => client.clone().report_progress(req).await.map(|_| ()),
            Self::Stream(outbox) => outbox.ack(Ack::Progress(req)).await,
        }
    }

    /// Settles a completion or failure whose answer nobody acts on (see the module doc): on a
    /// Work stream it is returned, to go out with `send_all`; over unary calls it is made
    /// here, and a refusal is logged.
    pub(super) async fn settle(&self, ack: Ack, trace: Option<&TraceContext>) -> Option<Ack> {
        let acked = match (self, ack) {
            (Self::Stream(_), ack) => return Some(ack),
            (Self::Unary(_), Ack::Complete(req)) => {
                let acked = until_answered(|| self.complete(req.clone(), trace)).await;
                acked.map_err(|status| (req.job_id, status))
            }
            (Self::Unary(_), Ack::Fail(req)) => {
                let acked = until_answered(|| self.fail(req.clone(), trace)).await;
                acked.map_err(|status| (req.job_id, status))
            }
            (Self::Unary(_), Ack::GiveBack(req)) => {
                let acked = until_answered(|| self.give_back(req.clone())).await;
                acked.map_err(|status| (req.job_id, status))
            }
            (Self::Unary(_), _) => Ok(()),
        };
        if let Err((job_id, status)) = acked {
            warn!(%job_id, %status, "ack failed");
        }
        None
    }

    /// Sends acks returned by `settle`, together (a Work stream's outbox keeps them until
    /// answered).
    pub(super) fn send_all(&self, acks: Vec<Ack>) {
        if let Self::Stream(outbox) = self
            && !acks.is_empty()
        {
            outbox.send_all(acks);
        }
    }

    /// A job was handed to a handler (reported only on a Work stream with prefetch, with the
    /// next message).
    pub(super) fn started(&self, lease_token: &str) {
        if let Self::Stream(outbox) = self {
            outbox.started(lease_token);
        }
    }

    /// The `started` marks waiting go out now, without waiting for an ack to carry them.
    pub(super) fn flush(&self) {
        if let Self::Stream(outbox) = self {
            outbox.flush();
        }
    }

    pub(super) fn answered(&self, answers: Vec<proto::WorkAnswer>) {
        if let Self::Stream(outbox) = self {
            outbox.answered(answers);
        }
    }

    /// Acks handed over with `settle` and not answered yet: a worker leaving waits for them.
    pub(super) fn unsettled(&self) -> usize {
        match self {
            Self::Stream(outbox) => outbox.unsettled(),
            Self::Unary(_) => 0,
        }
    }
}

/// Sends an ack again while the answer is UNAVAILABLE (Redis or the server away for a moment),
/// waiting 50 ms doubling to 1 s between tries: a dropped ack would leave the job leased to this
/// stream, which lives on, until the job's timeout. The retries end with the stream: its jobs'
/// tasks are aborted then, the server having given the jobs back.
pub(super) async fn until_answered<T, Fut>(mut send: impl FnMut() -> Fut) -> Result<T, tonic::Status>
where
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut wait = FIRST_RETRY;
    loop {
        match send().await {
            Err(status) if status.code() == tonic::Code::Unavailable => {
                debug!(%status, ?wait, "ack not answered; retrying");
                tokio::time::sleep(wait).await;
                wait = next_retry(wait);
            }
            answered => return answered,
        }
    }
}

/// The wait before an ack answered UNAVAILABLE is sent again the first time.
pub(super) const FIRST_RETRY: Duration = Duration::from_millis(50);

/// The wait after `wait` before the next try: doubling, up to 1 s.
pub(super) fn next_retry(wait: Duration) -> Duration {
    (wait * 2).min(Duration::from_secs(1))
}

/// An ack request carrying the job's trace context as `traceparent` metadata.
fn traced<T>(message: T, trace: Option<&TraceContext>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = trace.and_then(|t| tonic::metadata::MetadataValue::try_from(t.to_header()).ok()) {
        request.metadata_mut().insert(traceparent::HEADER, value);
    }
    request
}

/// Hands back a job the worker will not start (it is stopping or draining), and asks the server
/// to send nothing more on this stream.
pub(super) async fn hand_back(acker: Acker, job: proto::Job) {
    let req = proto::ReturnJobRequest {
        job_id: job.id.clone(),
        lease_token: job.lease_token,
        stop_stream: true,
        ..Default::default()
    };
    if let Err(status) = acker.give_back(req).await {
        warn!(job_id = %job.id, %status, "could not hand a job back");
    }
}

/// Answers a revoke with a failure report for the revoked delivery.
pub(super) async fn answer_revoke(acker: Acker, job_id: String, lease_token: String) {
    let req = proto::FailJobRequest {
        job_id,
        lease_token,
        error: "revoked".into(),
        retryable: Some(true),
        retry_after: None,
    };
    let _ = acker.fail(req, None).await;
}
