//! `DIR/manifests/`: the security stack of `cluster.toml [stack]` as YAML
//! a user reads, reviews and checks with their own tools. The objects are
//! [`contract::stack::render`]'s, the ones the elected control-plane node
//! applies: the files document the cluster, they do not feed it.

use std::path::{Path, PathBuf};

use contract::config::Stack;
use contract::stack::{render, Manifest};

use super::files::{write_all, NewFile};
use super::ClusterError;

/// `DIR/manifests`.
pub const MANIFESTS: &str = "manifests";
/// The first line of every file we write: what a re-render may replace
/// or remove (any other file there is the user's).
const MARKER: &str = "# nodeimg security stack:";

/// Each file's name and text, in order.
pub fn texts(stack: &Stack) -> Vec<(&'static str, String)> {
    render(stack).iter().map(|m| (m.file, text(m))).collect()
}

fn text(m: &Manifest) -> String {
    let mut t = format!("{MARKER} {}\n", m.file);
    for line in wrap(m.about, 76) {
        t.push_str(&format!("# {line}\n"));
    }
    t.push_str(
        "# Rendered from cluster.toml [stack] by `nodeimg cluster manifests`; the\n\
         # elected control-plane node applies these same objects (server-side apply,\n\
         # field manager nodeimg-agent). Edit cluster.toml, not this file.\n",
    );
    for o in &m.objects {
        t.push_str("---\n");
        contract::yaml::write(o, 0, &mut t);
    }
    t
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let Some(last) = lines.last_mut() else { break };
        if !last.is_empty() && last.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// The files of `stack` under `dir/manifests`, to be written with the
/// cluster's other files.
pub fn new_files(dir: &Path, stack: &Stack) -> Vec<NewFile> {
    texts(stack)
        .into_iter()
        .map(|(name, text)| NewFile {
            path: dir.join(MANIFESTS).join(name),
            data: text.into_bytes(),
            mode: 0o644,
        })
        .collect()
}

/// `nodeimg cluster manifests DIR`: reads `DIR/cluster.toml` and renders
/// its stack into `DIR/manifests`.
pub fn render_dir(dir: &Path) -> Result<Vec<PathBuf>, ClusterError> {
    let config = super::load::read_cluster_toml(&dir.join(super::CLUSTER_TOML))?;
    write(dir, &config.stack)
}

/// Renders `dir/manifests` again (after cluster.toml changed): every file
/// written whole, then our files that no longer render (a part turned
/// off) removed. Returns the paths written.
pub fn write(dir: &Path, stack: &Stack) -> Result<Vec<PathBuf>, ClusterError> {
    let out = dir.join(MANIFESTS);
    std::fs::create_dir_all(&out).map_err(|source| ClusterError::Write {
        path: out.clone(),
        source,
    })?;
    let files = new_files(dir, stack);
    write_all(&files, true)?;
    let written: Vec<PathBuf> = files.into_iter().map(|f| f.path).collect();
    let entries = std::fs::read_dir(&out).map_err(|source| ClusterError::Read {
        path: out.clone(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(MARKER));
        if ours && !written.contains(&path) {
            std::fs::remove_file(&path).map_err(|source| ClusterError::Write {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// Every YAML document of a file, read back by a YAML reader.
    fn documents(text: &str) -> Vec<serde_json::Value> {
        text.split("\n---\n")
            .skip(1)
            .map(|d| serde_norway::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn the_yaml_reads_back_as_the_objects() {
        // names YAML 1.1 would take for a boolean or a number
        let stack = Stack {
            namespaces: vec!["on".into(), "y".into(), "0755".into()],
            ..Stack::default()
        };
        for (m, (name, text)) in render(&stack).iter().zip(texts(&stack)) {
            assert_eq!(m.file, name);
            assert!(text.starts_with(MARKER));
            assert_eq!(documents(&text), m.objects, "{name}:\n{text}");
            assert!(
                !text.contains(": on\n") && !text.contains(": y\n"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_render_replaces_its_own_files_and_keeps_the_users() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(MANIFESTS);
        let mut stack = Stack::default();
        write(dir.path(), &stack).unwrap();
        std::fs::write(out.join("99-mine.yaml"), "kind: Mine\n").unwrap();
        assert!(out.join("01-network-policies.yaml").exists());
        stack.network_policies = false;
        let written = write(dir.path(), &stack).unwrap();
        assert!(!written.contains(&out.join("01-network-policies.yaml")));
        assert!(!out.join("01-network-policies.yaml").exists());
        assert!(out.join("00-namespaces.yaml").exists());
        assert_eq!(
            std::fs::read_to_string(out.join("99-mine.yaml")).unwrap(),
            "kind: Mine\n"
        );
        // the same config renders the same bytes
        let before = std::fs::read(out.join("02-rbac.yaml")).unwrap();
        write(dir.path(), &stack).unwrap();
        assert_eq!(std::fs::read(out.join("02-rbac.yaml")).unwrap(), before);
    }
}
