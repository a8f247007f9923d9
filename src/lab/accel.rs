//! Which QEMU accelerator to use. KVM is used only when a bounded probe
//! shows it works: on some hosts `/dev/kvm` opens but guests hang in early
//! boot (here SeaBIOS stops at its AHCI probe under KVM), so the probe boots
//! SeaBIOS with no disks and waits, at most [`PROBE_TIMEOUT`], for it to
//! reach its boot menu on the debug console. TCG otherwise.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A working KVM reaches SeaBIOS's boot attempt in well under a second.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// SeaBIOS prints one of these once it has initialised the machine.
const PROBE_MARKERS: [&str; 2] = ["Booting from", "No bootable device"];

/// What the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when the probe passes, else TCG.
    #[default]
    Auto,
    Tcg,
    /// KVM without a probe (the boot timeout still bounds a hang).
    Kvm,
}

/// What QEMU is started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolved {
    Tcg,
    Kvm,
}

impl Resolved {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolved::Tcg => "tcg",
            Resolved::Kvm => "kvm",
        }
    }
}

/// Resolves `Auto` with [`kvm_works`] (probed once per process).
pub fn resolve(accel: Accel, qemu: &Path) -> Resolved {
    static PROBE: OnceLock<bool> = OnceLock::new();
    match accel {
        Accel::Tcg => Resolved::Tcg,
        Accel::Kvm => Resolved::Kvm,
        Accel::Auto if *PROBE.get_or_init(|| kvm_works(qemu)) => Resolved::Kvm,
        Accel::Auto => Resolved::Tcg,
    }
}

/// Boots SeaBIOS under KVM with no disks and checks that it gets as far as
/// trying to boot within [`PROBE_TIMEOUT`]. Never blocks longer than that
/// (plus the kill).
pub fn kvm_works(qemu: &Path) -> bool {
    if OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        tracing::debug!("no usable /dev/kvm: using TCG");
        return false;
    }
    let Ok(dir) = tempfile::Builder::new()
        .prefix("nodeimg-kvm-probe-")
        .tempdir()
    else {
        return false;
    };
    let log = dir.path().join("debugcon.log");
    let child = Command::new(qemu)
        .args(["-accel", "kvm", "-M", "q35", "-smp", "1", "-m", "64"])
        .args(["-nodefaults", "-display", "none", "-no-reboot", "-chardev"])
        .arg(format!("file,id=dbg,path={}", log.display()))
        .args(["-device", "isa-debugcon,iobase=0x402,chardev=dbg"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    let start = Instant::now();
    let mut works = false;
    while start.elapsed() < PROBE_TIMEOUT {
        let text = std::fs::read(&log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        if PROBE_MARKERS.iter().any(|m| text.contains(m)) {
            works = true;
            break;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            break; // QEMU refused KVM outright.
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    tracing::info!(
        works,
        elapsed_ms = start.elapsed().as_millis() as u64,
        "KVM probe"
    );
    works
}
