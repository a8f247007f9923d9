//! A machine config as the running node takes it: checked whole against
//! this image, and (from the node API) stored to replace the boot's and
//! applied live where it can be.
//!
//! A config applied through the API must survive a reboot even though the
//! boot source that delivered the first one (fw_cfg, a config drive) still
//! delivers it: the stored copy is marked with the sha256 of the source's
//! config it replaces, and a boot whose source still carries exactly that
//! config uses the applied one. A source that now carries anything else
//! wins (its operator changed it later), and the mark goes.

use std::path::Path;

use contract::config::{check_against_image, ImageFacts, MachineConfig};
use contract::paths::{APPLIED_CONFIG_REPLACES, PACKAGES, STORED_CONFIG};

use crate::config_source::Source;

/// `sha256:<hex>` of a config's bytes, as the report names it.
pub fn digest(data: &[u8]) -> String {
    crate::digest::sha256_named(data)
}

/// What this image can run, from its package list and os-release.
pub fn image_facts() -> ImageFacts {
    let packages = std::fs::read_to_string(PACKAGES).unwrap_or_default();
    let image = std::fs::read_to_string("/usr/lib/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "this image".into());
    ImageFacts::from_packages(image, packages.lines())
}

/// Parses and checks `data` (named `name` in errors) whole: the schema,
/// every key, and what this image can serve. The one way a config is taken.
pub fn check(data: &[u8], name: &str, facts: &ImageFacts) -> Result<MachineConfig, String> {
    let text = std::str::from_utf8(data).map_err(|_| format!("{name}: not UTF-8 text"))?;
    let config = MachineConfig::from_toml(text, name).map_err(|e| e.to_string())?;
    check_against_image(&config, facts).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        format!("{name}: {}", list.join("; "))
    })?;
    Ok(config)
}

/// The mark beside an applied stored copy, if there is one.
fn replaces(mark: &Path) -> Option<String> {
    std::fs::read_to_string(mark)
        .ok()
        .map(|t| t.trim().to_string())
}

/// The config this boot uses, given what the boot sources found: the
/// applied copy when it replaces exactly what the source delivers (or
/// when there is no source), else what was found (and the mark goes, as
/// the source's config is stored over the applied one).
pub fn prefer(found: Option<(Source, Vec<u8>)>) -> Option<(Source, Vec<u8>)> {
    prefer_at(
        found,
        Path::new(STORED_CONFIG),
        Path::new(APPLIED_CONFIG_REPLACES),
    )
}

fn prefer_at(
    found: Option<(Source, Vec<u8>)>,
    stored: &Path,
    mark: &Path,
) -> Option<(Source, Vec<u8>)> {
    let Some(replaced) = replaces(mark) else {
        return found;
    };
    let applied = || {
        std::fs::read(stored).ok().map(|data| {
            let replaces = (!replaced.is_empty()).then(|| replaced.clone());
            (Source::Applied { replaces }, data)
        })
    };
    match found {
        None | Some((Source::Stored, _)) => applied(),
        Some((source, data)) if digest(&data) == replaced => applied().or(Some((source, data))),
        other => {
            let _ = std::fs::remove_file(mark);
            other
        }
    }
}

/// Stores `data` (already checked) at `stored` as the node's config,
/// applied through the API, replacing the boot source's config `replaces`
/// (`None`: the boot had no source), marked in `mark`. The mark is written
/// first: a crash between the two leaves the old stored copy marked,
/// which is the config that source delivered anyway.
pub fn store_applied(
    data: &[u8],
    replaces: Option<&str>,
    stored: &Path,
    mark: &Path,
) -> Result<(), String> {
    let write = |path: &Path, data: &[u8]| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::sys::write_atomic(path, data, 0o600)
    };
    let line = format!("{}\n", replaces.unwrap_or(""));
    write(mark, line.as_bytes()).map_err(|e| format!("writing {}: {e}", mark.display()))?;
    write(stored, data).map_err(|e| format!("writing {}: {e}", stored.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_applied_config_wins_over_the_source_it_replaced_only() {
        let dir = tempfile::tempdir().unwrap();
        let (stored, mark) = (dir.path().join("c.toml"), dir.path().join("c.replaces"));
        let fw = |d: &[u8]| Some((Source::FwCfg, d.to_vec()));
        // nothing applied: what was found is used
        assert_eq!(prefer_at(fw(b"one"), &stored, &mark), fw(b"one"));
        store_applied(b"two", Some(&digest(b"one")), &stored, &mark).unwrap();
        let applied = Some((
            Source::Applied {
                replaces: Some(digest(b"one")),
            },
            b"two".to_vec(),
        ));
        // the source still delivers what was replaced: the applied one
        assert_eq!(prefer_at(fw(b"one"), &stored, &mark), applied);
        assert_eq!(prefer_at(None, &stored, &mark), applied);
        let stored_copy = Some((Source::Stored, b"two".to_vec()));
        assert_eq!(prefer_at(stored_copy, &stored, &mark), applied);
        // the source changed since: it wins and the mark goes
        assert_eq!(prefer_at(fw(b"three"), &stored, &mark), fw(b"three"));
        assert!(!mark.exists());
        assert_eq!(prefer_at(fw(b"one"), &stored, &mark), fw(b"one"));
    }

    #[test]
    fn applied_without_a_boot_source_is_always_used() {
        let dir = tempfile::tempdir().unwrap();
        let (stored, mark) = (dir.path().join("c.toml"), dir.path().join("c.replaces"));
        store_applied(b"x", None, &stored, &mark).unwrap();
        let got = prefer_at(None, &stored, &mark);
        assert_eq!(
            got,
            Some((Source::Applied { replaces: None }, b"x".to_vec()))
        );
    }
}
