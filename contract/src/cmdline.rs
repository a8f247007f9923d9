//! The kernel command line: the `nodeimg.*` keys the builder writes and the
//! agent reads.
//!
//! Three layers, one parser and one printer:
//!
//! - [`KernelCmdline`]: a whole line, the kernel's own words (kept verbatim,
//!   in order) and the typed `nodeimg.*` [`Args`]. The builder assembles one
//!   in steps (the image fixes the verity parameters, the UKI, PXE bundle or
//!   lab adds the devices) and prints it with `to_string()`;
//! - [`Args`]: every `nodeimg.*` key, each optional and each value already
//!   checked, so a bad value is refused where it is written, not at boot;
//! - [`Cmdline`]: what the agent boots with: required keys present,
//!   defaults applied.
//!
//! Unknown `nodeimg.*` keys are an error (a typo must not boot a node with a
//! default), and so is a key given twice; every other word belongs to the
//! kernel. Pure: text in, types out.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::config_url::ConfigUrl;

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

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    /// on first boot.
    Auto,
}

impl fmt::Display for StateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateRef::Device(d) => d.fmt(f),
            StateRef::Auto => f.write_str("auto"),
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

impl FailureAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureAction::PowerOff => "poweroff",
            FailureAction::Reboot => "reboot",
            FailureAction::Hang => "hang",
        }
    }
}

/// `nodeimg.verity`: when the root's blocks are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerityMode {
    /// As they are read (dm-verity's normal mode).
    Lazy,
    /// Read the whole device once before mounting it.
    Full,
}

/// `nodeimg.health`: a testing switch for boot counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Fail the health check after everything else ran (so the boot is not
    /// blessed).
    Fail,
}

/// `nodeimg.on_failure` and `nodeimg.failure_delay`: read apart from the rest so
/// that a command line which fails to parse still fails the way it asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    pub action: FailureAction,
    pub delay: Duration,
}

/// Longest `nodeimg.failure_delay`, in seconds.
pub const MAX_FAILURE_DELAY_SECS: u64 = 3600;

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

/// The command line the agent boots with: every required key present and
/// every default applied.
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
    /// `nodeimg.test_kill=SERVICE[:always]`: a testing switch that SIGKILLs
    /// the service once it is ready (once, or every time), so tests see the
    /// supervisor restart the real daemon and call a crash loop one.
    pub test_kill: Option<TestKill>,
    /// `nodeimg.config=URL#sha256=HEX`: where the machine config is
    /// fetched when no fw_cfg entry or config drive holds one.
    pub config_url: Option<ConfigUrl>,
    /// `nodeimg.test_cert_lifetime=SECONDS`: a testing switch that gives
    /// the certificates the agent issues (etcd's) this short a lifetime,
    /// so tests see them renewed.
    pub test_cert_lifetime: Option<u64>,
}

/// See [`Cmdline::test_kill`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestKill {
    pub service: String,
    pub always: bool,
}

impl TestKill {
    fn parse(v: &str) -> Result<TestKill, &'static str> {
        let (service, always) = match v.split_once(':') {
            Some((s, "always")) => (s, true),
            Some(_) => return Err("expected SERVICE or SERVICE:always"),
            None => (v, false),
        };
        let ok = !service.is_empty()
            && service
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err("expected a service name (a-z, 0-9, -)");
        }
        Ok(TestKill {
            service: service.to_string(),
            always,
        })
    }
}

impl std::fmt::Display for TestKill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.always {
            write!(f, "{}:always", self.service)
        } else {
            f.write_str(&self.service)
        }
    }
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

/// Every `nodeimg.*` key, each optional, each value checked. Printed in a
/// fixed order: what the image fixes (verity parameters) first, then where
/// it boots from, then the policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// `nodeimg.roothash`: 64 lower-case hex digits.
    pub root_hash: Option<String>,
    /// `nodeimg.salt`: `Some(None)` is `-` (an unsalted tree), said
    /// explicitly; `None` leaves the key out (also unsalted).
    #[allow(clippy::option_option)]
    pub salt: Option<Option<String>>,
    /// `nodeimg.data_blocks`.
    pub data_blocks: Option<u64>,
    /// `nodeimg.hash_start`.
    pub hash_start: Option<u64>,
    /// `nodeimg.fstype`.
    pub fstype: Option<RootFs>,
    /// `nodeimg.root`: the verity data device.
    pub root: Option<DeviceRef>,
    /// `nodeimg.hash`: the verity hash device.
    pub hash: Option<DeviceRef>,
    /// `nodeimg.state`.
    pub state: Option<StateRef>,
    /// `nodeimg.verity`.
    pub verity: Option<VerityMode>,
    /// `nodeimg.on_failure`.
    pub on_failure: Option<FailureAction>,
    /// `nodeimg.failure_delay`, seconds.
    pub failure_delay: Option<u64>,
    /// `nodeimg.health`.
    pub health: Option<Health>,
    /// `nodeimg.test_kill`.
    pub test_kill: Option<TestKill>,
    /// `nodeimg.config`.
    pub config_url: Option<ConfigUrl>,
    /// `nodeimg.test_cert_lifetime`, seconds.
    pub test_cert_lifetime: Option<u64>,
}

/// Known keys, without the `nodeimg.` prefix, in print order.
pub const KEYS: &[&str] = &[
    "roothash",
    "salt",
    "data_blocks",
    "hash_start",
    "fstype",
    "root",
    "hash",
    "state",
    "verity",
    "on_failure",
    "failure_delay",
    "health",
    "test_kill",
    "config",
    "test_cert_lifetime",
];

/// Every key starts with this.
pub const PREFIX: &str = "nodeimg.";

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

/// `key=value` or `key` of a `nodeimg.*` word, prefix stripped. Bare
/// `nodeimg.x` words get "".
fn nodeimg_pair(word: &str) -> Option<(&str, &str)> {
    let rest = word.strip_prefix(PREFIX)?;
    Some(rest.split_once('=').unwrap_or((rest, "")))
}

/// Reads only the failure policy; never fails (bad or missing values keep defaults).
pub fn failure_policy(raw: &str) -> FailurePolicy {
    let mut p = FailurePolicy::default();
    for w in words(raw) {
        match nodeimg_pair(&w) {
            Some(("on_failure", v)) => {
                if let Ok(a) = parse_action(v) {
                    p.action = a;
                }
            }
            Some(("failure_delay", v)) => {
                if let Ok(s) = v.parse::<u64>() {
                    p.delay = Duration::from_secs(s.min(MAX_FAILURE_DELAY_SECS));
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
        key: format!("{PREFIX}{key}"),
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

/// Sets `slot` once; a second value for the same key is an error.
fn once<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), CmdlineError> {
    if slot.is_some() {
        return Err(CmdlineError::Duplicate {
            key: format!("{PREFIX}{key}"),
        });
    }
    *slot = Some(value);
    Ok(())
}

impl Args {
    /// Checks one `nodeimg.<key>=<value>` pair (prefix stripped) and stores it.
    fn set(&mut self, key: &str, v: &str) -> Result<(), CmdlineError> {
        match key {
            "roothash" => {
                let h = v.to_ascii_lowercase();
                if h.len() != 64 || !is_hex(&h) {
                    return Err(bad(key, v, "expected 64 hex digits (sha256)"));
                }
                once(&mut self.root_hash, key, h)
            }
            "salt" => {
                let salt = match v {
                    "-" | "" => None,
                    s if s.len().is_multiple_of(2) && s.len() <= 512 && is_hex(s) => {
                        Some(s.to_ascii_lowercase())
                    }
                    s => {
                        return Err(bad(
                            key,
                            s,
                            "expected an even number of hex digits, at most 256 bytes",
                        ))
                    }
                };
                once(&mut self.salt, key, salt)
            }
            "data_blocks" => {
                let n = parse_u64(key, v)?;
                // dm-verity's length is in 512-byte sectors: 8 per block, and it must fit u64
                if n == 0 || n > u64::MAX / 8 {
                    return Err(bad(key, v, "out of range"));
                }
                once(&mut self.data_blocks, key, n)
            }
            "hash_start" => once(&mut self.hash_start, key, parse_u64(key, v)?),
            "fstype" => {
                let fs = match v {
                    "squashfs" => RootFs::Squashfs,
                    "erofs" => RootFs::Erofs,
                    _ => return Err(bad(key, v, "expected squashfs or erofs")),
                };
                once(&mut self.fstype, key, fs)
            }
            "root" => once(&mut self.root, key, parse_image_device(key, v)?),
            "hash" => once(&mut self.hash, key, parse_image_device(key, v)?),
            "state" => {
                let s = match v {
                    "auto" => StateRef::Auto,
                    // a state disk must be writable and outlive the boot: never a file
                    v => StateRef::Device(parse_device(key, v)?),
                };
                once(&mut self.state, key, s)
            }
            "verity" => {
                let m = match v {
                    "lazy" => VerityMode::Lazy,
                    "full" => VerityMode::Full,
                    _ => return Err(bad(key, v, "expected full or lazy")),
                };
                once(&mut self.verity, key, m)
            }
            "on_failure" => {
                let a = parse_action(v).map_err(|why| bad(key, v, why))?;
                once(&mut self.on_failure, key, a)
            }
            "failure_delay" => {
                let secs = parse_u64(key, v)?;
                if secs > MAX_FAILURE_DELAY_SECS {
                    return Err(bad(key, v, "at most 3600 seconds"));
                }
                once(&mut self.failure_delay, key, secs)
            }
            "health" => {
                let h = match v {
                    "ok" => Health::Ok,
                    "fail" => Health::Fail,
                    _ => return Err(bad(key, v, "expected ok or fail")),
                };
                once(&mut self.health, key, h)
            }
            "test_kill" => {
                let t = TestKill::parse(v).map_err(|why| bad(key, v, why))?;
                once(&mut self.test_kill, key, t)
            }
            "config" => {
                let u = ConfigUrl::parse(v).map_err(|why| bad(key, v, why))?;
                once(&mut self.config_url, key, u)
            }
            "test_cert_lifetime" => {
                let secs = parse_u64(key, v)?;
                if !(30..=365 * 86_400).contains(&secs) {
                    return Err(bad(key, v, "30 seconds to a year"));
                }
                once(&mut self.test_cert_lifetime, key, secs)
            }
            _ => Err(CmdlineError::UnknownKey {
                key: format!("{PREFIX}{key}"),
            }),
        }
    }

    /// Adds every key of `more`; a key both set is an error (the agent
    /// would refuse the line anyway, so the builder refuses it first).
    pub fn merge(&mut self, more: Args) -> Result<(), CmdlineError> {
        fn take<T>(slot: &mut Option<T>, more: Option<T>, key: &str) -> Result<(), CmdlineError> {
            match more {
                Some(v) => once(slot, key, v),
                None => Ok(()),
            }
        }
        take(&mut self.root_hash, more.root_hash, "roothash")?;
        take(&mut self.salt, more.salt, "salt")?;
        take(&mut self.data_blocks, more.data_blocks, "data_blocks")?;
        take(&mut self.hash_start, more.hash_start, "hash_start")?;
        take(&mut self.fstype, more.fstype, "fstype")?;
        take(&mut self.root, more.root, "root")?;
        take(&mut self.hash, more.hash, "hash")?;
        take(&mut self.state, more.state, "state")?;
        take(&mut self.verity, more.verity, "verity")?;
        take(&mut self.on_failure, more.on_failure, "on_failure")?;
        take(&mut self.failure_delay, more.failure_delay, "failure_delay")?;
        take(&mut self.health, more.health, "health")?;
        take(&mut self.test_kill, more.test_kill, "test_kill")?;
        take(&mut self.config_url, more.config_url, "config")?;
        take(
            &mut self.test_cert_lifetime,
            more.test_cert_lifetime,
            "test_cert_lifetime",
        )
    }

    /// The keys that are set, as `nodeimg.<key>=<value>` words, in [`KEYS`] order.
    pub fn to_words(&self) -> Vec<String> {
        let mut w: Vec<(&str, String)> = Vec::new();
        if let Some(h) = &self.root_hash {
            w.push(("roothash", h.clone()));
        }
        if let Some(s) = &self.salt {
            w.push(("salt", s.clone().unwrap_or_else(|| "-".into())));
        }
        if let Some(n) = self.data_blocks {
            w.push(("data_blocks", n.to_string()));
        }
        if let Some(n) = self.hash_start {
            w.push(("hash_start", n.to_string()));
        }
        if let Some(fs) = self.fstype {
            w.push(("fstype", fs.as_str().into()));
        }
        if let Some(d) = &self.root {
            w.push(("root", d.to_string()));
        }
        if let Some(d) = &self.hash {
            w.push(("hash", d.to_string()));
        }
        if let Some(s) = &self.state {
            w.push(("state", s.to_string()));
        }
        if let Some(m) = self.verity {
            let m = match m {
                VerityMode::Lazy => "lazy",
                VerityMode::Full => "full",
            };
            w.push(("verity", m.into()));
        }
        if let Some(a) = self.on_failure {
            w.push(("on_failure", a.as_str().into()));
        }
        if let Some(d) = self.failure_delay {
            w.push(("failure_delay", d.to_string()));
        }
        if let Some(h) = self.health {
            let h = match h {
                Health::Ok => "ok",
                Health::Fail => "fail",
            };
            w.push(("health", h.into()));
        }
        if let Some(t) = &self.test_kill {
            w.push(("test_kill", t.to_string()));
        }
        if let Some(u) = &self.config_url {
            w.push(("config", u.to_string()));
        }
        if let Some(n) = self.test_cert_lifetime {
            w.push(("test_cert_lifetime", n.to_string()));
        }
        w.into_iter()
            .map(|(k, v)| quote(&format!("{PREFIX}{k}={v}")))
            .collect()
    }

    /// Required keys present, defaults applied: what the agent boots with.
    pub fn complete(&self) -> Result<Cmdline, CmdlineError> {
        fn need<T: Clone>(v: &Option<T>, key: &'static str) -> Result<T, CmdlineError> {
            v.clone().ok_or(CmdlineError::Missing { key })
        }
        let verity = VerityArgs {
            data: need(&self.root, "root")?,
            hash: need(&self.hash, "hash")?,
            root_hash: need(&self.root_hash, "roothash")?,
            salt: self.salt.clone().flatten(),
            data_blocks: need(&self.data_blocks, "data_blocks")?,
            hash_start: need(&self.hash_start, "hash_start")?,
        };
        let mut failure = FailurePolicy::default();
        if let Some(a) = self.on_failure {
            failure.action = a;
        }
        if let Some(s) = self.failure_delay {
            failure.delay = Duration::from_secs(s);
        }
        Ok(Cmdline {
            verity,
            fstype: self.fstype.unwrap_or(RootFs::Squashfs),
            state: self.state.clone(),
            fail_health: self.health == Some(Health::Fail),
            verify_full: self.verity == Some(VerityMode::Full),
            failure,
            test_kill: self.test_kill.clone(),
            config_url: self.config_url.clone(),
            test_cert_lifetime: self.test_cert_lifetime,
        })
    }
}

/// A word with whitespace gets the kernel's quotes around its value (or
/// around all of it when the key holds the whitespace), so [`words`] reads
/// it back as one word. Quoting only the value of `" nodeimg.x=v"` would
/// print a word that reads back as a `nodeimg.*` key.
fn quote(word: &str) -> String {
    if !word.contains(char::is_whitespace) {
        return word.to_string();
    }
    match word.split_once('=') {
        Some((k, v)) if !k.contains(char::is_whitespace) => format!("{k}=\"{v}\""),
        _ => format!("\"{word}\""),
    }
}

impl From<&Cmdline> for Args {
    /// Every key explicit, defaults included, so the printed line says
    /// everything the agent will do.
    fn from(c: &Cmdline) -> Args {
        Args {
            root_hash: Some(c.verity.root_hash.clone()),
            salt: Some(c.verity.salt.clone()),
            data_blocks: Some(c.verity.data_blocks),
            hash_start: Some(c.verity.hash_start),
            fstype: Some(c.fstype),
            root: Some(c.verity.data.clone()),
            hash: Some(c.verity.hash.clone()),
            state: c.state.clone(),
            verity: Some(if c.verify_full {
                VerityMode::Full
            } else {
                VerityMode::Lazy
            }),
            on_failure: Some(c.failure.action),
            failure_delay: Some(c.failure.delay.as_secs()),
            health: Some(if c.fail_health {
                Health::Fail
            } else {
                Health::Ok
            }),
            test_kill: c.test_kill.clone(),
            config_url: c.config_url.clone(),
            test_cert_lifetime: c.test_cert_lifetime,
        }
    }
}

/// A whole kernel command line: the kernel's words and nodeimg's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    /// Every word that is not `nodeimg.*`, in order, as written.
    pub kernel: Vec<String>,
    pub nodeimg: Args,
}

impl KernelCmdline {
    /// Splits and checks a line: every `nodeimg.*` word must be a known key
    /// with a good value, given once.
    pub fn parse(raw: &str) -> Result<KernelCmdline, CmdlineError> {
        let mut line = KernelCmdline::default();
        for w in words(raw) {
            match nodeimg_pair(&w) {
                Some((k, v)) => line.nodeimg.set(k, v)?,
                None => line.kernel.push(w),
            }
        }
        Ok(line)
    }

    /// Adds `more`'s kernel words after ours and its keys to ours.
    pub fn extend(&mut self, more: KernelCmdline) -> Result<(), CmdlineError> {
        self.kernel.extend(more.kernel);
        self.nodeimg.merge(more.nodeimg)
    }
}

impl fmt::Display for KernelCmdline {
    /// The kernel's words, then the `nodeimg.*` keys, one space apart.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = self
            .kernel
            .iter()
            .map(|w| quote(w))
            .chain(self.nodeimg.to_words());
        for (i, w) in all.enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&w)?;
        }
        Ok(())
    }
}

impl Cmdline {
    /// Parses `/proc/cmdline` (or any line): the one parser.
    pub fn parse(raw: &str) -> Result<Cmdline, CmdlineError> {
        KernelCmdline::parse(raw)?.nodeimg.complete()
    }
}

impl fmt::Display for Cmdline {
    /// The `nodeimg.*` words only, every key explicit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        KernelCmdline {
            kernel: Vec::new(),
            nodeimg: Args::from(self),
        }
        .fmt(f)
    }
}

#[cfg(test)]
#[path = "cmdline_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "cmdline_props.rs"]
mod props;
