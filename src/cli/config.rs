//! `nodeimg config check FILE [--image-manifest DIR/manifest.json]`: reads
//! one machine config with the contract's parser and checks (the same the
//! agent runs), and with a manifest also whether that image can serve it.
//! Prints every problem as `FILE: KEY: MESSAGE` on stdout and exits 1, or
//! prints `ok` and exits 0. `--print` shows the config with its secrets
//! redacted.

use std::path::PathBuf;

use anyhow::Context;
use contract::config::{check_against_image, ConfigError, ImageFacts, MachineConfig};
use nodeimg::manifest::Manifest;

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Check a machine config: schema, keys, values, and (with a manifest)
    /// that the image can serve its role.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The machine config (TOML, schema 1; docs/machine-config.md).
    file: PathBuf,
    /// A build's manifest.json: also check the config against that image.
    #[arg(long, value_name = "DIR/manifest.json")]
    image_manifest: Option<PathBuf>,
    /// Print the config, secrets redacted, when it is good.
    #[arg(long)]
    print: bool,
}

pub fn run(args: ConfigArgs) -> anyhow::Result<i32> {
    match args.command {
        ConfigCommand::Check(a) => check(a),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<i32> {
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {name}"))?;
    let config = match MachineConfig::from_toml(&text, &name) {
        Ok(c) => c,
        Err(e) => {
            print_problems(&e);
            return Ok(1);
        }
    };
    if let Some(path) = &args.image_manifest {
        let facts = image_facts(path)?;
        if let Err(problems) = check_against_image(&config, &facts) {
            for p in problems {
                println!("{name}: {p}");
            }
            return Ok(1);
        }
    }
    if args.print {
        print!("{}", config.redacted().to_toml()?);
    }
    println!("ok");
    Ok(0)
}

/// One line per problem. A TOML error keeps its `file:line:column:` place.
fn print_problems(e: &ConfigError) {
    match e {
        ConfigError::Invalid { file, problems } => {
            for p in problems {
                println!("{file}: {p}");
            }
        }
        other => println!("{other}"),
    }
}

/// What the image in `manifest` can run: its name and its packages.
fn image_facts(path: &PathBuf) -> anyhow::Result<ImageFacts> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading image manifest {}", path.display()))?;
    let m: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("parsing image manifest {}", path.display()))?;
    Ok(ImageFacts::from_packages(
        format!("{} {}", m.name, m.version),
        m.packages.iter().map(|p| p.name.as_str()),
    ))
}
