//! Upstream Go programs from a recipe (`recipes/<name>/`): built with the
//! recipe's pinned Go, reproducibly, and kept in the content-addressed
//! cache. An index file per (recipe inputs, Go version) names each
//! program's sha256, so a second build (or `nodeimg lock`) with the same
//! inputs compiles nothing; every cached binary is hash-checked on read.
//!
//! Go is run as a command, not linked: the toolchain is the build's input
//! (its version changes the bytes), and `GOTOOLCHAIN=<recipe's go>` makes
//! the go command use exactly that one, fetched through the module proxy
//! when the local one differs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::progress::Progress;
use crate::source::cache::{Cache, CacheError, Lookup};
use crate::source::lock::LockedRecipe;
use crate::spec::Recipe;
use crate::util::{atomic, hash};

#[derive(Debug, thiserror::Error)]
pub enum GoBuildError {
    #[error("running `go` for recipe {recipe} (is Go installed? scripts/setup.sh installs it)")]
    Spawn {
        recipe: String,
        #[source]
        source: std::io::Error,
    },
    #[error("recipe {recipe}: `go env GOVERSION` with GOTOOLCHAIN={wanted} says `{found}`")]
    WrongGo {
        recipe: String,
        wanted: String,
        found: String,
    },
    #[error("recipe {recipe}: building {program} ({package}) failed:\n{stderr}")]
    Build {
        recipe: String,
        program: String,
        package: String,
        stderr: String,
    },
    #[error("recipe {recipe}: {path}")]
    Io {
        recipe: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("recipe {recipe} is not in the lock; run `nodeimg lock`")]
    NotLocked { recipe: String },
    #[error("recipe {recipe} changed since it was locked ({what}); run `nodeimg lock`")]
    Stale { recipe: String, what: String },
    #[error(
        "recipe {recipe}: the rebuilt {program} has sha256 {built}, the lock says {locked} \
         (same recipe and Go {go}: the build is not reproducible here, or the lock was made elsewhere \
         from other module content)"
    )]
    Differs {
        recipe: String,
        program: String,
        built: String,
        locked: String,
        go: String,
    },
}

/// Program name -> sha256 hex of what the recipe builds.
pub type Digests = BTreeMap<String, String>;

fn io_err(recipe: &Recipe, path: &Path) -> impl FnOnce(std::io::Error) -> GoBuildError {
    let recipe = recipe.name.clone();
    let path = path.to_path_buf();
    move |source| GoBuildError::Io {
        recipe,
        path,
        source,
    }
}

/// The go command with the recipe's toolchain and a hermetic-enough
/// environment: no cgo, no workspace, go.sum must already hold every
/// module (`-mod=readonly`), the module cache under nodeimg's cache unless
/// the user set one, and writable so `rm -rf` can clear it.
fn go(recipe: &Recipe, cache: &Cache) -> Command {
    let mut cmd = Command::new("go");
    cmd.current_dir(&recipe.dir)
        .env("GOTOOLCHAIN", &recipe.go)
        .env("CGO_ENABLED", "0")
        .env("GOOS", "linux")
        .env("GOARCH", "amd64")
        .env("GOWORK", "off")
        .env("GOFLAGS", "-mod=readonly -modcacherw")
        // Settings that change a binary's bytes are pinned here, so neither
        // a user's `go env -w` file nor their shell can make the build
        // differ from the lock.
        .env("GOENV", "off")
        .env("GOAMD64", "v1")
        .env("GOEXPERIMENT", "")
        .env("GOFIPS140", "off");
    if std::env::var_os("GOMODCACHE").is_none() {
        // go runs in the recipe's directory: a relative cache root would
        // land there.
        let root = std::path::absolute(cache.root()).unwrap_or_else(|_| cache.root().to_path_buf());
        cmd.env("GOMODCACHE", root.join("go-mod"));
    }
    cmd
}

/// The Go version the recipe's toolchain reports; it must be the recipe's.
pub fn go_version(recipe: &Recipe, cache: &Cache) -> Result<String, GoBuildError> {
    let out = go(recipe, cache)
        .args(["env", "GOVERSION"])
        .output()
        .map_err(|source| GoBuildError::Spawn {
            recipe: recipe.name.clone(),
            source,
        })?;
    let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || found != recipe.go {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(GoBuildError::WrongGo {
            recipe: recipe.name.clone(),
            wanted: recipe.go.clone(),
            found: format!("{found}{}", stderr.trim()),
        });
    }
    Ok(found)
}

fn index_path(recipe: &Recipe, cache: &Cache) -> PathBuf {
    // The Go version is part of the recipe's inputs (recipe.toml pins it),
    // and go_version() refuses any other: the inputs alone key the index.
    cache
        .root()
        .join("recipes")
        .join(&recipe.name)
        .join(format!("{}.json", recipe.inputs))
}

/// The binaries of an earlier build with the same inputs, if all intact.
fn cached(recipe: &Recipe, cache: &Cache) -> Option<Digests> {
    let text = std::fs::read_to_string(index_path(recipe, cache)).ok()?;
    let digests: Digests = serde_json::from_str(&text).ok()?;
    let complete = recipe.programs.keys().all(|p| {
        digests
            .get(p)
            .and_then(|d| hash::parse_sha256(d))
            .is_some_and(|sha| cache.path_for(&sha).is_file())
    });
    complete.then_some(digests)
}

/// Builds every program of `recipe` (or finds them built), returning their
/// digests; the binaries are in `cache`.
pub fn build_recipe(
    recipe: &Recipe,
    cache: &Cache,
    progress: &Progress,
) -> Result<Digests, GoBuildError> {
    if let Some(d) = cached(recipe, cache) {
        tracing::info!(recipe = %recipe.name, "recipe binaries cached");
        return Ok(d);
    }
    go_version(recipe, cache)?;
    let work = cache.root().join("recipes").join(&recipe.name);
    std::fs::create_dir_all(&work).map_err(io_err(recipe, &work))?;
    let tmp = tempfile::tempdir_in(&work).map_err(io_err(recipe, &work))?;
    let bar = progress.bar(recipe.programs.len() as u64, "go build");
    let mut digests = Digests::new();
    let ldflags = recipe.ldflags();
    for (i, (program, package)) in recipe.programs.iter().enumerate() {
        let started = Instant::now();
        bar.set_message(program.clone());
        tracing::info!(
            recipe = %recipe.name,
            "building {program} ({}/{}); a cold Go cache takes minutes per program",
            i + 1,
            recipe.programs.len()
        );
        let out = tmp.path().join(program);
        let result = go(recipe, cache)
            .args(["build", "-trimpath", "-buildvcs=false", "-ldflags"])
            .arg(&ldflags)
            .arg("-o")
            .arg(&out)
            .arg(package)
            .output()
            .map_err(|source| GoBuildError::Spawn {
                recipe: recipe.name.clone(),
                source,
            })?;
        if !result.status.success() {
            return Err(GoBuildError::Build {
                recipe: recipe.name.clone(),
                program: program.clone(),
                package: package.clone(),
                stderr: String::from_utf8_lossy(&result.stderr).trim().to_string(),
            });
        }
        let data = std::fs::read(&out).map_err(io_err(recipe, &out))?;
        let sha = hash::sha256(&data);
        cache.put(&format!("{}/{program}", recipe.name), &sha, &data)?;
        tracing::info!(
            recipe = %recipe.name,
            seconds = started.elapsed().as_secs(),
            bytes = data.len(),
            "built {program}"
        );
        digests.insert(program.clone(), hex::encode(sha));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let index = index_path(recipe, cache);
    let text = serde_json::to_string_pretty(&digests).unwrap_or_default();
    atomic::write(&index, text.as_bytes()).map_err(io_err(recipe, &index))?;
    Ok(digests)
}

/// What the lock records for `recipe` after building it.
pub fn lock_recipe(
    recipe: &Recipe,
    cache: &Cache,
    progress: &Progress,
) -> Result<LockedRecipe, GoBuildError> {
    let binaries = build_recipe(recipe, cache, progress)?;
    Ok(LockedRecipe {
        inputs: recipe.inputs.clone(),
        go: recipe.go.clone(),
        version: recipe.version.clone(),
        binaries,
    })
}

/// The locked binaries `wanted` of `recipe`, from the cache or rebuilt,
/// each equal to the lock's sha256.
pub fn locked_binaries(
    recipe: &Recipe,
    locked: Option<&LockedRecipe>,
    wanted: &[&str],
    cache: &Cache,
    progress: &Progress,
) -> Result<BTreeMap<String, Vec<u8>>, GoBuildError> {
    let locked = locked.ok_or_else(|| GoBuildError::NotLocked {
        recipe: recipe.name.clone(),
    })?;
    let stale = |what: &str| GoBuildError::Stale {
        recipe: recipe.name.clone(),
        what: what.into(),
    };
    if locked.inputs != recipe.inputs {
        return Err(stale("recipe.toml, go.mod or go.sum"));
    }
    let mut out = BTreeMap::new();
    let mut rebuilt: Option<Digests> = None;
    for &program in wanted {
        let sha = locked
            .binaries
            .get(program)
            .and_then(|d| hash::parse_sha256(d))
            .ok_or_else(|| stale(&format!("{program} has no sha256 in the lock")))?;
        if let Lookup::Hit(data) = cache.get(&sha)? {
            out.insert(program.to_string(), data);
            continue;
        }
        let digests = match &mut rebuilt {
            Some(d) => d,
            None => {
                // The index may name what is gone: build afresh.
                let _ = std::fs::remove_file(index_path(recipe, cache));
                rebuilt.insert(build_recipe(recipe, cache, progress)?)
            }
        };
        let built = digests.get(program).cloned().unwrap_or_default();
        if built != hex::encode(sha) {
            return Err(GoBuildError::Differs {
                recipe: recipe.name.clone(),
                program: program.to_string(),
                built,
                locked: hex::encode(sha),
                go: recipe.go.clone(),
            });
        }
        match cache.get(&sha)? {
            Lookup::Hit(data) => {
                out.insert(program.to_string(), data);
            }
            Lookup::Miss | Lookup::Corrupt { .. } => {
                return Err(stale(&format!("{program} vanished from the cache")))
            }
        }
    }
    Ok(out)
}
