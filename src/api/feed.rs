//! The server's side of a worker stream, shared by `GetJob` and `Work`: the stream opened
//! through the engine, the messages the queue sends on it, and the pings of a quiet stream.
//!
//! The feed owns the stream's guard: whenever tonic drops the response stream (the worker went
//! away, or the stream ended), the guard hands the stream's unacknowledged jobs back.

use std::{pin::Pin, time::Duration};

use tokio::{
    sync::mpsc,
    time::{Instant, Sleep},
};
use tonic::Status;

use super::convert;
use crate::{
    proto::{self, get_job_response::Message},
    queue::{Engine, StreamEvent, StreamGuard, WorkerSpec},
};

pub(super) struct Feed {
    guard: StreamGuard,
    events: mpsc::Receiver<StreamEvent>,
    ping_every: Duration,
    ping: Pin<Box<Sleep>>,
    /// A control message met while gathering jobs (`ready_jobs`), sent next.
    held_back: Option<StreamEvent>,
}

impl Feed {
    pub(super) async fn open(engine: &Engine, spec: WorkerSpec, ping_every: Duration) -> Result<Self, Status> {
        let (guard, events) = engine.open_stream(spec).await?;
        let ping = Box::pin(tokio::time::sleep_until(next_ping(ping_every)));
        Ok(Self { guard, events, ping_every, ping, held_back: None })
    }

    pub(super) fn guard(&self) -> &StreamGuard {
        &self.guard
    }

    /// The next message for the worker: a job or control message of the queue, or a ping after
    /// a quiet while. None once the engine ended the stream (shutdown). Cancel-safe.
    pub(super) async fn next(&mut self) -> Option<Message> {
        let message = match self.held_back.take() {
            Some(event) => convert::stream_event(event),
            None => tokio::select! {
                event = self.events.recv() => convert::stream_event(event?),
                _ = self.ping.as_mut() => Message::Ping(proto::Ping {}),
            },
        };
        self.sent();
        Some(message)
    }

    /// The jobs already waiting behind the one just sent, up to the first control message
    /// (kept for `next`), so jobs ready together go out in one message.
    pub(super) fn ready_jobs(&mut self, jobs: &mut Vec<proto::Job>) {
        while self.held_back.is_none()
            && let Ok(event) = self.events.try_recv()
        {
            match event {
                StreamEvent::Job(delivery) => jobs.push(convert::job(*delivery)),
                control => self.held_back = Some(control),
            }
        }
    }

    /// Something went out on the stream: the next ping waits a full period again.
    pub(super) fn sent(&mut self) {
        self.ping.as_mut().reset(next_ping(self.ping_every));
    }
}

/// A quiet stream hears a ping after a random half to whole period: streams opened together (a
/// fleet of workers starting) must not ping together, forever in step.
fn next_ping(period: Duration) -> Instant {
    Instant::now() + period.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}
