//! `nodeimg cluster init --out DIR [--force]`: the node API's CA and the
//! admin identity (`DIR/api-ca.crt`, `DIR/api-ca.key`, `DIR/admin.nodeconfig`).
//! `nodeimg cluster config DIR --role R --hostname H [--address IP]...
//! --out FILE`: one node's machine config, trusting DIR's CA, with a node
//! certificate it issued. Paths written go to stdout.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use contract::config::Role;
use nodeimg::cluster::{self, NodeSpec};

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ClusterCommand {
    /// Make the node API's CA and an admin client identity signed by it.
    Init(InitArgs),
    /// Make a node's machine config: its API trust and certificate.
    Config(ConfigArgs),
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Directory for api-ca.crt, api-ca.key and admin.nodeconfig.
    #[arg(long)]
    out: PathBuf,
    /// Replace files that exist.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Worker,
    ControlPlane,
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// The directory `cluster init` made.
    dir: PathBuf,
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The node's hostname (also a DNS SAN of its API certificate).
    #[arg(long)]
    hostname: String,
    /// An address clients dial the node at (an IP SAN); repeatable.
    #[arg(long = "address", value_name = "IP")]
    addresses: Vec<IpAddr>,
    /// The cluster's name.
    #[arg(long, default_value = "nodeimg")]
    cluster_name: String,
    /// Where to write the machine config (0600: it holds the node's key).
    #[arg(long)]
    out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(args: ClusterArgs) -> anyhow::Result<i32> {
    let now = time::OffsetDateTime::now_utc();
    match args.command {
        ClusterCommand::Init(a) => {
            let files = cluster::init(&a.out, a.force, now)
                .with_context(|| format!("making the cluster's API CA in {}", a.out.display()))?;
            for p in [files.ca_cert, files.ca_key, files.admin] {
                println!("{}", p.display());
            }
        }
        ClusterCommand::Config(a) => {
            let spec = NodeSpec {
                hostname: a.hostname.clone(),
                role: match a.role {
                    RoleArg::Worker => Role::Worker,
                    RoleArg::ControlPlane => Role::ControlPlane,
                },
                addresses: a.addresses,
                cluster_name: a.cluster_name,
            };
            let text = cluster::machine_config(&a.dir, &spec, now)
                .with_context(|| format!("making the machine config for {}", a.hostname))?;
            cluster::write_file(&a.out, text.as_bytes(), 0o600, a.force)?;
            println!("{}", a.out.display());
        }
    }
    Ok(0)
}
