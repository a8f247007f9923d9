//! Where the Debian archives are. Two archives, each with its own mirror:
//! the main archive (`--mirror`, else `NODEIMG_DEBIAN_MIRROR`) serves the
//! base suite and `<suite>-updates`; the security archive
//! (`--security-mirror`, else `NODEIMG_DEBIAN_SECURITY_MIRROR`) serves
//! `<suite>-security`. Without either, the host's apt sources (deb822
//! `.sources` or one-line `.list`) name it. No mirror's address is ever
//! written into the repository.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("no Debian {archive} mirror: pass {flag} URL, set {env}, or add a `deb` source {what} to {searched}", flag = archive.flag(), env = archive.env(), what = archive.apt_source())]
    NotFound { archive: Archive, searched: String },
    #[error("{archive} mirror `{url}` is not an http:// or https:// URL")]
    BadUrl { archive: Archive, url: String },
}

/// Which Debian archive a suite is published in, so which mirror serves
/// it and its pool.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Archive {
    /// The main archive (`.../debian`): the base suite and its updates.
    #[default]
    Main,
    /// The security archive (`.../debian-security`): `<suite>-security`.
    Security,
}

impl Archive {
    pub fn name(self) -> &'static str {
        match self {
            Archive::Main => "main",
            Archive::Security => "security",
        }
    }

    /// The command-line flag that names this archive's mirror.
    pub fn flag(self) -> &'static str {
        match self {
            Archive::Main => "--mirror",
            Archive::Security => "--security-mirror",
        }
    }

    /// The environment variable that names this archive's mirror.
    pub fn env(self) -> &'static str {
        match self {
            Archive::Main => "NODEIMG_DEBIAN_MIRROR",
            Archive::Security => "NODEIMG_DEBIAN_SECURITY_MIRROR",
        }
    }

    fn apt_source(self) -> &'static str {
        match self {
            Archive::Main => "for the main archive",
            Archive::Security => "whose suite ends in `-security`",
        }
    }

    /// Is this apt source (its suites and components) one of this archive?
    fn matches(self, suites: &[&str], components: &[&str]) -> bool {
        components.contains(&"main")
            && match self {
                // not a security pocket (those live on other paths)
                Archive::Main => suites
                    .iter()
                    .any(|s| !s.contains("security") && !s.contains('/')),
                Archive::Security => suites.iter().any(|s| s.ends_with("-security")),
            }
    }
}

impl std::fmt::Display for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Picks the base URL (no trailing slash) of `archive`'s mirror.
/// `explicit` is the flag or else the environment variable (the CLI reads
/// both); `apt_root` is `/` on a real host.
pub fn find_mirror(
    archive: Archive,
    explicit: Option<&str>,
    apt_root: &Path,
) -> Result<String, MirrorError> {
    if let Some(url) = explicit.filter(|s| !s.is_empty()).map(str::to_string) {
        return check(archive, url);
    }
    for file in apt_source_files(apt_root) {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let found = if file.extension().is_some_and(|e| e == "sources") {
            from_deb822(archive, &text)
        } else {
            from_one_line(archive, &text)
        };
        if let Some(url) = found {
            return check(archive, url);
        }
    }
    Err(MirrorError::NotFound {
        archive,
        searched: apt_root
            .join("etc/apt/sources.list{,.d/}")
            .display()
            .to_string(),
    })
}

/// The security archive beside a main-archive mirror whose path ends in
/// `/debian` (`…/debian` → `…/debian-security`, the layout Debian's own
/// mirror network uses): for a host whose apt sources name no security
/// source (a container image's, say). Every InRelease read from it is
/// verified like any other, so a wrong guess fails the lock, never the
/// trust.
pub fn security_beside(main: &str) -> Option<String> {
    let main = main.trim_end_matches('/');
    main.ends_with("/debian")
        .then(|| format!("{main}-security"))
}

fn check(archive: Archive, url: String) -> Result<String, MirrorError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.trim_end_matches('/').to_string())
    } else {
        Err(MirrorError::BadUrl { archive, url })
    }
}

fn apt_source_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir(root.join("etc/apt/sources.list.d")) {
        let mut more: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "sources" || e == "list"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files
}

/// The first enabled `deb` entry of `archive` (see [`Archive::matches`]).
fn from_deb822(archive: Archive, text: &str) -> Option<String> {
    for para in text.split("\n\n") {
        let mut types = "";
        let mut uris = "";
        let mut suites = "";
        let mut comps = "";
        let mut enabled = true;
        for line in para.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = v.trim(),
                "uris" => uris = v.trim(),
                "suites" => suites = v.trim(),
                "components" => comps = v.trim(),
                "enabled" => enabled = v.trim() != "no",
                _ => {}
            }
        }
        let suites: Vec<&str> = suites.split_whitespace().collect();
        let comps: Vec<&str> = comps.split_whitespace().collect();
        if enabled
            && types.split_whitespace().any(|t| t == "deb")
            && archive.matches(&suites, &comps)
        {
            if let Some(u) = uris.split_whitespace().next() {
                return Some(u.to_string());
            }
        }
    }
    None
}

fn from_one_line(archive: Archive, text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        let comps: Vec<&str> = words.collect();
        if archive.matches(&[suite], &comps) {
            return Some(uri.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIRROR: &str = "http://mirror.example/debian";
    const SECURITY: &str = "http://sec.example/debian-security";

    #[test]
    fn the_security_archive_beside_a_debian_mirror() {
        assert_eq!(
            security_beside("http://mirror.example/debian/").as_deref(),
            Some("http://mirror.example/debian-security")
        );
        assert_eq!(security_beside("http://mirror.example/pool"), None);
    }

    #[test]
    fn deb822_skips_security_and_disabled() {
        let text = format!(
            "Types: deb\nURIs: {SECURITY}\nSuites: trixie-security\nComponents: main\n\n\
             Types: deb\nURIs: http://off.example/debian\nSuites: trixie\nComponents: main\nEnabled: no\n\n\
             Types: deb deb-src\n# comment\nURIs: {MIRROR}/\nSuites: trixie trixie-updates\nComponents: main contrib\n"
        );
        assert_eq!(
            from_deb822(Archive::Main, &text).as_deref(),
            Some(MIRROR.to_string() + "/").as_deref()
        );
    }

    #[test]
    fn deb822_security_source_is_the_one_whose_suite_ends_in_security() {
        // main first, a disabled and a deb-src-only security entry, then the real one
        let text = format!(
            "Types: deb\nURIs: {MIRROR}\nSuites: trixie trixie-updates\nComponents: main\n\n\
             Types: deb\nURIs: http://off.example/debian-security\nSuites: trixie-security\nComponents: main\nEnabled: no\n\n\
             Types: deb-src\nURIs: http://src.example/debian-security\nSuites: trixie-security\nComponents: main\n\n\
             Types: deb\n# snapshot\nURIs: {SECURITY}\nSuites: trixie-security\nComponents: main contrib\n"
        );
        assert_eq!(
            from_deb822(Archive::Security, &text).as_deref(),
            Some(SECURITY)
        );
        // a main archive alone has no security source
        let main_only = format!("Types: deb\nURIs: {MIRROR}\nSuites: trixie\nComponents: main\n");
        assert_eq!(from_deb822(Archive::Security, &main_only), None);
    }

    #[test]
    fn one_line_with_options() {
        let text = format!("# x\ndeb-src {MIRROR} trixie main\ndeb [arch=amd64 signed-by=/k.gpg] {MIRROR} trixie main\n");
        assert_eq!(from_one_line(Archive::Main, &text).as_deref(), Some(MIRROR));
    }

    #[test]
    fn one_line_security_source() {
        let text = format!(
            "deb {MIRROR} trixie main\n\
             deb {MIRROR} trixie-updates main\n\
             # deb http://old.example/debian-security trixie-security main\n\
             deb-src {SECURITY} trixie-security main\n\
             deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {SECURITY}/ trixie-security main contrib\n"
        );
        assert_eq!(
            from_one_line(Archive::Security, &text).as_deref(),
            Some(SECURITY.to_string() + "/").as_deref()
        );
        // and the main archive is not taken for it, nor it for the main archive
        assert_eq!(from_one_line(Archive::Main, &text).as_deref(), Some(MIRROR));
        let old_style = "deb http://security.example/ trixie/updates main\n";
        assert_eq!(from_one_line(Archive::Security, old_style), None);
        assert_eq!(from_one_line(Archive::Main, old_style), None);
    }

    #[test]
    fn host_layout_and_precedence() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("etc/apt/sources.list.d");
        fs::create_dir_all(&d).unwrap();
        for archive in [Archive::Main, Archive::Security] {
            let e = find_mirror(archive, None, root.path()).unwrap_err();
            assert!(matches!(e, MirrorError::NotFound { .. }), "{e}");
            assert!(e.to_string().contains(archive.flag()), "{e}");
            assert!(e.to_string().contains(archive.env()), "{e}");
        }
        fs::write(
            d.join("debian.sources"),
            format!("Types: deb\nURIs: {MIRROR}\nSuites: trixie\nComponents: main\n"),
        )
        .unwrap();
        assert_eq!(
            find_mirror(Archive::Main, None, root.path()).unwrap(),
            MIRROR
        );
        assert!(find_mirror(Archive::Security, None, root.path()).is_err());
        fs::write(
            root.path().join("etc/apt/sources.list"),
            format!("deb {SECURITY}/ trixie-security main\n"),
        )
        .unwrap();
        assert_eq!(
            find_mirror(Archive::Security, None, root.path()).unwrap(),
            SECURITY
        );
        assert_eq!(
            find_mirror(Archive::Main, None, root.path()).unwrap(),
            MIRROR
        );
        assert_eq!(
            find_mirror(Archive::Main, Some("https://other.example/d/"), root.path()).unwrap(),
            "https://other.example/d"
        );
        assert_eq!(
            find_mirror(
                Archive::Security,
                Some("https://other.example/s"),
                root.path()
            )
            .unwrap(),
            "https://other.example/s"
        );
        let e = find_mirror(Archive::Security, Some("ftp://x"), root.path()).unwrap_err();
        assert!(
            matches!(
                e,
                MirrorError::BadUrl {
                    archive: Archive::Security,
                    ..
                }
            ),
            "{e}"
        );
    }
}
