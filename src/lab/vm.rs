//! One QEMU virtual machine, owned: [`Vm`] kills QEMU when dropped, sends
//! the serial console to a log file that outlives it, and waits for
//! console markers (never fixed sleeps). A QMP socket gives a clean ACPI
//! power-down.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::accel::Resolved;
use super::network::TapNic;
use super::LabError;

/// How often the serial log and QEMU's status are polled.
const POLL: Duration = Duration::from_millis(20);

/// One virtio disk; disks appear as `/dev/vda`, `/dev/vdb`, … in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    /// QEMU's name for the image format: `raw` or `qcow2`.
    pub format: &'static str,
    pub read_only: bool,
    /// Shown to the guest in `/sys/block/vdX/serial` (at most 20 bytes).
    pub serial: String,
}

/// How the VM boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmBoot {
    /// QEMU loads the kernel: a bzImage, or an ELF `vmlinux` with a PVH note.
    /// A guest reboot ends QEMU (`-no-reboot`) unless `reboot`: then QEMU
    /// resets the VM and loads the kernel again, as a machine reboots.
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
        reboot: bool,
    },
    /// OVMF from two pflash images: the read-only code and this VM's own
    /// copy of the variable store. Guest reboots stay inside QEMU, so boot
    /// counting and fallbacks run as on a real machine. With `secure_boot`,
    /// `code` is OVMF's Secure Boot build, which guards its variable store
    /// in SMM: the machine gets `smm=on` and the flash answers only to SMM
    /// (`cfi.pflash01` `secure=on`), so the guest cannot rewrite the keys.
    Uefi {
        code: PathBuf,
        vars: PathBuf,
        secure_boot: bool,
    },
    /// No disk and no kernel: SeaBIOS runs the virtio NIC's iPXE ROM
    /// (QEMU's default `efi-virtio.rom` from ipxe-qemu), which boots what
    /// QEMU's user network offers. `user_net` is the `-netdev user,...`
    /// options after the id (`restrict=on,tftp=...,bootfile=...`). A guest
    /// reboot ends QEMU (`-no-reboot`), as for a kernel boot.
    Network { user_net: String },
}

/// Everything QEMU is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub qemu: PathBuf,
    pub accel: Resolved,
    /// Virtual CPUs (`-smp`).
    pub cpus: u32,
    pub memory_mib: u32,
    /// What the VM starts: a kernel QEMU loads itself, or UEFI firmware.
    pub boot: VmBoot,
    pub disks: Vec<Disk>,
    pub serial_log: PathBuf,
    pub qmp_socket: PathBuf,
    /// QEMU's own stdout/stderr (warnings, errors).
    pub qemu_log: PathBuf,
    /// fw_cfg entries (`opt/…` name, file): the machine config.
    pub fw_cfg: Vec<(String, PathBuf)>,
    /// A kernel boot's network: `None` leaves the VM without a NIC.
    pub nic: Option<UserNic>,
    /// A NIC on the lab's own network (`network::LabNetwork`): QEMU then
    /// runs inside the lab's network namespace.
    pub tap: Option<TapNic>,
    /// QEMU's `-rtc base=`: the guest's hardware clock at power-on
    /// (`2001-01-01T00:00:00`, `utc`, `localtime`).
    pub rtc_base: Option<String>,
}

/// The one address of this machine a `restrict=on` guest reaches: slirp
/// carries its connections there to loopback servers (`guestfwd`).
pub const HTTP_GUEST_ADDR: &str = "10.0.2.100";

/// One virtio NIC on QEMU's user-mode network (slirp: the guest gets
/// 10.0.2.15/24 by DHCP, router 10.0.2.2, DNS 10.0.2.3). Always
/// `restrict=on`: without it the guest's traffic would leave this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNic {
    /// The guest's MAC address, fixed so tests can name the link by it.
    pub mac: String,
    /// Forward `127.0.0.1:PORT` on this machine to the guest's node API
    /// (TCP 50000). Inbound forwards still work under `restrict=on`, and
    /// the host side binds loopback only.
    pub api_port: Option<u16>,
    /// Carry the guest's connections to `10.0.2.100:80` to this server on
    /// loopback (`guestfwd`): the one address a `restrict=on` guest can
    /// reach on this machine, for a config served by the lab.
    pub guestfwd: Option<std::net::SocketAddr>,
    /// More `guestfwd`s: the guest's `10.0.2.100:PORT` to a loopback server
    /// (a registry a test runs, say).
    pub forwards: Vec<(u16, std::net::SocketAddrV4)>,
    /// `(GUESTPORT, HOSTPORT)`: this machine's `127.0.0.1:HOSTPORT`
    /// reaches the guest's TCP GUESTPORT (`hostfwd`, loopback only), as
    /// `api_port` does for the node API (etcd's 2379, say).
    pub node_forwards: Vec<(u16, u16)>,
}

impl UserNic {
    /// The lab's one NIC: QEMU's default MAC prefix, fixed suffix.
    pub const MAC: &'static str = "52:54:00:12:34:56";

    pub fn lab() -> UserNic {
        UserNic {
            mac: Self::MAC.to_string(),
            api_port: None,
            guestfwd: None,
            forwards: Vec::new(),
            node_forwards: Vec::new(),
        }
    }

    /// The `-netdev user,...` value.
    pub fn netdev(&self) -> String {
        let mut s = "user,id=net0,restrict=on".to_string();
        if let Some(port) = self.api_port {
            s.push_str(&format!(
                ",hostfwd=tcp:127.0.0.1:{port}-:{}",
                contract::api::PORT
            ));
        }
        if let Some(server) = self.guestfwd {
            s.push_str(&format!(
                ",guestfwd=tcp:{HTTP_GUEST_ADDR}:80-{}",
                to(server)
            ));
        }
        for (guest, host) in &self.node_forwards {
            s.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        for (port, server) in &self.forwards {
            s.push_str(&format!(
                ",guestfwd=tcp:{HTTP_GUEST_ADDR}:{port}-{}",
                to(std::net::SocketAddr::V4(*server))
            ));
        }
        s
    }
}

/// A guestfwd's target: a relay process per guest connection (see
/// [`super::relay`]) for an IPv4 server; QEMU's own one-shot `tcp:` else.
fn to(server: std::net::SocketAddr) -> String {
    match server {
        std::net::SocketAddr::V4(v4) => super::relay::guestfwd_command(v4),
        std::net::SocketAddr::V6(_) => format!("tcp:{server}"),
    }
}

impl VmConfig {
    /// The QEMU command line: q35, one vCPU, no display, no network but a
    /// network boot's own user NIC or a kernel boot's restricted [`UserNic`],
    /// no reboot (a guest reboot or panic ends
    /// QEMU) outside UEFI, disks on fixed PCI slots so their order is their
    /// `vdX` name.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let machine = match self.boot {
            VmBoot::Uefi {
                secure_boot: true, ..
            } => "q35,smm=on",
            _ => "q35",
        };
        let mut push = |s: String| args.push(s.into());
        for a in ["-accel", self.accel.as_str(), "-M", machine, "-smp"] {
            push(a.to_string());
        }
        push(self.cpus.max(1).to_string());
        push("-m".to_string());
        push(self.memory_mib.to_string());
        for a in ["-nodefaults", "-nographic", "-monitor", "none"] {
            push(a.to_string());
        }
        // TCG's default model (qemu64) has no AES-NI, PCLMULQDQ or SSSE3:
        // every TLS byte of etcd, the API servers and the agent then runs
        // through Go's generic crypto, and a three-member control plane
        // spends most of its emulated CPU there. `max` gives the guest
        // every instruction TCG emulates.
        if self.accel == Resolved::Tcg {
            push("-cpu".to_string());
            push("max".to_string());
        }
        let reboots = matches!(
            self.boot,
            VmBoot::Uefi { .. } | VmBoot::Kernel { reboot: true, .. }
        );
        if !reboots {
            push("-no-reboot".into());
        }
        if let Some(base) = &self.rtc_base {
            push("-rtc".into());
            push(format!("base={base}"));
        }
        if let Some(tap) = &self.tap {
            for a in tap.args() {
                push(a);
            }
        }
        push("-chardev".into());
        // append: the lab truncates the log itself before QEMU starts, and
        // lines added to it while QEMU writes (a planted console line) are
        // not overwritten at QEMU's own offset
        push(format!(
            "file,id=serial0,path={},append=on",
            self.serial_log.display()
        ));
        push("-serial".into());
        push("chardev:serial0".into());
        push("-qmp".into());
        push(format!(
            "unix:{},server=on,wait=off",
            self.qmp_socket.display()
        ));
        for (name, file) in &self.fw_cfg {
            push("-fw_cfg".into());
            push(format!("name={name},file={}", file.display()));
        }
        for (i, disk) in self.disks.iter().enumerate() {
            let ro = if disk.read_only { "on" } else { "off" };
            push("-drive".into());
            push(format!(
                "if=none,id=disk{i},format={},file={},readonly={ro},cache=unsafe",
                disk.format,
                disk.path.display()
            ));
            push("-device".into());
            push(format!(
                "virtio-blk-pci,drive=disk{i},serial={},bus=pcie.0,addr={:#x}",
                disk.serial,
                4 + i
            ));
        }
        match &self.boot {
            VmBoot::Kernel {
                kernel,
                initrd,
                append,
                ..
            } => {
                if let Some(nic) = &self.nic {
                    for a in [
                        "-netdev".to_string(),
                        nic.netdev(),
                        "-device".to_string(),
                        format!(
                            "virtio-net-pci,netdev=net0,mac={},bus=pcie.0,addr=0x3",
                            nic.mac
                        ),
                    ] {
                        args.push(a.into());
                    }
                }
                args.push("-kernel".into());
                args.push(kernel.clone().into());
                args.push("-initrd".into());
                args.push(initrd.clone().into());
                args.push("-append".into());
                args.push(append.clone().into());
            }
            VmBoot::Network { user_net } => {
                for a in [
                    "-netdev".to_string(),
                    format!("user,id=net0,{user_net}"),
                    "-device".to_string(),
                    "virtio-net-pci,netdev=net0,bus=pcie.0,addr=0x3".to_string(),
                    "-boot".to_string(),
                    "n".to_string(),
                ] {
                    args.push(a.into());
                }
            }
            VmBoot::Uefi {
                code,
                vars,
                secure_boot,
            } => {
                if *secure_boot {
                    args.push("-global".into());
                    args.push("driver=cfi.pflash01,property=secure,value=on".into());
                }
                for (unit, path, ro) in [(0, code, "on"), (1, vars, "off")] {
                    args.push("-drive".into());
                    let mut spec = OsString::from(format!(
                        "if=pflash,format=raw,unit={unit},readonly={ro},file="
                    ));
                    spec.push(path);
                    args.push(spec);
                }
            }
        }
        args
    }
}

/// How a VM ended after [`Vm::shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shutdown {
    /// QEMU had already exited (the guest powered off or rebooted).
    AlreadyExited,
    /// The guest powered off after the ACPI power button.
    PoweredOff,
    /// The guest did not power off in time; QEMU was killed.
    Killed,
}

/// A running QEMU. Dropping it kills QEMU; the serial log stays on disk.
/// How [`Vm::wait_exit_or`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Exited,
    Seen,
    TimedOut,
}

#[derive(Debug)]
pub struct Vm {
    child: Child,
    started: Instant,
    serial_log: PathBuf,
    qmp_socket: PathBuf,
    /// Bytes of the serial log already scanned, and an unfinished last line.
    scanned: u64,
    partial: Vec<u8>,
}

impl Vm {
    pub fn spawn(config: &VmConfig) -> Result<Vm, LabError> {
        let log_err = |source| LabError::Io {
            path: config.qemu_log.clone(),
            source,
        };
        let out = File::create(&config.qemu_log).map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        File::create(&config.serial_log).map_err(|source| LabError::Io {
            path: config.serial_log.clone(),
            source,
        })?;
        tracing::debug!(args = ?config.args(), "starting QEMU");
        let started = Instant::now();
        let mut cmd = Command::new(&config.qemu);
        cmd.args(config.args())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(tap) = &config.tap {
            use std::os::unix::process::CommandExt;
            let fd = tap.netns.raw_fd();
            // SAFETY: the closure runs in the forked child before exec and
            // makes one system call (setns), which is async-signal-safe and
            // allocates nothing; `fd` stays open in the parent meanwhile.
            unsafe {
                cmd.pre_exec(move || super::network::Netns::enter_in_child(fd));
            }
        }
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            qemu: config.qemu.clone(),
            source,
        })?;
        Ok(Vm {
            child,
            started,
            serial_log: config.serial_log.clone(),
            qmp_socket: config.qmp_socket.clone(),
            scanned: 0,
            partial: Vec::new(),
        })
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn serial_log(&self) -> &Path {
        &self.serial_log
    }

    /// Reads what the guest wrote since the last call; returns complete lines.
    fn new_lines(&mut self) -> Result<Vec<String>, LabError> {
        let io = |source| LabError::Io {
            path: self.serial_log.clone(),
            source,
        };
        let mut f = File::open(&self.serial_log).map_err(io)?;
        f.seek(SeekFrom::Start(self.scanned)).map_err(io)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(io)?;
        self.scanned += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut lines = Vec::new();
        while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            lines.push(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        Ok(lines)
    }

    /// Waits until a console line contains `marker`; returns the text from
    /// the marker on (kernel messages may share the line) and when it was
    /// seen. Errors when QEMU exits first or `deadline` passes.
    pub fn wait_for(
        &mut self,
        marker: &str,
        deadline: Instant,
    ) -> Result<(String, Instant), LabError> {
        self.wait_for_any(&[marker], deadline)
            .map(|(_, line, seen)| (line, seen))
    }

    /// [`Vm::wait_for`] for the first of several markers; also returns
    /// which one was seen (its index in `markers`).
    pub fn wait_for_any(
        &mut self,
        markers: &[&str],
        deadline: Instant,
    ) -> Result<(usize, String, Instant), LabError> {
        let find = |line: &str| {
            markers
                .iter()
                .enumerate()
                .find_map(|(i, m)| line.find(m).map(|at| (i, at)))
        };
        loop {
            let exited = self.child.try_wait().map_err(|source| LabError::Io {
                path: PathBuf::from("qemu"),
                source,
            })?;
            // Read after try_wait, so a line written just before exit is seen.
            for line in self.new_lines()? {
                tracing::trace!(target: "nodeimg::lab::serial", "{line}");
                if let Some((i, at)) = find(&line) {
                    return Ok((i, line[at..].to_string(), Instant::now()));
                }
            }
            if let Some(status) = exited {
                let last = String::from_utf8_lossy(&self.partial).into_owned();
                if let Some((i, at)) = find(&last) {
                    return Ok((i, last[at..].trim_end().to_string(), Instant::now()));
                }
                return Err(LabError::Exited {
                    status: status.to_string(),
                    serial_log: self.serial_log.clone(),
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    marker: markers.join(" | "),
                    seconds: deadline.saturating_duration_since(self.started).as_secs(),
                    serial_log: self.serial_log.clone(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Presses the ACPI power button over QMP and waits up to `bound` for
    /// QEMU to exit; kills it otherwise.
    pub fn shutdown(&mut self, bound: Duration) -> Shutdown {
        if let Ok(Some(_)) = self.child.try_wait() {
            return Shutdown::AlreadyExited;
        }
        if let Err(e) = qmp_command(&self.qmp_socket, "system_powerdown") {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Shutdown::AlreadyExited; // The guest powered off first.
            }
            tracing::warn!(error = %e, "QMP system_powerdown failed");
        }
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                tracing::debug!(%status, "QEMU exited after power-down");
                return Shutdown::PoweredOff;
            }
            std::thread::sleep(POLL);
        }
        tracing::warn!(
            bound_s = bound.as_secs(),
            "guest ignored the power button: killing QEMU"
        );
        self.kill();
        Shutdown::Killed
    }

    /// Waits up to `bound` for QEMU to exit by itself (the guest powered
    /// off); `true` if it did.
    pub fn wait_exit(&mut self, bound: Duration) -> bool {
        self.wait_exit_or(bound, || false) == Waited::Exited
    }

    /// Waits up to `bound` for QEMU to exit or for `seen` to hold, looked
    /// at every poll.
    pub fn wait_exit_or(&mut self, bound: Duration, seen: impl Fn() -> bool) -> Waited {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Waited::Exited;
            }
            if seen() {
                return Waited::Seen;
            }
            std::thread::sleep(POLL);
        }
        Waited::TimedOut
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// QEMU's exit status if it has exited (reaped), without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills QEMU (if still running) and reaps it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs one QMP command: read the greeting, negotiate, execute, read the reply.
pub fn qmp_command(socket: &Path, command: &str) -> std::io::Result<serde_json::Value> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut reply = || -> std::io::Result<serde_json::Value> {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let v: serde_json::Value = serde_json::from_str(&line)?;
            if v.get("event").is_none() {
                return Ok(v); // Asynchronous events are skipped.
            }
        }
    };
    reply()?; // {"QMP": {...}} greeting
    writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    reply()?;
    writer.write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())?;
    let v = reply()?;
    if let Some(e) = v.get("error") {
        return Err(std::io::Error::other(e.to_string()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_pin_disk_order_and_keep_network_off() {
        let disk = |p: &str, ro| Disk {
            path: p.into(),
            format: "raw",
            read_only: ro,
            serial: p.into(),
        };
        let cfg = VmConfig {
            qemu: "qemu-system-x86_64".into(),
            accel: Resolved::Tcg,
            memory_mib: 512,
            cpus: 1,
            boot: VmBoot::Kernel {
                kernel: "/k".into(),
                initrd: "/i".into(),
                append: "console=ttyS0 a=b".into(),
                reboot: false,
            },
            disks: vec![disk("root", true), disk("hash", true), disk("state", false)],
            serial_log: "/w/serial.log".into(),
            qmp_socket: "/w/qmp.sock".into(),
            qemu_log: "/w/qemu.log".into(),
            fw_cfg: Vec::new(),
            nic: None,
            tap: None,
            rtc_base: None,
        };
        let args: Vec<String> = cfg
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        assert!(
            line.starts_with("-accel tcg -M q35 -smp 1 -m 512 -nodefaults"),
            "{line}"
        );
        let two = VmConfig {
            cpus: 2,
            ..cfg.clone()
        }
        .args();
        assert!(two.windows(2).any(|w| w[0] == "-smp" && w[1] == "2"));
        assert!(
            line.contains("-no-reboot") && !line.contains("-net"),
            "{line}"
        );
        assert!(line.contains("file=root,readonly=on"), "{line}");
        assert!(line.contains("file=state,readonly=off"), "{line}");
        assert!(
            line.contains("drive=disk0,serial=root,bus=pcie.0,addr=0x4"),
            "{line}"
        );
        assert!(
            line.contains("drive=disk2,serial=state,bus=pcie.0,addr=0x6"),
            "{line}"
        );
        assert_eq!(args.last().map(String::as_str), Some("console=ttyS0 a=b"));
    }

    #[test]
    fn a_kernel_boot_nic_is_always_restricted() {
        let cfg = VmConfig {
            qemu: "qemu-system-x86_64".into(),
            accel: Resolved::Tcg,
            memory_mib: 512,
            cpus: 1,
            boot: VmBoot::Kernel {
                kernel: "/k".into(),
                initrd: "/i".into(),
                append: "console=ttyS0".into(),
                reboot: true,
            },
            disks: Vec::new(),
            serial_log: "/w/serial.log".into(),
            qmp_socket: "/w/qmp.sock".into(),
            qemu_log: "/w/qemu.log".into(),
            fw_cfg: Vec::new(),
            nic: Some(UserNic::lab()),
            tap: None,
            rtc_base: None,
        };
        let line = cfg
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            line.contains(
                "-netdev user,id=net0,restrict=on \
                 -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,bus=pcie.0,addr=0x3"
            ),
            "{line}"
        );
        assert_eq!(line.matches("-netdev").count(), 1, "{line}");
    }

    #[test]
    fn the_api_forward_binds_loopback_and_keeps_restrict() {
        let nic = UserNic {
            api_port: Some(40123),
            ..UserNic::lab()
        };
        assert_eq!(
            nic.netdev(),
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40123-:50000"
        );
        let nic = UserNic {
            guestfwd: Some("127.0.0.1:40200".parse().unwrap()),
            ..UserNic::lab()
        };
        // a relay per guest connection, this executable's `lab relay`
        let netdev = nic.netdev();
        assert!(
            netdev.starts_with("user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:/"),
            "{netdev}"
        );
        assert!(netdev.ends_with(" lab relay 127.0.0.1:40200"), "{netdev}");
        let nic = UserNic {
            api_port: Some(40123),
            node_forwards: vec![(2379, 40124)],
            ..UserNic::lab()
        };
        assert_eq!(
            nic.netdev(),
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40123-:50000,\
             hostfwd=tcp:127.0.0.1:40124-:2379"
        );
    }

    #[test]
    fn network_boots_have_one_user_nic_and_no_disk() {
        let cfg = VmConfig {
            qemu: "qemu-system-x86_64".into(),
            accel: Resolved::Tcg,
            memory_mib: 1024,
            cpus: 1,
            boot: VmBoot::Network {
                user_net: "restrict=on,tftp=/b,bootfile=boot.ipxe".into(),
            },
            disks: Vec::new(),
            serial_log: "/w/serial.log".into(),
            qmp_socket: "/w/qmp.sock".into(),
            qemu_log: "/w/qemu.log".into(),
            fw_cfg: Vec::new(),
            nic: None,
            tap: None,
            rtc_base: None,
        };
        let line = cfg
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(line.contains("-nodefaults"), "{line}");
        assert!(line.contains("-no-reboot"), "{line}");
        assert!(
            line.ends_with(
                "-netdev user,id=net0,restrict=on,tftp=/b,bootfile=boot.ipxe \
                 -device virtio-net-pci,netdev=net0,bus=pcie.0,addr=0x3 -boot n"
            ),
            "{line}"
        );
        assert!(
            !line.contains("-kernel") && !line.contains("-drive"),
            "{line}"
        );
    }

    #[test]
    fn uefi_boots_keep_reboots_and_give_ovmf_its_own_vars() {
        let cfg = VmConfig {
            qemu: "qemu-system-x86_64".into(),
            accel: Resolved::Tcg,
            memory_mib: 512,
            cpus: 1,
            boot: VmBoot::Uefi {
                code: "/fw/code.fd".into(),
                vars: "/w/vars.fd".into(),
                secure_boot: false,
            },
            disks: vec![Disk {
                path: "/w/disk.qcow2".into(),
                format: "qcow2",
                read_only: false,
                serial: "d".into(),
            }],
            serial_log: "/w/serial.log".into(),
            qmp_socket: "/w/qmp.sock".into(),
            qemu_log: "/w/qemu.log".into(),
            fw_cfg: Vec::new(),
            nic: None,
            tap: None,
            rtc_base: None,
        };
        let line: Vec<String> = cfg
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = line.join(" ");
        assert!(
            !line.contains("-no-reboot") && !line.contains("-kernel"),
            "{line}"
        );
        assert!(line.contains("if=pflash,format=raw,unit=0,readonly=on,file=/fw/code.fd"));
        assert!(line.contains("if=pflash,format=raw,unit=1,readonly=off,file=/w/vars.fd"));
        assert!(
            line.contains("format=qcow2,file=/w/disk.qcow2,readonly=off"),
            "{line}"
        );
        assert!(
            line.contains("-M q35 ") && !line.contains("smm") && !line.contains("secure"),
            "{line}"
        );
    }

    #[test]
    fn secure_boot_gives_ovmf_smm_and_an_smm_only_flash() {
        let cfg = VmConfig {
            qemu: "qemu-system-x86_64".into(),
            accel: Resolved::Tcg,
            memory_mib: 512,
            cpus: 1,
            boot: VmBoot::Uefi {
                code: "/fw/code.secboot.fd".into(),
                vars: "/w/vars.fd".into(),
                secure_boot: true,
            },
            disks: Vec::new(),
            serial_log: "/w/serial.log".into(),
            qmp_socket: "/w/qmp.sock".into(),
            qemu_log: "/w/qemu.log".into(),
            fw_cfg: Vec::new(),
            nic: None,
            tap: None,
            rtc_base: None,
        };
        let line = cfg
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            line.starts_with("-accel tcg -M q35,smm=on -smp 1"),
            "{line}"
        );
        assert!(
            line.contains(
                "-global driver=cfi.pflash01,property=secure,value=on \
                 -drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/code.secboot.fd \
                 -drive if=pflash,format=raw,unit=1,readonly=off,file=/w/vars.fd"
            ),
            "{line}"
        );
        assert!(!line.contains("-no-reboot"), "{line}");
    }
}
