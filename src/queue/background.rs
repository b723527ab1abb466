//! The background work of one instance, shared by the rooms that spawn it: every task watches
//! one cancellation token and is tracked by one tracker, so `Engine::shutdown` can stop them
//! (after the leases were handed back) and wait for all of them.

use std::future::Future;

use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFuture},
    task::TaskTracker,
};

use super::error::{Error, Result};

#[derive(Clone, Default)]
pub struct Background {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Background {
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Resolves once the instance stops; each task selects on it.
    pub fn stopped(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// A token that fires when the instance stops, or earlier when cancelled on its own.
    pub fn child_token(&self) -> CancellationToken {
        self.stop.child_token()
    }

    /// Refuses new work once the instance stops.
    pub fn check_open(&self) -> Result<()> {
        if self.is_stopping() { Err(Error::ShuttingDown) } else { Ok(()) }
    }

    /// Tells every task to end.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until every task has ended (call after `stop`).
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}
