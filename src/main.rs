//! `nodeimg`: the command-line edge. Errors become one report on stderr
//! with their causes; the exit code says whether the job succeeded.

mod cli;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "nodeimg",
    version,
    about = "Build signed, read-only, bootable OS images for Kubernetes nodes"
)]
struct Cli {
    /// Only errors on stderr, no progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// More log detail (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an image: packages, root tree, squashfs, dm-verity, manifest.
    Build(cli::build::BuildArgs),
    /// Resolve images against the signed Debian archive and write nodeimg.lock.
    Lock(cli::lock::LockArgs),
    /// Build a Go recipe's upstream programs (recipes/NAME), checked against the lock.
    Recipe(cli::recipe::RecipeArgs),
    /// Boot built images in QEMU and report what the node saw.
    Lab(cli::lab::LabArgs),
    /// Serve a build's PXE bundle over HTTP for iPXE (labs, small sites).
    Pxe(cli::pxe::PxeArgs),
    /// Create key files: the manifest signing pair and the Secure Boot set.
    Keys(cli::keys::KeysArgs),
    /// Sign DIR/manifest.json into DIR/manifest.sigstore.json (Sigstore bundle).
    Sign(cli::sign::SignArgs),
    /// Check DIR's signature and every artifact's size and sha256.
    Verify(cli::verify::VerifyArgs),
    /// Judge packages pinned in the lock (tools.toml), for tests.
    Tool(cli::tool::ToolArgs),
    /// Check a node's machine config (docs/machine-config.md).
    Config(cli::config::ConfigArgs),
    /// Make the node API's CA, admin identity and nodes' machine configs.
    Cluster(cli::cluster::ClusterArgs),
    /// Ask a node over its API: status, logs, dmesg, config, reboot, shutdown.
    Node(cli::node::NodeArgs),
}

fn main() {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("nodeimg={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Build(a) => cli::build::run(a, cli.quiet),
        Command::Lock(a) => cli::lock::run(a, cli.quiet),
        Command::Recipe(a) => cli::recipe::run(a, cli.quiet),
        Command::Lab(a) => cli::lab::run(a),
        Command::Pxe(a) => cli::pxe::run(a),
        Command::Keys(a) => cli::keys::run(a),
        Command::Sign(a) => cli::sign::run(a),
        Command::Verify(a) => cli::verify::run(a),
        Command::Tool(a) => cli::tool::run(a, cli.quiet),
        Command::Config(a) => cli::config::run(a),
        Command::Cluster(a) => cli::cluster::run(a),
        Command::Node(a) => cli::node::run(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::exit(1);
        }
    }
}
