//! The image's sysctls: parse `/etc/sysctl.d/*.conf` (systemd's sysctl.d syntax:
//! `key = value`, `#`/`;` comments, a leading `-` makes a failure non-fatal),
//! merge them by file name (later wins), write each under `/proc/sys` and read it
//! back. Parsing and merging are pure; applying goes through [`Files`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::sys::Files;

pub const SYSCTL_DIR: &str = "/etc/sysctl.d";
const PROC_SYS: &str = "/proc/sys";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// Dotted key as written (`net.ipv4.ip_forward`).
    pub key: String,
    pub value: String,
    /// The line started with `-`: a write failure is skipped, not fatal.
    pub ignore_failure: bool,
    /// `file:line` it came from, for error messages.
    pub origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("{origin}: expected `key = value`, got {line:?}")]
    Syntax { origin: String, line: String },
    #[error("{origin}: bad key {key:?}: {why}")]
    BadKey {
        origin: String,
        key: String,
        why: &'static str,
    },
    #[error("list {dir}")]
    List {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("set {key} = {value} ({origin})")]
    Write {
        key: String,
        value: String,
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: wrote {wanted:?} but the kernel reads back {got:?} ({origin})")]
    Mismatch {
        key: String,
        wanted: String,
        got: String,
        origin: String,
    },
}

/// Parses one conf file.
pub fn parse_conf(file: &str, text: &str) -> Result<Vec<Sysctl>, SysctlError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let origin = format!("{file}:{}", i + 1);
        let (ignore_failure, line) = match line.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let Some((k, v)) = line.split_once('=') else {
            return Err(SysctlError::Syntax {
                origin,
                line: raw.to_string(),
            });
        };
        let key = k.trim().to_string();
        check_key(&key).map_err(|why| SysctlError::BadKey {
            origin: origin.clone(),
            key: key.clone(),
            why,
        })?;
        out.push(Sysctl {
            key,
            value: v.trim().to_string(),
            ignore_failure,
            origin,
        });
    }
    Ok(out)
}

fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty");
    }
    if key.contains('*') || key.contains('?') || key.contains('[') {
        return Err("globs are not supported");
    }
    let ok = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/:@+".contains(c));
    if !ok {
        return Err("unexpected character");
    }
    let parts: Vec<&str> = key.split(['.', '/']).collect();
    if parts.iter().any(|p| p.is_empty()) || proc_relative(key).split('/').any(|p| p == "..") {
        return Err("empty or parent path component");
    }
    Ok(())
}

/// systemd's rule: when the first separator is `/`, the key is already a path;
/// otherwise dots are separators and slashes stand for literal dots
/// (`net.ipv4.conf.eth0/1.rp_filter` -> `net/ipv4/conf/eth0.1/rp_filter`).
fn proc_relative(key: &str) -> String {
    let first_sep = key.find(['.', '/']);
    let slash_first = first_sep.is_some_and(|i| key.get(i..i + 1) == Some("/"));
    if slash_first {
        key.to_string()
    } else {
        key.chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect()
    }
}

pub fn proc_path(key: &str) -> PathBuf {
    Path::new(PROC_SYS).join(proc_relative(key))
}

/// Merges parsed files: files in file-name order, a later setting of the same
/// key (same /proc/sys path) replaces the earlier one in place.
pub fn merge(mut files: Vec<(String, Vec<Sysctl>)>) -> Vec<Sysctl> {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut order: Vec<Sysctl> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (_, entries) in files {
        for e in entries {
            let path = proc_relative(&e.key);
            match index.get(&path).and_then(|&i| order.get_mut(i)) {
                Some(slot) => *slot = e,
                None => {
                    index.insert(path, order.len());
                    order.push(e);
                }
            }
        }
    }
    order
}

/// Reads and merges every `*.conf` in `dir` (a missing directory has none).
pub fn load_dir<F: Files>(fs: &mut F, dir: &Path) -> Result<Vec<Sysctl>, SysctlError> {
    let names = fs.list(dir).map_err(|source| SysctlError::List {
        dir: dir.into(),
        source,
    })?;
    let mut files = Vec::new();
    for name in names.into_iter().filter(|n| n.ends_with(".conf")) {
        let path = dir.join(&name);
        let bytes = fs.read(&path).map_err(|source| SysctlError::Read {
            path: path.clone(),
            source,
        })?;
        let parsed = parse_conf(
            &path.display().to_string(),
            &String::from_utf8_lossy(&bytes),
        )?;
        files.push((name, parsed));
    }
    Ok(merge(files))
}

fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes each sysctl and reads it back; returns key -> value read back for every
/// one that was applied. Stops at the first fatal failure.
pub fn apply<F: Files>(
    fs: &mut F,
    list: &[Sysctl],
) -> Result<BTreeMap<String, String>, SysctlError> {
    let mut applied = BTreeMap::new();
    for s in list {
        let path = proc_path(&s.key);
        let write_err = |source| SysctlError::Write {
            key: s.key.clone(),
            value: s.value.clone(),
            origin: s.origin.clone(),
            source,
        };
        match fs.write(&path, format!("{}\n", s.value).as_bytes()) {
            Ok(()) => {}
            Err(_) if s.ignore_failure => continue,
            Err(e) => return Err(write_err(e)),
        }
        let got = match fs.read(&path) {
            Ok(b) => normalize(&String::from_utf8_lossy(&b)),
            Err(source) => return Err(SysctlError::Read { path, source }),
        };
        if got != normalize(&s.value) && !s.ignore_failure {
            return Err(SysctlError::Mismatch {
                key: s.key.clone(),
                wanted: s.value.clone(),
                got,
                origin: s.origin.clone(),
            });
        }
        applied.insert(s.key.clone(), got);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, Fake};

    #[test]
    fn parses_systemd_syntax() {
        let t = "# c\n; c\n\nkernel.kptr_restrict = 2\n-net.ipv4.ip_forward=1\n  vm.swappiness\t=  10 \n";
        let v = parse_conf("/etc/sysctl.d/10-a.conf", t).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(
            (v[0].key.as_str(), v[0].value.as_str(), v[0].ignore_failure),
            ("kernel.kptr_restrict", "2", false)
        );
        assert_eq!(
            (v[1].key.as_str(), v[1].ignore_failure),
            ("net.ipv4.ip_forward", true)
        );
        assert_eq!(v[2].value, "10");
        assert_eq!(v[2].origin, "/etc/sysctl.d/10-a.conf:6");
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            parse_conf("f", "kernel.panic\n"),
            Err(SysctlError::Syntax { .. })
        ));
        assert!(matches!(
            parse_conf("f", "net.ipv4.conf.*.rp_filter = 1\n"),
            Err(SysctlError::BadKey { .. })
        ));
        assert!(matches!(
            parse_conf("f", "kernel/../../x = 1\n"),
            Err(SysctlError::BadKey { .. })
        ));
        assert!(matches!(
            parse_conf("f", "a..b = 1\n"),
            Err(SysctlError::BadKey { .. })
        ));
        assert!(matches!(
            parse_conf("f", " = 1\n"),
            Err(SysctlError::BadKey { .. })
        ));
    }

    #[test]
    fn key_to_proc_path() {
        assert_eq!(
            proc_path("net.ipv4.ip_forward"),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            proc_path("net.ipv4.conf.eth0/1.rp_filter"),
            Path::new("/proc/sys/net/ipv4/conf/eth0.1/rp_filter")
        );
        assert_eq!(
            proc_path("net/ipv4/conf/eth0.1/rp_filter"),
            Path::new("/proc/sys/net/ipv4/conf/eth0.1/rp_filter")
        );
    }

    #[test]
    fn later_file_wins_in_place() {
        let a = parse_conf("10", "kernel.panic = 5\nvm.swappiness = 1\n").unwrap();
        let b = parse_conf("90", "kernel/panic = 10\n").unwrap();
        let m = merge(vec![("90-b.conf".into(), b), ("10-a.conf".into(), a)]);
        let kv: Vec<_> = m
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(kv, [("kernel/panic", "10"), ("vm.swappiness", "1")]);
    }

    #[test]
    fn load_dir_reads_conf_files_only_in_name_order() {
        let mut f = Fake::new()
            .with_file("/etc/sysctl.d/50-b.conf", "kernel.panic = 10\n")
            .with_file(
                "/etc/sysctl.d/10-a.conf",
                "kernel.panic = 5\nkernel.dmesg_restrict = 1\n",
            )
            .with_file("/etc/sysctl.d/README", "not = read\n");
        let m = load_dir(&mut f, Path::new(SYSCTL_DIR)).unwrap();
        let kv: Vec<_> = m
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(kv, [("kernel.panic", "10"), ("kernel.dmesg_restrict", "1")]);
    }

    #[test]
    fn apply_writes_then_reads_back() {
        let mut f = Fake::new()
            .with_file("/proc/sys/kernel/panic", "0\n")
            .with_file("/proc/sys/net/ipv4/ip_local_port_range", "32768\t60999\n");
        f.kernel_rewrites.insert(
            "/proc/sys/net/ipv4/ip_local_port_range".into(),
            "1024\t65000\n".into(),
        );
        let list = parse_conf(
            "f",
            "kernel.panic = 10\nnet.ipv4.ip_local_port_range = 1024   65000\n",
        )
        .unwrap();
        let got = apply(&mut f, &list).unwrap();
        assert_eq!(got.get("kernel.panic").map(String::as_str), Some("10"));
        assert_eq!(
            got.get("net.ipv4.ip_local_port_range").map(String::as_str),
            Some("1024 65000")
        );
        assert_eq!(
            f.calls[0],
            Call::Write("/proc/sys/kernel/panic".into(), "10\n".into())
        );
    }

    #[test]
    fn apply_fails_on_unknown_key_unless_dashed() {
        let mut f = Fake::new();
        let list = parse_conf("f", "-net.bridge.bridge-nf-call-iptables = 1\n").unwrap();
        assert!(apply(&mut f, &list).unwrap().is_empty());
        let list = parse_conf("f", "net.bridge.bridge-nf-call-iptables = 1\n").unwrap();
        let e = apply(&mut f, &list).unwrap_err();
        assert!(
            e.to_string().contains("net.bridge.bridge-nf-call-iptables"),
            "{e}"
        );
    }

    #[test]
    fn apply_fails_when_the_kernel_disagrees() {
        let mut f = Fake::new().with_file("/proc/sys/kernel/yama/ptrace_scope", "3\n");
        f.kernel_rewrites
            .insert("/proc/sys/kernel/yama/ptrace_scope".into(), "3\n".into());
        let list = parse_conf("f", "kernel.yama.ptrace_scope = 1\n").unwrap();
        assert!(matches!(
            apply(&mut f, &list),
            Err(SysctlError::Mismatch { .. })
        ));
    }
}
