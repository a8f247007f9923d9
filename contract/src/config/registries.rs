//! `[containerd]` as containerd reads it: one `hosts.toml` per registry in
//! the CRI plugin's `config_path` (`/etc/containerd/certs.d/<host>/`).
//! containerd reads these on every pull, so the agent can rewrite them
//! while containerd runs. Pure: the agent writes what this renders.
//!
//! For a registry with mirrors, the mirrors are `[host."URL"]` entries
//! tried in order before the registry itself (no `server` line: containerd
//! then falls back to its own default upstream for that name). A login
//! becomes an `Authorization` header on every entry that points at the
//! login's host, and that host gets a file of its own so direct pulls
//! carry it too: `Basic base64(user:password)` or `Bearer token`.

use std::collections::BTreeMap;

use base64::Engine;

use super::Containerd;

/// One registry's `hosts.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    /// The registry as pulls name it (`docker.io`, `mirror.lab:5000`): the
    /// directory name under `config_path`.
    pub host: String,
    pub text: String,
    /// Holds a login: the file must not be readable by others.
    pub has_secret: bool,
}

/// The `Authorization` header value for `host`'s login, if it has one.
fn authorization(c: &Containerd, host: &str) -> Option<String> {
    let cred = c.registry_credentials.get(host)?;
    match (&cred.username, &cred.password, &cred.token) {
        (Some(u), Some(p), _) => {
            let pair = format!("{u}:{}", p.expose());
            let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
            Some(format!("Basic {b64}"))
        }
        (_, _, Some(t)) => Some(format!("Bearer {}", t.expose())),
        _ => None,
    }
}

/// `host[:port]` of an `http(s)://` URL.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.get(..end).filter(|h| !h.is_empty())
}

/// A TOML basic string (quotes and escapes), for keys and values.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn entry(out: &mut String, url: &str, capabilities: &str, auth: Option<&str>) {
    let key = quoted(url);
    out.push_str(&format!(
        "\n[host.{key}]\n  capabilities = {capabilities}\n"
    ));
    if let Some(a) = auth {
        out.push_str(&format!(
            "  [host.{key}.header]\n    Authorization = {}\n",
            quoted(a)
        ));
    }
}

const HEADER: &str = "# Written by nodeagent from the machine config's [containerd]; rewritten\n\
                      # whenever a config is applied. Do not edit.\n";

/// Every registry's `hosts.toml`, sorted by host. The config was checked
/// (hosts are `name[:port]`, mirrors `http(s)://` URLs).
pub fn hosts_files(c: &Containerd) -> Vec<HostsFile> {
    let mut files: BTreeMap<String, HostsFile> = BTreeMap::new();
    for (host, mirrors) in &c.registry_mirrors {
        let mut text = HEADER.to_string();
        let mut has_secret = false;
        for m in mirrors {
            let auth = url_host(m).and_then(|h| authorization(c, h));
            has_secret |= auth.is_some();
            entry(&mut text, m, r#"["pull", "resolve"]"#, auth.as_deref());
        }
        files.insert(
            host.clone(),
            HostsFile {
                host: host.clone(),
                text,
                has_secret,
            },
        );
    }
    for host in c.registry_credentials.keys() {
        let auth = authorization(c, host);
        let file = files.entry(host.clone()).or_insert_with(|| HostsFile {
            host: host.clone(),
            text: HEADER.to_string(),
            has_secret: false,
        });
        // The registry itself, logged in: after its mirrors when it has any.
        entry(
            &mut file.text,
            &format!("https://{host}"),
            r#"["pull", "resolve", "push"]"#,
            auth.as_deref(),
        );
        file.has_secret |= auth.is_some();
    }
    files.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RegistryCredential, Secret};

    #[test]
    fn mirrors_and_logins_become_hosts_files() {
        let mut c = Containerd::default();
        c.registry_mirrors.insert(
            "docker.io".into(),
            vec![
                "http://10.0.2.100:5000/v2".into(),
                "https://mirror.lab".into(),
            ],
        );
        c.registry_credentials.insert(
            "10.0.2.100:5000".into(),
            RegistryCredential {
                username: Some("node".into()),
                password: Some(Secret::new("hunter2")),
                token: None,
            },
        );
        c.registry_credentials.insert(
            "ghcr.io".into(),
            RegistryCredential {
                username: None,
                password: None,
                token: Some(Secret::new("t0k\"en")),
            },
        );
        let files = hosts_files(&c);
        let hosts: Vec<&str> = files.iter().map(|f| f.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.2.100:5000", "docker.io", "ghcr.io"]);
        let docker = &files[1];
        assert!(docker.has_secret);
        // "node:hunter2" in base64
        let basic = "Basic bm9kZTpodW50ZXIy";
        assert_eq!(
            docker.text,
            format!(
                "{HEADER}\n[host.\"http://10.0.2.100:5000/v2\"]\n  capabilities = [\"pull\", \"resolve\"]\n  \
                 [host.\"http://10.0.2.100:5000/v2\".header]\n    Authorization = \"{basic}\"\n\
                 \n[host.\"https://mirror.lab\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            )
        );
        let parsed: toml::Table = toml::from_str(&files[2].text).unwrap();
        let auth = &parsed["host"]["https://ghcr.io"]["header"]["Authorization"];
        assert_eq!(auth.as_str(), Some("Bearer t0k\"en"));
        assert!(files[0].text.contains(basic) && files[0].has_secret);
        for f in &files {
            toml::from_str::<toml::Table>(&f.text).unwrap();
        }
    }

    #[test]
    fn a_mirror_without_a_login_holds_no_secret() {
        let mut c = Containerd::default();
        c.registry_mirrors
            .insert("quay.io".into(), vec!["https://m.lab:5000".into()]);
        let files = hosts_files(&c);
        assert_eq!(files.len(), 1);
        assert!(!files[0].has_secret);
        assert!(!files[0].text.contains("Authorization"));
    }

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("https://a.b:5000/x"), Some("a.b:5000"));
        assert_eq!(url_host("http://a"), Some("a"));
        assert_eq!(url_host("http://"), None);
        assert_eq!(url_host("ftp://a"), None);
    }
}
