//! Go recipes end to end with the real go command, on a tiny upstream
//! module beside the recipe (a directory `replace`, so nothing is fetched):
//! version stamps reach the binary, two builds from clean caches are
//! byte-identical, the lock's sha256 is enforced, a damaged cache entry is
//! rebuilt, and a changed recipe is refused until relocked. The same code
//! builds Kubernetes from recipes/kubernetes (there a cold build takes
//! minutes; `make repro` proves that one reproducible).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nodeimg::source::lock::{Lock, LockedRecipe};
use nodeimg::spec::load_recipe;
use support::{s, text};

fn go_version() -> String {
    let out = Command::new("go")
        .args(["env", "GOVERSION"])
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("go is installed (scripts/setup.sh)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A project with recipes/demo building example.org/up/cmd/hello.
fn project(dir: &Path) -> PathBuf {
    let up = dir.join("up");
    std::fs::create_dir_all(up.join("cmd/hello")).unwrap();
    std::fs::create_dir_all(up.join("version")).unwrap();
    std::fs::write(up.join("go.mod"), "module example.org/up\n\ngo 1.24\n").unwrap();
    std::fs::write(
        up.join("version/version.go"),
        "package version\n\nvar Version = \"unstamped\"\n",
    )
    .unwrap();
    std::fs::write(
        up.join("cmd/hello/main.go"),
        "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.org/up/version\"\n)\n\n\
         func main() { fmt.Println(\"hello\", version.Version) }\n",
    )
    .unwrap();
    let r = dir.join("recipes/demo");
    std::fs::create_dir_all(&r).unwrap();
    std::fs::write(
        r.join("go.mod"),
        "module nodeimg.local/recipes/demo\n\ngo 1.24\n\nrequire example.org/up v1.2.3\n\n\
         replace example.org/up => ../../up\n",
    )
    .unwrap();
    std::fs::write(r.join("go.sum"), "").unwrap();
    std::fs::write(
        r.join("recipe.toml"),
        format!(
            "schema = 1\ngo = \"{}\"\nmodule = \"example.org/up\"\nversion = \"v1.2.3\"\n\
             programs = {{ hello = \"example.org/up/cmd/hello\" }}\n\
             stamps = {{ \"example.org/up/version.Version\" = \"v1.2.3\" }}\n",
            go_version()
        ),
    )
    .unwrap();
    dir.to_path_buf()
}

/// `nodeimg recipe build demo` with its own nodeimg and Go build caches.
fn recipe_build(project: &Path, caches: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeimg"));
    cmd.args([
        "recipe",
        "build",
        "demo",
        "--quiet",
        "--project",
        s(project),
    ])
    .args(extra)
    .env("NODEIMG_CACHE", caches.join("nodeimg"))
    .env("GOCACHE", caches.join("go-build"))
    .env("GOMODCACHE", caches.join("go-mod"))
    .env("GOFLAGS", "");
    cmd.output().expect("run nodeimg")
}

fn sha_of(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.ends_with("  hello"))
        .unwrap_or_else(|| panic!("no digest line: {}", text(out)));
    line[..64].to_string()
}

fn write_lock(project: &Path, sha: &str) {
    let recipe = load_recipe(project, "demo").unwrap();
    let mut lock = Lock::default();
    lock.recipes.insert(
        "demo".into(),
        LockedRecipe {
            inputs: recipe.inputs,
            go: recipe.go,
            version: recipe.version,
            binaries: BTreeMap::from([("hello".to_string(), sha.to_string())]),
        },
    );
    lock.write(&project.join("nodeimg.lock")).unwrap();
}

#[test]
fn go_recipes_are_stamped_reproducible_and_held_to_the_lock() {
    let d = tempfile::tempdir().unwrap();
    let p = project(&d.path().join("project"));
    let (c1, c2) = (d.path().join("caches-1"), d.path().join("caches-2"));

    let first = recipe_build(&p, &c1, &["--unlocked", "--out", s(&d.path().join("a"))]);
    assert!(first.status.success(), "{}", text(&first));
    let ran = Command::new(d.path().join("a/hello")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hello v1.2.3\n");
    let sha = sha_of(&first);

    // Clean caches, another output: the same bytes.
    let second = recipe_build(&p, &c2, &["--unlocked", "--out", s(&d.path().join("b"))]);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(sha_of(&second), sha, "two clean builds differ");
    assert_eq!(
        std::fs::read(d.path().join("a/hello")).unwrap(),
        std::fs::read(d.path().join("b/hello")).unwrap()
    );

    // Locked: served from the cache, hash-checked.
    write_lock(&p, &sha);
    let locked = recipe_build(&p, &c1, &[]);
    assert!(locked.status.success(), "{}", text(&locked));
    assert_eq!(sha_of(&locked), sha);

    // A damaged cache entry is not used: rebuilt, and equal to the lock.
    let entry = c1.join("nodeimg/sha256").join(&sha);
    let mut bytes = std::fs::read(&entry).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&entry, bytes).unwrap();
    let healed = recipe_build(&p, &c1, &[]);
    assert!(healed.status.success(), "{}", text(&healed));
    assert_eq!(sha_of(&healed), sha);

    // A lock that names other bytes: the rebuild is refused, naming both.
    let other = "ab".repeat(32);
    write_lock(&p, &other);
    let refused = recipe_build(&p, &c1, &[]);
    let err = text(&refused);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("hello") && err.contains(&other) && err.contains(&sha),
        "{err}"
    );

    // A changed recipe (its stamps) is stale until `nodeimg lock`.
    write_lock(&p, &sha);
    let toml = p.join("recipes/demo/recipe.toml");
    let changed = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("= \"v1.2.3\" }", "= \"v9\" }");
    std::fs::write(&toml, changed).unwrap();
    let stale = recipe_build(&p, &c1, &[]);
    let err = text(&stale);
    assert!(
        !stale.status.success() && err.contains("changed since it was locked"),
        "{err}"
    );
}
