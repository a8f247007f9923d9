//! Property tests for the image and layer spec readers: any image or layer
//! text is a plan or an error that names the file, never a panic; a good
//! spec with damage is the same; and whatever paths a layer writes, every
//! planned path stays a clean path inside the image and every `source`
//! stays inside the layer directory. Bounded (each case writes two small
//! files into one temporary project); failures are not persisted into the
//! source tree.

use proptest::prelude::*;

use super::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const IMAGE: &str = "schema = 1\nname = \"test\"\nversion = \"1\"\nlayers = [\"a\"]\n";

const LAYER: &str = r#"schema = 1
packages.include = ["libc6", "containerd (>= 1.7)"]
packages.exclude = ["perl-base"]
remove = ["/usr/share/doc"]
keep_etc = ["/etc/hostname"]

[[files]]
path = "/etc/x"
content = "a"
mode = "0600"

[[files]]
path = "etc/y"
source = "files/y"

[[files]]
path = "/usr/bin/z"
symlink = "x"

[sysctl]
"kernel.panic" = { value = "5", reason = "r" }
"#;

/// One temporary project: `images/test.toml`, `layers/a/layer.toml` and a
/// source file `layers/a/files/y`.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("images")).expect("images");
        fs::create_dir_all(dir.path().join("layers/a/files")).expect("layers");
        fs::write(dir.path().join("layers/a/files/y"), b"y").expect("source");
        Project { dir }
    }

    fn image_path(&self) -> PathBuf {
        self.dir.path().join("images/test.toml")
    }

    fn layer_path(&self) -> PathBuf {
        self.dir.path().join("layers/a/layer.toml")
    }

    fn load(&self, image: &str, layer: &str) -> Result<Plan, SpecError> {
        fs::write(self.image_path(), image).expect("write image");
        fs::write(self.layer_path(), layer).expect("write layer");
        load_plan(&self.image_path())
    }
}

/// An error names one of the project's files.
fn names_a_file(p: &Project, e: &SpecError) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    let image = p.image_path().display().to_string();
    let layers = p.dir.path().join("layers").display().to_string();
    prop_assert!(
        shown.contains(&image) || shown.contains(&layers),
        "{}",
        shown
    );
    Ok(())
}

/// Every planned path is relative and clean.
fn paths_are_clean(plan: &Plan) -> Result<(), TestCaseError> {
    let clean =
        |p: &str| !p.is_empty() && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    for p in plan.files.keys().chain(&plan.remove).chain(&plan.keep_etc) {
        prop_assert!(clean(p), "planned path {:?}", p);
    }
    Ok(())
}

/// Damage to a text: cut it, change a byte, or drop or repeat a line.
fn damage(text: &str, at: prop::sample::Index, how: u8, xor: u8) -> String {
    let mut b = text.as_bytes().to_vec();
    let lines: Vec<&[u8]> = b.split_inclusive(|&c| c == b'\n').collect();
    let line = at.index(lines.len().max(1));
    let out = match how % 4 {
        0 => b[..at.index(b.len() + 1)].to_vec(),
        1 => {
            let i = at.index(b.len());
            b[i] ^= xor.max(1);
            std::mem::take(&mut b)
        }
        2 => lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != line)
            .flat_map(|(_, l)| l.iter().copied())
            .collect(),
        _ => lines
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                if i == line {
                    [*l, *l].concat()
                } else {
                    l.to_vec()
                }
            })
            .collect(),
    };
    String::from_utf8_lossy(&out).into_owned()
}

/// A path from components that matter to the path rules.
fn spec_path() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", "/", "./"]),
        prop::collection::vec(
            prop::sample::select(vec!["etc", "usr", "files", "y", "..", ".", "", "a b"]),
            1..5,
        ),
    )
        .prop_map(|(lead, c)| format!("{lead}{}", c.join("/")))
}

#[test]
fn the_base_project_loads() {
    let p = Project::new();
    let plan = p.load(IMAGE, LAYER).expect("base project");
    assert_eq!(
        plan.files["etc/y"].content,
        FileContent::Data(b"y".to_vec())
    );
}

proptest! {
    #![proptest_config(config(128))]

    /// Any text as the image file, or as the layer file.
    #[test]
    fn any_text_is_a_plan_or_names_the_file(text in any::<String>(), as_layer in any::<bool>()) {
        let p = Project::new();
        let r = if as_layer { p.load(IMAGE, &text) } else { p.load(&text, LAYER) };
        match r {
            Ok(plan) => paths_are_clean(&plan)?,
            Err(e) => names_a_file(&p, &e)?,
        }
    }

    /// The good project with its image or layer file damaged.
    #[test]
    fn damaged_spec(
        at in any::<prop::sample::Index>(),
        how in any::<u8>(),
        xor in any::<u8>(),
        in_layer in any::<bool>(),
    ) {
        let p = Project::new();
        let r = if in_layer {
            p.load(IMAGE, &damage(LAYER, at, how, xor))
        } else {
            p.load(&damage(IMAGE, at, how, xor), LAYER)
        };
        match r {
            Ok(plan) => paths_are_clean(&plan)?,
            Err(e) => names_a_file(&p, &e)?,
        }
    }

    /// Paths with `..`, `.`, empty and absolute components in every key
    /// that takes one: refused, or planned clean; a `source` with `..` is
    /// always refused.
    #[test]
    fn layer_paths_stay_inside(
        path in spec_path(),
        source in spec_path(),
        remove in spec_path(),
        keep in spec_path(),
    ) {
        let p = Project::new();
        let layer = format!(
            "schema = 1\nremove = [{remove:?}]\nkeep_etc = [{keep:?}]\n\
             [[files]]\npath = {path:?}\nsource = {source:?}\n"
        );
        match p.load(IMAGE, &layer) {
            Ok(plan) => {
                paths_are_clean(&plan)?;
                prop_assert!(!source.split('/').any(|c| c == ".."), "source {:?} read", source);
            }
            Err(e) => names_a_file(&p, &e)?,
        }
    }
}
