//! The conversions of the dashboard's calls: job filters and selections in, bulk outcomes,
//! dead-letter groups and activity out.

use crate::{
    proto,
    queue::{ActivityMinute, BulkOutcome, DeadGroups, Error, JobFilter, JobId, Selection, SessionId},
};

use super::{listing, timestamp, to_timestamp};

fn text(value: String) -> Option<String> {
    Some(value).filter(|v| !v.is_empty())
}

/// A filter as sent; `prefix` names where it sits in the request (`filter.`).
pub(in crate::api) fn filter(f: Option<proto::JobFilter>, prefix: &str) -> Result<JobFilter, Error> {
    let Some(f) = f else { return Ok(JobFilter::default()) };
    let field = |name: &str| format!("{prefix}{name}");
    Ok(JobFilter {
        job_type: text(f.r#type),
        id_contains: text(f.id_contains),
        error_contains: text(f.error_contains),
        error_group: text(f.error_group),
        created_after: timestamp(f.created_after, &field("created_after"))?,
        created_before: timestamp(f.created_before, &field("created_before"))?,
        session: text(f.session_id).map(|s| SessionId::parse(&s, &field("session_id"))).transpose()?,
    })
}

/// The jobs a bulk request names.
pub(in crate::api) fn selection(s: Option<proto::JobSelection>) -> Result<Selection, Error> {
    match s.and_then(|s| s.selection) {
        None => Err(Error::invalid("selection", "name jobs (ids) or a query")),
        Some(proto::job_selection::Selection::Ids(list)) => {
            let ids = list.job_ids.iter().enumerate();
            let ids = ids.map(|(i, id)| JobId::parse(id, &format!("selection.ids.job_ids[{i}]")));
            Ok(Selection::Ids(ids.collect::<Result<_, _>>()?))
        }
        Some(proto::job_selection::Selection::Query(q)) => Ok(Selection::Query {
            state: listing(q.state, "selection.query.state")?,
            filter: filter(q.filter, "selection.query.filter.")?,
            queue: q.queue,
        }),
    }
}

pub(in crate::api) fn bulk_outcome(o: BulkOutcome) -> proto::BulkOutcome {
    proto::BulkOutcome { applied: o.applied, skipped: o.skipped, more: o.more }
}

pub(in crate::api) fn dead_groups(d: DeadGroups) -> proto::ListDeadJobGroupsResponse {
    proto::ListDeadJobGroupsResponse {
        groups: d
            .groups
            .into_iter()
            .map(|g| proto::DeadJobGroup {
                group: g.group,
                count: g.count,
                example: g.example,
                newest_job_id: g.newest_job.to_string(),
                newest_at: Some(to_timestamp(g.newest_at)),
                oldest_at: Some(to_timestamp(g.oldest_at)),
            })
            .collect(),
        examined: d.examined,
        complete: d.complete,
    }
}

pub(in crate::api) fn activity(queue: String, minutes: Vec<ActivityMinute>) -> proto::QueueActivity {
    proto::QueueActivity {
        queue,
        minutes: minutes
            .into_iter()
            .map(|m| proto::ActivityMinute {
                start: Some(to_timestamp(m.start)),
                added: m.added,
                completed: m.completed,
                failed: m.failed,
            })
            .collect(),
    }
}
