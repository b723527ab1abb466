//! The token file (`--auth-tokens FILE`): JSON, one entry per token, holding the token's
//! SHA-256 digest and never the token itself, so the file can be read, copied and mounted
//! without handing out access. `jobwire token create|list|revoke` edit it; a server reads it at
//! start and again on SIGHUP (`authority.rs`).
//!
//! ```json
//! {
//!   "tokens": [
//!     { "name": "billing-api", "role": "producer", "queues": ["billing", "billing-*"],
//!       "sha256": "<64 hex digits>" },
//!     { "name": "dashboards", "role": "reader", "sha256": "<64 hex digits>",
//!       "reveal": ["results"] },
//!     { "name": "worker-eu", "role": "worker", "subject": "CN=worker-eu, O=Acme" }
//!   ]
//! }
//! ```
//!
//! Unknown fields are refused, not ignored: a misspelt `queues` would otherwise grant every
//! queue. An entry without `queues` covers every queue; `subject` names a client certificate
//! that stands in for the token (mTLS); `reveal` lets a reader see what readers are otherwise
//! not shown. Every entry is checked when the file is read, and a problem is named by its entry.

use std::{
    collections::HashSet,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{QueuePattern, Reveal, Role};

/// A token's secret starts with this, so secret scanners and people can tell what it is.
pub const SECRET_PREFIX: &str = "jw_";
/// Longest entry name, in bytes.
const MAX_NAME: usize = 64;

/// The whole file, as it is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// The entries, in the order they were added.
    pub tokens: Vec<TokenEntry>,
}

/// One token: who it is, what it may do, and how it is recognised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Unique in the file; what logs, audit lines and refusals call the token: 1 to 64 of
    /// A-Z a-z 0-9 `_` `.` `:` `@` `-`.
    pub name: String,
    /// What it may call.
    pub role: Role,
    /// The queues it covers, exact names or `prefix*` globs; absent: every queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
    /// SHA-256 of the secret, 64 lowercase hex digits; absent for an entry used only by a
    /// client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The subject of a verified client certificate that stands in for the token (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// For a reader: what it is shown although readers are not by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reveal: Vec<Reveal>,
}

/// What reading, checking or writing a token file can fail with; each names the file, and a
/// problem of one entry names the entry.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("cannot read the token file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not the JSON described in this module.
    #[error("the token file {} is not valid: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: serde_json::Error,
    },
    /// An entry breaks a rule of the format (or a change would).
    #[error("the token file {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the entry.
        message: String,
    },
    /// The file cannot be written.
    #[error("cannot write the token file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No random bytes could be had for a new secret.
    #[error("cannot make a random secret: {0}")]
    Random(String),
}

/// A new token's secret: `jw_` and 64 hex digits (256 random bits). Shown once, to whoever
/// creates it; only its digest is kept. Its `Debug` hides it.
pub struct Secret(String);

impl Secret {
    /// A fresh secret from the operating system's random source.
    pub fn generate() -> Result<Self, TokenFileError> {
        use rand::TryRngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|e| TokenFileError::Random(e.to_string()))?;
        Ok(Self(format!("{SECRET_PREFIX}{}", hex::encode(bytes))))
    }

    /// The secret itself, to hand to the token's user.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its digest as the file stores it.
    pub fn sha256_hex(&self) -> String {
        hex::encode(digest(&self.0))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The SHA-256 digest of a presented token: what the file's `sha256` holds, as bytes.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenFile {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TokenFileError::Read { path: path.into(), source })?;
        let file: Self =
            serde_json::from_str(&text).map_err(|source| TokenFileError::Parse { path: path.into(), source })?;
        file.check().map_err(|message| TokenFileError::Invalid { path: path.into(), message })?;
        Ok(file)
    }

    /// As `load`, but a file that does not exist yet reads as empty (for the first `create`).
    pub fn load_or_empty(path: &Path) -> Result<Self, TokenFileError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            _ => Self::load(path),
        }
    }

    /// Checks every entry and that names, digests and subjects are unique; the message names
    /// the entry at fault.
    pub fn check(&self) -> Result<(), String> {
        let (mut names, mut digests, mut subjects) = (HashSet::new(), HashSet::new(), HashSet::new());
        for (i, entry) in self.tokens.iter().enumerate() {
            let at = |problem: String| format!("tokens[{i}] ({:?}): {problem}", entry.name);
            entry.check().map_err(at)?;
            if !names.insert(entry.name.as_str()) {
                return Err(at("another entry has this name".into()));
            }
            if let Some(sha256) = &entry.sha256
                && !digests.insert(sha256.as_str())
            {
                return Err(at("another entry has this sha256: the same secret cannot be two tokens".into()));
            }
            if let Some(subject) = &entry.subject
                && !subjects.insert(subject.as_str())
            {
                return Err(at("another entry has this subject".into()));
            }
        }
        Ok(())
    }

    /// Adds `entry`, refusing one that would break the file's rules (a taken name, a bad scope).
    pub fn add(&mut self, entry: TokenEntry) -> Result<(), String> {
        self.tokens.push(entry);
        let checked = self.check();
        if checked.is_err() {
            self.tokens.pop();
        }
        checked
    }

    /// Removes the entry named `name` and returns it; None when there is none.
    pub fn revoke(&mut self, name: &str) -> Option<TokenEntry> {
        let at = self.tokens.iter().position(|e| e.name == name)?;
        Some(self.tokens.remove(at))
    }

    /// Writes the file whole: a sibling temp file renamed over `path`, so a server reading it
    /// (on SIGHUP) sees the old file or the new one, never a part.
    pub fn save(&self, path: &Path) -> Result<(), TokenFileError> {
        let write_error = |source| TokenFileError::Write { path: path.into(), source };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| write_error(std::io::Error::other(e)))?;
        text.push('\n');
        let mut temp = path.as_os_str().to_owned();
        temp.push(format!(".{}.tmp", std::process::id()));
        let temp = PathBuf::from(temp);
        let written = std::fs::File::create(&temp).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
            let _ = std::fs::remove_file(&temp);
            return Err(write_error(e));
        }
        Ok(())
    }
}

impl TokenEntry {
    /// The rules of one entry on its own.
    fn check(&self) -> Result<(), String> {
        let name_ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-');
        if self.name.is_empty() || self.name.len() > MAX_NAME || !self.name.bytes().all(name_ok) {
            return Err(format!("name: must be 1 to {MAX_NAME} of A-Z a-z 0-9 _ . : @ -"));
        }
        if let Some(queues) = &self.queues {
            if queues.is_empty() {
                return Err("queues: an empty list covers nothing; leave it out to cover every queue".into());
            }
            for (j, pattern) in queues.iter().enumerate() {
                QueuePattern::parse(pattern).map_err(|problem| format!("queues[{j}]: {problem}"))?;
            }
        }
        if let Some(sha256) = &self.sha256
            && (sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err("sha256: must be 64 lowercase hex digits (the SHA-256 of the secret)".into());
        }
        if self.subject.as_ref().is_some_and(|s| s.is_empty() || s.chars().any(char::is_control)) {
            return Err("subject: must be non-empty, without control characters".into());
        }
        if self.sha256.is_none() && self.subject.is_none() {
            return Err("needs sha256 (a token) or subject (a client certificate), or both".into());
        }
        if !self.reveal.is_empty() && self.role != Role::Reader {
            return Err("reveal: only a reader is shown less by default; other roles see everything".into());
        }
        Ok(())
    }

    /// The queue patterns it covers; None: every queue. The entry must have passed `check`.
    pub(super) fn patterns(&self) -> Option<Vec<QueuePattern>> {
        self.queues.as_ref().map(|queues| queues.iter().filter_map(|q| QueuePattern::parse(q).ok()).collect())
    }

    /// Its digest as bytes, when it has one. The entry must have passed `check`.
    pub(super) fn digest(&self) -> Option<[u8; 32]> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(self.sha256.as_ref()?, &mut bytes).ok()?;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, role: Role) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            role,
            queues: None,
            sha256: Some(Secret::generate().expect("random").sha256_hex()),
            subject: None,
            reveal: Vec::new(),
        }
    }

    #[test]
    fn a_secret_is_256_random_bits_and_only_its_digest_is_kept() {
        let secret = Secret::generate().expect("random");
        assert!(secret.expose().starts_with(SECRET_PREFIX));
        assert_eq!(secret.expose().len(), SECRET_PREFIX.len() + 64);
        assert_ne!(secret.expose(), Secret::generate().expect("random").expose());
        assert_eq!(secret.sha256_hex(), hex::encode(Sha256::digest(secret.expose().as_bytes())));
        assert!(!format!("{secret:?}").contains(secret.expose()));
        let mut e = entry("a", Role::Admin);
        e.sha256 = Some(secret.sha256_hex());
        assert_eq!(e.digest(), Some(digest(secret.expose())));
    }

    #[test]
    fn the_file_round_trips_and_refuses_unknown_fields() {
        let mut file = TokenFile::default();
        let mut scoped = entry("billing-api", Role::Producer);
        scoped.queues = Some(vec!["billing".into(), "billing-*".into()]);
        file.add(scoped).expect("valid");
        let mut reader = entry("dash", Role::Reader);
        reader.reveal = vec![Reveal::Results];
        file.add(reader).expect("valid");
        let text = serde_json::to_string(&file).expect("json");
        assert_eq!(serde_json::from_str::<TokenFile>(&text).expect("parses"), file);

        let misspelt = r#"{"tokens":[{"name":"a","role":"admin","queue":["x"],"sha256":"00"}]}"#;
        let error = serde_json::from_str::<TokenFile>(misspelt).expect_err("unknown field");
        assert!(error.to_string().contains("queue"), "{error}");
        let role = r#"{"tokens":[{"name":"a","role":"root","sha256":"00"}]}"#;
        assert!(serde_json::from_str::<TokenFile>(role).is_err());
    }

    #[test]
    fn every_rule_of_an_entry_is_checked_and_the_entry_named() {
        let mut file = TokenFile::default();
        file.add(entry("ops", Role::Admin)).expect("valid");
        let refused = |change: &dyn Fn(&mut TokenEntry), expected: &str| {
            let mut candidate = file.clone();
            let mut e = entry("new", Role::Reader);
            change(&mut e);
            let message = candidate.add(e).expect_err("refused");
            assert!(message.contains(expected), "{message} should mention {expected}");
            assert_eq!(candidate, file, "a refused entry is not kept");
        };
        refused(&|e| e.name = "ops".into(), "name");
        refused(&|e| e.name = "has space".into(), "name");
        refused(&|e| e.name = String::new(), "name");
        refused(&|e| e.queues = Some(vec![]), "queues");
        refused(&|e| e.queues = Some(vec!["a*b".into()]), "queues[0]");
        refused(&|e| e.queues = Some(vec!["ok".into(), "{x}".into()]), "queues[1]");
        refused(&|e| e.sha256 = Some("ABC".into()), "sha256");
        refused(&|e| e.sha256 = file.tokens[0].sha256.clone(), "sha256");
        refused(
            &|e| {
                e.sha256 = None;
                e.subject = None;
            },
            "sha256",
        );
        refused(&|e| e.subject = Some("CN=a\nCN=b".into()), "subject");
        refused(
            &|e| {
                e.role = Role::Producer;
                e.reveal = vec![Reveal::Payloads];
            },
            "reveal",
        );
        let message = {
            let mut bad = file.clone();
            bad.tokens.push(entry("ops", Role::Worker));
            bad.check().expect_err("duplicate")
        };
        assert!(message.starts_with("tokens[1] (\"ops\")"), "{message}");
    }

    #[test]
    fn save_writes_the_whole_file_and_revoke_removes_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.json");
        let mut file = TokenFile::load_or_empty(&path).expect("a missing file is empty");
        assert!(file.tokens.is_empty());
        file.add(entry("a", Role::Worker)).expect("valid");
        file.add(entry("b", Role::Reader)).expect("valid");
        file.save(&path).expect("saved");
        assert_eq!(TokenFile::load(&path).expect("loads"), file);
        assert_eq!(file.revoke("a").map(|e| e.name), Some("a".to_owned()));
        assert!(file.revoke("a").is_none());
        file.save(&path).expect("saved");
        let names: Vec<_> = TokenFile::load(&path).expect("loads").tokens.into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["b"]);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "no temp file is left");
    }

    #[test]
    fn a_broken_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, "{\"tokens\": [").expect("write");
        let error = TokenFile::load(&path).expect_err("broken");
        assert!(matches!(error, TokenFileError::Parse { .. }));
        assert!(error.to_string().contains("tokens.json"), "{error}");
        let missing = TokenFile::load(&dir.path().join("nope.json")).expect_err("missing");
        assert!(matches!(missing, TokenFileError::Read { .. }));
    }
}
