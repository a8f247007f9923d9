//! `nodeimg lab up`: every node of a lab definition (`definition.rs`)
//! booted at once on ONE lab network (one namespace and bridge, a tap
//! each, the lab host's NTP server, a loopback forward to each node API),
//! each with its machine config rendered from a cluster directory (its
//! role, hostname and lab address; the lab NIC's static address and the
//! lab host as time server added). It waits for every node's report, then
//! keeps the VMs up for `hold` (a node that powers off by itself, e.g. by
//! the API's `shutdown`, ends early), and powers off what still runs.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use contract::config::{Interface, MachineConfig, Role};
use time::OffsetDateTime;

use super::definition::{ConfigVia, NodePlan, NodeRole};
use super::{boot_direct, network, Accel, BootOptions, BootOutcome, LabError};
use crate::cluster::{self, NodeSpec};
use crate::manifest::Manifest;

/// How the lab runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The cluster directory (`nodeimg cluster init`) the configs come from.
    pub cluster: PathBuf,
    /// How long the VMs stay up after every node reported.
    pub hold: Duration,
    /// Each node's boot-to-report limit.
    pub timeout: Duration,
    pub accel: Accel,
}

/// One node: where it is, and how its boot went.
#[derive(Debug)]
pub struct NodeUp {
    pub name: String,
    pub address: Ipv4Addr,
    pub api_port: u16,
    pub outcome: Result<BootOutcome, LabError>,
}

/// The node's machine config: rendered from the cluster directory, with
/// the lab NIC (by its fixed MAC) on its static address and the lab host
/// as time server.
pub fn node_config(cluster_dir: &Path, plan: &NodePlan) -> Result<String, LabError> {
    let err = |what: String| LabError::Node {
        node: plan.name.clone(),
        what,
    };
    let spec = NodeSpec {
        hostname: plan.name.clone(),
        role: match plan.role {
            NodeRole::ControlPlane => Role::ControlPlane,
            NodeRole::Worker => Role::Worker,
        },
        addresses: vec![plan.address.into()],
    };
    let text =
        cluster::machine_config(cluster_dir, &spec, OffsetDateTime::now_utc()).map_err(|e| {
            err(format!(
                "rendering its config: {}",
                crate::util::error::chain(&e)
            ))
        })?;
    let mut c = MachineConfig::from_toml(&text, &plan.name).map_err(|e| err(e.to_string()))?;
    c.network.interfaces = vec![Interface {
        mac: Some(network::mac(plan.index)),
        addresses: vec![format!("{}/{}", plan.address, network::PREFIX)],
        ..Interface::default()
    }];
    c.time.servers = vec![network::HOST.to_string()];
    c.to_toml().map_err(|e| err(e.to_string()))
}

/// A loopback port free now.
fn free_port() -> Result<u16, LabError> {
    let io = |source| LabError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    };
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).map_err(io)?;
    Ok(l.local_addr().map_err(io)?.port())
}

/// Boots every node of `plans`; returns each node's outcome, in order.
/// `on_ports` hears each node's API port before the boots start.
pub fn up(
    plans: &[NodePlan],
    opts: &UpOptions,
    on_ports: impl Fn(&NodePlan, u16),
) -> Result<Vec<NodeUp>, LabError> {
    let work = tempfile::tempdir().map_err(|source| LabError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let mut configs = Vec::new();
    for p in plans {
        let path = work.path().join(format!("{}.toml", p.name));
        if p.config != ConfigVia::None {
            let text = node_config(&opts.cluster, p)?;
            crate::cluster::write_file(&path, text.as_bytes(), 0o600, true).map_err(|e| {
                LabError::Node {
                    node: p.name.clone(),
                    what: crate::util::error::chain(&e),
                }
            })?;
        }
        let manifest = Manifest::read(&p.image).map_err(|e| LabError::Node {
            node: p.name.clone(),
            what: format!("reading its image {}: {e}", p.image.display()),
        })?;
        configs.push((path, manifest));
    }
    let mut ports = Vec::new();
    for p in plans {
        ports.push(match p.api_port {
            Some(port) => port,
            None => free_port()?,
        });
    }
    let forwards: Vec<network::Forward> = plans
        .iter()
        .zip(&ports)
        .map(|(p, port)| network::Forward {
            port: *port,
            address: p.address,
        })
        .collect();
    let net = network::LabNetwork::up(plans.len(), &forwards).map_err(LabError::LabNetwork)?;
    for (p, port) in plans.iter().zip(&ports) {
        on_ports(p, *port);
    }
    let outcomes: Vec<Result<BootOutcome, LabError>> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .zip(&configs)
            .map(|(p, (config, manifest))| {
                let boot = BootOptions {
                    timeout: opts.timeout,
                    memory_mib: p.memory_mib,
                    state_size: p.state_bytes,
                    accel: opts.accel,
                    config: (p.config == ConfigVia::FwCfg).then(|| config.clone()),
                    config_drive: (p.config == ConfigVia::ConfigDrive).then(|| config.clone()),
                    shared_tap: net.nic(p.index),
                    wait_shutdown: Some(opts.hold),
                    ..BootOptions::default()
                };
                s.spawn(move || boot_direct(&p.image, manifest, &boot))
            })
            .collect();
        handles
            .into_iter()
            .zip(plans)
            .map(|(h, p)| {
                h.join().unwrap_or_else(|_| {
                    Err(LabError::Node {
                        node: p.name.clone(),
                        what: "its boot thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    drop(net);
    Ok(plans
        .iter()
        .zip(ports)
        .zip(outcomes)
        .map(|((p, api_port), outcome)| NodeUp {
            name: p.name.clone(),
            address: p.address,
            api_port,
            outcome,
        })
        .collect())
}
