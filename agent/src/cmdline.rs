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
    /// `file:/abs/path`: a file in the initramfs (the PXE bundle's root), which
    /// stage 1 attaches read-only to a loop device. Root and hash only.
    File(PathBuf),
}

impl std::fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceRef::Path(p) => write!(f, "{}", p.display()),
            DeviceRef::PartUuid(u) => write!(f, "PARTUUID={u}"),
            DeviceRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// `nodeimg.state`: where `/var` lives (ext4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateRef {
    /// A disk or partition named on the command line.
    Device(DeviceRef),
    /// `auto`: the state partition on the root's own disk, added to its GPT
    /// on first boot (see `state_partition.rs`).
    Auto,
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
    pub state: Option<StateRef>,
    /// `nodeimg.health=fail`: a testing switch that fails the health check
    /// after everything else ran (so the boot is not blessed).
    pub fail_health: bool,
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
    "health",
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

/// The verity devices may also be `file:/path` in the initramfs: absolute,
/// no `.` or `..` or empty components, and not under the API mounts.
fn parse_image_device(key: &str, v: &str) -> Result<DeviceRef, CmdlineError> {
    let Some(path) = v.strip_prefix("file:") else {
        return parse_device(key, v);
    };
    let plain = path.len() > 1
        && path.starts_with('/')
        && path
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !plain {
        return Err(bad(
            key,
            v,
            "expected file:/<absolute path in the initramfs>",
        ));
    }
    if ["/dev/", "/proc/", "/sys/", "/run/"]
        .iter()
        .any(|api| path.starts_with(api))
    {
        return Err(bad(
            key,
            v,
            "file: must name a file of the initramfs itself",
        ));
    }
    Ok(DeviceRef::File(PathBuf::from(path)))
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
            data: parse_image_device("root", need("root")?)?,
            hash: parse_image_device("hash", need("hash")?)?,
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
        let state = match get("state") {
            None => None,
            Some("auto") => Some(StateRef::Auto),
            Some(v) => Some(StateRef::Device(parse_device("state", v)?)),
        };
        let fail_health = match get("health") {
            None | Some("ok") => false,
            Some("fail") => true,
            Some(v) => return Err(bad("health", v, "expected ok or fail")),
        };
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
            fail_health,
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
        assert!(!c.fail_health);
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
            Some(StateRef::Device(DeviceRef::PartUuid(
                "0fc63daf-8483-4772-8e79-3d69d8477de4".into()
            )))
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
    fn root_and_hash_may_be_initramfs_files() {
        let raw = base()
            .replace(
                "nodeimg.root=/dev/vda",
                "nodeimg.root=file:/nodeimg/root.img",
            )
            .replace(
                "nodeimg.hash=/dev/vdb",
                "nodeimg.hash=file:/nodeimg/root.verity",
            );
        let c = Cmdline::parse(&raw).unwrap();
        assert_eq!(c.verity.data, DeviceRef::File("/nodeimg/root.img".into()));
        assert_eq!(
            c.verity.hash,
            DeviceRef::File("/nodeimg/root.verity".into())
        );
        assert_eq!(c.verity.data.to_string(), "file:/nodeimg/root.img");
        for bad in [
            "file:",
            "file:/",
            "file:nodeimg/root.img",
            "file:/nodeimg/../etc/x",
            "file:/nodeimg/./root.img",
            "file://root.img",
            "file:/nodeimg/",
            "file:/dev/vda",
            "file:/proc/self/exe",
        ] {
            let raw = base().replace("nodeimg.root=/dev/vda", &format!("nodeimg.root={bad}"));
            assert!(Cmdline::parse(&raw).is_err(), "{bad} accepted");
        }
        // a state disk must be writable and outlive the boot: never a file
        let raw = format!("{} nodeimg.state=file:/nodeimg/state.img", base());
        assert!(Cmdline::parse(&raw).is_err());
    }

    #[test]
    fn state_auto_and_the_health_switch() {
        let c = Cmdline::parse(&format!(
            "{} nodeimg.state=auto nodeimg.health=fail",
            base()
        ))
        .unwrap();
        assert_eq!(c.state, Some(StateRef::Auto));
        assert!(c.fail_health);
        let c = Cmdline::parse(&format!("{} nodeimg.health=ok", base())).unwrap();
        assert!(!c.fail_health);
        for bad in [
            "nodeimg.health=",
            "nodeimg.health=maybe",
            "nodeimg.state=AUTO",
            "nodeimg.state=automatic",
        ] {
            assert!(
                Cmdline::parse(&format!("{} {bad}", base())).is_err(),
                "{bad}"
            );
        }
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
