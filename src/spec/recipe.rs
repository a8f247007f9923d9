//! `recipes/<name>/recipe.toml`: upstream Go programs built from pinned
//! modules (Kubernetes' kubelet, kube-apiserver, …). The folder holds the
//! recipe, a `go.mod` that requires the upstream module at one version and
//! its `go.sum`; all three are the recipe's inputs, hashed into the lock and
//! the cache key. Layers place a recipe's programs with
//! `artifact = "<recipe>/<program>"`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::SpecError;
use super::image::SCHEMA_VERSION;
use crate::util::hash;

/// The folder of recipes, in the project directory.
pub const RECIPES_DIR: &str = "recipes";
pub const RECIPE_FILE: &str = "recipe.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    schema: u32,
    #[serde(default)]
    description: String,
    /// The Go toolchain, e.g. `go1.26.8`: it changes the binaries' bytes.
    go: String,
    /// Upstream's version, e.g. `v1.34.4`; `go.mod` must require it.
    version: String,
    /// The upstream module whose `version` go.mod requires.
    module: String,
    /// Program name -> Go package path (a `main` package).
    programs: BTreeMap<String, String>,
    /// `-X` link-time values: upstream's version stamps.
    #[serde(default)]
    stamps: BTreeMap<String, String>,
}

/// A checked recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub name: String,
    pub dir: PathBuf,
    pub description: String,
    pub go: String,
    pub module: String,
    pub version: String,
    pub programs: BTreeMap<String, String>,
    pub stamps: BTreeMap<String, String>,
    /// sha256 over recipe.toml, go.mod and go.sum.
    pub inputs: String,
}

impl Recipe {
    /// The linker flags: no build id, no symbol tables (the binaries ship
    /// in read-only roots; upstream's releases strip them too), the stamps.
    pub fn ldflags(&self) -> String {
        let mut flags = vec!["-buildid=".to_string(), "-s".into(), "-w".into()];
        for (k, v) in &self.stamps {
            flags.push(format!("-X={k}={v}"));
        }
        flags.join(" ")
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Go import paths and `-X` values go into one space-separated flag
/// string: nothing that splits or quotes it.
fn token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "./-_:+~".contains(c))
}

/// Reads and checks `<project>/recipes/<name>/`.
pub fn load_recipe(project: &Path, name: &str) -> Result<Recipe, SpecError> {
    let dir = project.join(RECIPES_DIR).join(name);
    let path = dir.join(RECIPE_FILE);
    if !name_ok(name) {
        return Err(SpecError::invalid(
            &path,
            "name",
            format!("`{name}` is not a recipe name (a-z, 0-9, -)"),
        ));
    }
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| SpecError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let text = read(&path)?;
    let go_mod = read(&dir.join("go.mod"))?;
    let go_sum = read(&dir.join("go.sum"))?;
    let file: RecipeFile =
        toml::from_str(&String::from_utf8_lossy(&text)).map_err(|e| SpecError::Parse {
            path: path.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
    if file.schema != SCHEMA_VERSION {
        return Err(SpecError::Schema {
            path,
            found: file.schema,
            supported: SCHEMA_VERSION,
        });
    }
    let go_ok = file
        .go
        .strip_prefix("go")
        .is_some_and(|v| !v.is_empty() && v.split('.').all(|p| p.parse::<u32>().is_ok()));
    if !go_ok {
        return Err(SpecError::invalid(
            &path,
            "go",
            format!("`{}` is not a Go toolchain name like go1.26.8", file.go),
        ));
    }
    if file.programs.is_empty() {
        return Err(SpecError::invalid(&path, "programs", "names no program"));
    }
    for (program, package) in &file.programs {
        // a package starting with `-` would reach `go build` as a flag
        if !name_ok(program) || !token_ok(package) || package.starts_with('-') {
            return Err(SpecError::invalid(
                &path,
                format!("programs.{program}"),
                "needs a name of a-z, 0-9, - and a Go package path",
            ));
        }
    }
    for (key, value) in &file.stamps {
        if !token_ok(key) || !key.contains('.') || !token_ok(value) {
            return Err(SpecError::invalid(
                &path,
                format!("stamps.{key}"),
                "needs `package.Variable` = a value without spaces or quotes",
            ));
        }
    }
    let wanted = format!("{} {}", file.module, file.version);
    let go_mod_text = String::from_utf8_lossy(&go_mod);
    let requires = go_mod_text.lines().any(|l| {
        let l = l.split("//").next().unwrap_or("").trim();
        l.strip_prefix("require").unwrap_or(l).trim() == wanted
    });
    if !requires {
        return Err(SpecError::invalid(
            &dir.join("go.mod"),
            "require",
            format!("must require `{wanted}` (the recipe's module and version)"),
        ));
    }
    let mut digest_input = Vec::new();
    for (label, data) in [
        (RECIPE_FILE, &text),
        ("go.mod", &go_mod),
        ("go.sum", &go_sum),
    ] {
        digest_input.extend_from_slice(format!("{label} {}\n", hash::sha256_hex(data)).as_bytes());
    }
    Ok(Recipe {
        name: name.to_string(),
        dir,
        description: file.description,
        go: file.go,
        module: file.module,
        version: file.version,
        programs: file.programs,
        stamps: file.stamps,
        inputs: hash::sha256_hex(&digest_input),
    })
}

/// Splits a layer's `artifact = "recipe/program"`.
pub fn recipe_artifact(artifact: &str) -> Option<(&str, &str)> {
    artifact.split_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_recipe(dir: &Path, recipe: &str, go_mod: &str) {
        let r = dir.join(RECIPES_DIR).join("demo");
        std::fs::create_dir_all(&r).unwrap();
        std::fs::write(r.join(RECIPE_FILE), recipe).unwrap();
        std::fs::write(r.join("go.mod"), go_mod).unwrap();
        std::fs::write(r.join("go.sum"), "").unwrap();
    }

    const GOOD: &str = r#"schema = 1
go = "go1.26.8"
module = "example.org/up"
version = "v1.2.3"
programs = { hello = "example.org/up/cmd/hello" }
stamps = { "example.org/up/version.v" = "v1.2.3" }
"#;

    #[test]
    fn loads_and_hashes_every_input() {
        let d = tempfile::tempdir().unwrap();
        write_recipe(
            d.path(),
            GOOD,
            "module x\nrequire (\n\texample.org/up v1.2.3 // indirect\n)\n",
        );
        let r = load_recipe(d.path(), "demo").unwrap();
        assert_eq!(r.programs["hello"], "example.org/up/cmd/hello");
        assert_eq!(
            r.ldflags(),
            "-buildid= -s -w -X=example.org/up/version.v=v1.2.3"
        );
        let sum = d.path().join("recipes/demo/go.sum");
        std::fs::write(&sum, "example.org/up v1.2.3 h1:x\n").unwrap();
        assert_ne!(load_recipe(d.path(), "demo").unwrap().inputs, r.inputs);
    }

    #[test]
    fn refuses_what_would_build_something_else() {
        let d = tempfile::tempdir().unwrap();
        write_recipe(d.path(), GOOD, "module x\nrequire example.org/up v1.2.4\n");
        let e = load_recipe(d.path(), "demo").unwrap_err().to_string();
        assert!(
            e.contains("go.mod") && e.contains("example.org/up v1.2.3"),
            "{e}"
        );
        for (bad, field) in [
            (GOOD.replace("go1.26.8", "latest"), "go"),
            (GOOD.replace("= \"v1.2.3\" }", "= \"v1 2\" }"), "stamps."),
            (GOOD.replace("hello =", "Hello ="), "programs.Hello"),
            (
                GOOD.replace("= \"example.org/up/cmd/hello\"", "= \"-toolexec=x\""),
                "programs.hello",
            ),
            (format!("{GOOD}extra = 1\n"), "extra"),
        ] {
            write_recipe(d.path(), &bad, "module x\nrequire example.org/up v1.2.3\n");
            let e = load_recipe(d.path(), "demo").unwrap_err().to_string();
            assert!(
                e.contains("recipe.toml") && e.contains(field),
                "{field}: {e}"
            );
        }
        assert!(load_recipe(d.path(), "../x").is_err());
    }
}
