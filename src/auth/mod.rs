//! Who may call what: the vocabulary of access shared by `jobwire serve` and `jobwire token`.
//! Nothing here knows gRPC; the transport's side (the rule of each RPC, the layer that checks
//! every call, scopes and redaction in the handlers) is `api/auth/`.
//!
//! - `file.rs`: the token file (`--auth-tokens`), its entries and their checks, new secrets.
//! - `authority.rs`: the tokens a server knows now, reloaded from the file on SIGHUP; finds the
//!   identity behind a bearer token (constant-time) or a client certificate's subject, and
//!   revokes the identities a reload removed, which ends their streams.
//!
//! A token has one [`Role`] and optionally a scope of queues ([`QueuePattern`]s); a reader is
//! not shown payloads, results or session states unless its entry [`Reveal`]s them.

mod authority;
mod file;

pub use authority::{Authority, Credential, Identity, Reflection, Reloaded};
pub use file::{SECRET_PREFIX, Secret, TokenEntry, TokenFile, TokenFileError, digest};

use serde::{Deserialize, Serialize};

/// What a token may call (the table of every RPC is `api/auth/rules.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Adds, watches and reads jobs; creates, reads, updates and deletes sessions.
    Producer,
    /// Takes jobs (GetJob, Work) and acknowledges them: complete, fail, extend, return, progress.
    Worker,
    /// Every read: stats, listings, job info, WatchJob, Subscribe, workers, sessions; without
    /// payloads, results and session states unless the entry reveals them.
    Reader,
    /// Everything, including cancel, retry, delete, purge and pause (each one audited).
    Admin,
}

impl Role {
    /// The name the token file and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Worker => "worker",
            Self::Reader => "reader",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a reader entry may be shown although readers are not by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Reveal {
    /// Job payloads (GetJobInfo, ListJobs).
    Payloads,
    /// Job results and progress reports (GetJobInfo, ListJobs, WatchJob, Subscribe).
    Results,
    /// Session states (GetSession, ListSessions).
    SessionStates,
}

impl Reveal {
    /// The name the token file and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payloads => "payloads",
            Self::Results => "results",
            Self::SessionStates => "session_states",
        }
    }
}

/// One queue scope of a token: an exact queue name, or a prefix ending in `*` (`billing-*`
/// covers `billing-eu` and `billing-`; `*` alone covers every queue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueuePattern {
    /// Exactly this queue.
    Exact(String),
    /// Every queue whose name starts with this.
    Prefix(String),
}

impl QueuePattern {
    /// Parses a scope: the characters of a queue name (A-Z a-z 0-9 `_` `.` `:` `-`, at most
    /// 128), optionally followed by one `*`.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let (stem, glob) = match pattern.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (pattern, false),
        };
        if stem.len() > 128 || (!glob && stem.is_empty()) {
            return Err(format!("{pattern:?}: a queue name is 1 to 128 characters"));
        }
        if !stem.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')) {
            return Err(format!("{pattern:?}: may only contain A-Z a-z 0-9 _ . : - and one * at the end (a prefix)"));
        }
        Ok(if glob { Self::Prefix(stem.into()) } else { Self::Exact(stem.into()) })
    }

    /// Whether the scope covers `queue`.
    pub fn covers(&self, queue: &str) -> bool {
        match self {
            Self::Exact(name) => name == queue,
            Self::Prefix(prefix) => queue.starts_with(prefix.as_str()),
        }
    }
}

impl std::fmt::Display for QueuePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_and_prefix_globs() {
        let exact = QueuePattern::parse("billing").expect("valid");
        assert!(exact.covers("billing") && !exact.covers("billing-eu") && !exact.covers("bill"));
        let prefix = QueuePattern::parse("billing-*").expect("valid");
        assert!(prefix.covers("billing-eu") && prefix.covers("billing-") && !prefix.covers("billing"));
        let all = QueuePattern::parse("*").expect("valid");
        assert!(all.covers("anything"));
        assert_eq!(prefix.to_string(), "billing-*");
        for bad in ["", "a*b", "**", "*a", "a b", "q{x}", &"q".repeat(129)] {
            assert!(QueuePattern::parse(bad).is_err(), "{bad:?} is refused");
        }
    }
}
