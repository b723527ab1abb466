//! The rule of every method the server serves, as data: who may call it, whether each call is
//! an audited admin action, and whether its response is a stream (ended when its token is
//! revoked). The layer (`layer.rs`) looks a call's path up here; a path with no rule is refused.
//! The tests below walk every method of the descriptor sets the server registers (its own,
//! health's, reflection's) and fail when one has no rule, when a rule names no method, or when
//! a rule's `stream` is not the method's, so a new RPC cannot ship unguarded.
//!
//! Scopes are not in this table: they depend on the request's fields, which only the handler
//! has decoded; each handler checks them through `Caller` (`caller.rs`).

use crate::auth::Role;

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    /// Anyone, without a token: health (probes carry none).
    Anyone,
    /// Anyone with a valid token, unless `--reflection public` opens it to anyone.
    Reflection,
    /// A token of one of these roles.
    Roles(&'static [Role]),
}

/// The rule of one method.
#[derive(Debug)]
pub(crate) struct Rule {
    /// The gRPC path: `/<package>.<Service>/<Method>`.
    pub(crate) path: &'static str,
    pub(crate) who: Who,
    /// Each call writes one audit line (token, RPC, target): the admin actions.
    pub(crate) audit: bool,
    /// The server answers with a stream, which is ended when the caller's token is revoked.
    pub(crate) stream: bool,
}

impl Rule {
    /// The method's name alone (`CancelJob`), as messages and audit lines say it.
    pub(crate) fn method(&self) -> &'static str {
        self.path.rsplit('/').next().unwrap_or(self.path)
    }
}

use Role::{Admin, Producer, Reader, Worker};

const PRODUCE: Who = Who::Roles(&[Producer, Admin]);
const WORK: Who = Who::Roles(&[Worker, Admin]);
const READ: Who = Who::Roles(&[Reader, Admin]);
/// Any token.
const ANY: Who = Who::Roles(&[Producer, Worker, Reader, Admin]);
/// Reads a producer needs about its own jobs and sessions too.
const FOLLOW: Who = Who::Roles(&[Producer, Reader, Admin]);
const ADMINISTER: Who = Who::Roles(&[Admin]);

const fn rule(path: &'static str, who: Who) -> Rule {
    Rule { path, who, audit: false, stream: false }
}

const fn stream(path: &'static str, who: Who) -> Rule {
    Rule { path, who, audit: false, stream: true }
}

const fn audited(path: &'static str) -> Rule {
    Rule { path, who: ADMINISTER, audit: true, stream: false }
}

/// Every method's rule.
pub(crate) static RULES: &[Rule] = &[
    rule("/jobwire.v1.QueueService/AddJob", PRODUCE),
    rule("/jobwire.v1.QueueService/AddJobs", PRODUCE),
    stream("/jobwire.v1.QueueService/GetJob", WORK),
    stream("/jobwire.v1.QueueService/Work", WORK),
    rule("/jobwire.v1.QueueService/CompleteJob", WORK),
    rule("/jobwire.v1.QueueService/FailJob", WORK),
    rule("/jobwire.v1.QueueService/ExtendLease", WORK),
    rule("/jobwire.v1.QueueService/ReturnJob", WORK),
    rule("/jobwire.v1.QueueService/ReportProgress", WORK),
    rule("/jobwire.v1.QueueService/GetJobInfo", FOLLOW),
    stream("/jobwire.v1.QueueService/WatchJob", FOLLOW),
    rule("/jobwire.v1.QueueService/Stats", READ),
    rule("/jobwire.v1.QueueService/ListQueues", READ),
    rule("/jobwire.v1.QueueService/ListJobs", READ),
    rule("/jobwire.v1.QueueService/ListWorkers", READ),
    stream("/jobwire.v1.QueueService/Subscribe", READ),
    stream("/jobwire.v1.QueueService/SubscribeQueues", READ),
    rule("/jobwire.v1.QueueService/ListDeadJobGroups", READ),
    rule("/jobwire.v1.QueueService/GetQueueActivity", READ),
    rule("/jobwire.v1.QueueService/GetAccess", ANY),
    rule("/jobwire.v1.QueueService/GetQueueSettings", READ),
    audited("/jobwire.v1.QueueService/CancelJob"),
    audited("/jobwire.v1.QueueService/PauseQueue"),
    audited("/jobwire.v1.QueueService/ResumeQueue"),
    audited("/jobwire.v1.QueueService/SetQueueSettings"),
    audited("/jobwire.v1.QueueService/RetryJob"),
    audited("/jobwire.v1.QueueService/RetryDeadJobs"),
    audited("/jobwire.v1.QueueService/RetryJobs"),
    audited("/jobwire.v1.QueueService/CancelJobs"),
    audited("/jobwire.v1.QueueService/DeleteJobs"),
    audited("/jobwire.v1.QueueService/DeleteJob"),
    audited("/jobwire.v1.QueueService/PurgeQueue"),
    rule("/jobwire.v1.SessionService/CreateSession", PRODUCE),
    rule("/jobwire.v1.SessionService/GetSession", FOLLOW),
    rule("/jobwire.v1.SessionService/UpdateSession", PRODUCE),
    rule("/jobwire.v1.SessionService/DeleteSession", PRODUCE),
    rule("/jobwire.v1.SessionService/ListSessions", READ),
    rule("/jobwire.v1.SessionService/ListSessionJobs", READ),
    audited("/jobwire.v1.ScheduleService/UpsertSchedule"),
    rule("/jobwire.v1.ScheduleService/GetSchedule", READ),
    rule("/jobwire.v1.ScheduleService/ListSchedules", READ),
    audited("/jobwire.v1.ScheduleService/DeleteSchedule"),
    audited("/jobwire.v1.ScheduleService/PauseSchedule"),
    audited("/jobwire.v1.ScheduleService/ResumeSchedule"),
    audited("/jobwire.v1.ScheduleService/TriggerSchedule"),
    rule("/grpc.health.v1.Health/Check", Who::Anyone),
    stream("/grpc.health.v1.Health/Watch", Who::Anyone),
    stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Who::Reflection),
    stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Who::Reflection),
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use prost::Message;

    use super::*;

    /// `/<package>.<Service>/<Method>` and whether the server streams, for every method of the
    /// descriptor sets the server registers (`server.rs`).
    fn served_methods() -> Vec<(String, bool)> {
        let sets: [&[u8]; 4] = [
            tonic::include_file_descriptor_set!("jobwire_descriptor"),
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods = Vec::new();
        for bytes in sets {
            let set = prost_types::FileDescriptorSet::decode(bytes).expect("a valid descriptor set");
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        methods.push((path, method.server_streaming()));
                    }
                }
            }
        }
        methods
    }

    #[test]
    fn every_served_method_has_a_rule_and_every_rule_a_method() {
        let methods = served_methods();
        assert!(methods.len() > 30, "the descriptor sets were read: {methods:?}");
        for (path, streams) in &methods {
            let rule = RULES.iter().find(|r| r.path == path).unwrap_or_else(|| panic!("{path} has no rule"));
            assert_eq!(rule.stream, *streams, "{path}: `stream` must say whether the server streams");
        }
        for rule in RULES {
            assert!(methods.iter().any(|(path, _)| path == rule.path), "{} names no served method", rule.path);
        }
        let unique: HashSet<_> = RULES.iter().map(|r| r.path).collect();
        assert_eq!(unique.len(), RULES.len(), "one rule per method");
    }

    #[test]
    fn admin_may_call_everything_and_only_admin_actions_are_audited() {
        for rule in RULES {
            if let Who::Roles(roles) = rule.who {
                assert!(roles.contains(&Role::Admin), "{}: admin may call everything", rule.path);
                assert_eq!(rule.audit, roles == [Role::Admin], "{}: audited exactly when admin only", rule.path);
            } else {
                assert!(!rule.audit);
            }
        }
        assert_eq!(RULES[0].method(), "AddJob");
    }
}
