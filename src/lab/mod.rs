//! The QEMU lab: boots a built image and reads its boot report.
//!
//! Takes a build directory (`manifest.json` plus the artifacts it lists)
//! and produces a [`BootOutcome`]: the agent's `NODEIMG-REPORT {json}`
//! console line with `boot_ms` added, and the serial log. It verifies each
//! artifact's size and sha256 before QEMU sees it, attaches the root image
//! (`/dev/vda`) and verity tree (`/dev/vdb`) read-only and a state disk
//! (`/dev/vdc`) read-write, never sends traffic off the machine (no NIC;
//! a PXE boot's one NIC is on a `restrict=on` user network, see [`pxe_boot`];
//! `--net lab`'s is on the lab's own namespaced bridge, see [`network`]),
//! never waits on fixed sleeps and never leaves QEMU running: [`Vm`] kills
//! it on drop, and every wait has a bound. TCG unless a bounded probe shows
//! that KVM works. When a boot fails, the run's directory (serial log, QEMU
//! log) is kept and named in the error.

pub mod accel;
pub mod artifacts;
pub mod console_scan;
pub mod definition;
pub mod network;
pub mod pxe_boot;
pub mod relay;
pub mod secure_boot;
pub mod uefi;
pub mod up;
pub mod vm;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

use contract::cmdline::{Args, DeviceRef, KernelCmdline, StateRef};
use contract::report::{Report, REPORT_PREFIX};

use crate::manifest::Manifest;

pub use accel::{Accel, Resolved};
pub use artifacts::{boot_artifacts, BootArtifacts};
pub use network::TapNic;
pub use pxe_boot::{boot_pxe, PxeVia};
pub use uefi::{boot_uefi, Ovmf};
pub use vm::{Disk, Shutdown, UserNic, Vm, VmBoot, VmConfig};

/// The agent prints its report on the serial console after this.
pub const REPORT_MARKER: &str = REPORT_PREFIX;
/// OVMF prints this when every boot option failed (e.g. Secure Boot denied
/// the boot loader or the UKI): no report can follow.
pub const NO_BOOT_MARKER: &str = "No bootable option or device was found";
/// x86 `COMMAND_LINE_SIZE` including the final NUL.
const MAX_CMDLINE: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("config drive {path}")]
    ConfigDrive {
        path: PathBuf,
        #[source]
        source: crate::output::esp::EspError,
    },
    #[error("manifest in {dir}: {what}")]
    Manifest { dir: PathBuf, what: String },
    #[error("the manifest lists no artifact of kind {kind:?}")]
    MissingArtifact { kind: String },
    #[error("{kind} artifact {path} is {actual} bytes, the manifest says {expected}")]
    ArtifactSize {
        kind: String,
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{kind} artifact {path} has sha256 {actual}, the manifest says {expected}")]
    ArtifactDigest {
        kind: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("reading artifact {path}")]
    ArtifactIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel {path} cannot be unpacked for a PVH boot")]
    Kernel {
        path: PathBuf,
        #[source]
        source: crate::boot::KernelError,
    },
    #[error("{what} cannot be given to a PXE boot: the bundle's script fixes the command line and the node has no disk")]
    NotForPxe { what: &'static str },
    #[error("serving the PXE bundle")]
    Serve(#[source] crate::pxe_server::ServeError),
    #[error("kernel command line")]
    Cmdline(#[source] contract::cmdline::CmdlineError),
    #[error("kernel command line is {len} bytes; x86 takes at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("UEFI firmware {path} is missing (install ovmf: scripts/setup.sh)")]
    Firmware { path: PathBuf },
    #[error("enrolling the Secure Boot keys of {keydir} into OVMF's variables")]
    Enroll {
        keydir: PathBuf,
        #[source]
        source: secure_boot::EnrollError,
    },
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
    #[error("lab file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {qemu} failed")]
    Spawn {
        qemu: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu exited ({status}) before the boot report; serial log: {serial_log}")]
    Exited { status: String, serial_log: PathBuf },
    #[error("no {marker:?} line within {seconds} s; serial log: {serial_log}")]
    Timeout {
        marker: String,
        seconds: u64,
        serial_log: PathBuf,
    },
    #[error("the firmware found nothing it would boot ({line}); serial log: {serial_log}")]
    NothingBooted { line: String, serial_log: PathBuf },
    #[error("the lab network")]
    LabNetwork(#[source] network::LabNetError),
    #[error("node {node}: {what}")]
    Node { node: String, what: String },
    #[error("the boot report is not the contract's JSON object: {line}; serial log: {serial_log}")]
    BadReport {
        line: String,
        serial_log: PathBuf,
        #[source]
        source: contract::report::ReportError,
    },
}

impl LabError {
    /// The serial log kept for a boot that did not report, if one ran.
    pub fn serial_log(&self) -> Option<&Path> {
        match self {
            LabError::Exited { serial_log, .. }
            | LabError::Timeout { serial_log, .. }
            | LabError::NothingBooted { serial_log, .. }
            | LabError::BadReport { serial_log, .. } => Some(serial_log),
            _ => None,
        }
    }
}

/// How to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    /// From QEMU start to the report line.
    pub timeout: Duration,
    pub memory_mib: u32,
    /// A state disk to use (created sparse when missing, reused otherwise);
    /// `None` makes a fresh one in the run directory.
    pub state: Option<PathBuf>,
    /// Size of a state disk that is created.
    pub state_size: u64,
    /// Boot the bzImage as is (the UEFI/PXE path) instead of the PVH `vmlinux`.
    pub bzimage: bool,
    pub accel: Accel,
    /// Appended after the lab's own arguments, e.g. `nodeimg.verity=full`.
    pub extra_cmdline: Vec<String>,
    /// How long the guest gets to power off after the ACPI power button.
    pub shutdown_timeout: Duration,
    /// Where the run's files go; `None` makes a temporary directory.
    pub work_dir: Option<PathBuf>,
    pub qemu: PathBuf,
    /// How many reports to wait for when the guest reboots after one that
    /// is not ready (UEFI boot counting); the first ready one ends the run.
    pub reports: u32,
    /// Direct boots: guest reboots the VM lives through (QEMU resets it
    /// instead of ending). The run then waits for this many more reports
    /// after the first ready one (an API `reboot` between them); without
    /// it a guest reboot ends QEMU.
    pub reboots: u32,
    /// UEFI boots: size of the VM's disk (at least the image's size).
    pub disk_size: Option<u64>,
    /// UEFI boots: OVMF's code and variable-store templates.
    pub ovmf: Ovmf,
    /// UEFI boots: enforce Secure Boot with this key directory's PK, KEK
    /// and db (`nodeimg keys gen`) enrolled.
    pub secure_boot: Option<PathBuf>,
    /// A machine config handed to the node through QEMU's fw_cfg
    /// (`opt/org.nodeimg/config`).
    pub config: Option<PathBuf>,
    /// A machine config handed to the node on a config drive (a FAT disk
    /// labelled `NODEIMG` holding `config.toml`; direct and UEFI boots).
    pub config_drive: Option<PathBuf>,
    /// Direct boots: a machine config the node fetches over HTTP
    /// (`nodeimg.config=URL#sha256=…`), served by the lab on loopback and
    /// reached through the user NIC's `guestfwd` (implies `user_net`).
    pub config_url: Option<ConfigUrlServe>,
    /// Direct boots: a virtio NIC on QEMU's restricted user network
    /// (`restrict=on`: nothing leaves this machine). Off by default, so a
    /// boot without it sees no NIC at all.
    pub user_net: bool,
    /// With `user_net`: forward `127.0.0.1:PORT` to the node API (TCP 50000).
    pub api_port: Option<u16>,
    /// With `user_net`: the guest's `10.0.2.100:PORT` reaches this
    /// loopback server (QEMU's `guestfwd`; nothing else is reachable).
    pub forwards: Vec<(u16, std::net::SocketAddrV4)>,
    /// With `user_net`: `(GUESTPORT, HOSTPORT)`, this machine's
    /// `127.0.0.1:HOSTPORT` to the guest's TCP GUESTPORT.
    pub node_forwards: Vec<(u16, u16)>,
    /// After the report, do not press the power button at once: wait this
    /// long for the guest to power off by itself (an API `shutdown`), and
    /// press it only then. The VM keeps running meanwhile, so the API can
    /// be used.
    pub wait_shutdown: Option<Duration>,
    /// With `wait_shutdown`: stop waiting, and press the button, once this
    /// text is on the serial console (work the guest reports after its
    /// ready report, such as background image imports).
    pub until_console: Option<String>,
    /// Direct boots: a virtio NIC on the lab's own network (a bridge in a
    /// private network namespace, [`network`]), where the lab host
    /// ([`network::HOST`]) serves NTP. Off by default.
    pub lab_net: bool,
    /// With `lab_net`: the node's address there (from its machine
    /// config), where `api_port` forwards to.
    pub lab_address: Option<std::net::Ipv4Addr>,
    /// With `lab_net`: more loopback forwards to node APIs on the lab
    /// network, `127.0.0.1:PORT` to `ADDRESS:50000` (an address the node
    /// takes later, say).
    pub lab_forwards: Vec<(u16, std::net::Ipv4Addr)>,
    /// The guest's hardware clock at power-on (QEMU `-rtc base=`).
    pub rtc_base: Option<String>,
}

/// A machine config the lab serves for `nodeimg.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUrlServe {
    pub file: PathBuf,
    /// The pin put on the command line instead of the file's own sha256
    /// (tests hand a wrong one on purpose).
    pub sha256: Option<String>,
}

/// The path the lab serves a config at, behind [`pxe_boot::HTTP_GUEST_ADDR`].
pub const CONFIG_URL_FILE: &str = "config.toml";

/// Serves `served.file` as `http://10.0.2.100/config.toml` from a
/// loopback server (the PXE bundle's server, on a folder of its own in
/// `work`); returns the server, kept alive while the VM runs, and the
/// `nodeimg.config` word.
pub(crate) fn serve_config_url(
    served: &ConfigUrlServe,
    work: &Path,
) -> Result<(crate::pxe_server::Server, String), LabError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LabError::Io { path, source }
    };
    let data = std::fs::read(&served.file).map_err(io(&served.file))?;
    let dir = work.join("config-url");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let copy = dir.join(CONFIG_URL_FILE);
    std::fs::write(&copy, &data).map_err(io(&copy))?;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server = crate::pxe_server::serve_folder(&dir, loopback, CONFIG_URL_FILE)
        .map_err(LabError::Serve)?;
    let url = contract::cmdline::ConfigUrl {
        tls: false,
        host: pxe_boot::HTTP_GUEST_ADDR.into(),
        port: None,
        path: format!("/{CONFIG_URL_FILE}"),
        sha256: served
            .sha256
            .clone()
            .unwrap_or_else(|| crate::util::hash::sha256_hex(&data)),
    };
    let word = Args {
        config_url: Some(url),
        ..Args::default()
    }
    .to_words()
    .join(" ");
    Ok((server, word))
}

/// The fw_cfg name nodeagent reads its machine config from.
pub const CONFIG_FW_CFG: &str = "opt/org.nodeimg/config";

/// The `-fw_cfg` entries for `opts.config`.
pub(crate) fn config_fw_cfg(opts: &BootOptions) -> Vec<(String, PathBuf)> {
    opts.config
        .iter()
        .map(|f| (CONFIG_FW_CFG.to_string(), f.clone()))
        .collect()
}

/// Writes a config drive at `out`: a FAT file system labelled `NODEIMG`
/// with `config` as `config.toml`, through the same FAT writer as the ESP.
pub(crate) fn write_config_drive(config: &Path, out: &Path) -> Result<(), LabError> {
    use crate::output::esp::{write_esp, EspFile, EspParams, MIN_ESP_SIZE};
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LabError::Io { path, source }
    };
    let data = std::fs::read(config).map_err(io(config))?;
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(io(out))?;
    file.set_len(MIN_ESP_SIZE).map_err(io(out))?;
    let params = EspParams {
        size: MIN_ESP_SIZE,
        volume_id: 0x4e4f_4445,
        label: "NODEIMG".into(),
        source_date_epoch: 0,
    };
    let files = [EspFile {
        path: "config.toml",
        data: &data,
    }];
    write_esp(file, &params, &files).map_err(|source| LabError::ConfigDrive {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(())
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            timeout: Duration::from_secs(120),
            memory_mib: 1024,
            state: None,
            state_size: 1 << 30,
            bzimage: false,
            accel: Accel::Auto,
            extra_cmdline: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            work_dir: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
            reports: 1,
            reboots: 0,
            disk_size: None,
            ovmf: Ovmf::default(),
            secure_boot: None,
            config: None,
            config_drive: None,
            config_url: None,
            user_net: false,
            api_port: None,
            forwards: Vec::new(),
            node_forwards: Vec::new(),
            wait_shutdown: None,
            until_console: None,
            lab_net: false,
            lab_address: None,
            lab_forwards: Vec::new(),
            rtc_base: None,
        }
    }
}

/// The agent's report as the lab saw it: the contract's [`Report`] and
/// when it came. Serialises as one flat object (`--json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabReport {
    #[serde(flatten)]
    pub report: Report,
    /// Milliseconds from QEMU start to the report line.
    pub boot_ms: u64,
    /// This machine's clock (Unix ms) when the report line was read: the
    /// node's own clock at its report can be compared with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_unix_ms: Option<i64>,
}

/// What a boot produced.
#[derive(Debug)]
pub struct BootOutcome {
    /// The agent's report with `boot_ms` (QEMU start to report) added.
    pub report: LabReport,
    /// Reports of boots before the last one (a UEFI guest that failed
    /// and rebooted), oldest first.
    pub earlier_reports: Vec<LabReport>,
    pub serial_log: PathBuf,
    pub accel: Resolved,
    /// `pvh` (vmlinux) or `bzimage`.
    pub boot_path: &'static str,
    pub shutdown: Shutdown,
    /// With the lab network: milliseconds its setup took, and the time
    /// requests its NTP server answered.
    pub lab_net: Option<LabNetFacts>,
    /// Holds a temporary run directory (and so the serial log) alive.
    _work: Option<tempfile::TempDir>,
}

/// What the lab network did during a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LabNetFacts {
    pub setup_ms: u64,
    pub ntp_answered: u64,
}

impl BootOutcome {
    /// `report.ready == true` for the last report.
    pub fn ready(&self) -> bool {
        self.report.report.ready
    }
}

/// The lab's own kernel arguments: serial console, the three disks, and
/// `panic=-1` so a kernel panic ends QEMU at once (`-no-reboot`) instead of
/// running into the timeout.
pub fn lab_cmdline(image_cmdline: &str, extra: &[String]) -> Result<String, LabError> {
    let dev = |p: &str| Some(DeviceRef::Path(p.into()));
    let mut line = KernelCmdline::parse(image_cmdline).map_err(LabError::Cmdline)?;
    line.extend(KernelCmdline {
        kernel: vec!["console=ttyS0".into(), "panic=-1".into()],
        nodeimg: Args {
            root: dev("/dev/vda"),
            hash: dev("/dev/vdb"),
            state: Some(StateRef::Device(DeviceRef::Path("/dev/vdc".into()))),
            ..Args::default()
        },
    })
    .map_err(LabError::Cmdline)?;
    // `--append` words are checked too: a typo fails here, not in the guest
    let extra = KernelCmdline::parse(&extra.join(" ")).map_err(LabError::Cmdline)?;
    line.extend(extra).map_err(LabError::Cmdline)?;
    let line = line.to_string();
    if line.len() >= MAX_CMDLINE {
        return Err(LabError::CmdlineTooLong {
            len: line.len(),
            max: MAX_CMDLINE - 1,
        });
    }
    Ok(line)
}

pub(crate) fn create_state_disk(path: &Path, size: u64) -> Result<(), LabError> {
    let io = |source| LabError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        tracing::info!(path = %path.display(), "reusing state disk");
        return Ok(());
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    file.set_len(size).map_err(io) // sparse: no blocks written
}

/// The run directory: the one asked for, or a temporary one that the
/// returned handle removes unless it is kept.
pub(crate) fn work_dir(
    opts: &BootOptions,
) -> Result<(Option<tempfile::TempDir>, PathBuf), LabError> {
    match &opts.work_dir {
        Some(w) => {
            std::fs::create_dir_all(w).map_err(|source| LabError::Io {
                path: w.clone(),
                source,
            })?;
            Ok((None, w.clone()))
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("nodeimg-lab-")
                .tempdir()
                .map_err(|source| LabError::Io {
                    path: std::env::temp_dir(),
                    source,
                })?;
            let p = t.path().to_path_buf();
            Ok((Some(t), p))
        }
    }
}

/// A raw virtio disk the guest sees with `serial`.
pub(crate) fn raw_disk(path: &Path, read_only: bool, serial: &str) -> Disk {
    Disk {
        path: path.to_path_buf(),
        format: "raw",
        read_only,
        serial: serial.to_string(),
    }
}

/// A direct boot's three disks, in the order the lab's command line names
/// them (`/dev/vda` root, `vdb` verity, `vdc` state).
pub(crate) fn node_disks(rootfs: &Path, verity: &Path, state: &Path) -> Vec<Disk> {
    vec![
        raw_disk(rootfs, true, "nodeimg-root"),
        raw_disk(verity, true, "nodeimg-verity"),
        raw_disk(state, false, "nodeimg-state"),
    ]
}

/// Verifies DIR's artifacts, boots them, waits for the report, powers the
/// VM off and returns the report.
pub fn boot_direct(
    dir: &Path,
    manifest: &Manifest,
    opts: &BootOptions,
) -> Result<BootOutcome, LabError> {
    let artifacts = boot_artifacts(dir, manifest)?;
    // first, while the process has one thread (a run without root moves
    // the whole process into a user namespace for it)
    let lab_net = if opts.lab_net {
        let forwards: Vec<network::Forward> = opts
            .api_port
            .zip(opts.lab_address)
            .into_iter()
            .chain(opts.lab_forwards.iter().copied())
            .map(|(port, address)| network::Forward { port, address })
            .collect();
        Some(network::LabNetwork::up(1, &forwards).map_err(LabError::LabNetwork)?)
    } else {
        None
    };
    let (tmp, work) = work_dir(opts)?;
    let (kernel, boot_path) = if opts.bzimage {
        (artifacts.kernel.clone(), "bzimage")
    } else {
        let kerr = |source| LabError::Kernel {
            path: artifacts.kernel.clone(),
            source,
        };
        let bz = std::fs::read(&artifacts.kernel).map_err(|source| LabError::ArtifactIo {
            path: artifacts.kernel.clone(),
            source,
        })?;
        let vmlinux = crate::boot::extract_vmlinux(&bz).map_err(kerr)?;
        let path = work.join("vmlinux");
        std::fs::write(&path, vmlinux).map_err(|source| LabError::Io {
            path: path.clone(),
            source,
        })?;
        (path, "pvh")
    };
    let state = opts.state.clone().unwrap_or_else(|| work.join("state.img"));
    create_state_disk(&state, opts.state_size)?;
    // The server lives as long as the VM runs (it is dropped on return).
    let mut extra = opts.extra_cmdline.clone();
    let config_server = match &opts.config_url {
        Some(served) => {
            let (server, word) = serve_config_url(served, &work)?;
            extra.push(word);
            Some(server)
        }
        None => None,
    };
    let accel = accel::resolve(opts.accel, &opts.qemu, &artifacts.kernel);
    let mut disks = node_disks(&artifacts.rootfs, &artifacts.verity, &state);
    if let Some(config) = &opts.config_drive {
        let drive = work.join("config-drive.img");
        write_config_drive(config, &drive)?;
        disks.push(raw_disk(&drive, true, "nodeimg-config"));
    }
    let config = VmConfig {
        qemu: opts.qemu.clone(),
        accel,
        memory_mib: opts.memory_mib,
        cpus: 1,
        boot: VmBoot::Kernel {
            kernel,
            initrd: artifacts.initramfs.clone(),
            append: lab_cmdline(&artifacts.cmdline, &extra)?,
            reboot: opts.reboots > 0,
        },
        disks,
        serial_log: work.join("serial.log"),
        qmp_socket: work.join("qmp.sock"),
        qemu_log: work.join("qemu.log"),
        fw_cfg: config_fw_cfg(opts),
        nic: (opts.user_net || config_server.is_some()).then(|| UserNic {
            api_port: opts.api_port,
            guestfwd: config_server.as_ref().map(|s| s.addr()),
            forwards: opts.forwards.clone(),
            node_forwards: opts.node_forwards.clone(),
            ..UserNic::lab()
        }),
        tap: lab_net.as_ref().and_then(|n| n.nic(0)),
        rtc_base: opts.rtc_base.clone(),
    };
    tracing::info!(accel = accel.as_str(), boot_path, work = %work.display(), "booting");
    let outcome = run_to_outcome(&config, opts, tmp, boot_path);
    drop(config_server);
    let mut outcome = outcome?;
    // QEMU has exited: the lab network's servers stop, its namespace ends
    outcome.lab_net = lab_net.map(|n| LabNetFacts {
        setup_ms: n.setup_ms,
        ntp_answered: n.ntp_answered.load(std::sync::atomic::Ordering::Relaxed),
    });
    Ok(outcome)
}

/// Runs the VM and wraps the result; a failed run keeps its directory.
pub(crate) fn run_to_outcome(
    config: &VmConfig,
    opts: &BootOptions,
    tmp: Option<tempfile::TempDir>,
    boot_path: &'static str,
) -> Result<BootOutcome, LabError> {
    match run(config, opts) {
        Ok((report, earlier_reports, shutdown)) => Ok(BootOutcome {
            report,
            earlier_reports,
            serial_log: config.serial_log.clone(),
            accel: config.accel,
            boot_path,
            shutdown,
            lab_net: None,
            _work: tmp,
        }),
        Err(e) => {
            if let Some(t) = tmp {
                let kept = t.keep(); // The evidence outlives the failure.
                tracing::warn!(dir = %kept.display(), "boot failed; run directory kept");
            }
            Err(e)
        }
    }
}

/// Spawns the VM, waits for a ready report (or for `opts.reports`
/// reports, the last of which is returned with the earlier ones), powers
/// off.
fn run(
    config: &VmConfig,
    opts: &BootOptions,
) -> Result<(LabReport, Vec<LabReport>, Shutdown), LabError> {
    let mut vm = Vm::spawn(config)?;
    let deadline = vm.started() + opts.timeout;
    let mut earlier = Vec::new();
    loop {
        let (which, line, seen) = vm.wait_for_any(&[REPORT_MARKER, NO_BOOT_MARKER], deadline)?;
        if which == 1 {
            return Err(LabError::NothingBooted {
                line,
                serial_log: config.serial_log.clone(),
            });
        }
        let boot_ms = seen.duration_since(vm.started()).as_millis() as u64;
        tracing::info!(boot_ms, "boot report received");
        let report = Report::parse_line(&line).map_err(|source| LabError::BadReport {
            line: line.clone(),
            serial_log: config.serial_log.clone(),
            source,
        })?;
        let ready = report.ready;
        let received_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as i64);
        let report = LabReport {
            report,
            boot_ms,
            received_unix_ms,
        };
        let ready_seen = ready || earlier.iter().any(|r: &LabReport| r.report.ready);
        let rebooted = earlier.len() as u64;
        if ready_seen && rebooted < u64::from(opts.reboots) {
            tracing::info!(
                "ready; the VM lives through {} more guest reboot(s)",
                u64::from(opts.reboots) - rebooted
            );
            earlier.push(report);
            continue;
        }
        if ready || earlier.len() + 1 >= opts.reports.max(1) as usize {
            if let Some(wait) = opts.wait_shutdown {
                tracing::info!(
                    seconds = wait.as_secs(),
                    "waiting for the guest to power off by itself"
                );
                let text = opts.until_console.as_deref();
                // the log is read again only when it grew since the last
                // look (a look comes every 20 ms)
                let scanned = std::cell::Cell::new(0u64);
                let on_console = || {
                    let Some(t) = text else { return false };
                    let len = std::fs::metadata(&config.serial_log).map_or(0, |m| m.len());
                    if len == scanned.replace(len) {
                        return false;
                    }
                    std::fs::read(&config.serial_log)
                        .is_ok_and(|log| log.windows(t.len()).any(|w| w == t.as_bytes()))
                };
                match vm.wait_exit_or(wait, on_console) {
                    vm::Waited::Exited => {
                        return Ok((report, earlier, Shutdown::AlreadyExited));
                    }
                    vm::Waited::Seen => {
                        tracing::info!(text, "seen on the console: pressing the power button")
                    }
                    vm::Waited::TimedOut => {
                        tracing::warn!("the guest still runs: pressing the power button")
                    }
                }
            }
            let shutdown = vm.shutdown(opts.shutdown_timeout);
            tracing::info!(?shutdown, "VM stopped");
            return Ok((report, earlier, shutdown));
        }
        tracing::info!("not ready; waiting for the guest to boot again");
        earlier.push(report);
    }
}

#[cfg(test)]
#[path = "lab_tests.rs"]
mod lab_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_cmdline_appends_disks_after_the_image_line() {
        let hash = "ab".repeat(32);
        let line = lab_cmdline(
            &format!("ro  quiet nodeimg.roothash={hash}"),
            &["nodeimg.verity=full".into()],
        )
        .unwrap();
        assert_eq!(
            line,
            format!(
                "ro quiet console=ttyS0 panic=-1 nodeimg.roothash={hash} nodeimg.root=/dev/vda \
                 nodeimg.hash=/dev/vdb nodeimg.state=/dev/vdc nodeimg.verity=full"
            )
        );
        // what the lab boots is what the agent's parser reads
        let booted = contract::cmdline::Cmdline::parse(&format!(
            "{line} nodeimg.data_blocks=8 nodeimg.hash_start=1"
        ))
        .unwrap();
        assert_eq!(
            booted.state,
            Some(StateRef::Device(DeviceRef::Path("/dev/vdc".into())))
        );
        assert!(booted.verify_full);
        // the image naming a lab device, or a typo in --append, is refused here
        for (image, extra) in [
            ("nodeimg.root=/dev/sda", ""),
            ("ro", "nodeimg.verity=ful"),
            ("ro", "nodeimg.bogus=1"),
        ] {
            assert!(
                matches!(
                    lab_cmdline(image, &[extra.to_string()]),
                    Err(LabError::Cmdline(_))
                ),
                "{image} {extra}"
            );
        }
        let long = "x".repeat(3000);
        assert!(matches!(
            lab_cmdline(&long, &[]),
            Err(LabError::CmdlineTooLong { .. })
        ));
    }

    #[test]
    fn a_config_url_is_served_on_loopback_and_pinned_on_the_command_line() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w1.toml");
        std::fs::write(&file, "schema = 1\n").unwrap();
        let served = ConfigUrlServe {
            file: file.clone(),
            sha256: None,
        };
        let (server, word) = serve_config_url(&served, dir.path()).unwrap();
        let sha = crate::util::hash::sha256_hex(b"schema = 1\n");
        assert_eq!(
            word,
            format!("nodeimg.config=http://10.0.2.100/config.toml#sha256={sha}")
        );
        assert!(server.addr().ip().is_loopback());
        let mut tcp = std::net::TcpStream::connect(server.addr()).unwrap();
        tcp.write_all(
            b"GET /config.toml HTTP/1.1\r\nHost: 10.0.2.100\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nschema = 1\n"), "{answer}");
        // what the lab appends passes the agent's parser; a bad pin does not
        let hash = "ab".repeat(32);
        let line = lab_cmdline(&format!("nodeimg.roothash={hash}"), &[word]).unwrap();
        assert!(line.contains("nodeimg.config=http://10.0.2.100/config.toml#sha256="));
        let bad = ConfigUrlServe {
            file,
            sha256: Some("12345".into()),
        };
        let (_server, word) = serve_config_url(&bad, dir.path()).unwrap();
        assert!(matches!(
            lab_cmdline("ro", &[word]),
            Err(LabError::Cmdline(_))
        ));
    }

    #[test]
    fn state_disk_is_sparse_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.img");
        create_state_disk(&path, 1 << 30).unwrap();
        std::fs::write(&path, b"kept").unwrap();
        create_state_disk(&path, 1 << 30).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
    }
}
