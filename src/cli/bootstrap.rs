//! `nodeimg cluster bootstrap --node ADDR:PORT --nodeconfig FILE`: the one
//! call that starts a new etcd cluster on one control-plane node (the node
//! API's `bootstrap`). The node refuses it when its etcd already holds data
//! or a configured member already serves a cluster. What the node did goes
//! to stdout; a refusal exits 1.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use contract::api::{Request, Response};
use nodeimg::cluster::object_store::ObjectStore;
use nodeimg::cluster::{AdminConfig, ClusterDir};
use nodeimg::node::{self, Trust};

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The control-plane node's API, HOST:PORT (port 50000 on the node).
    #[arg(long, env = "NODEIMG_NODE")]
    node: String,
    /// The admin identity `nodeimg cluster init` wrote (admin.nodeconfig).
    #[arg(long, env = "NODEIMG_NODECONFIG")]
    nodeconfig: PathBuf,
    /// The name the node's certificate must carry (default: the host of --node).
    #[arg(long)]
    server_name: Option<String>,
    /// Seconds to wait for the answer: the node answers once etcd is
    /// healthy and holds the cluster's name (up to three minutes under TCG).
    #[arg(long, default_value_t = 240)]
    timeout: u64,
    /// Restore the cluster from this etcd snapshot (`nodeimg node
    /// etcd-snapshot`) instead of starting it empty: the node checks its
    /// sha256, restores it as a cluster of one, and the other members join.
    #[arg(long, value_name = "FILE", conflicts_with = "from_store")]
    from_snapshot: Option<PathBuf>,
    /// Restore from the cluster's object store instead (`[backup_targets.s3]`
    /// of this cluster directory, with its credentials file): the newest
    /// snapshot there, downloaded and checked against the sha256 stored
    /// with it, then sent as `--from-snapshot` sends a file.
    #[arg(long, value_name = "DIR")]
    from_store: Option<PathBuf>,
    /// With --from-store: this object's key instead of the newest.
    #[arg(long, value_name = "KEY", requires = "from_store")]
    object: Option<String>,
    /// With --from-store: the store's endpoint as this machine reaches it
    /// (`https://HOST[:PORT]`), when that is not the one the nodes dial.
    #[arg(long, value_name = "URL", requires = "from_store")]
    store_endpoint: Option<String>,
}

pub fn run(a: BootstrapArgs) -> anyhow::Result<i32> {
    let admin = AdminConfig::read(&a.nodeconfig)?;
    let answer = match (&a.from_snapshot, &a.from_store) {
        (Some(file), _) => restore(&a, &admin, file)?,
        (None, Some(dir)) => {
            let tmp = tempfile::tempdir().context("a temporary directory")?;
            let file = tmp.path().join("snapshot.db");
            let mut target = ClusterDir::load(dir)?.s3_upload()?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: names no [backup_targets.s3]",
                    dir.join("cluster.toml").display()
                )
            })?;
            if let Some(endpoint) = &a.store_endpoint {
                target.endpoint = endpoint.clone();
                if let Some(p) = target.problems("--store-endpoint").into_iter().next() {
                    anyhow::bail!("{}: {}", p.key, p.message);
                }
            }
            let (key, sha) = ObjectStore::new(&target)?.download(a.object.as_deref(), &file)?;
            eprintln!(
                "downloaded {key} from s3://{}/ (sha256 {sha}, as stored with it)",
                target.bucket
            );
            restore(&a, &admin, &file)?
        }
        (None, None) => call(&a.node, a.server_name.as_deref(), &admin, a.timeout)?,
    };
    match answer {
        Ok(t) => {
            print!("{t}");
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: the node answered: {e}");
            Ok(1)
        }
    }
}

/// The bootstrap from `file`: its hash announced, its bytes sent.
fn restore(
    a: &BootstrapArgs,
    admin: &AdminConfig,
    file: &std::path::Path,
) -> anyhow::Result<Result<String, String>> {
    let blob = node::blob::describe(file)?;
    blob.check()
        .map_err(|why| anyhow::anyhow!("{}: {why}", file.display()))?;
    let answer = node::blob::send(
        &a.node,
        a.server_name.as_deref(),
        &Trust::from(admin),
        &Request::Restore(blob),
        file,
        Duration::from_secs(a.timeout),
    )
    .with_context(|| format!("bootstrap from {} on {}", file.display(), a.node))?;
    match answer {
        Response::Text(t) => Ok(Ok(t)),
        Response::Error(e) => Ok(Err(e)),
        other => anyhow::bail!("unexpected answer to bootstrap: {other:?}"),
    }
}

/// The bootstrap request: `Ok(what the node did)`, or `Err(its refusal)`;
/// the outer error is a failed call.
pub fn call(
    node: &str,
    server_name: Option<&str>,
    admin: &AdminConfig,
    timeout: u64,
) -> anyhow::Result<Result<String, String>> {
    let answer = node::request(
        node,
        server_name,
        &Trust::from(admin),
        &Request::Bootstrap,
        Duration::from_secs(timeout),
    )
    .with_context(|| format!("bootstrap on {node}"))?;
    match answer {
        Response::Text(t) => Ok(Ok(t)),
        Response::Error(e) => Ok(Err(e)),
        other => anyhow::bail!("unexpected answer to bootstrap: {other:?}"),
    }
}
