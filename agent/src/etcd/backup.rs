//! Scheduled etcd backups: one voting member at a time takes them, the
//! one holding [`BACKUP_LEADER_KEY`], created in a transaction only when
//! absent and bound to a short lease the holder keeps alive; when the
//! holder dies its lease runs out and the next member to look takes the
//! key. The holder snapshots every `interval` into [`BACKUP_DIR`]
//! (`etcd-UNIXTIME.db`, written by etcdctl as `.part` and renamed, and a
//! `.sha256` beside it in `sha256sum`'s format, written to a temporary
//! name and renamed) and keeps the newest `retain`; with an object store
//! configured it copies each new snapshot there too ([`copy_out`]).

use std::path::Path;

use contract::etcd::{backup_name as name, backup_time, BackupsReport};
use contract::etcd::{BACKUP_DIR, BACKUP_LEADER_KEY};

use super::gateway::Client;

/// Seconds a holder's lease lives without a keep-alive.
pub const LEASE_TTL: u64 = 20;
/// Seconds between two looks at the lease (well inside its TTL).
pub const LOOK_EVERY: u64 = 5;

/// What the holder remembers between looks.
#[derive(Debug, Default)]
pub struct Holder {
    pub lease: Option<u64>,
    pub looked_at: Option<u64>,
    /// When the newest kept snapshot was taken (seconds since the epoch).
    pub last_at: Option<u64>,
    /// When the newest snapshot in the object store was taken.
    pub copied_at: Option<u64>,
    /// When an upload last failed (seconds since the epoch): the next
    /// try waits [`RETRY_COPY_AFTER`].
    pub copy_failed_at: Option<u64>,
}

/// Seconds between two tries of an upload that failed.
pub const RETRY_COPY_AFTER: u64 = 30;

/// Whether this member holds the backup key after this look: keeps its
/// lease alive, or takes the key when nobody holds it.
pub fn elect(client: &Client, holder: &mut Holder, hostname: &str) -> Result<bool, String> {
    let local = "127.0.0.1";
    let chain = |e: super::gateway::GatewayError| crate::error::chain(&e);
    if let Some(lease) = holder.lease {
        if client.lease_keepalive(local, lease).map_err(chain)? > 0 {
            return Ok(true);
        }
        holder.lease = None;
    }
    if client
        .get(local, BACKUP_LEADER_KEY)
        .map_err(chain)?
        .is_some()
    {
        return Ok(false);
    }
    let lease = client.lease_grant(local, LEASE_TTL).map_err(chain)?;
    if client
        .create_with_lease(local, BACKUP_LEADER_KEY, hostname, lease)
        .map_err(chain)?
    {
        holder.lease = Some(lease);
        return Ok(true);
    }
    // another member was quicker: our lease holds nothing
    let _ = client.lease_revoke(local, lease);
    Ok(false)
}

/// The kept snapshots' times, oldest first (`etcd-UNIXTIME.db`).
pub fn kept(dir: &Path) -> Vec<u64> {
    let mut times: Vec<u64> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| backup_time(&e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    times.sort_unstable();
    times
}

/// Takes one snapshot at `now`, writes its `.sha256`, prunes to `retain`;
/// returns the report's view of the directory.
pub fn take(pki: &Path, now: u64, retain: u32, report: &mut BackupsReport) -> Result<(), String> {
    let dir = Path::new(BACKUP_DIR);
    let file = dir.join(name(now));
    let blob = super::snapshot::save(pki, &file)?;
    let sums = dir.join(format!("{}.sha256", name(now)));
    let tmp = dir.join(format!(".{}.sha256.tmp", name(now)));
    std::fs::write(&tmp, format!("{}  {}\n", blob.sha256, name(now)))
        .and_then(|()| std::fs::rename(&tmp, &sums))
        .map_err(|e| format!("{}: {e}", sums.display()))?;
    let times = kept(dir);
    let excess = times.len().saturating_sub(retain as usize);
    for old in times.iter().take(excess) {
        let _ = std::fs::remove_file(dir.join(name(*old)));
        let _ = std::fs::remove_file(dir.join(format!("{}.sha256", name(*old))));
    }
    report.taken += 1;
    report.kept = u32::try_from(kept(dir).len()).unwrap_or(u32::MAX);
    report.last = Some(name(now));
    report.last_at = now;
    report.last_sha256 = Some(blob.sha256);
    report.error = None;
    Ok(())
}

/// Uploads the newest kept snapshot when the store lacks it, then prunes
/// the store to its `retain`; a failure is reported and tried again
/// [`RETRY_COPY_AFTER`] later. `store` is `Err` when the target itself is
/// unusable (its CA, its endpoint): reported, never tried.
pub fn copy_out(
    store: Result<&super::store::Store, &String>,
    holder: &mut Holder,
    report: &mut BackupsReport,
    now: u64,
) {
    let mut r = report.store.take().unwrap_or_default();
    let Some(at) = holder
        .last_at
        .filter(|t| holder.copied_at.is_none_or(|c| c < *t))
    else {
        report.store = Some(r);
        return;
    };
    let resting = holder
        .copy_failed_at
        .is_some_and(|t| now.saturating_sub(t) < RETRY_COPY_AFTER);
    let result = match store {
        Err(why) => Err(why.clone()),
        Ok(_) if resting => {
            report.store = Some(r);
            return;
        }
        Ok(store) => {
            r.target = store.name();
            let file = Path::new(BACKUP_DIR).join(name(at));
            // take() hashed it already: read it again only for an older one
            let sha256 = match (&report.last_sha256, report.last_at == at) {
                (Some(sha), true) => Ok(sha.clone()),
                _ => super::snapshot::describe(&file).map(|blob| blob.sha256),
            };
            sha256
                .and_then(|sha| store.put(&file, at, &sha))
                .and_then(|key| {
                    r.uploaded += 1;
                    r.last = Some(key);
                    holder.copied_at = Some(at);
                    store.prune()
                })
        }
    };
    match result {
        Ok(kept) => {
            r.kept = kept;
            r.error = None;
            holder.copy_failed_at = None;
        }
        Err(why) => {
            r.error = Some(why);
            holder.copy_failed_at = Some(now);
        }
    }
    report.store = Some(r);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_snapshots_are_found_by_name_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "etcd-300.db",
            "etcd-100.db",
            "etcd-100.db.sha256",
            ".api-5.db",
            "etcd-200.db.part",
            "etcd-x.db",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        assert_eq!(kept(dir.path()), [100, 300]);
        assert!(kept(&dir.path().join("none")).is_empty());
    }
}
