//! `lab up`'s first half, before any VM: a fresh run directory with each
//! node's machine config rendered from the cluster directory and the
//! resolved lab (`plan.json`) for the supervisor.
//!
//! A node's config is what `nodeimg cluster config DIR --role R
//! --hostname NAME --address IP` makes, plus what the lab network needs:
//! the lab NIC (by its fixed MAC) with the node's static address, and the
//! lab host as time server.

use std::net::IpAddr;
use std::path::Path;

use contract::config::{Interface, MachineConfig};
use time::OffsetDateTime;

use super::{io, node_dir, write_atomic, RunPlan, UpError, PLAN_FILE, SOCKET, STATE_FILE};
use crate::cluster::{self, NodeSpec};
use crate::lab::definition::{ConfigDelivery, NodePlan};
use crate::lab::network;

/// The file a node's machine config is rendered to.
pub fn config_path(run_dir: &Path, node: &str) -> std::path::PathBuf {
    node_dir(run_dir, node).join("config.toml")
}

/// One node's machine config: rendered from `cluster` for its role,
/// hostname and lab address, then given its lab NIC and time server.
pub fn render_config(
    cluster: &Path,
    node: &NodePlan,
    now: OffsetDateTime,
) -> Result<String, UpError> {
    let spec = NodeSpec {
        hostname: node.name.clone(),
        role: node.role,
        addresses: vec![IpAddr::V4(node.address)],
    };
    let text = cluster::machine_config(cluster, &spec, now).map_err(|source| UpError::Cluster {
        node: node.name.clone(),
        source: Box::new(source),
    })?;
    let file = format!("{} (rendered)", node.name);
    let bad = |source| UpError::Config {
        node: node.name.clone(),
        source: Box::new(source),
    };
    let mut c = MachineConfig::from_toml(&text, &file).map_err(bad)?;
    c.network.interfaces = vec![Interface {
        mac: Some(network::mac(node.index)),
        addresses: vec![format!("{}/{}", node.address, network::PREFIX)],
        ..Interface::default()
    }];
    c.time.servers = vec![network::HOST.to_string()];
    let text = c.to_toml().map_err(|e| UpError::Invalid {
        path: file.clone().into(),
        message: e.to_string(),
    })?;
    // what the node will read passes the node's own check here first
    MachineConfig::from_toml(&text, &file).map_err(bad)?;
    Ok(text)
}

/// Makes `run_dir` ready for a supervisor: refuses one where a lab runs,
/// clears what an earlier run left (state disks included: `lab up` boots
/// fresh machines), checks every image's manifest, renders the configs
/// and writes `plan.json`.
pub fn prepare(
    plan: &RunPlan,
    cluster: &Path,
    run_dir: &Path,
    now: OffsetDateTime,
) -> Result<(), UpError> {
    if let Ok(state) = super::read_state(run_dir) {
        if !state.down && super::supervisor_alive(state.supervisor_pid, run_dir) {
            return Err(UpError::Running {
                run_dir: run_dir.to_path_buf(),
                pid: state.supervisor_pid,
            });
        }
    }
    super::check_socket_path(&run_dir.join(SOCKET))?;
    for n in &plan.lab.nodes {
        super::check_socket_path(&node_dir(run_dir, &n.name).join("qmp.sock"))?;
        crate::manifest::Manifest::read(&n.image).map_err(|e| UpError::Invalid {
            path: n.image.clone(),
            message: format!("the image of node {}: {e}", n.name),
        })?;
    }
    std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
    for stale in [STATE_FILE, SOCKET] {
        let p = run_dir.join(stale);
        if p.exists() {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    for stale in ["nodes", "images"] {
        let p = run_dir.join(stale);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(io(&p))?;
        }
    }
    for n in &plan.lab.nodes {
        let dir = node_dir(run_dir, &n.name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        if n.config != ConfigDelivery::None {
            let text = render_config(cluster, n, now)?;
            write_atomic(&config_path(run_dir, &n.name), text.as_bytes(), 0o600)?;
        }
    }
    let json = serde_json::to_vec_pretty(plan).map_err(|e| UpError::Invalid {
        path: run_dir.join(PLAN_FILE),
        message: e.to_string(),
    })?;
    write_atomic(&run_dir.join(PLAN_FILE), &json, 0o644)
}
