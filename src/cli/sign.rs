//! `nodeimg sign DIR --key KEY`: signs an existing build. Checks every
//! artifact against DIR/manifest.json first (a manifest whose files changed
//! is not signed), then writes DIR/manifest.sigstore.json (temp + rename)
//! and prints its path. The key's password comes from the environment, as
//! for `nodeimg keys gen` (see `cli::keys`).

use std::path::PathBuf;

use anyhow::Context;
use nodeimg::sign::bundle::sign_manifest;
use nodeimg::sign::verify::check_unsigned;

use super::keys::load_signing_key;

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Build output directory holding manifest.json.
    pub dir: PathBuf,
    /// Private key: signing.key from `nodeimg keys gen`, or cosign.key.
    #[arg(long, env = "NODEIMG_SIGNING_KEY")]
    pub key: PathBuf,
    /// Sign without hashing the artifacts first.
    #[arg(long)]
    pub no_check: bool,
}

pub fn run(args: SignArgs) -> anyhow::Result<i32> {
    let key = load_signing_key(&args.key)?;
    if !args.no_check {
        let report = check_unsigned(&args.dir, super::verify::default_threads());
        if !report.ok {
            for f in &report.failures {
                eprintln!("{f}");
            }
            anyhow::bail!(
                "not signing {}: {} problem(s) with its artifacts",
                args.dir.display(),
                report.failures.len()
            );
        }
    }
    let out = sign_manifest(&args.dir, &key)
        .with_context(|| format!("signing {}", args.dir.display()))?;
    tracing::info!(key = %args.key.display(), hint = %key.public_key().hint(), "signed");
    println!("{}", out.display());
    Ok(0)
}
