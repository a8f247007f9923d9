//! The boot report: one console line, `NODEIMG-REPORT ` + compact JSON, that the
//! lab and tests read. Also the matching failure line. Fields are documented in
//! issue 3; absent facts are left out rather than guessed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::verity::VerityState;

pub const REPORT_PREFIX: &str = "NODEIMG-REPORT ";
pub const ERROR_PREFIX: &str = "NODEIMG-ERROR ";
pub const WARN_PREFIX: &str = "NODEIMG-WARN ";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RootReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    pub verity: VerityState,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
    /// Boots this disk has seen, this one included (`/var/lib/nodeimg/boot-count`).
    pub boot_count: u64,
}

/// systemd-boot's boot counting, as stage 2 found and left it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BootEntryReport {
    /// `LoaderBootCountPath` as the boot loader set it (`\EFI\Linux\x+2-1.efi`);
    /// absent when there is no such variable.
    pub path: Option<String>,
    /// `true` when the entry now carries no counter (this boot renamed it,
    /// or an earlier one did).
    pub blessed: bool,
    pub note: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub var: Option<&'static str>,
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
    /// (`/usr/lib/nodeimg/update-signing.pub`, from the build's
    /// `--sign-key`): the key A/B updates must be signed with. Absent when
    /// the image was built unsigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_key: Option<String>,
    /// Where this boot's machine config came from (`config_source.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::config_source::ConfigReport>,
    /// The node's links, addresses, gateway and DNS (`net/`); absent
    /// before networking ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::net::NetReport>,
    /// Images imported into containerd and the confinement probe (`runtime.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::runtime::RuntimeReport>,
    /// The supervised services, in start order (see `services/`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<crate::services::supervisor::ServiceReport>,
    /// Milliseconds since boot (CLOCK_BOOTTIME) at each milestone.
    pub stage_ms: BTreeMap<&'static str, u64>,
}

impl Report {
    pub fn new(kernel: String, cmdline: String) -> Report {
        Report {
            ready: false,
            error: None,
            kernel,
            pid1: None,
            root: RootReport {
                device: None,
                fstype: None,
                read_only: None,
                verity: VerityState::None,
            },
            sysctl: BTreeMap::new(),
            cmdline,
            modules: Vec::new(),
            var: None,
            state: None,
            hostname: None,
            loopback: None,
            boot_entry: None,
            warnings: Vec::new(),
            update_key: None,
            services: Vec::new(),
            runtime: None,
            config: None,
            network: None,
            stage_ms: BTreeMap::new(),
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
mod tests {
    use super::*;

    #[test]
    fn ready_report_shape() {
        let mut r = Report::new("6.12.117+deb13-amd64".into(), "console=ttyS0".into());
        r.ready = true;
        r.pid1 = Some("/usr/sbin/nodeagent".into());
        r.root = RootReport {
            device: Some("/dev/mapper/nodeimg-root".into()),
            fstype: Some("squashfs".into()),
            read_only: Some(true),
            verity: VerityState::Verified,
        };
        r.sysctl.insert("kernel.panic".into(), "10".into());
        r.var = Some("tmpfs");
        r.stage_ms.insert("report", 5000);
        let line = r.line();
        let json = line.strip_prefix(REPORT_PREFIX).unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["ready"], true);
        assert_eq!(v["root"]["verity"], "verified");
        assert_eq!(v["root"]["read_only"], true);
        assert_eq!(v["sysctl"]["kernel.panic"], "10");
        assert_eq!(v["var"], "tmpfs");
        assert!(v.get("error").is_none());
        assert!(v.get("warnings").is_none());
        assert!(v.get("boot_entry").is_none());
        assert!(!line.contains('\n'));
    }

    #[test]
    fn state_and_boot_entry_shape() {
        let mut r = Report::new("k".into(), "c".into());
        r.state = Some(StateReport {
            device: "/dev/vda6".into(),
            partition: Some("/dev/vda6".into()),
            disk: Some("/dev/vda".into()),
            created: true,
            grown_from_bytes: None,
            size_bytes: 1 << 30,
            formatted: true,
            resized: false,
            boot_count: 1,
        });
        r.boot_entry = Some(BootEntryReport {
            path: Some("\\EFI\\Linux\\worker-0.1.0+2-1.efi".into()),
            blessed: true,
            note: "renamed to worker-0.1.0.efi".into(),
        });
        r.warnings.push("bless-boot: x".into());
        let v: serde_json::Value =
            serde_json::from_str(r.line().strip_prefix(REPORT_PREFIX).unwrap()).unwrap();
        assert_eq!(v["state"]["partition"], "/dev/vda6");
        assert_eq!(v["state"]["created"], true);
        assert_eq!(v["state"]["size_bytes"], 1u64 << 30);
        assert!(v["state"].get("grown_from_bytes").is_none());
        assert_eq!(
            v["boot_entry"]["path"],
            "\\EFI\\Linux\\worker-0.1.0+2-1.efi"
        );
        assert_eq!(v["boot_entry"]["blessed"], true);
        assert_eq!(v["warnings"][0], "bless-boot: x");
        let mut none = BootEntryReport {
            path: None,
            blessed: false,
            note: "n".into(),
        };
        none.blessed = false;
        let j = serde_json::to_value(&none).unwrap();
        assert!(j["path"].is_null());
    }

    #[test]
    fn failure_report_shape() {
        let mut r = Report::new("k".into(), "c".into());
        r.error = Some("mount-root: verity corrupted".into());
        r.root.verity = VerityState::Corrupted;
        let v: serde_json::Value =
            serde_json::from_str(r.line().strip_prefix(REPORT_PREFIX).unwrap()).unwrap();
        assert_eq!(v["ready"], false);
        assert_eq!(v["root"]["verity"], "corrupted");
        assert!(v["error"].as_str().unwrap().contains("verity"));
    }

    #[test]
    fn error_line_is_one_line() {
        assert_eq!(error_line("sysctl", "a\nb"), "NODEIMG-ERROR sysctl: a b");
        assert_eq!(
            warn_line("bless-boot: a\rb"),
            "NODEIMG-WARN bless-boot: a b"
        );
    }
}
