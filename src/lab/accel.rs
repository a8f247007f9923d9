//! Which QEMU accelerator to use. KVM is used only when a bounded probe
//! shows that a real kernel runs under it. On some hosts `/dev/kvm` opens,
//! SeaBIOS runs, and every guest then hangs as soon as it enters the kernel
//! (a PVM-style nested KVM: QEMU prints `KVM internal error. Suberror: 1`
//! and spins). A probe that stops at the firmware says "works" there, so
//! this one boots the image's own kernel with no initramfs and waits, at
//! most [`PROBE_TIMEOUT`], for the kernel's first console line. TCG
//! otherwise. `NODEIMG_ACCEL` (or the lab's `--accel`) forces either.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A working KVM prints the kernel's banner well under a second after
/// QEMU starts (decompressing the bzImage included).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The kernel's first console line; seen only once the guest runs kernel code.
const KERNEL_MARKER: &str = "Linux version";
/// What QEMU writes to stderr when KVM cannot run the guest's code.
const KVM_FAILURE: &str = "KVM internal error";

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

/// Resolves `Auto` with [`kvm_runs_kernel`] on `kernel` (a bzImage),
/// probed once per process and remembered for this host boot (see
/// [`remembered`]).
pub fn resolve(accel: Accel, qemu: &Path, kernel: &Path) -> Resolved {
    static PROBE: OnceLock<bool> = OnceLock::new();
    let probe = || {
        let memo = memo_path(qemu);
        if let Some(works) = memo.as_deref().and_then(remembered) {
            tracing::info!(
                kvm = works,
                "KVM probe verdict remembered from earlier this host boot"
            );
            return works;
        }
        let works = kvm_runs_kernel(qemu, kernel);
        if let Some(memo) = memo {
            remember(&memo, works);
        }
        works
    };
    match accel {
        Accel::Tcg => Resolved::Tcg,
        Accel::Kvm => Resolved::Kvm,
        Accel::Auto if *PROBE.get_or_init(probe) => Resolved::Kvm,
        Accel::Auto => Resolved::Tcg,
    }
}

/// Where the verdict for this QEMU binary is kept: named by the host's boot
/// id and the binary's path and modification time, so a reboot, a kernel
/// module change that needs one, or a QEMU upgrade probes again. A failing
/// probe costs up to [`PROBE_TIMEOUT`]; a test suite boots dozens of VMs.
fn memo_path(qemu: &Path) -> Option<std::path::PathBuf> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let qemu = on_path(qemu)?.canonicalize().ok()?;
    let mtime = std::fs::metadata(&qemu).ok()?.modified().ok()?;
    let key = format!("{}\n{}\n{:?}", boot_id.trim(), qemu.display(), mtime);
    let root = crate::source::cache::Cache::default_root(None);
    Some(
        root.join("kvm-probe")
            .join(crate::util::hash::sha256_hex(key.as_bytes())),
    )
}

/// `program` as the shell would find it: itself when it names a path, else
/// the first match on `PATH`.
fn on_path(program: &Path) -> Option<std::path::PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The verdict an earlier probe on this host boot wrote, if any.
fn remembered(memo: &Path) -> Option<bool> {
    match std::fs::read_to_string(memo).ok()?.trim() {
        "kvm" => Some(true),
        "tcg" => Some(false),
        _ => None,
    }
}

/// Best effort: a verdict that cannot be kept is probed again next time.
fn remember(memo: &Path, works: bool) {
    let Some(dir) = memo.parent() else { return };
    let verdict = if works { "kvm" } else { "tcg" };
    let kept = std::fs::create_dir_all(dir)
        .and_then(|()| crate::util::atomic::write(memo, verdict.as_bytes()));
    if let Err(e) = kept {
        tracing::debug!(error = %e, memo = %memo.display(), "KVM probe verdict not kept");
    }
}

/// Boots `kernel` under KVM with no initramfs and checks that it prints
/// its banner on the serial console within [`PROBE_TIMEOUT`]. Never blocks
/// longer than that (plus the kill). Stops at once when QEMU exits or
/// reports a KVM internal error.
pub fn kvm_runs_kernel(qemu: &Path, kernel: &Path) -> bool {
    if OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        tracing::debug!("no usable /dev/kvm: using TCG");
        return false;
    }
    let start = Instant::now();
    let verdict = kernel_banner(qemu, kernel, PROBE_TIMEOUT);
    let elapsed_ms = start.elapsed().as_millis() as u64;
    match verdict {
        Ok(()) => tracing::info!(elapsed_ms, "KVM probe: the kernel runs under KVM"),
        Err(why) => tracing::warn!(
            elapsed_ms,
            why,
            "KVM probe: /dev/kvm is there but a kernel does not run under it; using TCG \
             (NODEIMG_ACCEL=kvm or --accel kvm forces KVM)"
        ),
    }
    verdict.is_ok()
}

/// Starts `qemu` under KVM on `kernel` and waits, at most `timeout`, for the
/// kernel's banner on the serial console. `Err` says why not.
fn kernel_banner(qemu: &Path, kernel: &Path, timeout: Duration) -> Result<(), &'static str> {
    let dir = tempfile::Builder::new()
        .prefix("nodeimg-kvm-probe-")
        .tempdir()
        .map_err(|_| "no temporary directory")?;
    let console = dir.path().join("console.log");
    let stderr_log = dir.path().join("qemu.log");
    let stderr = std::fs::File::create(&stderr_log).map_err(|_| "no temporary file")?;
    let mut child = Command::new(qemu)
        .args(["-accel", "kvm", "-M", "q35", "-smp", "1", "-m", "256"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=7"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|_| "QEMU did not start")?;
    let contains = |path: &Path, needle: &str| {
        String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).contains(needle)
    };
    let start = Instant::now();
    let verdict = loop {
        if contains(&console, KERNEL_MARKER) {
            break Ok(());
        }
        if contains(&stderr_log, KVM_FAILURE) {
            break Err("KVM internal error");
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            break Err("QEMU exited (KVM refused)");
        }
        if start.elapsed() >= timeout {
            break Err("no kernel output in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    verdict
}

#[cfg(test)]
#[path = "accel_tests.rs"]
mod tests;
