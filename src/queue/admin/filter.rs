//! Which jobs of a listing an operator means: the filter of ListJobs and of the bulk actions, and
//! the grouping of errors that the dead-letter groups and `error_group` share.
//!
//! A filter is checked against each job's view as the listing walks it (`walk.rs`); nothing is
//! indexed, so a filtered page costs what the jobs it examines cost to read.

use std::time::SystemTime;

use crate::queue::{
    error::{Error, Result},
    job::{JobView, SessionId},
};

/// Longest text a filter field may hold, in bytes.
const MAX_TEXT: usize = 256;
/// Longest error group, in characters.
const MAX_GROUP: usize = 200;

/// Conditions a job must meet; `None` matches every job (see the proto's `JobFilter`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Exactly this handler name.
    pub job_type: Option<String>,
    /// Text the job id contains, ignoring case.
    pub id_contains: Option<String>,
    /// Text the last error contains, ignoring case.
    pub error_contains: Option<String>,
    /// The last error's group (see [`error_group`]) is exactly this.
    pub error_group: Option<String>,
    /// Added at or after this time.
    pub created_after: Option<SystemTime>,
    /// Added before this time.
    pub created_before: Option<SystemTime>,
    /// Of this session.
    pub session: Option<SessionId>,
}

impl JobFilter {
    /// Whether every job matches (no condition set).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Refuses a text field over [`MAX_TEXT`] bytes, naming it under `prefix` (`filter.`).
    pub(in crate::queue) fn validate(&self, prefix: &str) -> Result<()> {
        let texts = [
            ("type", &self.job_type),
            ("id_contains", &self.id_contains),
            ("error_contains", &self.error_contains),
            ("error_group", &self.error_group),
        ];
        for (name, text) in texts {
            if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT) {
                return Err(Error::invalid(format!("{prefix}{name}"), format!("at most {MAX_TEXT} bytes")));
            }
        }
        Ok(())
    }

    /// Whether `job` meets every condition set.
    pub(super) fn matches(&self, job: &JobView) -> bool {
        let error = job.last_error.as_deref().unwrap_or_default();
        self.job_type.as_ref().is_none_or(|t| *t == job.job_type)
            && self.id_contains.as_ref().is_none_or(|part| contains_ignoring_case(&job.id.to_string(), part))
            && self.error_contains.as_ref().is_none_or(|part| contains_ignoring_case(error, part))
            && self.error_group.as_ref().is_none_or(|group| *group == error_group(error))
            && self.created_after.is_none_or(|after| job.created_at >= after)
            && self.created_before.is_none_or(|before| job.created_at < before)
            && self.session.as_ref().is_none_or(|s| job.session.as_ref() == Some(s))
    }
}

fn contains_ignoring_case(text: &str, part: &str) -> bool {
    text.to_lowercase().contains(&part.to_lowercase())
}

/// The group of an error: its first line with every run of digits replaced by `#`, cut to 200
/// characters, so errors that differ only in the ids and counts they name fall together.
pub fn error_group(error: &str) -> String {
    let line = error.lines().next().unwrap_or_default();
    let (mut group, mut length, mut in_digits) = (String::new(), 0, false);
    for c in line.chars() {
        if length == MAX_GROUP {
            break;
        }
        let digit = c.is_ascii_digit();
        if !(digit && in_digits) {
            group.push(if digit { '#' } else { c });
            length += 1;
        }
        in_digits = digit;
    }
    group
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_differ_in_numbers_share_a_group() {
        assert_eq!(error_group("user 123 not found\nat line 7"), "user # not found");
        assert_eq!(error_group("user 9 not found"), "user # not found");
        assert_eq!(error_group(""), "");
        assert_eq!(error_group("timeout"), "timeout");
        assert_eq!(error_group(&"é".repeat(500)).chars().count(), MAX_GROUP);
    }

    #[test]
    fn a_long_field_is_refused_by_name() {
        let filter = JobFilter { error_contains: Some("x".repeat(MAX_TEXT + 1)), ..JobFilter::default() };
        let err = filter.validate("filter.").expect_err("too long").to_string();
        assert!(err.starts_with("filter.error_contains"), "{err}");
        assert!(JobFilter::default().is_empty());
    }
}
