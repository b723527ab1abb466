//! What a worker stream is to the queue layer: what it asks for when it opens (`WorkerSpec`)
//! and what it is sent (`StreamEvent`, with the reasons a job is taken back). The hub keeps the
//! streams; the transport turns these into GetJob and Work messages.

use crate::{
    queue::job::{Delivery, JobId},
    store::LeaseToken,
};

/// Messages on a worker stream, besides the transport's own pings.
#[derive(Debug)]
pub enum StreamEvent {
    /// A job to run; it uses one unit of the stream's credit until it is answered.
    Job(Box<Delivery>),
    /// Stop running a job. Answering it (or ending the stream) gives its credit back; a later
    /// ack is stale after a timeout or a lost lease, and accepted (the job ends cancelled)
    /// after a cancel.
    Revoke {
        /// The job.
        job_id: JobId,
        /// The delivery whose lease is gone (not any later one of the same job).
        lease_token: LeaseToken,
        /// Why.
        reason: RevokeReason,
    },
    /// This instance is stopping: finish and answer what the stream holds, take nothing more
    /// from it, and reconnect elsewhere.
    Drain {
        /// How long acks for the stream's jobs are still accepted.
        grace: std::time::Duration,
    },
}

/// Why a lease was taken from its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    /// The attempt ran past its deadline; it counts as failed with "timeout".
    Timeout,
    /// This instance found the lease gone from Redis (answered elsewhere, or reaped while the
    /// instance was cut off).
    LeaseLost,
    /// The job was cancelled; an ack is still accepted, and the job ends cancelled.
    Cancelled,
}

/// Who opened a stream and what it serves.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// Who is asking, for operators: free-form, at most 128 bytes; may be empty.
    pub worker_id: String,
    /// Free-form labels for operators (host, version...), at most 32.
    pub labels: Vec<(String, String)>,
    /// The queues served, 1 to 32 without repeats, in strict order: a ready job of an earlier
    /// queue always goes before one of a later queue.
    pub queues: Vec<String>,
    /// The credit: how many unanswered jobs the stream may hold at once, 1 to
    /// `Limits::max_in_flight`.
    pub max_in_flight: u32,
    /// Jobs the worker may hold beyond `max_in_flight` before handing them to a handler.
    pub prefetch: u32,
}

impl WorkerSpec {
    /// How many unacknowledged jobs the stream may hold at once.
    pub(super) fn credit(&self) -> u32 {
        self.max_in_flight.saturating_add(self.prefetch)
    }
}
