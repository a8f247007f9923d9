//! Secure Boot with our own keys: an OVMF variable store with a key
//! directory's PK, KEK and db certificates enrolled and Secure Boot on,
//! which `nodeimg keys enroll-ovmf` writes and `nodeimg lab boot
//! --secure-boot KEYDIR` makes for each run.
//!
//! Takes the key directory (`pk.crt`, `kek.crt`, `db.crt` from `nodeimg
//! keys gen`) and a variable-store template (Debian's empty
//! `OVMF_VARS_4M.fd`) and produces the enrolled store. The work is done by
//! `virt-fw-vars` (PyPI's `virt-firmware`, installed into a venv by
//! `firmware/setup-venv.sh`), which writes edk2's authenticated-variable
//! format; the result is the same bytes for the same inputs. The template
//! is never written, the output appears whole or not at all, and no
//! private key is read: enrolling needs certificates only.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The owner GUID recorded with each certificate we enroll (an
/// `EFI_SIGNATURE_DATA.SignatureOwner`): nodeimg's own, fixed, so that the
/// same keys give the same variable store.
pub const OWNER_GUID: &str = "6597262f-fa40-4f8b-bdd4-75cce9be1c31";
/// The tool's name, in the venv's `bin/` or on `PATH`.
pub const VIRT_FW_VARS: &str = "virt-fw-vars";
/// Debian's empty OVMF variable store (no keys, Secure Boot off).
pub const DEFAULT_VARS_TEMPLATE: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The venv `firmware/setup-venv.sh` creates unless `NODEIMG_VENV` says otherwise,
/// relative to the home directory.
pub const DEFAULT_VENV_IN_HOME: &str = ".cache/nodeimg/venv";
/// The certificates enrolled, in order: PK, KEK, db.
pub const CERT_FILES: [&str; 3] = ["pk.crt", "kek.crt", "db.crt"];

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "{VIRT_FW_VARS} is neither in {venv} nor on PATH: run firmware/setup-venv.sh \
         (it installs PyPI's virt-firmware into ${{NODEIMG_VENV:-~/{DEFAULT_VENV_IN_HOME}}})"
    )]
    ToolMissing { venv: String },
    #[error("Secure Boot certificate {path} is missing (make the key set with `nodeimg keys gen --out KEYDIR`)")]
    MissingCertificate { path: PathBuf },
    #[error("OVMF variable-store template {path} is missing (install ovmf: scripts/setup.sh)")]
    MissingTemplate { path: PathBuf },
    #[error("running {tool}")]
    Spawn {
        tool: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The venv `firmware/setup-venv.sh` uses: `venv_var` (`NODEIMG_VENV`)
/// when set, else `~/.cache/nodeimg/venv` under `home`.
pub fn venv_dir(venv_var: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    match venv_var.filter(|v| !v.is_empty()) {
        Some(v) => Some(PathBuf::from(v)),
        None => home
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(DEFAULT_VENV_IN_HOME)),
    }
}

/// Finds `virt-fw-vars`: in the venv first, then on `path` (a `PATH` value).
pub fn find_virt_fw_vars(
    venv: Option<&Path>,
    path: Option<OsString>,
) -> Result<PathBuf, EnrollError> {
    let in_venv = venv.map(|v| v.join("bin").join(VIRT_FW_VARS));
    let on_path = path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(VIRT_FW_VARS));
    in_venv
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| EnrollError::ToolMissing {
            venv: venv.map_or_else(
                || format!("~/{DEFAULT_VENV_IN_HOME}"),
                |v| v.display().to_string(),
            ),
        })
}

/// [`find_virt_fw_vars`] with this process's `NODEIMG_VENV`, `HOME` and `PATH`.
pub fn find_virt_fw_vars_from_env() -> Result<PathBuf, EnrollError> {
    let venv = venv_dir(std::env::var_os("NODEIMG_VENV"), std::env::var_os("HOME"));
    find_virt_fw_vars(venv.as_deref(), std::env::var_os("PATH"))
}

/// The `virt-fw-vars` arguments that enroll KEYDIR's certificates into
/// `template` and write `out`, Secure Boot on.
pub fn enroll_args(keydir: &Path, template: &Path, out: &Path) -> Vec<OsString> {
    // Only warnings and errors on stderr: its INFO lines list every step.
    let mut args: Vec<OsString> = vec![
        "--loglevel".into(),
        "warning".into(),
        "--input".into(),
        template.into(),
    ];
    for (flag, file) in ["--set-pk", "--add-kek", "--add-db"]
        .into_iter()
        .zip(CERT_FILES)
    {
        args.push(flag.into());
        args.push(OWNER_GUID.into());
        args.push(keydir.join(file).into());
    }
    args.push("--secure-boot".into());
    args.push("--output".into());
    args.push(out.into());
    args
}

/// Writes `out`: `template` with KEYDIR's PK, KEK and db enrolled and
/// Secure Boot enabled, by running `tool` (see [`find_virt_fw_vars`]).
/// `out` is written under a temporary name and renamed.
pub fn enroll_ovmf_vars(
    tool: &Path,
    keydir: &Path,
    template: &Path,
    out: &Path,
) -> Result<(), EnrollError> {
    if !template.is_file() {
        return Err(EnrollError::MissingTemplate {
            path: template.to_path_buf(),
        });
    }
    for file in CERT_FILES {
        let path = keydir.join(file);
        if !path.is_file() {
            return Err(EnrollError::MissingCertificate { path });
        }
    }
    let tmp = crate::util::atomic::temp_path(out);
    let result = Command::new(tool)
        .args(enroll_args(keydir, template, &tmp))
        .output()
        .map_err(|source| EnrollError::Spawn {
            tool: tool.to_path_buf(),
            source,
        })
        .and_then(|o| {
            if o.status.success() && tmp.is_file() {
                Ok(())
            } else {
                Err(EnrollError::Failed {
                    tool: tool.to_path_buf(),
                    status: o.status.to_string(),
                    stderr: last_lines(&String::from_utf8_lossy(&o.stderr), 5),
                })
            }
        })
        .and_then(|()| {
            crate::util::atomic::commit(&tmp, out).map_err(|source| EnrollError::Write {
                path: out.to_path_buf(),
                source,
            })
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The last `n` non-empty lines of a tool's stderr (its INFO chatter first,
/// the error last).
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn venv_comes_from_nodeimg_venv_else_home() {
        assert_eq!(
            venv_dir(Some("/v".into()), Some("/home/u".into())),
            Some(PathBuf::from("/v"))
        );
        assert_eq!(
            venv_dir(Some("".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.cache/nodeimg/venv"))
        );
        assert_eq!(venv_dir(None, None), None);
    }

    #[test]
    fn the_venv_is_searched_before_path_and_a_missing_tool_names_the_setup_script() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join(VIRT_FW_VARS), "").unwrap();
        let path = Some(bin.clone().into_os_string());
        assert_eq!(
            find_virt_fw_vars(Some(&venv), path.clone()).unwrap(),
            bin.join(VIRT_FW_VARS)
        );
        std::fs::write(venv.join("bin").join(VIRT_FW_VARS), "").unwrap();
        assert_eq!(
            find_virt_fw_vars(Some(&venv), path).unwrap(),
            venv.join("bin").join(VIRT_FW_VARS)
        );
        let err = find_virt_fw_vars(Some(&dir.path().join("none")), None).unwrap_err();
        assert!(err.to_string().contains("firmware/setup-venv.sh"), "{err}");
    }

    #[test]
    fn enroll_args_set_pk_add_kek_and_db_with_our_owner_and_turn_secure_boot_on() {
        let args: Vec<String> =
            enroll_args(Path::new("/k"), Path::new("/t.fd"), Path::new("/o.fd"))
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
        let g = OWNER_GUID;
        assert_eq!(
            args.join(" "),
            format!(
                "--loglevel warning --input /t.fd --set-pk {g} /k/pk.crt --add-kek {g} /k/kek.crt \
                 --add-db {g} /k/db.crt --secure-boot --output /o.fd"
            )
        );
    }

    #[test]
    fn missing_inputs_are_named_before_the_tool_runs() {
        let dir = tempfile::tempdir().unwrap();
        let tool = Path::new("/nonexistent/virt-fw-vars");
        let template = dir.path().join("vars.fd");
        let out = dir.path().join("out.fd");
        let err = enroll_ovmf_vars(tool, dir.path(), &template, &out).unwrap_err();
        assert!(matches!(err, EnrollError::MissingTemplate { .. }), "{err}");
        std::fs::write(&template, b"").unwrap();
        let err = enroll_ovmf_vars(tool, dir.path(), &template, &out).unwrap_err();
        assert!(
            matches!(&err, EnrollError::MissingCertificate { path } if path.ends_with("pk.crt")),
            "{err}"
        );
        assert!(!out.exists());
    }
}
