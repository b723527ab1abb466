//! The background work of one instance, shared by the rooms that spawn it: each task watches one
//! cancellation token and is tracked by one tracker, so `Engine::shutdown` can stop them (once
//! the leases are handed back) and wait for all of them. The dispatchers are the exception: they
//! must stop before the hand-back, so `leases` keeps them on a token and tracker of their own.

use std::future::Future;

use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFuture},
    task::TaskTracker,
};

use super::error::{Error, Result};

/// A handle on the instance's background work; clones share the token and the tracker.
#[derive(Clone, Default)]
pub(super) struct Background {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Background {
    /// Runs `task` on the tracker; `wait` waits for it, so it must end soon after `stopped`
    /// resolves.
    pub(super) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Resolves once the instance stops; each task selects on it.
    pub(super) fn stopped(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// Whether the instance was told to stop.
    pub(super) fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// A token that fires when the instance stops, or earlier when cancelled on its own.
    pub(super) fn child_token(&self) -> CancellationToken {
        self.stop.child_token()
    }

    /// Refuses new work once the instance stops.
    pub(super) fn check_open(&self) -> Result<()> {
        if self.is_stopping() { Err(Error::ShuttingDown) } else { Ok(()) }
    }

    /// Tells every task to end.
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until every task has ended (call after `stop`).
    pub(super) async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}
