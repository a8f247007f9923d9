//! `cluster config`: one node's machine config from a checked cluster
//! directory. What a node gets depends on its role:
//!
//! - every node: the cluster's name, the control-plane endpoint, the
//!   bootstrap token, the Kubernetes CA's certificate, and its own node-API
//!   certificate and key;
//! - a control-plane node, besides: the etcd, Kubernetes and front-proxy
//!   CAs with their keys (it issues etcd and Kubernetes certificates at
//!   boot), the service-account key pair, the encryption key, the member
//!   list and the etcd backup settings (with the object store's keys,
//!   read from the credentials file `[backup_targets.s3]` names).
//!
//! A worker never gets a CA key, the service-account private key or the
//! encryption key; the contract's checks, run on the rendered text before
//! it is returned, refuse a worker config holding one.

use std::net::IpAddr;

use contract::config::{
    Api, CaPair, Cluster, ClusterControlPlane, EtcdFormation, MachineConfig, Role, Secret, SCHEMA,
};
use time::OffsetDateTime;

use super::issue::{self, Ca};
use super::load::ClusterDir;
use super::ClusterError;

/// What `cluster config` is asked for.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub hostname: String,
    pub role: Role,
    /// The node's addresses, as clients dial it: its API certificate's IP
    /// SANs. A control-plane member's own address is always among them.
    pub addresses: Vec<IpAddr>,
}

fn with_key(ca: &Ca) -> Option<CaPair> {
    Some(CaPair {
        certificate: ca.cert_pem.clone(),
        key: Some(Secret::new(ca.key_pem.clone())),
    })
}

/// The machine config for `spec` (TOML, schema 1), checked by
/// [`MachineConfig::from_toml`] before it is returned.
pub fn render(
    c: &ClusterDir,
    spec: &NodeSpec,
    now: OffsetDateTime,
) -> Result<String, ClusterError> {
    let cfg = &c.config;
    let member = cfg.member(&spec.hostname);
    let mut addresses = spec.addresses.clone();
    match (spec.role, member) {
        (Role::ControlPlane, None) => {
            return Err(ClusterError::NotMember {
                hostname: spec.hostname.clone(),
                path: c.cluster_toml(),
            })
        }
        (Role::ControlPlane, Some(m)) if !addresses.contains(&m.address) => {
            addresses.push(m.address)
        }
        (Role::Worker, Some(_)) => {
            return Err(ClusterError::WorkerIsMember {
                hostname: spec.hostname.clone(),
                path: c.cluster_toml(),
            })
        }
        _ => {}
    }
    let node = issue::server(&c.api_ca, &spec.hostname, &addresses, now)?;
    let mut cluster = Cluster {
        name: cfg.name.clone(),
        control_plane_endpoint: Some(cfg.control_plane_endpoint.clone()),
        bootstrap_token: Some(c.secrets.bootstrap_token.clone()),
        kubernetes_ca: Some(CaPair {
            certificate: c.kubernetes_ca.cert_pem.clone(),
            key: None,
        }),
        etcd_ca: None,
        front_proxy_ca: None,
        // every node knows the API servers' addresses: its local balancer
        // (agent/src/kube/balancer.rs) spreads kubelet and kube-proxy
        // across them; the keys stay on the control plane
        control_plane: Some(ClusterControlPlane {
            members: cfg.control_plane.members.clone(),
            ..Default::default()
        }),
    };
    if spec.role == Role::ControlPlane {
        cluster.kubernetes_ca = with_key(&c.kubernetes_ca);
        cluster.etcd_ca = with_key(&c.etcd_ca);
        cluster.front_proxy_ca = with_key(&c.front_proxy_ca);
        cluster.control_plane = Some(ClusterControlPlane {
            encryption_key: Some(c.secrets.encryption_key.clone()),
            encryption_key_name: c.secrets.encryption_key_name.clone(),
            encryption_read_keys: c.secrets.encryption_read_keys.clone(),
            service_account: Some(c.service_account.clone()),
            etcd_backup: Some(cfg.etcd.backup),
            etcd_backup_s3: c.s3_upload()?,
            etcd_timing: Some(cfg.etcd.timing),
            // absent means the default, so configs rendered before the key
            // existed read the same
            etcd_formation: (cfg.etcd.formation != EtcdFormation::Bootstrap)
                .then_some(cfg.etcd.formation),
            leader_election: Some(cfg.control_plane.leader_election),
            members: cfg.control_plane.members.clone(),
            oidc: cfg.oidc.is_set().then(|| cfg.oidc.clone()),
            api_server: Some(cfg.control_plane.api_server),
            stack: Some(cfg.stack.clone()),
        });
    }
    let config = MachineConfig {
        schema: SCHEMA,
        hostname: spec.hostname.clone(),
        role: spec.role,
        cluster,
        network: Default::default(),
        time: Default::default(),
        api: Api {
            client_ca: c.api_ca.cert_pem.clone(),
            certificate: node.cert_pem,
            key: Secret::new(node.key_pem),
        },
        containerd: Default::default(),
    };
    let text = config.to_toml().map_err(|source| ClusterError::Render {
        what: "the machine config",
        source,
    })?;
    MachineConfig::from_toml(&text, &spec.hostname).map_err(|source| ClusterError::Config {
        hostname: spec.hostname.clone(),
        source,
    })?;
    Ok(text)
}
