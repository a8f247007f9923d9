//! The boot report: one console line, `NODEIMG-REPORT ` + compact JSON, that the
//! lab and tests read. Also the matching failure line. Fields are documented in
//! issue 3; absent facts are left out rather than guessed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::verity::VerityState;

pub const REPORT_PREFIX: &str = "NODEIMG-REPORT ";
pub const ERROR_PREFIX: &str = "NODEIMG-ERROR ";

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
    pub device: String,
    /// `true` when this boot ran mke2fs (first boot of the disk).
    pub formatted: bool,
    /// Boots this disk has seen, this one included (`/var/lib/nodeimg/boot-count`).
    pub boot_count: u64,
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
        assert!(!line.contains('\n'));
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
    }
}
