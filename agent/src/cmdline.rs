//! The kernel command line as nodeagent reads it: `nodeimg.*` keys into a typed
//! [`Cmdline`]. Pure: it takes the text of `/proc/cmdline` and never touches the
//! system. Unknown `nodeimg.*` keys are an error (a typo must not boot a node with
//! a default); every other key belongs to the kernel and is ignored.

use std::path::PathBuf;
use std::time::Duration;

/// Where a block device is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRef {
    /// A device node path such as `/dev/vda`.
    Path(PathBuf),
    /// A GPT partition by its unique GUID (`PARTUUID=...`), lower-case.
    PartUuid(String),
}

impl std::fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceRef::Path(p) => write!(f, "{}", p.display()),
            DeviceRef::PartUuid(u) => write!(f, "PARTUUID={u}"),
        }
    }
}

/// File system of the root image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootFs {
    Squashfs,
    Erofs,
}

impl RootFs {
    pub fn as_str(self) -> &'static str {
        match self {
            RootFs::Squashfs => "squashfs",
            RootFs::Erofs => "erofs",
        }
    }
}

/// What the top loop does after a failed boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    PowerOff,
    Reboot,
    /// Stay up so the console can be read; nothing is unmounted.
    Hang,
}

/// `nodeimg.on_failure` and `nodeimg.failure_delay`: read apart from the rest so
/// that a command line which fails to parse still fails the way it asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    pub action: FailureAction,
    pub delay: Duration,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            action: FailureAction::PowerOff,
            delay: Duration::from_secs(5),
        }
    }
}

/// dm-verity parameters of the root image (4096-byte data and hash blocks, sha256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityArgs {
    pub data: DeviceRef,
    pub hash: DeviceRef,
    /// 64 lower-case hex digits.
    pub root_hash: String,
    /// Lower-case hex, `None` for an unsalted tree.
    pub salt: Option<String>,
    /// Size of the data device in 4096-byte blocks.
    pub data_blocks: u64,
    /// Hash-device block where the tree starts (1 after a verity superblock).
    pub hash_start: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    pub verity: VerityArgs,
    pub fstype: RootFs,
    /// ext4 state disk for `/var`; `None` puts `/var` on tmpfs.
    pub state: Option<DeviceRef>,
    /// `nodeimg.verity=full`: read the whole verity device before mounting it.
    pub verify_full: bool,
    pub failure: FailurePolicy,
    /// The whole command line, as read.
    pub raw: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("unknown key {key}")]
    UnknownKey { key: String },
    #[error("key {key} given twice")]
    Duplicate { key: String },
    #[error("required key {key} is missing")]
    Missing { key: &'static str },
    #[error("bad value {value:?} for {key}: {why}")]
    BadValue {
        key: String,
        value: String,
        why: &'static str,
    },
}

/// Known keys, without the `nodeimg.` prefix.
const KEYS: &[&str] = &[
    "root",
    "hash",
    "roothash",
    "salt",
    "data_blocks",
    "hash_start",
    "fstype",
    "state",
    "verity",
    "on_failure",
    "failure_delay",
];

/// Splits a command line into words, honouring the kernel's double quotes
/// (`key="a b"` is one word, and the quotes are dropped).
pub fn words(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in raw.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The `nodeimg.*` pairs, prefix stripped, in order. Bare `nodeimg.x` words get "".
fn nodeimg_pairs(raw: &str) -> Vec<(String, String)> {
    words(raw)
        .into_iter()
        .filter_map(|w| {
            let rest = w.strip_prefix("nodeimg.")?;
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Reads only the failure policy; never fails (bad or missing values keep defaults).
pub fn failure_policy(raw: &str) -> FailurePolicy {
    let mut p = FailurePolicy::default();
    for (k, v) in nodeimg_pairs(raw) {
        match k.as_str() {
            "on_failure" => {
                if let Ok(a) = parse_action(&v) {
                    p.action = a;
                }
            }
            "failure_delay" => {
                if let Ok(s) = v.parse::<u64>() {
                    p.delay = Duration::from_secs(s.min(3600));
                }
            }
            _ => {}
        }
    }
    p
}

fn parse_action(v: &str) -> Result<FailureAction, &'static str> {
    match v {
        "poweroff" => Ok(FailureAction::PowerOff),
        "reboot" => Ok(FailureAction::Reboot),
        "hang" => Ok(FailureAction::Hang),
        _ => Err("expected poweroff, reboot or hang"),
    }
}

fn bad(key: &str, value: &str, why: &'static str) -> CmdlineError {
    CmdlineError::BadValue {
        key: format!("nodeimg.{key}"),
        value: value.to_string(),
        why,
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_device(key: &str, v: &str) -> Result<DeviceRef, CmdlineError> {
    if let Some(uuid) = v.strip_prefix("PARTUUID=") {
        let ok = uuid.len() == 36 && uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit());
        if !ok {
            return Err(bad(
                key,
                v,
                "PARTUUID must be a GUID like 01234567-89ab-cdef-0123-456789abcdef",
            ));
        }
        return Ok(DeviceRef::PartUuid(uuid.to_ascii_lowercase()));
    }
    if !v.starts_with("/dev/") || v.contains("/../") || v.ends_with("/..") {
        return Err(bad(key, v, "expected /dev/<name> or PARTUUID=<guid>"));
    }
    Ok(DeviceRef::Path(PathBuf::from(v)))
}

fn parse_u64(key: &str, v: &str) -> Result<u64, CmdlineError> {
    v.parse::<u64>()
        .map_err(|_| bad(key, v, "expected a decimal number"))
}

impl Cmdline {
    pub fn parse(raw: &str) -> Result<Cmdline, CmdlineError> {
        let mut seen: Vec<(String, String)> = Vec::new();
        for (k, v) in nodeimg_pairs(raw) {
            if !KEYS.contains(&k.as_str()) {
                return Err(CmdlineError::UnknownKey {
                    key: format!("nodeimg.{k}"),
                });
            }
            if seen.iter().any(|(s, _)| *s == k) {
                return Err(CmdlineError::Duplicate {
                    key: format!("nodeimg.{k}"),
                });
            }
            seen.push((k, v));
        }
        let get = |key: &str| seen.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let need = |key: &'static str| get(key).ok_or(CmdlineError::Missing { key });

        let root_hash = need("roothash")?.to_ascii_lowercase();
        if root_hash.len() != 64 || !is_hex(&root_hash) {
            return Err(bad(
                "roothash",
                &root_hash,
                "expected 64 hex digits (sha256)",
            ));
        }
        let salt = match get("salt") {
            None | Some("-") | Some("") => None,
            Some(s) if s.len() % 2 == 0 && s.len() <= 512 && is_hex(s) => {
                Some(s.to_ascii_lowercase())
            }
            Some(s) => {
                return Err(bad(
                    "salt",
                    s,
                    "expected an even number of hex digits, at most 256 bytes",
                ))
            }
        };
        let data_blocks = parse_u64("data_blocks", need("data_blocks")?)?;
        // dm-verity's length is in 512-byte sectors: 8 per block, and it must fit u64
        if data_blocks == 0 || data_blocks > u64::MAX / 8 {
            return Err(bad("data_blocks", &data_blocks.to_string(), "out of range"));
        }
        let verity = VerityArgs {
            data: parse_device("root", need("root")?)?,
            hash: parse_device("hash", need("hash")?)?,
            root_hash,
            salt,
            data_blocks,
            hash_start: parse_u64("hash_start", need("hash_start")?)?,
        };
        let fstype = match get("fstype").unwrap_or("squashfs") {
            "squashfs" => RootFs::Squashfs,
            "erofs" => RootFs::Erofs,
            v => return Err(bad("fstype", v, "expected squashfs or erofs")),
        };
        let state = get("state").map(|v| parse_device("state", v)).transpose()?;
        let verify_full = match get("verity") {
            None | Some("lazy") => false,
            Some("full") => true,
            Some(v) => return Err(bad("verity", v, "expected full or lazy")),
        };
        let mut failure = FailurePolicy::default();
        if let Some(v) = get("on_failure") {
            failure.action = parse_action(v).map_err(|why| bad("on_failure", v, why))?;
        }
        if let Some(v) = get("failure_delay") {
            let secs = parse_u64("failure_delay", v)?;
            if secs > 3600 {
                return Err(bad("failure_delay", v, "at most 3600 seconds"));
            }
            failure.delay = Duration::from_secs(secs);
        }
        Ok(Cmdline {
            verity,
            fstype,
            state,
            verify_full,
            failure,
            raw: raw.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "4f1c6bd9a1e2e3b2c1d0f9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8";

    fn base() -> String {
        format!(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 quiet nodeimg.root=/dev/vda nodeimg.hash=/dev/vdb \
             nodeimg.roothash={HASH} nodeimg.salt=00ff nodeimg.data_blocks=2560 nodeimg.hash_start=1 \
             nodeimg.fstype=squashfs\n"
        )
    }

    #[test]
    fn parses_the_contract() {
        let c = Cmdline::parse(&base()).unwrap();
        assert_eq!(c.verity.data, DeviceRef::Path("/dev/vda".into()));
        assert_eq!(c.verity.hash, DeviceRef::Path("/dev/vdb".into()));
        assert_eq!(c.verity.root_hash, HASH);
        assert_eq!(c.verity.salt.as_deref(), Some("00ff"));
        assert_eq!(c.verity.data_blocks, 2560);
        assert_eq!(c.verity.hash_start, 1);
        assert_eq!(c.fstype, RootFs::Squashfs);
        assert_eq!(c.state, None);
        assert!(!c.verify_full);
        assert_eq!(c.failure, FailurePolicy::default());
        assert!(!c.raw.ends_with('\n'));
    }

    #[test]
    fn optional_keys() {
        let raw = format!(
            "{} nodeimg.state=PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4 nodeimg.verity=full \
             nodeimg.on_failure=hang nodeimg.failure_delay=0 nodeimg.fstype=erofs",
            base().replace("nodeimg.fstype=squashfs", "")
        );
        let c = Cmdline::parse(&raw).unwrap();
        assert_eq!(
            c.state,
            Some(DeviceRef::PartUuid(
                "0fc63daf-8483-4772-8e79-3d69d8477de4".into()
            ))
        );
        assert!(c.verify_full);
        assert_eq!(c.fstype, RootFs::Erofs);
        assert_eq!(c.failure.action, FailureAction::Hang);
        assert_eq!(c.failure.delay, Duration::ZERO);
    }

    #[test]
    fn salt_dash_means_none_and_fstype_defaults() {
        let raw = base()
            .replace("nodeimg.salt=00ff", "nodeimg.salt=-")
            .replace("nodeimg.fstype=squashfs", "");
        let c = Cmdline::parse(&raw).unwrap();
        assert_eq!(c.verity.salt, None);
        assert_eq!(c.fstype, RootFs::Squashfs);
    }

    #[test]
    fn unknown_nodeimg_key_is_an_error_other_keys_are_not() {
        let e = Cmdline::parse(&format!("{} nodeimg.rootfs=x", base())).unwrap_err();
        assert_eq!(
            e,
            CmdlineError::UnknownKey {
                key: "nodeimg.rootfs".into()
            }
        );
        assert!(Cmdline::parse(&format!("{} foo.bar=1 ro nodeimgx=2", base())).is_ok());
    }

    #[test]
    fn rejects_bad_values() {
        let cases = [
            ("nodeimg.roothash=", "nodeimg.roothash=abc "),
            ("nodeimg.salt=00ff", "nodeimg.salt=0g"),
            ("nodeimg.data_blocks=2560", "nodeimg.data_blocks=0"),
            ("nodeimg.data_blocks=2560", "nodeimg.data_blocks=-1"),
            ("nodeimg.root=/dev/vda", "nodeimg.root=vda"),
            ("nodeimg.root=/dev/vda", "nodeimg.root=/dev/../etc/x"),
            ("nodeimg.hash=/dev/vdb", "nodeimg.hash=PARTUUID=xyz"),
            ("nodeimg.fstype=squashfs", "nodeimg.fstype=ext4"),
        ];
        for (from, to) in cases {
            let raw = base().replace(from, to);
            assert!(Cmdline::parse(&raw).is_err(), "{to} accepted");
        }
        let e = Cmdline::parse(&format!("{} nodeimg.on_failure=explode", base())).unwrap_err();
        assert!(matches!(e, CmdlineError::BadValue { .. }), "{e:?}");
    }

    #[test]
    fn missing_and_duplicate_keys() {
        let e = Cmdline::parse(&base().replace("nodeimg.hash_start=1", "")).unwrap_err();
        assert_eq!(e, CmdlineError::Missing { key: "hash_start" });
        let e = Cmdline::parse(&format!("{} nodeimg.root=/dev/vdc", base())).unwrap_err();
        assert_eq!(
            e,
            CmdlineError::Duplicate {
                key: "nodeimg.root".into()
            }
        );
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(
            words(" a=\"b c\"  d\n"),
            vec!["a=b c".to_string(), "d".to_string()]
        );
    }

    #[test]
    fn failure_policy_survives_a_broken_cmdline() {
        let p = failure_policy("nodeimg.bogus nodeimg.on_failure=reboot nodeimg.failure_delay=7");
        assert_eq!(
            p,
            FailurePolicy {
                action: FailureAction::Reboot,
                delay: Duration::from_secs(7)
            }
        );
        let p = failure_policy("nodeimg.on_failure=nope nodeimg.failure_delay=x");
        assert_eq!(p, FailurePolicy::default());
    }
}
