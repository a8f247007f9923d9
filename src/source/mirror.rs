//! Where the Debian archive is: `--mirror`, else `NODEIMG_DEBIAN_MIRROR`,
//! else the host's apt sources (deb822 `.sources` or one-line `.list`).
//! The mirror's address is never written into the repository.

use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("no Debian mirror: pass --mirror URL, set NODEIMG_DEBIAN_MIRROR, or add a `deb` source to {searched}")]
    NotFound { searched: String },
    #[error("mirror `{url}` is not an http:// or https:// URL")]
    BadUrl { url: String },
}

/// Picks the mirror base URL (no trailing slash). `explicit` is `--mirror`
/// or else `NODEIMG_DEBIAN_MIRROR` (the CLI reads both); `apt_root` is `/`
/// on a real host.
pub fn find_mirror(explicit: Option<&str>, apt_root: &Path) -> Result<String, MirrorError> {
    if let Some(url) = explicit.filter(|s| !s.is_empty()).map(str::to_string) {
        return check(url);
    }
    let mut searched = Vec::new();
    for file in apt_source_files(apt_root) {
        searched.push(file.display().to_string());
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let found = if file.extension().is_some_and(|e| e == "sources") {
            from_deb822(&text)
        } else {
            from_one_line(&text)
        };
        if let Some(url) = found {
            return check(url);
        }
    }
    Err(MirrorError::NotFound {
        searched: apt_root
            .join("etc/apt/sources.list{,.d/}")
            .display()
            .to_string(),
    })
}

fn check(url: String) -> Result<String, MirrorError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.trim_end_matches('/').to_string())
    } else {
        Err(MirrorError::BadUrl { url })
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

/// A main-archive source: a `deb` entry with the `main` component whose
/// suite is not a security or updates pocket (those live on other paths).
fn is_main_archive(suites: &[&str], components: &[&str]) -> bool {
    components.contains(&"main")
        && suites
            .iter()
            .any(|s| !s.contains("security") && !s.contains('/'))
}

fn from_deb822(text: &str) -> Option<String> {
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
            && is_main_archive(&suites, &comps)
        {
            if let Some(u) = uris.split_whitespace().next() {
                return Some(u.to_string());
            }
        }
    }
    None
}

fn from_one_line(text: &str) -> Option<String> {
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
        if is_main_archive(&[suite], &comps) {
            return Some(uri.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIRROR: &str = "http://mirror.example/debian";

    #[test]
    fn deb822_skips_security_and_disabled() {
        let text = format!(
            "Types: deb\nURIs: http://sec.example/debian-security\nSuites: trixie-security\nComponents: main\n\n\
             Types: deb\nURIs: http://off.example/debian\nSuites: trixie\nComponents: main\nEnabled: no\n\n\
             Types: deb deb-src\n# comment\nURIs: {MIRROR}/\nSuites: trixie trixie-updates\nComponents: main contrib\n"
        );
        assert_eq!(
            from_deb822(&text).as_deref(),
            Some(MIRROR.to_string() + "/").as_deref()
        );
    }

    #[test]
    fn one_line_with_options() {
        let text = format!("# x\ndeb-src {MIRROR} trixie main\ndeb [arch=amd64 signed-by=/k.gpg] {MIRROR} trixie main\n");
        assert_eq!(from_one_line(&text).as_deref(), Some(MIRROR));
    }

    #[test]
    fn host_layout_and_precedence() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("etc/apt/sources.list.d");
        fs::create_dir_all(&d).unwrap();
        assert!(matches!(
            find_mirror(None, root.path()),
            Err(MirrorError::NotFound { .. })
        ));
        fs::write(
            d.join("debian.sources"),
            format!("Types: deb\nURIs: {MIRROR}\nSuites: trixie\nComponents: main\n"),
        )
        .unwrap();
        assert_eq!(find_mirror(None, root.path()).unwrap(), MIRROR);
        assert_eq!(
            find_mirror(Some("https://other.example/d/"), root.path()).unwrap(),
            "https://other.example/d"
        );
        assert!(matches!(
            find_mirror(Some("ftp://x"), root.path()),
            Err(MirrorError::BadUrl { .. })
        ));
    }
}
