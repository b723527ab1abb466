//! `--max-streams-per-token`: how many streams (GetJob, Work, WatchJob, Subscribe) each token
//! holds open on this instance. The layer takes a slot before the call reaches its handler and
//! keeps it in the response body, so it is given back when the stream ends, however it ends
//! (done, the client gone, the token revoked).
//!
//! Counted by token name: an entry changed in the token file is a new identity under the same
//! name, whose streams count with the old one's until those end (at once: they are revoked).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// The open streams of every token, and the cap.
pub(super) struct StreamCounts {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

impl StreamCounts {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::new(HashMap::new()) })
    }

    /// A slot for one more stream of `token`; None when it holds the most already.
    pub(super) fn take(self: &Arc<Self>, token: &str) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(token.to_owned()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(StreamSlot { counts: self.clone(), token: token.to_owned() })
    }

    /// The most streams one token may hold open.
    pub(super) fn max(&self) -> usize {
        self.max
    }
}

/// One stream of a token; given back when dropped.
pub(super) struct StreamSlot {
    counts: Arc<StreamCounts>,
    token: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.token) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // A token with no stream costs nothing here.
                open.remove(&self.token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_at_most_the_cap_and_gets_slots_back_as_streams_end() {
        let counts = StreamCounts::new(2);
        let first = counts.take("a").expect("first");
        let _second = counts.take("a").expect("second");
        assert!(counts.take("a").is_none(), "a third stream of a is refused");
        assert!(counts.take("b").is_some(), "another token has slots of its own");
        drop(first);
        assert!(counts.take("a").is_some(), "a slot comes back when a stream ends");
    }

    #[test]
    fn a_token_without_streams_leaves_no_entry() {
        let counts = StreamCounts::new(1);
        drop(counts.take("a"));
        assert!(counts.open.lock().expect("lock").is_empty());
    }
}
