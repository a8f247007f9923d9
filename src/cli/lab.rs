//! `nodeimg lab boot DIR`: boot a built image in QEMU and print its boot
//! report (a summary, or the JSON object with `--json`) on stdout. Exit 0
//! only when the node reported `ready: true`; 1 when it booted but was not
//! ready or never reported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use contract::report::{Report, VerityState};
use nodeimg::lab::{self, Accel, BootOptions};
use nodeimg::manifest::Manifest;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

// parsed once per run: the size of `boot`'s many options costs nothing
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Boot DIR's kernel + initramfs with its root, verity and a state disk; print the boot report.
    Boot(Box<BootArgs>),
    /// Boot a lab definition's nodes (qemu/*.toml) on one lab network; they keep running.
    Up(super::lab_up::UpArgs),
    /// Show a running lab's nodes: reports, forwards, serial logs, console hits.
    Status(super::lab_up::StatusArgs),
    /// Power a lab node off hard (QEMU killed).
    Kill(super::lab_up::KillArgs),
    /// Boot a stopped lab node again, on its tap and address.
    Start(super::lab_up::StartArgs),
    /// Power every lab node off and end the lab and its network.
    Down(super::lab_up::DownArgs),
    /// The lab supervisor `lab up` starts (not for direct use).
    #[command(hide = true)]
    Serve(super::lab_up::ServeArgs),
    /// Carries one guest connection to a loopback server (QEMU runs it
    /// for each connection to a guestfwd; not for direct use).
    #[command(hide = true)]
    Relay { server: std::net::SocketAddrV4 },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AccelArg {
    /// KVM if a short probe shows it works, else TCG.
    Auto,
    Tcg,
    Kvm,
}

#[derive(Debug, clap::Args)]
pub struct BootArgs {
    /// Build output directory holding manifest.json.
    pub dir: PathBuf,
    /// Print the report JSON object (with boot_ms) instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Seconds from QEMU start to the boot report.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// State disk to use and keep (created when missing); default: a fresh one per run.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Copy the serial console log here.
    #[arg(long)]
    pub keep_serial: Option<PathBuf>,
    /// Boot the bzImage itself (the UEFI/PXE kernel path) instead of the PVH vmlinux.
    #[arg(long)]
    pub bzimage: bool,
    /// QEMU accelerator: `auto` uses KVM only when a probe boots the
    /// image's kernel under it in time.
    #[arg(long, value_enum, env = "NODEIMG_ACCEL", default_value = "auto")]
    pub accel: AccelArg,
    /// A machine config for the node, handed over through QEMU's fw_cfg
    /// (`opt/org.nodeimg/config`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A machine config for the node on a config drive (a FAT disk labelled
    /// NODEIMG with config.toml); direct and UEFI boots.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub config_drive: Option<PathBuf>,
    /// A machine config the node fetches over HTTP, PXE bare metal's way:
    /// served from a loopback port of this machine, reached by the guest
    /// only as http://10.0.2.100/config.toml through the restricted user
    /// network's guestfwd (implies --net user); the command line gets
    /// nodeimg.config=http://10.0.2.100/config.toml#sha256=<FILE's sha256>.
    /// Direct boots.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "config_drive"])]
    pub config_url: Option<PathBuf>,
    /// With --config-url: put this sha256 on the command line instead of
    /// FILE's own (a test of the node's refusal).
    #[arg(long, value_name = "HEX", requires = "config_url")]
    pub config_url_hash: Option<String>,
    /// Extra kernel arguments after the image's own, e.g. nodeimg.verity=full
    /// (direct boots only: a UKI's command line is sealed inside it).
    #[arg(long, value_name = "ARG")]
    pub append: Vec<String>,
    /// `direct`: QEMU loads the kernel with root, verity and state disks.
    /// `uefi`: OVMF boots the image's disk (disk-qcow2 or disk-raw) through
    /// systemd-boot and the UKI; `--state` then names the VM's disk overlay.
    #[arg(long, value_enum, default_value = "direct")]
    pub firmware: FirmwareArg,
    /// UEFI: size of the VM's disk, e.g. 4G (at least the image's size;
    /// default: the image plus 1 GiB); the agent's state partition fills
    /// what the image does not use.
    #[arg(long, value_parser = parse_size)]
    pub disk_size: Option<u64>,
    /// UEFI: reports to wait for while the guest fails and reboots (boot
    /// counting); the first ready report ends the run.
    #[arg(long, default_value_t = 1)]
    pub reports: u32,
    /// Direct boots: let the guest reboot N times inside the same VM (an
    /// API `reboot`, say) and wait for a report after each; without it a
    /// guest reboot ends QEMU. `--timeout` covers all the boots.
    #[arg(long, default_value_t = 0)]
    pub reboots: u32,
    /// UEFI: enforce Secure Boot, with KEYDIR's PK, KEK and db (`nodeimg
    /// keys gen`) enrolled in OVMF's variables (OVMF's Secure Boot build,
    /// SMM on); the firmware then starts only binaries signed by db.
    #[arg(long, value_name = "KEYDIR")]
    pub secure_boot: Option<PathBuf>,
    /// Boot the image's PXE bundle (pxe/) on a VM with no disk: SeaBIOS
    /// runs the NIC's iPXE ROM, which fetches the bundle over QEMU's
    /// restricted user network.
    #[arg(long, conflicts_with_all = ["state", "append", "bzimage", "firmware", "disk_size"])]
    pub pxe: bool,
    /// PXE: fetch the bundle from QEMU's TFTP server, or over HTTP from the
    /// lab's own server on a loopback port (`nodeimg pxe serve`'s).
    #[arg(long, value_enum, default_value = "http", requires = "pxe")]
    pub pxe_via: PxeViaArg,
    /// The node's network: `off` (no NIC); `user`: one virtio NIC on
    /// QEMU's user network, always `restrict=on` so no guest traffic leaves
    /// this machine (DHCP gives 10.0.2.15/24, router 10.0.2.2, DNS
    /// 10.0.2.3); `lab`: one virtio NIC (MAC 52:54:00:77:00:01) on the
    /// lab's own network, a bridge (nodeimg0) in a private network
    /// namespace the lab makes and removes, with no route to this
    /// machine's network. The lab host there is 10.77.0.1/24 and serves
    /// NTP (UDP 123) from this machine's clock; there is no DHCP: the node
    /// takes its static address from its machine config
    /// ([[network.interfaces]] with that MAC). Needs root (or unprivileged
    /// user namespaces and a /dev/net/tun open to the user). Direct boots
    /// only.
    #[arg(long, value_enum, default_value = "off")]
    pub net: NetArg,
    /// With `--net lab`: the node's address on the lab network
    /// (10.77.0.N[/24], as in its machine config), where --api-port
    /// forwards to.
    #[arg(long, value_name = "ADDRESS", value_parser = parse_lab_address)]
    pub address: Option<std::net::Ipv4Addr>,
    /// With `--net lab`: forward 127.0.0.1:PORT to ADDRESS:50000 on the
    /// lab network too (a node API on an address it takes later).
    /// Repeatable.
    #[arg(long, value_name = "PORT=ADDRESS", value_parser = parse_lab_forward)]
    pub lab_forward: Vec<(u16, std::net::Ipv4Addr)>,
    /// Forward 127.0.0.1:PORT on this machine to the node API (TCP
    /// 50000): with `--net user` through QEMU's user network, with `--net
    /// lab` through the lab process, which connects from inside the lab
    /// network to --address. Nothing but loopback is bound.
    #[arg(long, value_name = "PORT")]
    pub api_port: Option<u16>,
    /// With `--net user`: the guest reaches the server on this machine's
    /// 127.0.0.1:HOSTPORT at 10.0.2.100:GUESTPORT (QEMU's guestfwd, a
    /// `nodeimg lab relay` per connection; the network stays
    /// `restrict=on`). Repeatable.
    #[arg(long, value_name = "GUESTPORT:HOSTPORT", value_parser = parse_forward)]
    pub forward: Vec<(u16, std::net::SocketAddrV4)>,
    /// With `--net user`: this machine's 127.0.0.1:HOSTPORT reaches the
    /// node's TCP GUESTPORT (QEMU's hostfwd, bound on loopback only),
    /// e.g. etcd's 2379. Repeatable.
    #[arg(long, value_name = "GUESTPORT:HOSTPORT", value_parser = parse_node_forward)]
    pub forward_node: Vec<(u16, u16)>,
    /// The guest's hardware clock at power-on, e.g. 2001-01-01T00:00:00
    /// (QEMU `-rtc base=`): a node that starts on a wrong clock, to test
    /// its time sync.
    #[arg(long, value_name = "DATETIME")]
    pub rtc_base: Option<String>,
    /// After the report, keep the VM running up to SECONDS and wait for
    /// the guest to power off by itself (e.g. `nodeimg node shutdown`);
    /// only then press the power button. `shutdown` in the JSON is
    /// `already_exited` when the guest powered off by itself.
    #[arg(long, value_name = "SECONDS")]
    pub wait_shutdown: Option<u64>,
    /// With --wait-shutdown: stop waiting once TEXT is on the serial
    /// console (what the guest says after its report, e.g. `runtime: NAME
    /// imported`), then press the power button.
    #[arg(long, value_name = "TEXT", requires = "wait_shutdown")]
    pub until_console: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetArg {
    Off,
    User,
    Lab,
}

/// `PORT=ADDRESS`, the address on the lab network.
fn parse_lab_forward(s: &str) -> Result<(u16, std::net::Ipv4Addr), String> {
    let (p, a) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected PORT=ADDRESS"))?;
    let port = p
        .parse::<u16>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?}: {p:?} is not a port"))?;
    Ok((port, parse_lab_address(a)?))
}

fn parse_lab_address(s: &str) -> Result<std::net::Ipv4Addr, String> {
    lab::network::parse_node_address(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FirmwareArg {
    Direct,
    Uefi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PxeViaArg {
    Tftp,
    Http,
}

/// `4G`, `512M`, `1048576`: bytes, with an optional binary K/M/G/T suffix.
fn parse_size(s: &str) -> Result<u64, String> {
    let (num, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix `{c}` (use K, M, G or T)")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub fn run(args: LabArgs) -> anyhow::Result<i32> {
    match args.command {
        LabCommand::Boot(a) => boot(*a),
        LabCommand::Up(a) => super::lab_up::up(a),
        LabCommand::Status(a) => super::lab_up::status(a),
        LabCommand::Kill(a) => super::lab_up::kill(a),
        LabCommand::Start(a) => super::lab_up::start(a),
        LabCommand::Down(a) => super::lab_up::down(a),
        LabCommand::Serve(a) => super::lab_up::serve(a),
        LabCommand::Relay { server } => {
            lab::relay::relay(server)?;
            Ok(0)
        }
    }
}

fn accel(a: AccelArg) -> Accel {
    match a {
        AccelArg::Auto => Accel::Auto,
        AccelArg::Tcg => Accel::Tcg,
        AccelArg::Kvm => Accel::Kvm,
    }
}

fn boot(args: BootArgs) -> anyhow::Result<i32> {
    let manifest = Manifest::read(&args.dir)
        .with_context(|| format!("reading the build in {}", args.dir.display()))?;
    let opts = BootOptions {
        timeout: Duration::from_secs(args.timeout),
        memory_mib: args.memory,
        state: args.state.clone(),
        bzimage: args.bzimage,
        accel: accel(args.accel),
        extra_cmdline: args.append.clone(),
        disk_size: args.disk_size,
        reports: args.reports,
        reboots: args.reboots,
        secure_boot: args.secure_boot.clone(),
        config: args.config.clone(),
        config_drive: args.config_drive.clone(),
        config_url: args.config_url.clone().map(|file| lab::ConfigUrlServe {
            file,
            sha256: args.config_url_hash.clone(),
        }),
        user_net: args.net == NetArg::User || args.config_url.is_some(),
        api_port: args.api_port,
        forwards: args.forward.clone(),
        node_forwards: args.forward_node.clone(),
        wait_shutdown: args.wait_shutdown.map(Duration::from_secs),
        until_console: args.until_console.clone(),
        lab_net: args.net == NetArg::Lab,
        lab_address: args.address,
        lab_forwards: args.lab_forward.clone(),
        rtc_base: args.rtc_base.clone(),
        ..BootOptions::default()
    };
    if args.api_port.is_some() && args.net == NetArg::Off {
        anyhow::bail!("--api-port needs --net user or --net lab (the forward goes to that NIC)");
    }
    if args.net == NetArg::Lab && args.api_port.is_some() && args.address.is_none() {
        anyhow::bail!("--api-port with --net lab needs --address: the node's address on the lab network, from its machine config");
    }
    if !args.lab_forward.is_empty() && args.net != NetArg::Lab {
        anyhow::bail!("--lab-forward works only with --net lab");
    }
    if args.address.is_some() && args.net != NetArg::Lab {
        anyhow::bail!("--address works only with --net lab");
    }
    if !args.forward_node.is_empty() && !opts.user_net {
        anyhow::bail!("--forward-node needs --net user (it is a hostfwd of QEMU's user network)");
    }
    if !args.forward.is_empty() && !opts.user_net {
        anyhow::bail!("--forward needs --net user (it is a guestfwd of QEMU's user network)");
    }
    if args.config_url.is_some() && args.net == NetArg::Lab {
        anyhow::bail!(
            "--config-url serves the config on the user network: it does not go with --net lab"
        );
    }
    if args.net != NetArg::Off && (args.pxe || args.firmware != FirmwareArg::Direct) {
        anyhow::bail!("--net works only with direct boots (a PXE boot has its own NIC)");
    }
    if args.config_url.is_some() && (args.pxe || args.firmware != FirmwareArg::Direct) {
        anyhow::bail!("--config-url works only with direct boots (a UKI's or PXE script's command line is fixed)");
    }
    if args.secure_boot.is_some() && (args.pxe || args.firmware != FirmwareArg::Uefi) {
        anyhow::bail!("--secure-boot works only with --firmware uefi");
    }
    let result = match args.firmware {
        _ if args.pxe => {
            let via = match args.pxe_via {
                PxeViaArg::Tftp => lab::PxeVia::Tftp,
                PxeViaArg::Http => lab::PxeVia::Http,
            };
            lab::boot_pxe(&args.dir, &manifest, &opts, via)
        }
        FirmwareArg::Direct => lab::boot_direct(&args.dir, &manifest, &opts),
        FirmwareArg::Uefi => {
            if !args.append.is_empty() {
                anyhow::bail!("--append works only for direct boots: the UKI's command line is sealed inside it");
            }
            lab::boot_uefi(&args.dir, &manifest, &opts)
        }
    };
    match result {
        Ok(outcome) => {
            keep_serial(&outcome.serial_log, args.keep_serial.as_deref())?;
            if args.json {
                // How the VM ended after the power button: `powered_off`
                // means the agent shut down cleanly.
                let mut report = serde_json::to_value(&outcome.report)?;
                if let Some(obj) = report.as_object_mut() {
                    obj.insert("shutdown".into(), serde_json::to_value(outcome.shutdown)?);
                    if let Some(n) = outcome.lab_net {
                        obj.insert("lab_network".into(), serde_json::to_value(n)?);
                    }
                    if !outcome.earlier_reports.is_empty() {
                        obj.insert(
                            "earlier_reports".into(),
                            serde_json::to_value(&outcome.earlier_reports)?,
                        );
                    }
                }
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for (i, r) in outcome.earlier_reports.iter().enumerate() {
                    println!("--- boot {} ---", i + 1);
                    print_summary(
                        &r.report,
                        Some(r.boot_ms),
                        outcome.accel.as_str(),
                        outcome.boot_path,
                    );
                }
                let last = &outcome.report;
                print_summary(
                    &last.report,
                    Some(last.boot_ms),
                    outcome.accel.as_str(),
                    outcome.boot_path,
                );
                if let Some(n) = outcome.lab_net {
                    println!(
                        "labnet   {}/{} on {}, set up in {} ms, {} NTP request(s) answered",
                        lab::network::HOST,
                        lab::network::PREFIX,
                        lab::network::BRIDGE,
                        n.setup_ms,
                        n.ntp_answered
                    );
                }
            }
            Ok(if outcome.ready() { 0 } else { 1 })
        }
        Err(e) => match e.serial_log().map(Path::to_path_buf) {
            // The VM ran but never reported: that is a boot result, not a tool failure.
            Some(log) => {
                keep_serial(&log, args.keep_serial.as_deref())?;
                print_serial_tail(&log);
                if args.json {
                    let report =
                        json!({ "ready": false, "error": e.to_string(), "serial_log": log });
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    let report = Report {
                        error: Some(e.to_string()),
                        ..Report::default()
                    };
                    print_summary(&report, None, "", "");
                    println!("serial   {}", log.display());
                }
                Ok(1)
            }
            None => Err(anyhow::Error::new(e).context(format!("booting {}", args.dir.display()))),
        },
    }
}

fn keep_serial(log: &Path, to: Option<&Path>) -> anyhow::Result<()> {
    if let Some(to) = to {
        std::fs::copy(log, to)
            .with_context(|| format!("copying the serial log to {}", to.display()))?;
    }
    Ok(())
}

/// The last lines of the console, on stderr, for a boot that did not report.
fn print_serial_tail(log: &Path) {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("--- last console lines ({}) ---", log.display());
    for line in &lines[lines.len().saturating_sub(25)..] {
        eprintln!("{line}");
    }
}

fn print_summary(report: &Report, boot_ms: Option<u64>, accel: &str, boot_path: &str) {
    let or_dash = |s: Option<&str>| s.filter(|s| !s.is_empty()).unwrap_or("-").to_string();
    println!("ready    {}", if report.ready { "yes" } else { "NO" });
    if let Some(err) = report.error.as_deref().filter(|e| !e.is_empty()) {
        println!("error    {err}");
    }
    println!("kernel   {}", or_dash(Some(&report.kernel)));
    println!("pid1     {}", or_dash(report.pid1.as_deref()));
    let root = &report.root;
    if root.device.is_some() || root.verity != VerityState::None {
        println!(
            "root     {} {} read_only={} verity={}",
            root.device.as_deref().unwrap_or_default(),
            root.fstype.as_deref().unwrap_or_default(),
            root.read_only.map(|b| b.to_string()).unwrap_or_default(),
            root.verity.as_str()
        );
    }
    println!("var      {}", or_dash(report.var.as_deref()));
    if let Some(state) = &report.state {
        if let Some(part) = &state.partition {
            println!(
                "state    {part} {} MiB{}",
                state.size_bytes >> 20,
                if state.created {
                    " (created this boot)"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(entry) = &report.boot_entry {
        println!(
            "entry    {}{}",
            entry.path.as_deref().unwrap_or("-"),
            if entry.blessed { " (marked good)" } else { "" }
        );
    }
    println!("modules  {} loaded", report.modules.len());
    println!("sysctl   {} read back", report.sysctl.len());
    if let Some(c) = &report.config {
        match &c.url {
            Some(url) => println!("config   {} {url}", c.source),
            None => println!("config   {}", c.source),
        }
    }
    if let Some(net) = &report.network {
        for i in &net.interfaces {
            let addrs: Vec<String> = i
                .addresses
                .iter()
                .map(|a| format!("{} ({:?})", a.address, a.source).to_lowercase())
                .collect();
            println!("network  {} {}", i.name, addrs.join(", "));
        }
    }
    if let Some(t) = &report.time {
        match (t.synchronised, &t.server) {
            (true, Some(server)) => println!(
                "time     synchronised to {server} (stratum {}, {}): {} by {} ms, {} ms after the network",
                t.stratum.unwrap_or(0),
                t.source,
                t.method.as_deref().unwrap_or("-"),
                t.offset_ms.unwrap_or(0),
                t.sync_ms.map(|m| m.to_string()).unwrap_or_else(|| "-".into())
            ),
            _ => println!(
                "time     NOT synchronised ({}): {}",
                t.servers.join(", "),
                t.error.as_deref().unwrap_or("?")
            ),
        }
    }
    for svc in &report.services {
        println!(
            "service  {} {:?}, {} restarts{}",
            svc.name,
            svc.state,
            svc.restarts,
            svc.ready_ms
                .map(|ms| format!(", ready in {ms} ms"))
                .unwrap_or_default()
        );
    }
    if let Some(rt) = &report.runtime {
        match &rt.confinement {
            Some(c) if rt.ok => println!(
                "runtime  {} image(s) imported; probe confined: uid {}, CapEff {}, seccomp {}, no_new_privs {}, / read-only",
                rt.images.len(),
                c.uid,
                c.cap_eff,
                c.seccomp,
                c.no_new_privs
            ),
            _ => println!("runtime  NOT OK: {}", rt.error.as_deref().unwrap_or("?")),
        }
    }
    if let Some(ms) = boot_ms {
        println!(
            "boot     {:.2} s to report ({accel}, {boot_path})",
            ms as f64 / 1000.0
        );
    }
}

/// `GUESTPORT:HOSTPORT` of `--forward-node`.
fn parse_node_forward(s: &str) -> Result<(u16, u16), String> {
    let (guest, host) = parse_forward(s)?;
    Ok((guest, host.port()))
}

/// `GUESTPORT:HOSTPORT`: the host side is always loopback.
fn parse_forward(s: &str) -> Result<(u16, std::net::SocketAddrV4), String> {
    let (g, h) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected GUESTPORT:HOSTPORT"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{s:?}: {p:?} is not a port"))
    };
    let host = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port(h)?);
    Ok((port(g)?, host))
}
