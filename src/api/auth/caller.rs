//! Who is calling, as the handlers see it: the layer (`layer.rs`) decided the role and put a
//! [`Caller`] in the request's extensions; a handler asks it whether the queues its request
//! names are in scope (`authorize`, `check`), which queues a listing may show (`covers`), and
//! what a reader must not be shown (`redacted_*`). A request without a `Caller` is refused: the
//! layer is missing, and nothing is let through by default.
//!
//! Admin actions write their one audit line here, once the call is let through and before it
//! runs, because only here is the target known: target `jobwire::audit`, fields `token`, `rpc`
//! and `target` (`-` as the token when the server runs without tokens).

use std::sync::Arc;

use tonic::{Request, Status};

use super::{
    rules::Rule,
    targets::{Target, Targets},
};
use crate::{
    auth::{Identity, Reveal, Role},
    proto,
};

/// Who the call comes from.
#[derive(Clone, Debug)]
enum Access {
    /// The server runs without tokens: every queue, everything shown.
    Unrestricted,
    /// A token's identity.
    Token(Arc<Identity>),
    /// No identity, on a method that needs none (health, public reflection): no queue at all.
    Anonymous,
}

/// The access decision of one call, from the layer to the handler.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    access: Access,
    rule: &'static Rule,
}

impl Caller {
    pub(super) fn unrestricted(rule: &'static Rule) -> Self {
        Self { access: Access::Unrestricted, rule }
    }

    pub(super) fn token(identity: Arc<Identity>, rule: &'static Rule) -> Self {
        Self { access: Access::Token(identity), rule }
    }

    pub(super) fn anonymous(rule: &'static Rule) -> Self {
        Self { access: Access::Anonymous, rule }
    }

    /// What this caller may do, for GetAccess: a server without tokens lets everything through,
    /// as an admin.
    pub(crate) fn access(&self) -> proto::GetAccessResponse {
        match &self.access {
            Access::Unrestricted => proto::GetAccessResponse {
                role: proto::AccessRole::Admin as i32,
                tokens_required: false,
                ..Default::default()
            },
            Access::Token(identity) => proto::GetAccessResponse {
                name: identity.name().to_owned(),
                role: match identity.role() {
                    Role::Producer => proto::AccessRole::Producer,
                    Role::Worker => proto::AccessRole::Worker,
                    Role::Reader => proto::AccessRole::Reader,
                    Role::Admin => proto::AccessRole::Admin,
                } as i32,
                queues: identity.scope().unwrap_or_default().iter().map(ToString::to_string).collect(),
                tokens_required: true,
            },
            Access::Anonymous => proto::GetAccessResponse { tokens_required: true, ..Default::default() },
        }
    }

    /// The decision the layer made for `request`.
    pub(crate) fn of<T>(request: &Request<T>) -> Result<Self, Status> {
        request.extensions().get::<Self>().cloned().ok_or_else(|| {
            tracing::error!("a call reached its handler without an access decision: is the auth layer mounted?");
            Status::internal("no access decision was made for this call")
        })
    }

    /// `of`, then `check` of the request's message: the one line a handler starts with.
    pub(crate) fn authorize<T: Targets>(request: &Request<T>) -> Result<Self, Status> {
        let caller = Self::of(request)?;
        caller.check(request.get_ref())?;
        Ok(caller)
    }

    /// Refuses `message` (PERMISSION_DENIED, naming the field and the queue) unless the scope
    /// covers every queue it names; an admin action then writes its audit line.
    pub(crate) fn check(&self, message: &impl Targets) -> Result<(), Status> {
        let scoped = match &self.access {
            Access::Unrestricted => false,
            Access::Token(identity) => identity.is_scoped(),
            Access::Anonymous => true,
        };
        if !scoped && !self.rule.audit {
            return Ok(());
        }
        let targets = message.targets()?;
        if let Some(outside) = targets.iter().find(|t| !self.covers(&t.queue)) {
            return Err(self.out_of_scope(outside));
        }
        if self.rule.audit {
            let named: Vec<&str> = targets.iter().map(|t| t.named.as_str()).collect();
            tracing::info!(target: "jobwire::audit", token = self.name(), rpc = self.rule.method(),
                target = %named.join(", "), "admin action");
        }
        Ok(())
    }

    fn out_of_scope(&self, target: &Target) -> Status {
        let covered = match &self.access {
            Access::Token(identity) => identity.scope_text(),
            Access::Unrestricted | Access::Anonymous => "no queue".into(),
        };
        tracing::info!(target: "jobwire::auth", token = self.name(), rpc = self.rule.method(), field = %target.field,
            queue = ?target.queue, "refused: out of scope");
        Status::permission_denied(format!(
            "{}: token {:?} does not cover queue {:?} ({}); it covers {covered}",
            target.field,
            self.name(),
            target.queue,
            target.named
        ))
    }

    /// The token's name, `-` without tokens.
    fn name(&self) -> &str {
        match &self.access {
            Access::Token(identity) => identity.name(),
            Access::Unrestricted | Access::Anonymous => "-",
        }
    }

    /// Whether a listing may show `queue` (and what is in it) to this caller.
    pub(crate) fn covers(&self, queue: &str) -> bool {
        match &self.access {
            Access::Unrestricted => true,
            Access::Token(identity) => identity.covers(queue),
            Access::Anonymous => false,
        }
    }

    fn sees(&self, what: Reveal) -> bool {
        match &self.access {
            Access::Unrestricted => true,
            Access::Token(identity) => identity.sees(what),
            Access::Anonymous => false,
        }
    }

    /// `job` without what a reader without `reveal` is not shown: payload, result, progress.
    pub(crate) fn redacted_job(&self, mut job: proto::JobInfo) -> proto::JobInfo {
        if !self.sees(Reveal::Payloads) {
            job.payload.clear();
        }
        if !self.sees(Reveal::Results) {
            job.result.clear();
            job.progress.clear();
        }
        job
    }

    /// `event` without its result and progress for a reader without `reveal = results`.
    pub(crate) fn redacted_event(&self, mut event: proto::JobEvent) -> proto::JobEvent {
        if !self.sees(Reveal::Results) {
            event.result.clear();
            event.progress.clear();
        }
        event
    }

    /// `session` without its state for a reader without `reveal = session_states`.
    pub(crate) fn redacted_session(&self, mut session: proto::Session) -> proto::Session {
        if !self.sees(Reveal::SessionStates) {
            session.state.clear();
        }
        session
    }

    /// `schedule` without its template's payload for a reader without `reveal = payloads`.
    pub(crate) fn redacted_schedule(&self, mut schedule: proto::Schedule) -> proto::Schedule {
        if !self.sees(Reveal::Payloads)
            && let Some(template) = schedule.definition.as_mut().and_then(|d| d.template.as_mut())
        {
            template.payload.clear();
        }
        schedule
    }
}
