//! Scheduled etcd backups: one voting member at a time takes them, the
//! one holding [`BACKUP_LEADER_KEY`], created in a transaction only when
//! absent and bound to a short lease the holder keeps alive; when the
//! holder dies its lease runs out and the next member to look takes the
//! key. The holder snapshots every `interval` into [`BACKUP_DIR`]
//! (`etcd-UNIXTIME.db`, written by etcdctl as `.part` and renamed, and a
//! `.sha256` beside it in `sha256sum`'s format, written to a temporary
//! name and renamed) and keeps the newest `retain`.

use std::path::Path;

use contract::etcd::{BackupsReport, BACKUP_DIR, BACKUP_LEADER_KEY};

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
}

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
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("etcd-")?
                        .strip_suffix(".db")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    times.sort_unstable();
    times
}

fn name(at: u64) -> String {
    format!("etcd-{at}.db")
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
