//! The boot report: one console line, `NODEIMG-REPORT ` + compact JSON, that
//! the agent prints and the lab and tests read, and the other console line
//! prefixes. Absent facts are left out rather than guessed; a reader fills
//! what is missing with defaults, so an older report still parses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The report line starts with this (then compact JSON).
pub const REPORT_PREFIX: &str = "NODEIMG-REPORT ";
/// A failed phase: `NODEIMG-ERROR <phase>: <cause>`.
pub const ERROR_PREFIX: &str = "NODEIMG-ERROR ";
/// A problem that did not fail the boot: `NODEIMG-WARN <phase>: <text>`.
pub const WARN_PREFIX: &str = "NODEIMG-WARN ";
/// Just before the reboot syscall: `NODEIMG-SHUTDOWN poweroff|reboot`.
pub const SHUTDOWN_PREFIX: &str = "NODEIMG-SHUTDOWN ";

/// The verity target's verdict, as the report spells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerityState {
    /// Status `V`: every block read so far matched the tree.
    Verified,
    /// Status `C`: a block failed its hash check.
    Corrupted,
    /// No verity device (or no readable status).
    #[default]
    None,
}

impl VerityState {
    pub fn as_str(self) -> &'static str {
        match self {
            VerityState::Verified => "verified",
            VerityState::Corrupted => "corrupted",
            VerityState::None => "none",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RootReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    pub verity: VerityState,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StateReport {
    /// The device mounted on `/var`.
    pub device: String,
    /// `nodeimg.state=auto`: the state partition's node (as `device`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `nodeimg.state=auto`: the disk holding the root and the state partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// `true` when this boot added the state partition to the GPT.
    pub created: bool,
    /// Size of the partition before this boot grew it (the disk grew).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grown_from_bytes: Option<u64>,
    /// Size of the device (the partition, after any growth).
    pub size_bytes: u64,
    /// `true` when this boot ran mke2fs (first boot of the disk).
    pub formatted: bool,
    /// `true` when this boot grew the file system (`resize2fs`, online).
    pub resized: bool,
    /// Boots this disk has seen, this one included.
    pub boot_count: u64,
}

/// systemd-boot's boot counting, as stage 2 found and left it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootEntryReport {
    /// `LoaderBootCountPath` as the boot loader set it (`\EFI\Linux\x+2-1.efi`);
    /// `null` when there is no such variable.
    pub path: Option<String>,
    /// `true` when the entry now carries no counter (this boot renamed it,
    /// or an earlier one did).
    pub blessed: bool,
    pub note: String,
}

/// The report. Serialised field order is the order here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub kernel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid1: Option<String>,
    pub root: RootReport,
    pub sysctl: BTreeMap<String, String>,
    pub cmdline: String,
    pub modules: Vec<String>,
    /// The node's clock (Unix ms) when the node API answered `status`
    /// with this report (not in the console's report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_unix_ms: Option<i64>,
    /// `kernel.modules_disabled` as the agent left it once every module the
    /// image lists was loaded: `true` means no module can be loaded until
    /// the next boot (`None`: not reached yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules_disabled: Option<bool>,
    /// What is mounted on `/var`: `tmpfs` or the state disk's file system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub var: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<StateReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loopback: Option<bool>,
    /// Present once the bless-boot phase ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_entry: Option<BootEntryReport>,
    /// Problems that did not fail the boot, as `<phase>: <text>`; each is
    /// also printed as a `NODEIMG-WARN <phase>: <text>` line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `sha256:<hex>` of the image's update trust root
    /// ([`crate::paths::UPDATE_SIGNING_KEY`], from the build's
    /// `--sign-key`): the key A/B updates must be signed with. Absent when
    /// the image was built unsigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_key: Option<String>,
    /// Milliseconds since boot (CLOCK_BOOTTIME) at each milestone.
    pub stage_ms: BTreeMap<String, u64>,
    /// Where this boot's machine config came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigReport>,
    /// The node's links, addresses, gateway and DNS; absent before
    /// networking ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetReport>,
    /// The clock: whether it is synchronised, to which server, by how much
    /// it was stepped; absent when the node has no time server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeReport>,
    /// Images imported into containerd and the confinement probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeReport>,
    /// The supervised services, in start order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceReport>,
    /// nodeagent's resident memory (KiB) when the report was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_rss_kib: Option<u64>,
    /// A control-plane node's etcd member, apart from `ready`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<crate::etcd::EtcdReport>,
    /// The node's Kubernetes (images that carry kubelet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<crate::kube::KubeReport>,
}

/// How an address was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Obtained {
    Dhcp,
    Static,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressReport {
    /// `10.0.2.15/24`.
    pub address: String,
    pub source: Obtained,
}

/// What one link ended up with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceReport {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub addresses: Vec<AddressReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::IpAddr>,
    /// The DHCP lease's length in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u32>,
    /// NTP servers the DHCP lease named (option 42).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp: Vec<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The boot report's `network`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetReport {
    pub interfaces: Vec<InterfaceReport>,
    /// The host name DHCP gave, when this boot set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Failures that concern no single link (netlink, a plan matching no
    /// link, writing resolv.conf).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl NetReport {
    /// Every failure, for one warning line each.
    pub fn problems(&self) -> Vec<String> {
        self.interfaces
            .iter()
            .filter_map(|i| i.error.as_ref().map(|e| format!("{}: {e}", i.name)))
            .chain(self.errors.iter().cloned())
            .collect()
    }
}

/// The clock after the boot's first time sync (the agent keeps syncing
/// in the background; this is what the report saw).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeReport {
    /// The clock was set from a server and the kernel marked synchronised.
    pub synchronised: bool,
    /// `config` (`[time] servers`) or `dhcp` (option 42).
    pub source: String,
    /// The servers asked, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// The server the clock was set from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The correction applied, in milliseconds (server minus node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<i64>,
    /// `step` (clock_settime) or `slew` (adjtimex, for offsets ≤ 0.5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stratum: Option<u8>,
    /// The exchange's round trip, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_us: Option<u64>,
    /// The node's clock (Unix ms) just after the correction, and its
    /// uptime (ms, as `stage_ms`) at that moment: with both, a reader can
    /// tell the node's clock at any later milestone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at_unix_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at_ms: Option<u64>,
    /// Milliseconds from the network being up to the clock being set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_ms: Option<u64>,
    /// Why the clock is not synchronised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where the machine config came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReport {
    /// `fw-cfg`, `config-drive`, `url`, `stored`, `applied` (a config
    /// applied through the node API, which replaces the boot source's) or
    /// `none`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `url`: where it was fetched from (without the `#sha256=` pin, which
    /// `sha256` repeats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `sha256:<hex>` of the config text, so configs can be compared
    /// without showing their secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `applied`: the `sha256:` of the boot source's config it replaces
    /// (that source is still delivered; a different one would win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// Tables of a config applied through the API since this boot that
    /// take effect at the next boot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_reboot: Vec<String>,
}

impl ConfigReport {
    pub fn none() -> ConfigReport {
        ConfigReport {
            source: "none".into(),
            ..ConfigReport::default()
        }
    }
}

/// A service's state as the supervisor sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    /// Waits for the services it runs after.
    #[default]
    Pending,
    /// Waits for the machine config or the cluster (`start = config|cluster`).
    Waiting,
    Starting,
    Ready,
    /// Exited; restarts after a delay.
    Backoff,
    /// Exited too often: restarts go on at the longest delay; the node is not ready.
    CrashLoop,
    /// Exited and not to be restarted (policy), or could not be started.
    Failed,
    Stopped,
}

/// One service's line in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub name: String,
    pub state: ServiceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default)]
    pub restarts: u32,
    /// Milliseconds from the last start to ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The running process's resident memory (KiB) when the report was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kib: Option<u64>,
    /// CPU time (user + system, ms) the running process has used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
}

/// An image containerd imported at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageReport {
    pub name: String,
    pub digest: String,
    pub imported: bool,
    /// How long `ctr images import` took, digest check included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_ms: Option<u64>,
}

/// What the confinement probe saw of itself inside a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    pub uid: String,
    pub cap_eff: String,
    pub seccomp: String,
    pub no_new_privs: String,
    pub root_writable: bool,
}

impl Confinement {
    /// Non-root, no effective capability, seccomp filtering (mode 2),
    /// no_new_privs, read-only root: anything else is a confinement failure.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.uid == "0" {
            out.push("runs as uid 0".to_string());
        }
        if !self.cap_eff.trim_start_matches('0').is_empty() {
            out.push(format!("effective capabilities {}", self.cap_eff));
        }
        if self.seccomp != "2" {
            out.push(format!("seccomp mode {}", self.seccomp));
        }
        if self.no_new_privs != "1" {
            out.push("no_new_privs off".to_string());
        }
        if self.root_writable {
            out.push("/ is writable".to_string());
        }
        out
    }
}

/// containerd's images and the confinement check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeReport {
    #[serde(default)]
    pub images: Vec<ImageReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<Confinement>,
    /// How long the confinement probe took: `ctr run` to its exit (the
    /// container made, the shim and runc started, the probe run, all
    /// removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_ms: Option<u64>,
    /// `true` when the probe was confined and every image imported so far
    /// is in with its digest (the sandbox image first, at boot; the others
    /// after the report, listed in `importing` until they are in).
    #[serde(default)]
    pub ok: bool,
    /// Images still being imported (a big add-on image takes a minute
    /// under emulation; kubelet retries a pod of one not in yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub importing: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a console line is not a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the line does not start with {REPORT_PREFIX:?}")]
    NoPrefix,
    #[error("the boot report is not the JSON object the contract describes")]
    Json(#[source] serde_json::Error),
}

impl Report {
    pub fn new(kernel: String, cmdline: String) -> Report {
        Report {
            kernel,
            cmdline,
            ..Report::default()
        }
    }

    /// The console line (no newline). Serialising these types cannot fail; if it
    /// ever did, the line still parses and says so.
    pub fn line(&self) -> String {
        match serde_json::to_string(self) {
            Ok(json) => format!("{REPORT_PREFIX}{json}"),
            Err(e) => format!(
                "{REPORT_PREFIX}{{\"ready\":false,\"error\":{:?}}}",
                e.to_string()
            ),
        }
    }

    /// Reads a report line (`NODEIMG-REPORT {json}`, surrounding whitespace
    /// and a trailing `\r` allowed). Unknown fields are ignored, so a newer
    /// agent's report still reads.
    pub fn parse_line(line: &str) -> Result<Report, ReportError> {
        let json = line
            .trim()
            .strip_prefix(REPORT_PREFIX.trim_end())
            .ok_or(ReportError::NoPrefix)?;
        Report::from_json(json)
    }

    /// Reads the JSON object of a report.
    pub fn from_json(json: &str) -> Result<Report, ReportError> {
        serde_json::from_str(json.trim()).map_err(ReportError::Json)
    }
}

/// `NODEIMG-ERROR <phase>: <cause>` on one line.
pub fn error_line(phase: &str, cause: &str) -> String {
    format!(
        "{ERROR_PREFIX}{phase}: {}",
        cause.replace(['\n', '\r'], " ")
    )
}

/// `NODEIMG-WARN <phase>: <text>` on one line (`warning` is `<phase>: <text>`).
pub fn warn_line(warning: &str) -> String {
    format!("{WARN_PREFIX}{}", warning.replace(['\n', '\r'], " "))
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
