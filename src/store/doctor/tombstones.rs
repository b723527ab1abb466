//! The doctor's check of the idempotency tombstone buckets met on one page of the SCAN: each is
//! a hash, expires no later than its name says (`tombstones::expiry`: a bucket that outlived
//! its lookups would hold memory for nothing), and each tombstone in it names a ULID. The
//! tombstones are read in HSCAN pages. A tombstone whose job is gone is fine: it outlives its
//! job on purpose, so that a repeat is still recognised.

use super::*;
use crate::store::tombstones;

/// A tombstone bucket the SCAN met, with the width and index its name gives.
pub(super) struct Bucket {
    pub(super) key: String,
    pub(super) width_ms: u64,
    pub(super) index: u64,
}

impl Doctor {
    pub(super) async fn check_tombstones(&self, queue: &str, buckets: &[Bucket], report: &mut Report) -> Result<()> {
        if buckets.is_empty() {
            return Ok(());
        }
        let kinds: Vec<(String, i64)> = self
            .backend
            .with_conn(async |c| {
                let mut pipe = redis::pipe();
                for bucket in buckets {
                    pipe.cmd("TYPE").arg(&bucket.key).cmd("PEXPIRETIME").arg(&bucket.key);
                }
                pipe.query_async(c).await
            })
            .await?;
        for (bucket, (kind, expires_at)) in buckets.iter().zip(kinds) {
            match kind.as_str() {
                "none" => continue,
                "hash" => {}
                other => {
                    let detail = format!("a tombstone bucket's name on a {other}, not a hash");
                    push(report, Kind::StrayKey, Some(queue), &bucket.key, detail, Some(Mend::DeleteKey));
                    continue;
                }
            }
            let due = tombstones::expiry(bucket.width_ms, bucket.index);
            let late = match u64::try_from(expires_at) {
                Err(_) => Some("never expires".to_owned()),
                Ok(at) if at > due => Some(format!("expires at {at} ms, after {due} as its name says")),
                Ok(_) => None,
            };
            if let Some(detail) = late {
                let mend = Mend::Tombstone("expiry", due.to_string().into_bytes());
                self.confirm(report, queue, &bucket.key, detail, mend).await?;
            }
            self.check_bucket_entries(queue, &bucket.key, report).await?;
        }
        Ok(())
    }

    /// Each tombstone of one bucket names a ULID.
    async fn check_bucket_entries(&self, queue: &str, bucket: &str, report: &mut Report) -> Result<()> {
        let mut cursor = 0u64;
        loop {
            let (next, flat): (u64, Vec<Vec<u8>>) = self.hash_page(bucket, cursor).await?;
            for pair in flat.chunks_exact(2) {
                let (field, value) = (&pair[0], String::from_utf8_lossy(&pair[1]));
                if ulid::Ulid::from_string(&value).is_err() {
                    let digest: String = field.iter().map(|b| format!("{b:02x}")).collect();
                    let detail =
                        format!("the tombstone {digest} (the digest of a key, in hex) names no job ({value:?})");
                    let mend = Mend::Tombstone("entry", field.clone());
                    self.confirm(report, queue, bucket, detail, mend).await?;
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Reports a finding about a bucket once its repair function, in `check` mode, confirms it.
    async fn confirm(&self, report: &mut Report, queue: &str, bucket: &str, detail: String, mend: Mend) -> Result<()> {
        if report.findings.len() >= MAX_FINDINGS {
            report.truncated = true;
            return Ok(());
        }
        let finding = Finding {
            kind: Kind::IdempotencyKey,
            queue: Some(queue.to_owned()),
            subject: bucket.to_owned(),
            detail,
            mend: Some(mend),
        };
        if self.still_holds(&finding).await? {
            report.findings.push(finding);
        }
        Ok(())
    }
}

/// `doctor_tombstone.lua`: the bucket is its own key (KEYS[28]).
pub(super) struct MendTombstone {
    pub(super) bucket: String,
    /// Mode, what, and the expiry or the field (bytes: a field is a digest).
    pub(super) args: Vec<Vec<u8>>,
}

impl QueueFunction for MendTombstone {
    type Reply = i64;
    fn function(scripts: &Scripts) -> &Function {
        &scripts.doctor_tombstone
    }
    fn own_keys(&self, _keys: &QueueKeys) -> Vec<String> {
        vec![self.bucket.clone()]
    }
    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(&self.args);
    }
}
