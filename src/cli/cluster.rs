//! `nodeimg cluster init --name N --control-plane-endpoint HOST:PORT
//! [--member HOST=IP]... --out DIR [--force]`: the cluster's CAs, keys,
//! secrets, admin identity and cluster.toml.
//! `nodeimg cluster config DIR --role R --hostname H [--address IP]...
//! --out FILE [--force]`: one node's machine config, rendered from DIR.
//! `nodeimg cluster check DIR`: reads every file of DIR as `config` does.
//! `nodeimg cluster manifests DIR`: DIR/manifests/ from cluster.toml's [stack].
//! `nodeimg cluster encryption-key DIR add|use NAME|retire`: one step of
//! an encryption-at-rest key rotation, in DIR/secrets.toml.
//! Paths written go to stdout.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use contract::config::{Member, Role};
use nodeimg::cluster::{self, ClusterDir, InitRequest, NodeSpec};

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ClusterCommand {
    /// Make the cluster's CAs, keys and secrets, the admin's identity and cluster.toml.
    Init(InitArgs),
    /// Render one node's machine config from the cluster directory.
    Config(ConfigArgs),
    /// Read and check every file of a cluster directory.
    Check(CheckArgs),
    /// Render DIR/manifests/ again from cluster.toml's [stack] (after an
    /// edit): our files replaced or removed, any other file left alone.
    Manifests(CheckArgs),
    /// Start the cluster's etcd on one control-plane node, once (node API).
    Bootstrap(super::bootstrap::BootstrapArgs),
    /// Write an admin kubeconfig (a short-lived client certificate from the
    /// cluster's Kubernetes CA).
    Kubeconfig(KubeconfigArgs),
    /// Rotate the encryption-at-rest key, one step at a time: `add`, apply
    /// the configs, `use NAME`, apply, rewrite every Secret, `retire`,
    /// apply (docs/security-stack.md).
    EncryptionKey(EncryptionKeyArgs),
}

#[derive(Debug, clap::Args)]
struct EncryptionKeyArgs {
    /// The directory `cluster init` made.
    dir: PathBuf,
    #[command(subcommand)]
    step: KeyStepArg,
}

#[derive(Debug, clap::Subcommand)]
enum KeyStepArg {
    /// A new key that decrypts but does not encrypt yet.
    Add,
    /// NAME (a read-only key) encrypts from now on; the current key reads only.
    Use { name: String },
    /// Drop every read-only key (once every Secret was rewritten).
    Retire,
}

#[derive(Debug, clap::Args)]
struct KubeconfigArgs {
    /// The directory `cluster init` made.
    dir: PathBuf,
    /// Where to write it (0600: it holds the key).
    #[arg(long)]
    out: PathBuf,
    /// The API's URL (default: https:// + cluster.toml's control-plane endpoint).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The name to check the API's certificate for, when the URL's host is
    /// not one it carries (a lab's forwarded port).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// How long the certificate is valid, in hours (at most 8760).
    #[arg(long, default_value_t = 24)]
    hours: u32,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// The cluster's name (a DNS label).
    #[arg(long)]
    name: String,
    /// HOST:PORT of the Kubernetes API (a load balancer, a VIP or one node).
    #[arg(long, value_name = "HOST:PORT")]
    control_plane_endpoint: String,
    /// A control-plane node, HOSTNAME=IP; repeatable. More can be added to
    /// cluster.toml later, before their configs are rendered.
    #[arg(long = "member", value_name = "HOSTNAME=IP", value_parser = parse_member)]
    members: Vec<Member>,
    /// Directory for the cluster's files (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Replace files that exist.
    #[arg(long)]
    force: bool,
}

fn parse_member(s: &str) -> Result<Member, String> {
    let (hostname, address) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not HOSTNAME=IP"))?;
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("{address:?} is not an IP address"))?;
    Ok(Member {
        hostname: hostname.to_string(),
        address,
    })
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
    /// The node's hostname (also a DNS SAN of its API certificate). A
    /// control-plane node must be one of cluster.toml's members.
    #[arg(long)]
    hostname: String,
    /// An address clients dial the node at (an IP SAN); repeatable.
    #[arg(long = "address", value_name = "IP")]
    addresses: Vec<IpAddr>,
    /// Where to write the machine config (0600: it holds the node's keys).
    #[arg(long)]
    out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The directory `cluster init` made.
    dir: PathBuf,
}

pub fn run(args: ClusterArgs) -> anyhow::Result<i32> {
    let now = time::OffsetDateTime::now_utc();
    match args.command {
        ClusterCommand::Init(a) => {
            let request = InitRequest {
                name: a.name,
                control_plane_endpoint: a.control_plane_endpoint,
                members: a.members,
            };
            let files = cluster::init(&a.out, &request, a.force, now)
                .with_context(|| format!("making the cluster in {}", a.out.display()))?;
            for p in files {
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
            };
            let text = cluster::machine_config(&a.dir, &spec, now)
                .with_context(|| format!("making the machine config for {}", a.hostname))?;
            cluster::write_file(&a.out, text.as_bytes(), 0o600, a.force)?;
            println!("{}", a.out.display());
        }
        ClusterCommand::Check(a) => {
            ClusterDir::load(&a.dir)
                .with_context(|| format!("checking the cluster in {}", a.dir.display()))?;
            println!("ok");
        }
        ClusterCommand::Manifests(a) => {
            let files = cluster::manifests::render_dir(&a.dir)
                .with_context(|| format!("rendering the manifests of {}", a.dir.display()))?;
            for p in files {
                println!("{}", p.display());
            }
        }
        ClusterCommand::Bootstrap(a) => return super::bootstrap::run(a),
        ClusterCommand::EncryptionKey(a) => {
            let step = match a.step {
                KeyStepArg::Add => cluster::KeyStep::Add,
                KeyStepArg::Use { name } => cluster::KeyStep::Use(name),
                KeyStepArg::Retire => cluster::KeyStep::Retire,
            };
            let said = cluster::rotate_encryption_key(&a.dir, &step)
                .with_context(|| format!("rotating the encryption key of {}", a.dir.display()))?;
            println!("{said}");
        }
        ClusterCommand::Kubeconfig(a) => {
            if a.hours == 0 || a.hours > 8760 {
                anyhow::bail!("--hours: {} is not 1 to 8760", a.hours);
            }
            if let Some(url) = &a.server {
                if !url.starts_with("https://") {
                    anyhow::bail!("--server: {url:?} is not an https:// URL");
                }
            }
            let text = cluster::admin_kubeconfig(
                &a.dir,
                a.server.as_deref(),
                a.tls_server_name.as_deref(),
                now,
                time::Duration::hours(i64::from(a.hours)),
            )
            .with_context(|| format!("making a kubeconfig from {}", a.dir.display()))?;
            cluster::write_file(&a.out, text.as_bytes(), 0o600, a.force)?;
            println!("{}", a.out.display());
        }
    }
    Ok(0)
}
