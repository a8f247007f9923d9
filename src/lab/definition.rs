//! Lab definitions: one TOML per lab in `qemu/` (the folder the layout
//! keeps for them), naming its nodes, the image each boots, memory and
//! state disk, its address on the lab network and how its machine config
//! reaches it. Read like the other TOML of the project: typed, unknown
//! keys refused, every error naming the file and the key. See
//! qemu/README.md.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::network;

/// The version this build reads.
pub const SCHEMA: u32 = 1;

/// How a node's machine config reaches it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigVia {
    /// QEMU's fw_cfg (`nodeimg lab boot --config`).
    #[default]
    FwCfg,
    /// A FAT drive labelled NODEIMG (`--config-drive`).
    ConfigDrive,
    /// No config: the node boots as the bare image.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    ControlPlane,
    Worker,
}

/// `[defaults]`: what a node does not say itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// A build output directory (manifest.json), relative to the file.
    pub image: Option<PathBuf>,
    pub memory_mib: Option<u32>,
    /// State disk size in MiB.
    pub state_mib: Option<u64>,
}

/// `[[nodes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The node's hostname (and its name in the lab).
    pub name: String,
    pub role: NodeRole,
    /// Its address on the lab network, 10.77.0.2 to .254.
    pub address: Ipv4Addr,
    pub image: Option<PathBuf>,
    pub memory_mib: Option<u32>,
    pub state_mib: Option<u64>,
    #[serde(default)]
    pub config: ConfigVia,
    /// The loopback port forwarded to its node API (default: a free one).
    pub api_port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabDefinition {
    pub schema: u32,
    pub name: String,
    #[serde(default)]
    pub defaults: Defaults,
    pub nodes: Vec<Node>,
}

/// A node with every default applied and paths made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub index: usize,
    pub name: String,
    pub role: NodeRole,
    pub address: Ipv4Addr,
    pub image: PathBuf,
    pub memory_mib: u32,
    pub state_bytes: u64,
    pub config: ConfigVia,
    pub api_port: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{path}: {key}: {why}")]
    Invalid {
        path: PathBuf,
        key: String,
        why: String,
    },
}

impl LabDefinition {
    /// Reads and checks `path`; returns its nodes, defaults applied.
    pub fn read(path: &Path) -> Result<(LabDefinition, Vec<NodePlan>), DefinitionError> {
        let text = std::fs::read_to_string(path).map_err(|source| DefinitionError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let def: LabDefinition = toml::from_str(&text).map_err(|e| DefinitionError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let plans = def
            .plans(base)
            .map_err(|(key, why)| DefinitionError::Invalid {
                path: path.to_path_buf(),
                key,
                why,
            })?;
        Ok((def, plans))
    }

    /// Every node with its defaults, checked: `(key, why)` on the first
    /// problem.
    pub fn plans(&self, base: &Path) -> Result<Vec<NodePlan>, (String, String)> {
        if self.schema != SCHEMA {
            return Err((
                "schema".into(),
                format!("is {}, this build reads {SCHEMA}", self.schema),
            ));
        }
        if self.nodes.is_empty() {
            return Err(("nodes".into(), "a lab needs at least one node".into()));
        }
        let mut out: Vec<NodePlan> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let key = |k: &str| format!("nodes[{i}].{k}");
            let label_ok = !n.name.is_empty()
                && n.name.len() <= 63
                && n.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !n.name.starts_with('-')
                && !n.name.ends_with('-');
            if !label_ok {
                return Err((
                    key("name"),
                    format!("{:?} is not a host name label", n.name),
                ));
            }
            network::parse_node_address(&n.address.to_string())
                .map_err(|why| (key("address"), why))?;
            if let Some(other) = out
                .iter()
                .find(|p| p.name == n.name || p.address == n.address)
            {
                return Err((
                    key("name"),
                    format!("{} / {} is also node {}", n.name, n.address, other.name),
                ));
            }
            let image = n
                .image
                .clone()
                .or_else(|| self.defaults.image.clone())
                .ok_or_else(|| (key("image"), "no image here nor in [defaults]".to_string()))?;
            out.push(NodePlan {
                index: i,
                name: n.name.clone(),
                role: n.role,
                address: n.address,
                image: base.join(image),
                memory_mib: n.memory_mib.or(self.defaults.memory_mib).unwrap_or(1024),
                state_bytes: n.state_mib.or(self.defaults.state_mib).unwrap_or(1024) << 20,
                config: n.config,
                api_port: n.api_port,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<NodePlan>, String> {
        let def: LabDefinition = toml::from_str(text).map_err(|e| e.to_string())?;
        def.plans(Path::new("/repo/qemu"))
            .map_err(|(k, why)| format!("{k}: {why}"))
    }

    const PAIR: &str = r#"
schema = 1
name = "pair"
[defaults]
image = "../out/worker"
memory_mib = 768
[[nodes]]
name = "worker-1"
role = "worker"
address = "10.77.0.11"
[[nodes]]
name = "worker-2"
role = "worker"
address = "10.77.0.12"
config = "config-drive"
memory_mib = 1024
"#;

    #[test]
    fn a_good_lab_reads_with_its_defaults() {
        let p = parse(PAIR).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].image, Path::new("/repo/qemu/../out/worker"));
        assert_eq!((p[0].memory_mib, p[1].memory_mib), (768, 1024));
        assert_eq!(p[0].config, ConfigVia::FwCfg);
        assert_eq!(p[1].config, ConfigVia::ConfigDrive);
        assert_eq!(p[1].state_bytes, 1 << 30);
    }

    #[test]
    fn each_mistake_names_its_key() {
        for (from, to, want) in [
            ("10.77.0.12", "10.77.0.11", "nodes[1].name"),
            ("10.77.0.12", "10.77.0.1", "nodes[1].address"),
            ("10.77.0.12", "10.0.0.5", "nodes[1].address"),
            ("\"worker-2\"", "\"Worker_2\"", "nodes[1].name"),
            ("schema = 1", "schema = 2", "schema"),
            ("memory_mib = 1024", "memroy_mib = 1024", "memroy_mib"),
            ("image = \"../out/worker\"", "", "nodes[0].image"),
        ] {
            let text = PAIR.replace(from, to);
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{from} -> {to}: {e}");
        }
    }

    #[test]
    fn the_committed_labs_read() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("qemu");
        for name in ["ha.toml", "pair.toml"] {
            let (def, plans) = LabDefinition::read(&dir.join(name)).unwrap();
            assert_eq!(def.nodes.len(), plans.len(), "{name}");
        }
    }
}
