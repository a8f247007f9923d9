//! etcd snapshots: taken with the image's `etcdctl snapshot save` over the
//! node's own client certificate (it streams to disk and checks the hash
//! etcd appends), restored with `etcdutl snapshot restore` (which checks
//! it again) into a fresh directory whose `member/` then becomes the data
//! directory's. Both programs come with the etcd layer; the agent runs
//! them to their end as children (`crate::child`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use contract::api::Blob;

use crate::digest::Hashing;

/// Where snapshots are written (and backups kept).
pub const DIR: &str = contract::etcd::BACKUP_DIR;
const ETCDCTL: &str = "/usr/bin/etcdctl";
const ETCDUTL: &str = "/usr/bin/etcdutl";
/// A snapshot of a large member under TCG takes a while.
const TIMEOUT: Duration = Duration::from_secs(600);

/// The size and sha256 of `path`.
pub fn describe(path: &Path) -> Result<Blob, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut sink = Hashing::new(std::io::sink());
    let bytes = std::io::copy(&mut f, &mut sink).map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, sha256) = sink.finish();
    Ok(Blob { bytes, sha256 })
}

/// `etcdctl snapshot save` of the local member into `out` (which etcdctl
/// writes as `out.part` and renames when whole).
pub fn save(pki: &Path, out: &Path) -> Result<Blob, String> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut cmd = Command::new(ETCDCTL);
    cmd.arg(format!(
        "--endpoints=https://127.0.0.1:{}",
        contract::etcd::CLIENT_PORT
    ))
    .arg(format!("--cacert={}", pki.join("ca.crt").display()))
    .arg(format!("--cert={}", pki.join("client.crt").display()))
    .arg(format!("--key={}", pki.join("client.key").display()))
    .args(["snapshot", "save"])
    .arg(out);
    crate::child::run(cmd, "etcdctl snapshot save", TIMEOUT)?;
    describe(out)
}

/// What a restore makes this node: the one member of a restored cluster.
pub struct Restore<'a> {
    pub name: &'a str,
    pub peer_url: &'a str,
    pub token: &'a str,
    pub data_dir: &'a Path,
    pub owner: (u32, u32),
}

impl Restore<'_> {
    /// Restores `snapshot` next to the data directory, then moves its
    /// `member/` in and gives it to etcd's user.
    pub fn run(&self, snapshot: &Path) -> Result<(), String> {
        let work = self.data_dir.with_extension("restore");
        let _ = std::fs::remove_dir_all(&work);
        let mut cmd = Command::new(ETCDUTL);
        cmd.args(["snapshot", "restore"])
            .arg(snapshot)
            .arg(format!("--name={}", self.name))
            .arg(format!("--initial-cluster={}={}", self.name, self.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster-token={}", self.token))
            .arg(format!("--data-dir={}", work.display()));
        crate::child::run(cmd, "etcdutl snapshot restore", TIMEOUT)?;
        std::fs::create_dir_all(self.data_dir)
            .map_err(|e| format!("{}: {e}", self.data_dir.display()))?;
        chown_tree(&work, self.owner)?;
        let member: PathBuf = self.data_dir.join("member");
        std::fs::rename(work.join("member"), &member)
            .map_err(|e| format!("moving the restored member to {}: {e}", member.display()))?;
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }
}

/// `chown -R` without following symlinks (etcdutl makes none).
fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> Result<(), String> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))? {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            chown_tree(&entry.path(), (uid, gid))?;
        }
    }
    Ok(())
}
