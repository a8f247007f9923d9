//! Lab definitions: one TOML file per lab in `qemu/` (`qemu/ha.toml`),
//! naming the nodes `nodeimg lab up` boots on one lab network, the image
//! each boots, its memory and state disk, and how it gets its machine
//! config. See `qemu/README.md` for the format.
//!
//! Read like the machine config: `schema` first, unknown keys refused,
//! every error naming the file and the key (through the contract's
//! [`parse_versioned`]).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use contract::config::{parse_versioned, ConfigError, Problem, Role};
use serde::{Deserialize, Serialize};

use super::network;

/// The schema this build reads.
pub const LAB_SCHEMA: u32 = 1;
/// The most virtual CPUs a node may have (`-smp`).
const MAX_CPUS: u32 = 16;

fn one_cpu() -> u32 {
    1
}

/// Guest memory when neither the node nor `[defaults]` names it.
pub const DEFAULT_MEMORY_MIB: u32 = 1024;
/// State disk size when neither the node nor `[defaults]` names it.
pub const DEFAULT_STATE_SIZE: &str = "1G";
const MIN_MEMORY_MIB: u32 = 256;
const MIN_STATE_SIZE: u64 = 64 << 20;

/// A lab file as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabDef {
    pub schema: u32,
    /// The lab's name (a DNS label): its run directory's name.
    pub name: String,
    /// The build output directory every node boots unless it names its
    /// own; relative paths are relative to the repository (the directory
    /// above the lab file's).
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub defaults: Defaults,
    pub nodes: Vec<NodeDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Guest memory in MiB.
    pub memory: u32,
    /// State disk size: bytes, or with a K/M/G/T suffix (`"2G"`).
    pub state_size: String,
    pub accel: AccelDef,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            memory: DEFAULT_MEMORY_MIB,
            state_size: DEFAULT_STATE_SIZE.into(),
            accel: AccelDef::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccelDef {
    Auto,
    Tcg,
    Kvm,
}

impl AccelDef {
    pub fn accel(self) -> super::Accel {
        match self {
            AccelDef::Auto => super::Accel::Auto,
            AccelDef::Tcg => super::Accel::Tcg,
            AccelDef::Kvm => super::Accel::Kvm,
        }
    }
}

/// How a node gets its machine config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigDelivery {
    /// QEMU's fw_cfg entry `opt/org.nodeimg/config`.
    #[default]
    FwCfg,
    /// A FAT disk labelled NODEIMG holding `config.toml`.
    ConfigDrive,
    /// `nodeimg.config=http://…#sha256=` on the command line, served by
    /// the lab on loopback and reached through a second, restricted user
    /// NIC (the lab network has no DHCP for a node without its config).
    Url,
    /// No config: the node boots, reports `config: none`, and has no
    /// address on the lab network.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDef {
    /// The node's hostname, and its name in `lab status`, `lab kill`.
    pub name: String,
    pub role: Role,
    /// `10.77.0.N` (2..=254) on the lab network.
    pub address: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub memory: Option<u32>,
    /// Virtual CPUs (default 1). Under emulation a node that runs many
    /// busy programs at once (a control plane) uses a second host core
    /// whenever the other nodes leave it idle.
    #[serde(default)]
    pub cpus: Option<u32>,
    #[serde(default)]
    pub state_size: Option<String>,
    #[serde(default)]
    pub config: ConfigDelivery,
}

/// One node with every default applied and paths resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// Position on the lab network: tap `nodeimg-tap{index}`, MAC
    /// [`network::mac`]`(index)`.
    pub index: usize,
    pub name: String,
    pub role: Role,
    pub address: Ipv4Addr,
    pub image: PathBuf,
    /// Virtual CPUs.
    #[serde(default = "one_cpu")]
    pub cpus: u32,
    pub memory_mib: u32,
    pub state_size: u64,
    pub config: ConfigDelivery,
}

/// A checked lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPlan {
    pub name: String,
    pub accel: AccelDef,
    pub nodes: Vec<NodePlan>,
}

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("reading lab file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl LabDef {
    /// Parses and checks `text` (from `file`, named in errors).
    pub fn from_toml(text: &str, file: &str) -> Result<LabDef, ConfigError> {
        let def: LabDef = parse_versioned(text, file, LAB_SCHEMA)?;
        let problems = def.problems();
        contract::config::checked(def, problems, file)
    }

    /// Every check serde cannot express, one [`Problem`] per key.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if let Err(why) = dns_label(&self.name) {
            out.push(Problem::new("name", why));
        }
        if self.nodes.is_empty() {
            out.push(Problem::new("nodes", "a lab needs at least one [[nodes]]"));
        }
        if self.defaults.memory < MIN_MEMORY_MIB {
            out.push(Problem::new(
                "defaults.memory",
                format!("at least {MIN_MEMORY_MIB} MiB"),
            ));
        }
        if let Err(why) = state_size(&self.defaults.state_size) {
            out.push(Problem::new("defaults.state_size", why));
        }
        let mut names = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let key = |k: &str| format!("nodes[{i}].{k}");
            match dns_label(&n.name) {
                Err(why) => out.push(Problem::new(key("name"), why)),
                Ok(()) if !names.insert(n.name.as_str()) => out.push(Problem::new(
                    key("name"),
                    format!("{:?} is named twice", n.name),
                )),
                Ok(()) => {}
            }
            match network::parse_node_address(&n.address) {
                Err(why) => out.push(Problem::new(key("address"), why)),
                Ok(ip) if !addresses.insert(ip) => {
                    out.push(Problem::new(key("address"), format!("{ip} is given twice")))
                }
                Ok(_) => {}
            }
            if n.image.is_none() && self.image.is_none() {
                out.push(Problem::new(
                    key("image"),
                    "no image: give the node one, or the lab a top-level `image`",
                ));
            }
            if n.memory.is_some_and(|m| m < MIN_MEMORY_MIB) {
                out.push(Problem::new(
                    key("memory"),
                    format!("at least {MIN_MEMORY_MIB} MiB"),
                ));
            }
            if let Some(Err(why)) = n.state_size.as_deref().map(state_size) {
                out.push(Problem::new(key("state_size"), why));
            }
            if n.cpus.is_some_and(|c| !(1..=MAX_CPUS).contains(&c)) {
                out.push(Problem::new(key("cpus"), format!("1 to {MAX_CPUS}")));
            }
        }
        // one tap and one MAC per node, numbered in a byte
        if self.nodes.len() > 253 {
            out.push(Problem::new(
                "nodes",
                "at most 253 nodes on one lab network",
            ));
        }
        out
    }

    /// Applies the defaults; relative image paths are taken from `base`.
    pub fn plan(&self, base: &Path) -> LabPlan {
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let default_size = state_size(&self.defaults.state_size).unwrap_or(1 << 30);
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(index, n)| NodePlan {
                index,
                name: n.name.clone(),
                role: n.role,
                address: network::parse_node_address(&n.address).unwrap_or(Ipv4Addr::UNSPECIFIED),
                image: resolve(n.image.as_deref().or(self.image.as_deref()).unwrap_or("")),
                cpus: n.cpus.unwrap_or(1),
                memory_mib: n.memory.unwrap_or(self.defaults.memory),
                state_size: n
                    .state_size
                    .as_deref()
                    .and_then(|s| state_size(s).ok())
                    .unwrap_or(default_size),
                config: n.config,
            })
            .collect();
        LabPlan {
            name: self.name.clone(),
            accel: self.defaults.accel,
            nodes,
        }
    }
}

/// Reads and checks a lab file and resolves it: relative image paths are
/// taken from the repository, the directory above the lab file's
/// (`qemu/ha.toml` → `.`).
pub fn load(path: &Path) -> Result<LabPlan, DefinitionError> {
    let text = std::fs::read_to_string(path).map_err(|source| DefinitionError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let def = LabDef::from_toml(&text, &path.display().to_string())?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(def.plan(&crate::spec::project_dir(&abs)))
}

fn dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-')"
        ))
    }
}

/// `"4G"`, `"512M"`, `"1048576"`: bytes, with an optional binary K/M/G/T
/// suffix; at least 64 MiB.
pub fn state_size(s: &str) -> Result<u64, String> {
    let (num, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => {
                    return Err(format!(
                        "{s:?}: unknown size suffix `{c}` (use K, M, G or T)"
                    ))
                }
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let bytes = n
        .checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes < MIN_STATE_SIZE {
        return Err(format!("{s:?} is below the 64M a state disk needs"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIR: &str = r#"
schema = 1
name = "pair"
image = "out/worker"

[defaults]
memory = 768
state_size = "2G"

[[nodes]]
name = "w1"
role = "worker"
address = "10.77.0.11"

[[nodes]]
name = "w2"
role = "worker"
address = "10.77.0.12/24"
memory = 1024
state_size = "512M"
config = "config-drive"
image = "/abs/other"
"#;

    #[test]
    fn a_lab_resolves_its_defaults_and_images() {
        let def = LabDef::from_toml(PAIR, "pair.toml").unwrap();
        let plan = def.plan(Path::new("/repo"));
        assert_eq!(plan.name, "pair");
        assert_eq!(plan.accel, AccelDef::Auto);
        let (a, b) = (&plan.nodes[0], &plan.nodes[1]);
        assert_eq!(a.image, Path::new("/repo/out/worker"));
        assert_eq!((a.memory_mib, a.state_size), (768, 2 << 30));
        assert_eq!(a.config, ConfigDelivery::FwCfg);
        assert_eq!(a.address, Ipv4Addr::new(10, 77, 0, 11));
        assert_eq!(b.image, Path::new("/abs/other"));
        assert_eq!((b.memory_mib, b.state_size), (1024, 512 << 20));
        assert_eq!((b.index, b.config), (1, ConfigDelivery::ConfigDrive));
        assert_eq!((a.cpus, b.cpus), (1, 1));
    }

    #[test]
    fn a_node_may_have_more_cpus_within_bounds() {
        let two = PAIR.replace("memory = 1024", "memory = 1024\ncpus = 2");
        let lab = LabDef::from_toml(&two, "lab.toml").unwrap();
        let plan = lab.plan(Path::new("/abs"));
        assert_eq!((plan.nodes[0].cpus, plan.nodes[1].cpus), (1, 2));
        for bad in ["cpus = 0", "cpus = 17"] {
            let e = problem_keys(&PAIR.replace("memory = 1024", &format!("memory = 1024\n{bad}")));
            assert!(e.contains("nodes[1].cpus") && e.contains("1 to 16"), "{e}");
        }
    }

    fn problem_keys(text: &str) -> String {
        match LabDef::from_toml(text, "lab.toml") {
            Err(e) => e.to_string(),
            Ok(_) => String::from("accepted"),
        }
    }

    #[test]
    fn bad_labs_are_refused_naming_file_and_key() {
        let unknown = PAIR.replace("memory = 768", "memory = 768\ncpus = 2");
        let e = problem_keys(&unknown);
        assert!(e.starts_with("lab.toml:") && e.contains("defaults"), "{e}");
        assert!(e.contains("cpus"), "{e}");
        let e = problem_keys(&PAIR.replace("schema = 1", "schema = 2"));
        assert!(e.contains("schema = 2 is not supported"), "{e}");
        let e = problem_keys(&PAIR.replace("\"w2\"", "\"w1\""));
        assert!(
            e.contains("nodes[1].name") && e.contains("named twice"),
            "{e}"
        );
        let e = problem_keys(&PAIR.replace("10.77.0.12/24", "10.77.0.11"));
        assert!(e.contains("nodes[1].address") && e.contains("twice"), "{e}");
        let e = problem_keys(&PAIR.replace("10.77.0.12/24", "10.0.2.15"));
        assert!(e.contains("nodes[1].address"), "{e}");
        let e = problem_keys(&PAIR.replace("role = \"worker\"", "role = \"etcd\""));
        assert!(e.contains("nodes[0].role") || e.contains("role"), "{e}");
        let e = problem_keys(&PAIR.replace("\"config-drive\"", "\"floppy\""));
        assert!(e.contains("nodes[1].config"), "{e}");
        let e = problem_keys(&PAIR.replace("\"512M\"", "\"1X\""));
        assert!(e.contains("nodes[1].state_size"), "{e}");
        let e = problem_keys(&PAIR.replace("image = \"out/worker\"\n", ""));
        assert!(
            e.contains("nodes[0].image") && !e.contains("nodes[1].image"),
            "{e}"
        );
        let e = problem_keys(&PAIR.replace("name = \"pair\"", "name = \"Pair_1\""));
        assert!(e.contains("name: \"Pair_1\" is not a DNS label"), "{e}");
    }

    #[test]
    fn the_committed_labs_are_valid() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let ha = load(&repo.join("qemu/ha.toml")).unwrap();
        let roles: Vec<Role> = ha.nodes.iter().map(|n| n.role).collect();
        assert_eq!(
            roles,
            [
                Role::ControlPlane,
                Role::ControlPlane,
                Role::ControlPlane,
                Role::Worker
            ]
        );
        assert!(ha.nodes[0].image.ends_with("out/control-plane"));
        assert!(ha.nodes[3].image.ends_with("out/worker"));
        assert_eq!(ha.nodes[0].image, repo.join("out/control-plane"));
        let pair = load(&repo.join("qemu/pair.toml")).unwrap();
        assert_eq!(pair.nodes.len(), 2);
        assert!(pair.nodes.iter().all(|n| n.role == Role::Worker));
    }
}
