//! Writes the machine config's registry mirrors and logins where
//! containerd's CRI plugin reads them (`config_path` in
//! layers/containerd/config.toml): one `hosts.toml` per registry, rendered
//! by the contract. At boot before containerd starts, and again when a
//! config is applied through the API (containerd reads them per pull, so
//! no restart). Every file is 0600 and its directory 0700: containerd runs
//! as root and a login must not be readable by anyone else. Directories of
//! registries the config no longer names are removed; nothing else in the
//! directory is touched.

use std::path::{Path, PathBuf};

use contract::config::registries::{hosts_files, HostsFile};
use contract::config::Containerd;

/// containerd's `config_path`.
pub const CERTS_D: &str = "/etc/containerd/certs.d";
/// The file name containerd looks for in each registry's directory.
const HOSTS: &str = "hosts.toml";
/// What a file of ours starts with, so stale ones can be told apart.
const OURS: &str = "# Written by nodeagent";

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Writes `c`'s hosts files under `dir` and removes ours it no longer
/// names. Returns the registries written.
pub fn write(dir: &Path, c: &Containerd) -> Result<Vec<String>, WriteError> {
    use std::os::unix::fs::DirBuilderExt;
    let files = hosts_files(c);
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError { path, source }
    };
    if !files.is_empty() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err(dir))?;
    }
    for HostsFile { host, text, .. } in &files {
        let sub = dir.join(host);
        match std::fs::DirBuilder::new().mode(0o700).create(&sub) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(err(&sub)(e)),
            _ => {}
        }
        let path = sub.join(HOSTS);
        crate::sys::write_atomic(&path, text.as_bytes(), 0o600).map_err(err(&path))?;
    }
    let keep: Vec<&str> = files.iter().map(|f| f.host.as_str()).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path().join(HOSTS);
            let ours = std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(OURS));
            if ours && !keep.contains(&name.as_str()) {
                std::fs::remove_file(&path).map_err(err(&path))?;
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    Ok(keep.into_iter().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::config::{RegistryCredential, Secret};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_private_files_and_removes_only_its_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs.d");
        let mut c = Containerd::default();
        c.registry_mirrors
            .insert("docker.io".into(), vec!["http://10.0.2.100:5000".into()]);
        c.registry_credentials.insert(
            "10.0.2.100:5000".into(),
            RegistryCredential {
                username: Some("u".into()),
                password: Some(Secret::new("p")),
                token: None,
            },
        );
        // a registry directory someone else made stays
        std::fs::create_dir_all(certs.join("other.io")).unwrap();
        std::fs::write(certs.join("other.io/hosts.toml"), "server = \"x\"\n").unwrap();
        assert_eq!(write(&certs, &c).unwrap(), ["10.0.2.100:5000", "docker.io"]);
        let f = certs.join("docker.io/hosts.toml");
        assert!(std::fs::read_to_string(&f).unwrap().contains("Basic dTpw"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f), 0o600);
        assert_eq!(mode(&certs.join("docker.io")), 0o700);
        c.registry_credentials.clear();
        assert_eq!(write(&certs, &c).unwrap(), ["docker.io"]);
        assert!(!certs.join("10.0.2.100:5000").exists());
        assert!(certs.join("other.io/hosts.toml").exists());
        assert!(!std::fs::read_to_string(&f)
            .unwrap()
            .contains("Authorization"));
        assert!(write(&certs, &Containerd::default()).unwrap().is_empty());
        assert!(!certs.join("docker.io").exists());
    }
}
