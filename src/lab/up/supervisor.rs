//! The lab supervisor (`nodeimg lab serve RUNDIR`, started by `lab up`):
//! holds the lab network and the nodes' QEMUs for as long as the lab is
//! up, watches every console, and answers [`control`] requests.
//!
//! One lock guards the lab. A watcher thread reads each node's new
//! serial-log lines (reports, console hits) and notices QEMUs that ended,
//! every [`TICK`]; the main thread serves the socket, one request at a
//! time, and is the only one that starts QEMUs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use contract::report::Report;

use super::control::{self, Request, Response};
use super::{
    io, node_dir, prepare::config_path, write_atomic, LabStatus, NodeHit, NodeStatus, RunPlan,
    UpError, ETCD_CLIENT_PORT, PLAN_FILE, SOCKET, STATE_FILE,
};
use crate::lab::console_scan::scan_line;
use crate::lab::definition::{ConfigDelivery, NodePlan};
use crate::lab::network::{LabNetwork, PortForward, TapNic};
use crate::lab::vm::{qmp_command, UserNic, Vm, VmBoot, VmConfig};
use crate::lab::{accel, LabReport, REPORT_MARKER};

/// How often the watcher reads the consoles.
const TICK: Duration = Duration::from_millis(100);
/// How long `down` gives the nodes to power off after the power button.
const POWER_OFF: Duration = Duration::from_secs(30);

/// An image's verified artifacts and its kernel unpacked for a PVH boot.
struct Image {
    vmlinux: PathBuf,
    initrd: PathBuf,
    rootfs: PathBuf,
    verity: PathBuf,
    cmdline: String,
}

/// New complete lines of a growing file.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    fn lines(&mut self) -> Vec<String> {
        let Ok(mut f) = File::open(&self.path) else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut lines = Vec::new();
        while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            lines.push(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        lines
    }
}

/// How `lab status` names a console report line it could not read.
const BAD_REPORT: &str = "a report the contract cannot read";

struct Node {
    plan: NodePlan,
    dir: PathBuf,
    tap: TapNic,
    image: usize,
    api_port: u16,
    etcd_port: u16,
    kube_port: u16,
    vm: Option<Vm>,
    tail: Tail,
    starts: u32,
    started: Instant,
    report: Option<LabReport>,
    exit: Option<String>,
    error: Option<String>,
    /// A `url` node's config server, alive while the node may fetch.
    _config_server: Option<crate::pxe_server::Server>,
}

struct Lab {
    run_dir: PathBuf,
    name: String,
    qemu: PathBuf,
    accel: accel::Resolved,
    netns: String,
    images: Vec<Image>,
    nodes: Vec<Node>,
    hits: Vec<NodeHit>,
    down: bool,
}

/// Runs the supervisor of `run_dir` until `down`. Errors before the lab
/// is up end it (and so `lab up`, which watches it).
pub fn serve(run_dir: &Path) -> Result<(), UpError> {
    let plan_path = run_dir.join(PLAN_FILE);
    let data = std::fs::read(&plan_path).map_err(io(&plan_path))?;
    let plan: RunPlan = serde_json::from_slice(&data).map_err(|e| UpError::Invalid {
        path: plan_path.clone(),
        message: e.to_string(),
    })?;
    // first, while this process has one thread: a run without root moves
    // the whole process into a user namespace for the network
    let forwards: Vec<PortForward> = plan
        .lab
        .nodes
        .iter()
        .flat_map(|n| {
            [
                contract::api::PORT,
                ETCD_CLIENT_PORT,
                contract::kube::API_PORT,
            ]
            .map(|guest_port| PortForward {
                port: 0,
                address: n.address,
                guest_port,
            })
        })
        .collect();
    let net = LabNetwork::up_with(plan.lab.nodes.len(), &forwards, &plan.host_forwards)
        .map_err(crate::lab::LabError::LabNetwork)?;
    let netns = net
        .netns()
        .run(|| std::fs::read_link("/proc/thread-self/ns/net"))
        .ok()
        .and_then(Result::ok)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut images = Vec::new();
    let mut image_of: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for n in &plan.lab.nodes {
        if !image_of.contains_key(&n.image) {
            let i = images.len();
            images.push(unpack_image(
                &n.image,
                &run_dir.join("images").join(i.to_string()),
            )?);
            image_of.insert(n.image.clone(), i);
        }
    }
    let kernel_for_probe = images
        .first()
        .map(|i| i.vmlinux.clone())
        .unwrap_or_default();
    let accel = accel::resolve(plan.lab.accel.accel(), &plan.qemu, &kernel_for_probe);
    let mut nodes = Vec::new();
    for n in &plan.lab.nodes {
        let dir = node_dir(run_dir, &n.name);
        let port = |guest: u16| {
            net.forwards
                .iter()
                .find(|f| f.address == n.address && f.guest_port == guest)
                .map(|f| f.port)
                .unwrap_or(0)
        };
        let tap = net.nic(n.index).ok_or_else(|| UpError::Invalid {
            path: plan_path.clone(),
            message: format!("no tap for node {}", n.name),
        })?;
        nodes.push(Node {
            plan: n.clone(),
            tail: Tail::new(dir.join("serial.log")),
            dir,
            tap,
            image: image_of.get(&n.image).copied().unwrap_or(0),
            api_port: port(contract::api::PORT),
            etcd_port: port(ETCD_CLIENT_PORT),
            kube_port: port(contract::kube::API_PORT),
            vm: None,
            starts: 0,
            started: Instant::now(),
            report: None,
            exit: None,
            error: None,
            _config_server: None,
        });
    }
    let socket = run_dir.join(SOCKET);
    if socket.exists() {
        std::fs::remove_file(&socket).map_err(io(&socket))?;
    }
    let listener = UnixListener::bind(&socket).map_err(io(&socket))?;
    let lab = Arc::new(Mutex::new(Lab {
        run_dir: run_dir.to_path_buf(),
        name: plan.lab.name.clone(),
        qemu: plan.qemu.clone(),
        accel,
        netns,
        images,
        nodes,
        hits: Vec::new(),
        down: false,
    }));
    {
        let mut l = lock(&lab);
        // every node at once: they boot side by side
        for i in 0..l.nodes.len() {
            if let Err(e) = l.start(i, false) {
                tracing::error!(node = l.nodes[i].plan.name, error = %e, "could not start the node");
                l.nodes[i].error = Some(e);
            }
        }
        l.save();
    }
    tracing::info!(
        lab = plan.lab.name,
        nodes = plan.lab.nodes.len(),
        accel = accel.as_str(),
        "lab up; serving {}",
        socket.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (lab, stop) = (lab.clone(), stop.clone());
        std::thread::Builder::new()
            .name("lab-watch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    lock(&lab).watch();
                    std::thread::sleep(TICK);
                }
            })
            .map_err(io(run_dir))?
    };
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        let request = control::read_request(&stream);
        let down = matches!(request, Ok(Request::Down));
        let response = match request {
            Ok(Request::Status) => Ok(()),
            Ok(Request::Kill { node }) => lock(&lab).kill(&node),
            Ok(Request::Start { node, blank_disk }) => {
                let mut l = lock(&lab);
                match l.index(&node) {
                    Ok(i) => {
                        let r = l.start(i, blank_disk);
                        l.save();
                        r
                    }
                    Err(e) => Err(e),
                }
            }
            Ok(Request::Down) => {
                power_off(&lab);
                Ok(())
            }
            Err(e) => Err(e),
        };
        let response = match response {
            Ok(()) => {
                let l = lock(&lab);
                Response::Status(Box::new(l.status()))
            }
            Err(e) => Response::Error(e),
        };
        if let Err(e) = control::write_response(&stream, &response) {
            tracing::warn!(error = %e, "could not answer a control request");
        }
        if down {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let _ = std::fs::remove_file(&socket);
    let mut l = lock(&lab);
    for n in &mut l.nodes {
        n.vm = None; // kills what is left
    }
    l.save();
    drop(l);
    drop(net);
    tracing::info!("lab down");
    Ok(())
}

/// Presses every running node's power button, waits up to [`POWER_OFF`]
/// for them to stop, then kills the rest; the consoles are read to the end.
fn power_off(lab: &Mutex<Lab>) {
    {
        let mut l = lock(lab);
        l.down = true;
        for n in &l.nodes {
            if n.vm.is_some() {
                if let Err(e) = qmp_command(&n.dir.join("qmp.sock"), "system_powerdown") {
                    tracing::warn!(node = n.plan.name, error = %e, "QMP system_powerdown failed");
                }
            }
        }
    }
    let deadline = Instant::now() + POWER_OFF;
    loop {
        let mut l = lock(lab);
        l.watch();
        if l.nodes.iter().all(|n| n.vm.is_none()) || Instant::now() >= deadline {
            for n in &mut l.nodes {
                if let Some(mut vm) = n.vm.take() {
                    tracing::warn!(node = n.plan.name, "did not power off: killed");
                    n.exit = vm
                        .kill()
                        .map(|s| format!("killed after the power button ({s})"));
                }
            }
            l.watch();
            l.save();
            return;
        }
        drop(l);
        std::thread::sleep(TICK);
    }
}

fn lock(lab: &Mutex<Lab>) -> MutexGuard<'_, Lab> {
    // a panicked holder leaves the lab as it was; the state is still the lab's
    lab.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Verifies `dir`'s boot artifacts and unpacks its kernel into `work`.
fn unpack_image(dir: &Path, work: &Path) -> Result<Image, UpError> {
    let manifest = crate::manifest::Manifest::read(dir).map_err(|e| UpError::Invalid {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let a = crate::lab::boot_artifacts(dir, &manifest)?;
    let bz = std::fs::read(&a.kernel).map_err(io(&a.kernel))?;
    let vmlinux =
        crate::boot::extract_vmlinux(&bz).map_err(|source| crate::lab::LabError::Kernel {
            path: a.kernel.clone(),
            source,
        })?;
    std::fs::create_dir_all(work).map_err(io(work))?;
    let path = work.join("vmlinux");
    std::fs::write(&path, vmlinux).map_err(io(&path))?;
    Ok(Image {
        vmlinux: path,
        initrd: a.initramfs,
        rootfs: a.rootfs,
        verity: a.verity,
        cmdline: a.cmdline,
    })
}

impl Lab {
    fn index(&self, node: &str) -> Result<usize, String> {
        self.nodes
            .iter()
            .position(|n| n.plan.name == node)
            .ok_or_else(|| {
                let names: Vec<&str> = self.nodes.iter().map(|n| n.plan.name.as_str()).collect();
                format!(
                    "no node {node:?} in lab {} ({})",
                    self.name,
                    names.join(", ")
                )
            })
    }

    /// Boots node `i` on its tap: its earlier serial log kept as
    /// `serial.N.log`, its state disk reused or (`blank`) made anew.
    fn start(&mut self, i: usize, blank: bool) -> Result<(), String> {
        if self.down {
            return Err("the lab is going down".into());
        }
        let n = &self.nodes[i];
        if n.vm.is_some() {
            return Err(format!("{} is running: `lab kill` it first", n.plan.name));
        }
        let dir = n.dir.clone();
        let serial = dir.join("serial.log");
        if n.starts > 0 && serial.exists() {
            let kept = dir.join(format!("serial.{}.log", n.starts));
            std::fs::rename(&serial, &kept).map_err(|e| format!("{}: {e}", kept.display()))?;
        }
        let state = dir.join("state.img");
        if blank && state.exists() {
            std::fs::remove_file(&state).map_err(|e| format!("{}: {e}", state.display()))?;
        }
        crate::lab::create_state_disk(&state, n.plan.state_size).map_err(|e| e.to_string())?;
        let config = config_path(&self.run_dir, &n.plan.name);
        let image = &self.images[n.image];
        let mut disks = crate::lab::node_disks(&image.rootfs, &image.verity, &state);
        let mut fw_cfg = Vec::new();
        let mut extra = Vec::new();
        let mut nic = None;
        let mut server = None;
        match n.plan.config {
            ConfigDelivery::FwCfg => fw_cfg.push((crate::lab::CONFIG_FW_CFG.to_string(), config)),
            ConfigDelivery::ConfigDrive => {
                let drive = dir.join("config-drive.img");
                crate::lab::write_config_drive(&config, &drive).map_err(|e| e.to_string())?;
                disks.push(crate::lab::raw_disk(&drive, true, "nodeimg-config"));
            }
            ConfigDelivery::Url => {
                let served = crate::lab::ConfigUrlServe {
                    file: config,
                    sha256: None,
                };
                let (s, word) =
                    crate::lab::serve_config_url(&served, &dir).map_err(|e| e.to_string())?;
                extra.push(word);
                nic = Some(UserNic {
                    guestfwd: Some(s.addr()),
                    ..UserNic::lab()
                });
                server = Some(s);
            }
            ConfigDelivery::None => {}
        }
        let append = crate::lab::lab_cmdline(&image.cmdline, &extra).map_err(|e| e.to_string())?;
        let config = VmConfig {
            qemu: self.qemu.clone(),
            accel: self.accel,
            cpus: n.plan.cpus,
            memory_mib: n.plan.memory_mib,
            boot: VmBoot::Kernel {
                kernel: image.vmlinux.clone(),
                initrd: image.initrd.clone(),
                append,
                // an API reboot stays inside the VM, as on a machine
                reboot: true,
            },
            disks,
            serial_log: serial.clone(),
            qmp_socket: dir.join("qmp.sock"),
            qemu_log: dir.join("qemu.log"),
            fw_cfg,
            nic,
            tap: Some(n.tap.clone()),
            rtc_base: None,
        };
        let vm = Vm::spawn(&config).map_err(|e| e.to_string())?;
        tracing::info!(node = n.plan.name, pid = vm.pid(), blank, "node started");
        let n = &mut self.nodes[i];
        n.vm = Some(vm);
        n.tail = Tail::new(serial);
        n.starts += 1;
        n.started = Instant::now();
        n.report = None;
        n.exit = None;
        n.error = None;
        n._config_server = server;
        Ok(())
    }

    /// Hard power-off of `node`: QEMU is killed, nothing is told to the guest.
    fn kill(&mut self, node: &str) -> Result<(), String> {
        let i = self.index(node)?;
        let n = &mut self.nodes[i];
        let Some(mut vm) = n.vm.take() else {
            return Err(format!("{node} is not running"));
        };
        n.exit = vm.kill().map(|s| format!("killed by the lab ({s})"));
        tracing::info!(node, "node killed");
        self.watch();
        self.save();
        Ok(())
    }

    /// Reads every console's new lines (reports, hits) and notices ended
    /// QEMUs; saves the state when anything changed.
    fn watch(&mut self) {
        let mut changed = false;
        for n in &mut self.nodes {
            // exit first, then the log: a line written just before the
            // exit is still read
            let ended = n.vm.as_mut().and_then(Vm::exited);
            for line in n.tail.lines() {
                if let Some(hit) = scan_line(&line) {
                    tracing::error!(
                        node = n.plan.name,
                        line = hit.line,
                        "console: {}",
                        hit.marker
                    );
                    self.hits.push(NodeHit {
                        node: n.plan.name.clone(),
                        hit,
                    });
                    changed = true;
                }
                if let Some(at) = line.find(REPORT_MARKER) {
                    match Report::parse_line(&line[at..]) {
                        Ok(report) => {
                            n.report = Some(LabReport {
                                report,
                                boot_ms: n.started.elapsed().as_millis() as u64,
                                received_unix_ms: std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .ok()
                                    .map(|d| d.as_millis() as i64),
                            });
                            tracing::info!(node = n.plan.name, "boot report");
                            if n.error
                                .as_deref()
                                .is_some_and(|e| e.starts_with(BAD_REPORT))
                            {
                                n.error = None;
                            }
                        }
                        // the kernel's console messages can land inside a
                        // long report line: a later report replaces it, so
                        // it is an error only while no report was read
                        Err(e) if n.report.is_some() => {
                            tracing::warn!(node = n.plan.name, "{BAD_REPORT}: {e}")
                        }
                        Err(e) => {
                            n.error =
                                Some(format!("{BAD_REPORT}: {}", crate::util::error::chain(&e)))
                        }
                    }
                    changed = true;
                }
            }
            if let Some(status) = ended {
                n.vm = None;
                n.exit = Some(status.to_string());
                tracing::info!(node = n.plan.name, %status, "QEMU ended");
                changed = true;
            }
        }
        if changed {
            self.save();
        }
    }

    fn status(&self) -> LabStatus {
        LabStatus {
            name: self.name.clone(),
            run_dir: self.run_dir.clone(),
            supervisor_pid: std::process::id(),
            netns: self.netns.clone(),
            accel: self.accel.as_str().to_string(),
            down: self.down,
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeStatus {
                    name: n.plan.name.clone(),
                    role: n.plan.role,
                    address: n.plan.address,
                    running: n.vm.is_some(),
                    pid: n.vm.as_ref().map(Vm::pid),
                    starts: n.starts,
                    report: n.report.clone(),
                    api_port: n.api_port,
                    etcd_port: n.etcd_port,
                    kube_port: n.kube_port,
                    serial_log: n.tail.path.clone(),
                    exit: n.exit.clone(),
                    error: n.error.clone(),
                })
                .collect(),
            console_hits: self.hits.clone(),
        }
    }

    /// Writes `state.json`; a failure is logged (the socket still answers).
    fn save(&self) {
        let path = self.run_dir.join(STATE_FILE);
        let result = serde_json::to_vec_pretty(&self.status())
            .map_err(|e| e.to_string())
            .and_then(|json| write_atomic(&path, &json, 0o644).map_err(|e| e.to_string()));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = e, "could not save the lab state");
        }
    }
}
