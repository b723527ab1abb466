//! The tokens one server knows now, and what each one is: an [`Identity`].
//!
//! `Authority::identify` is the one door to an identity, for a bearer token or a verified
//! client certificate's subject. A bearer token is hashed (SHA-256) and the digest compared with
//! every entry's in constant time (`subtle`), all entries each time, so neither the time taken
//! nor an early exit tells how close a guess came. The token itself is never kept or logged.
//!
//! The set is swapped whole on `reload` (SIGHUP): an entry that is unchanged keeps its identity,
//! so its streams go on; an identity whose entry was removed or changed in any way is revoked:
//! its cancellation token fires, and the transport ends every stream it opened (whose jobs go
//! back to ready as for any ended stream). A file that does not read or check is refused whole
//! and the old set stays.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use subtle::ConstantTimeEq;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{error, info};

use super::{
    QueuePattern, Reveal, Role,
    file::{TokenEntry, TokenFile, TokenFileError, digest},
};

/// Whether the reflection service needs a token (`--reflection`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Reflection {
    /// Any valid token, whatever its role.
    #[default]
    Token,
    /// Anyone: the API's shape is no secret here (it is public in the repository anyway).
    Public,
}

/// How a caller says who it is.
#[derive(Clone, Copy, Debug)]
pub enum Credential<'a> {
    /// The token of an `authorization: Bearer <token>` header.
    Bearer(&'a str),
    /// The subject of a client certificate the TLS layer verified.
    Subject(&'a str),
}

/// One entry of the token file, as a server holds it while it is in the file.
#[derive(Debug)]
pub struct Identity {
    entry: TokenEntry,
    /// None: every queue.
    scope: Option<Vec<QueuePattern>>,
    /// Fires when a reload removes or changes the entry.
    revoked: CancellationToken,
}

impl Identity {
    fn new(entry: TokenEntry) -> Self {
        Self { scope: entry.patterns(), entry, revoked: CancellationToken::new() }
    }

    /// The entry's name: what logs and refusals call it.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// What it may call.
    pub fn role(&self) -> Role {
        self.entry.role
    }

    /// Whether its scope covers `queue`.
    pub fn covers(&self, queue: &str) -> bool {
        self.scope.as_ref().is_none_or(|patterns| patterns.iter().any(|p| p.covers(queue)))
    }

    /// Whether it has a scope at all (else it covers every queue).
    pub fn is_scoped(&self) -> bool {
        self.scope.is_some()
    }

    /// The patterns of its scope (exact names and `prefix-*`); None: every queue.
    pub fn scope(&self) -> Option<&[QueuePattern]> {
        self.scope.as_deref()
    }

    /// Its scope in words, for a refusal: `billing, billing-*`, or `every queue`.
    pub fn scope_text(&self) -> String {
        match &self.scope {
            None => "every queue".into(),
            Some(patterns) => patterns.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        }
    }

    /// Whether it is shown `what`: every role but reader is, a reader when its entry says so.
    pub fn sees(&self, what: Reveal) -> bool {
        self.entry.role != Role::Reader || self.entry.reveal.contains(&what)
    }

    /// Resolves once the identity is revoked (its entry removed or changed by a reload).
    pub fn revocation(&self) -> WaitForCancellationFutureOwned {
        self.revoked.clone().cancelled_owned()
    }

    /// Whether it was revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked.is_cancelled()
    }
}

/// One loaded token file.
#[derive(Default)]
struct Tokens {
    /// Every identity, in file order.
    all: Vec<Arc<Identity>>,
    /// The identities with a token, by its digest; scanned whole on every lookup.
    by_digest: Vec<([u8; 32], Arc<Identity>)>,
    by_subject: HashMap<String, Arc<Identity>>,
}

impl Tokens {
    /// The set of `file`, reusing the identity of every entry `previous` holds unchanged.
    fn build(file: TokenFile, previous: &Self) -> Self {
        let mut tokens = Self::default();
        for entry in file.tokens {
            let kept = previous.all.iter().find(|old| old.entry == entry).cloned();
            let identity = kept.unwrap_or_else(|| Arc::new(Identity::new(entry)));
            if let Some(digest) = identity.entry.digest() {
                tokens.by_digest.push((digest, identity.clone()));
            }
            if let Some(subject) = &identity.entry.subject {
                tokens.by_subject.insert(subject.clone(), identity.clone());
            }
            tokens.all.push(identity);
        }
        tokens
    }
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// Entries in the file now.
    pub tokens: usize,
    /// Names of the identities revoked: removed, or changed (their streams are ended).
    pub revoked: Vec<String>,
}

/// The tokens a server knows now, from its `--auth-tokens` file.
pub struct Authority {
    path: PathBuf,
    reflection: Reflection,
    current: RwLock<Arc<Tokens>>,
}

impl Authority {
    /// Reads and checks the token file; a server refuses to start on an error.
    pub fn load(path: &Path, reflection: Reflection) -> Result<Self, TokenFileError> {
        let tokens = Tokens::build(TokenFile::load(path)?, &Tokens::default());
        Ok(Self { path: path.into(), reflection, current: RwLock::new(Arc::new(tokens)) })
    }

    /// The file it reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether reflection needs a token.
    pub fn reflection(&self) -> Reflection {
        self.reflection
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.snapshot().all.len()
    }

    /// Whether it holds no entry (every call needing a token is then refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Arc<Tokens> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The identity behind `credential`; None when no entry has that token or subject.
    pub fn identify(&self, credential: Credential<'_>) -> Option<Arc<Identity>> {
        let tokens = self.snapshot();
        match credential {
            Credential::Bearer(token) => {
                let presented = digest(token);
                let mut found = None;
                for (known, identity) in &tokens.by_digest {
                    if bool::from(known[..].ct_eq(&presented[..])) {
                        found = Some(identity.clone());
                    }
                }
                found
            }
            Credential::Subject(subject) => tokens.by_subject.get(subject).cloned(),
        }
    }

    /// Reads the file again and swaps the set; revokes the identities it no longer holds as
    /// they were. On an error nothing changes.
    pub fn reload(&self) -> Result<Reloaded, TokenFileError> {
        let file = TokenFile::load(&self.path)?;
        let mut current = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = Arc::new(Tokens::build(file, &current));
        let previous = std::mem::replace(&mut *current, next.clone());
        drop(current);
        let mut revoked = Vec::new();
        for old in &previous.all {
            if !next.all.iter().any(|kept| Arc::ptr_eq(kept, old)) {
                old.revoked.cancel();
                revoked.push(old.name().to_owned());
            }
        }
        Ok(Reloaded { tokens: next.all.len(), revoked })
    }

    /// From now on, reloads the file on every SIGHUP (logging what changed, or why the file
    /// was refused), for as long as the process runs.
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup())?;
        let authority = Arc::downgrade(self);
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(authority) = authority.upgrade() else { return };
                match authority.reload() {
                    Ok(Reloaded { tokens, revoked }) => {
                        info!(file = %authority.path.display(), tokens, ?revoked, "token file reloaded");
                    }
                    Err(e) => error!(error = %e, "token file NOT reloaded: the tokens loaded before stay in force"),
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;

    fn entry(name: &str, role: Role, secret: &Secret) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            role,
            queues: None,
            sha256: Some(secret.sha256_hex()),
            subject: None,
            reveal: Vec::new(),
        }
    }

    fn write(path: &Path, entries: Vec<TokenEntry>) {
        TokenFile { tokens: entries }.save(path).expect("saved");
    }

    #[test]
    fn a_token_or_a_subject_leads_to_its_identity() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.json");
        let (a, b) = (Secret::generate().expect("random"), Secret::generate().expect("random"));
        let mut worker = entry("worker", Role::Worker, &b);
        worker.subject = Some("CN=worker-1,O=Acme".into());
        worker.queues = Some(vec!["emails".into(), "jobs-*".into()]);
        write(&path, vec![entry("ops", Role::Admin, &a), worker]);
        let authority = Authority::load(&path, Reflection::Token).expect("loads");
        let ops = authority.identify(Credential::Bearer(a.expose())).expect("known");
        assert_eq!((ops.name(), ops.role(), ops.is_scoped()), ("ops", Role::Admin, false));
        let by_token = authority.identify(Credential::Bearer(b.expose())).expect("known");
        let by_subject = authority.identify(Credential::Subject("CN=worker-1,O=Acme")).expect("known");
        assert!(Arc::ptr_eq(&by_token, &by_subject));
        assert!(by_token.covers("emails") && by_token.covers("jobs-x") && !by_token.covers("other"));
        assert_eq!(by_token.scope_text(), "emails, jobs-*");
        assert!(authority.identify(Credential::Bearer("jw_guess")).is_none());
        assert!(authority.identify(Credential::Bearer(&b.expose()[..20])).is_none());
        assert!(authority.identify(Credential::Subject("CN=worker-1")).is_none());
    }

    #[test]
    fn readers_see_only_what_their_entry_reveals() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.json");
        let (a, b, c) = (
            Secret::generate().expect("random"),
            Secret::generate().expect("random"),
            Secret::generate().expect("random"),
        );
        let mut revealing = entry("revealing", Role::Reader, &b);
        revealing.reveal = vec![Reveal::Results];
        write(&path, vec![entry("plain", Role::Reader, &a), revealing, entry("producer", Role::Producer, &c)]);
        let authority = Authority::load(&path, Reflection::Token).expect("loads");
        let plain = authority.identify(Credential::Bearer(a.expose())).expect("known");
        let revealing = authority.identify(Credential::Bearer(b.expose())).expect("known");
        let producer = authority.identify(Credential::Bearer(c.expose())).expect("known");
        for what in [Reveal::Payloads, Reveal::Results, Reveal::SessionStates] {
            assert!(!plain.sees(what));
            assert_eq!(revealing.sees(what), what == Reveal::Results);
            assert!(producer.sees(what));
        }
    }

    #[test]
    fn a_reload_keeps_unchanged_entries_and_revokes_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.json");
        let secrets: Vec<_> = (0..3).map(|_| Secret::generate().expect("random")).collect();
        let kept = entry("kept", Role::Worker, &secrets[0]);
        let changed = entry("changed", Role::Reader, &secrets[1]);
        let removed = entry("removed", Role::Producer, &secrets[2]);
        write(&path, vec![kept.clone(), changed.clone(), removed]);
        let authority = Authority::load(&path, Reflection::Token).expect("loads");
        let before: Vec<_> =
            secrets.iter().map(|s| authority.identify(Credential::Bearer(s.expose())).expect("known")).collect();

        let mut narrowed = changed;
        narrowed.queues = Some(vec!["one".into()]);
        write(&path, vec![kept, narrowed]);
        let reloaded = authority.reload().expect("reloads");
        assert_eq!(reloaded, Reloaded { tokens: 2, revoked: vec!["changed".into(), "removed".into()] });
        assert!(!before[0].is_revoked() && before[1].is_revoked() && before[2].is_revoked());
        let after = authority.identify(Credential::Bearer(secrets[0].expose())).expect("still known");
        assert!(Arc::ptr_eq(&after, &before[0]), "an unchanged entry keeps its identity");
        let now = authority.identify(Credential::Bearer(secrets[1].expose())).expect("known, changed");
        assert!(!now.is_revoked() && !now.covers("two"));
        assert!(authority.identify(Credential::Bearer(secrets[2].expose())).is_none());

        std::fs::write(&path, "not json").expect("write");
        assert!(authority.reload().is_err());
        assert_eq!(authority.len(), 2, "a broken file changes nothing");
        assert!(!before[0].is_revoked());
    }
}
