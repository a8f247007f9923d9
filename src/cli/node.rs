//! `nodeimg node status|logs SERVICE|dmesg|config|apply-config FILE|pull IMAGE|import FILE|reboot|shutdown --node
//! ADDR:PORT --nodeconfig FILE`: one request to a node's API (TLS 1.3,
//! the nodeconfig's client certificate; the node checked against its CA).
//! The answer goes to stdout: `status` as a summary (`--json`: the report
//! JSON), text as it came. A refused request exits 1.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use contract::api::{Request, Response};
use nodeimg::cluster::AdminConfig;
use nodeimg::node::{self, Trust};

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    command: NodeCommand,
    /// The node's API, HOST:PORT (the API listens on port 50000).
    #[arg(long, global = true, env = "NODEIMG_NODE")]
    node: Option<String>,
    /// The admin identity `nodeimg cluster init` wrote (admin.nodeconfig).
    #[arg(long, global = true, env = "NODEIMG_NODECONFIG")]
    nodeconfig: Option<PathBuf>,
    /// The name the node's certificate must carry (default: the host of
    /// --node, an IP address SAN when it is an address).
    #[arg(long, global = true)]
    server_name: Option<String>,
    /// Print the answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the connection and the answer.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
}

#[derive(Debug, clap::Subcommand)]
enum NodeCommand {
    /// The node's latest boot report.
    Status,
    /// The end of a service's log.
    Logs {
        service: String,
        /// Lines from the end (default 200).
        #[arg(long)]
        tail: Option<usize>,
        /// Then print what the service writes, as it comes, until
        /// interrupted (or `--for` seconds pass).
        #[arg(long, short = 'f')]
        follow: bool,
        /// With --follow: stop after this many seconds.
        #[arg(long = "for", value_name = "SECONDS", requires = "follow")]
        follow_for: Option<u64>,
    },
    /// The kernel log.
    Dmesg,
    /// A control-plane node's Kubernetes audit log: its files with their
    /// sizes (`# NAME BYTES` lines), then the current log's last lines
    /// (one JSON event each).
    Audit {
        /// Lines from the end (default 200).
        #[arg(long)]
        tail: Option<usize>,
    },
    /// The running machine config, secrets redacted.
    Config,
    /// Stop the services and reboot the node.
    Reboot,
    /// Make a control-plane node leave etcd (refused when the rest of the
    /// cluster could not keep a quorum without it), wipe its etcd data and
    /// reboot; it then joins again as a new member.
    Reset,
    /// Stop the services and power the node off.
    Shutdown,
    /// Send a new machine config: checked whole by the node (refused whole
    /// when it cannot serve it), stored, and applied live where it can be;
    /// prints what changed and what waits for a reboot.
    ApplyConfig {
        /// The machine config (TOML), checked here first as `nodeimg config check` does.
        file: PathBuf,
    },
    /// Pull an image into the node's containerd (namespace k8s.io) through
    /// its registry mirrors and logins; prints the digest.
    Pull { image: String },
    /// Import an OCI image archive (`oci-archive`, a tar of an OCI image
    /// layout) into the node's containerd (namespace k8s.io), named NAME
    /// and by its digest: an add-on the image does not preload, with no
    /// registry. Its linux/amd64 image is taken and every blob checked
    /// here first; prints the name and the digest the node reports.
    Import {
        file: PathBuf,
        /// What containerd lists it as (`nodeimg.local/falco:0.39`).
        #[arg(long)]
        name: String,
    },
    /// Take a snapshot of this control-plane node's etcd now and write it
    /// to FILE (its size and sha256 checked against the node's; written
    /// whole or not at all). `nodeimg cluster bootstrap --from-snapshot`
    /// restores one.
    EtcdSnapshot {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

pub fn run(args: NodeArgs) -> anyhow::Result<i32> {
    let addr = args.node.context("--node HOST:PORT is required")?;
    let path = args.nodeconfig.context("--nodeconfig FILE is required")?;
    let admin = AdminConfig::read(&path)?;
    let request = match args.command {
        NodeCommand::Status => Request::Status,
        NodeCommand::Logs {
            service,
            tail,
            follow: true,
            follow_for,
        } => {
            let until = follow_for.map(|s| std::time::Instant::now() + Duration::from_secs(s));
            let request = Request::Logs {
                service,
                tail,
                follow: true,
            };
            let mut failed = false;
            node::stream(
                &addr,
                args.server_name.as_deref(),
                &Trust::from(&admin),
                &request,
                Duration::from_secs(args.timeout),
                |answer| {
                    match answer {
                        Response::Text(t) => {
                            use std::io::Write;
                            print!("{t}");
                            let _ = std::io::stdout().flush();
                        }
                        Response::Error(e) => {
                            eprintln!("error: the node answered: {e}");
                            failed = true;
                            return false;
                        }
                        other => eprintln!("unexpected answer: {other:?}"),
                    }
                    until.is_none_or(|u| std::time::Instant::now() < u)
                },
            )?;
            return Ok(i32::from(failed));
        }
        NodeCommand::Logs { service, tail, .. } => Request::Logs {
            service,
            tail,
            follow: false,
        },
        NodeCommand::Dmesg => Request::Dmesg,
        NodeCommand::Audit { tail } => Request::Audit { tail },
        NodeCommand::Config => Request::Config,
        NodeCommand::Reboot => Request::Reboot,
        NodeCommand::Reset => Request::Reset,
        NodeCommand::Shutdown => Request::Shutdown,
        NodeCommand::ApplyConfig { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            if text.len() > contract::api::MAX_CONFIG {
                anyhow::bail!(
                    "{}: larger than {} bytes",
                    file.display(),
                    contract::api::MAX_CONFIG
                );
            }
            contract::config::MachineConfig::from_toml(&text, &file.display().to_string())?;
            Request::ApplyConfig { config: text }
        }
        NodeCommand::Pull { image } => Request::Pull { image },
        NodeCommand::Import { file, name } => {
            let timeout = Duration::from_secs(args.timeout);
            return import(
                &addr,
                args.server_name.as_deref(),
                timeout,
                &admin,
                &file,
                &name,
            );
        }
        NodeCommand::EtcdSnapshot { out } => {
            let got = node::blob::receive(
                &addr,
                args.server_name.as_deref(),
                &Trust::from(&admin),
                &Request::EtcdSnapshot,
                &out,
                Duration::from_secs(args.timeout),
            )?;
            return match got {
                Ok(blob) => {
                    println!(
                        "{}: {} bytes, sha256 {}",
                        out.display(),
                        blob.bytes,
                        blob.sha256
                    );
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("error: the node answered: {e}");
                    Ok(1)
                }
            };
        }
    };
    let answer = node::request(
        &addr,
        args.server_name.as_deref(),
        &Trust::from(&admin),
        &request,
        Duration::from_secs(args.timeout),
    )?;
    if args.json {
        let value = match &answer {
            Response::Report(r) => serde_json::to_value(r)?,
            other => serde_json::to_value(other)?,
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(i32::from(matches!(answer, Response::Error(_))));
    }
    match answer {
        Response::Report(r) => {
            println!("ready    {}", if r.ready { "yes" } else { "NO" });
            println!("hostname {}", r.hostname.as_deref().unwrap_or("-"));
            if let Some(e) = &r.error {
                println!("error    {e}");
            }
            println!("kernel   {}", r.kernel);
            if let Some(c) = r.config.as_ref().filter(|c| !c.pending_reboot.is_empty()) {
                println!(
                    "pending  {} (applied, takes effect at the next boot)",
                    c.pending_reboot.join(", ")
                );
            }
            for s in &r.services {
                println!("service  {} {}", s.name, serde_json::to_string(&s.state)?);
            }
            if let Some(e) = &r.etcd {
                let why = e
                    .error
                    .as_deref()
                    .or(e.detail.as_deref())
                    .map_or(String::new(), |w| format!(": {w}"));
                println!(
                    "etcd     {}{why} (member {}, leader {}, cluster {})",
                    e.state.as_str(),
                    e.member_id.as_deref().unwrap_or("-"),
                    e.leader.as_deref().unwrap_or("-"),
                    e.cluster_id.as_deref().unwrap_or("-")
                );
            }
        }
        Response::Text(t) | Response::Config(t) => print!("{t}"),
        Response::Accepted(what) => println!("{what} accepted"),
        Response::Applied(a) => {
            if a.changes.is_empty() {
                println!("unchanged: the node runs this config already");
            }
            for t in &a.changes.live {
                let failed = a.failed.iter().find(|f| f.starts_with(&format!("{t}:")));
                match failed {
                    Some(f) => println!("not applied {f}"),
                    None => println!("applied    {t}"),
                }
            }
            for t in &a.changes.reboot {
                println!("on reboot  {t}");
            }
        }
        Response::Error(e) => {
            eprintln!("error: the node answered: {e}");
            return Ok(1);
        }
        Response::Blob(b) => anyhow::bail!("unexpected snapshot answer ({} bytes)", b.bytes),
    }
    Ok(0)
}

/// `import`: the archive rewrapped as the builder preloads a user's (its
/// linux/amd64 image only, under `name`, every blob checked), written to a
/// temporary file, sent, and the node's digest compared with ours.
fn import(
    addr: &str,
    server_name: Option<&str>,
    timeout: Duration,
    admin: &AdminConfig,
    file: &std::path::Path,
    name: &str,
) -> anyhow::Result<i32> {
    if !contract::api::is_image_reference(name) {
        anyhow::bail!("--name {name:?} is not an image reference ([registry/]name[:tag])");
    }
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let image = nodeimg::oci::archive::rewrap(name, &data, 0)
        .with_context(|| format!("{} is not an image archive to import", file.display()))?;
    let tmp = tempfile::NamedTempFile::new().context("a temporary file for the archive")?;
    std::fs::write(tmp.path(), &image.archive)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    let blob = node::blob::describe(tmp.path())?;
    let answer = node::blob::send(
        addr,
        server_name,
        &Trust::from(admin),
        &Request::Import(blob),
        tmp.path(),
        timeout,
    )
    .with_context(|| format!("importing {} on {addr}", file.display()))?;
    match answer {
        Response::Text(t) => {
            let digest = t.split_whitespace().nth(1).unwrap_or_default();
            if digest != image.manifest_digest {
                anyhow::bail!(
                    "the node imported {} as {digest:?}, not {}",
                    file.display(),
                    image.manifest_digest
                );
            }
            print!("{t}");
            Ok(0)
        }
        Response::Error(e) => {
            eprintln!("error: the node answered: {e}");
            Ok(1)
        }
        other => anyhow::bail!("unexpected answer to import: {other:?}"),
    }
}
