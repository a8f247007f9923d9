//! No import cycles between modules: reads the sources and fails naming
//! the cycle. Checked: the builder's top-level modules (`src/*`), the files
//! of each folder under `src/` (siblings such as `sign/bundle.rs` and
//! `sign/verify.rs`), and the agent's modules (`agent/src/*`). References
//! are `crate::a::…` (also `crate::{a::…}`) and `super::a::…`; comment
//! lines are skipped. A cycle makes layers meaningless: move the shared
//! piece to the lower module instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// This file: its text is about references, not made of them.
const SELF_FILE: &str = "module_graph_tests.rs";

/// A source file and the module path it defines (`sign/verify_tests.rs`
/// is `sign::verify::tests`, as its `#[path]` include makes it).
struct Source {
    module: Vec<String>,
    text: String,
}

fn sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".rs") || name == SELF_FILE {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap();
            let mut module: Vec<String> = rel
                .parent()
                .into_iter()
                .flat_map(|p| p.components())
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect();
            let stem = name.trim_end_matches(".rs");
            match stem {
                "lib" | "main" | "mod" if module.is_empty() || stem == "mod" => {}
                _ => match stem.strip_suffix("_tests") {
                    Some(tested) => module.extend([tested.to_string(), "tests".to_string()]),
                    None => module.push(stem.to_string()),
                },
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.push(Source { module, text });
        }
    }
    out
}

/// The absolute module paths a file names (from the crate root).
fn references(src: &Source) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in src.text.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                for item in group.split(['}', ',']) {
                    out.push(path_of(item.trim()));
                }
            } else {
                out.push(path_of(rest));
            }
        }
        for (i, _) in line.match_indices("super::") {
            // `super::super::…` is counted from its last `super`.
            if line[i + "super::".len()..].starts_with("super::") {
                continue;
            }
            let ups = line[..i].matches("super::").count() + 1;
            let base = src.module.len().saturating_sub(ups);
            let mut abs = src.module[..base].to_vec();
            abs.extend(path_of(&line[i + "super::".len()..]));
            out.push(abs);
        }
    }
    out
}

/// `a::b::C…` -> `[a, b, C]`: the identifiers up to the first other token.
fn path_of(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

/// Edges between the child modules of `parent` (`[]` for the crate root).
fn graph(all: &[Source], parent: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let children: BTreeSet<String> = all
        .iter()
        .filter(|s| s.module.len() > parent.len() && s.module.starts_with(parent))
        .map(|s| s.module[parent.len()].clone())
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for src in all {
        if src.module.len() <= parent.len() || !src.module.starts_with(parent) {
            continue;
        }
        let from = &src.module[parent.len()];
        for r in references(src) {
            if r.len() > parent.len() && r.starts_with(parent) {
                let to = &r[parent.len()];
                if to != from && children.contains(to) {
                    edges.entry(from.clone()).or_default().insert(to.clone());
                }
            }
        }
    }
    edges
}

/// One cycle of `edges`, as `a -> b -> a`, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut done, &mut Vec::new()))
}

/// Every folder's module path that has child modules.
fn folders(all: &[Source]) -> BTreeSet<Vec<String>> {
    all.iter()
        .flat_map(|s| (0..s.module.len()).map(|n| s.module[..n].to_vec()))
        .collect()
}

fn check(root: &Path) -> Vec<String> {
    let all = sources(root);
    let mut cycles = Vec::new();
    for parent in folders(&all) {
        if let Some(cycle) = find_cycle(&graph(&all, &parent)) {
            let prefix = parent.iter().map(|p| format!("{p}::")).collect::<String>();
            let named: Vec<String> = cycle.iter().map(|m| format!("{prefix}{m}")).collect();
            cycles.push(format!("{}: {}", root.display(), named.join(" -> ")));
        }
    }
    cycles
}

#[test]
fn no_import_cycles() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cycles = check(&repo.join("src"));
    cycles.extend(check(&repo.join("agent/src")));
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn a_cycle_is_found_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\n");
    write("a/mod.rs", "pub mod x;\npub mod y;\nuse crate::b::B;\n");
    write("a/x.rs", "use super::y::Y;\n");
    write(
        "a/y.rs",
        "// crate::b is only named in a comment\npub struct Y;\n",
    );
    write("b.rs", "pub struct B;\n");
    assert!(check(dir.path()).is_empty());
    write("b.rs", "pub struct B(crate::a::y::Y);\n");
    let found = check(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with(": a -> b -> a"), "{found:?}");
    write("a/y.rs", "use super::x::X;\n");
    let found = check(dir.path());
    assert!(
        found.iter().any(|c| c.ends_with(": a::x -> a::y -> a::x")),
        "{found:?}"
    );
}
