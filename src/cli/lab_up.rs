//! `nodeimg lab up FILE --cluster DIR`, `lab status`, `lab kill NODE`,
//! `lab start NODE [--blank-disk]`, `lab down`: a multi-node lab whose
//! VMs outlive the command (see `nodeimg::lab::up`). `lab serve RUNDIR`
//! is the supervisor `lab up` starts; it is not for people.
//!
//! Exit codes: `up` and `start` 0 when every node they wait for reported
//! ready and no console showed a broken kernel or agent; `down` 0 when no
//! console did; 1 otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nodeimg::lab::definition;
use nodeimg::lab::up::control::{self, ControlError, Request};
use nodeimg::lab::up::{self, LabStatus, NodeStatus, RunPlan};

/// How often `up` and `start` ask for the nodes' reports.
const POLL: Duration = Duration::from_millis(500);
/// How long one control request may take (`down` powers nodes off).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The lab definition, e.g. qemu/ha.toml (see qemu/README.md).
    pub lab: PathBuf,
    /// The cluster directory (`nodeimg cluster init`) the nodes' machine
    /// configs are rendered from.
    #[arg(long, value_name = "DIR")]
    pub cluster: PathBuf,
    #[command(flatten)]
    pub run: RunDirArgs,
    /// Print the lab's status as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for every node's boot report.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Leave the etcd bootstrap to the user (`nodeimg cluster bootstrap`);
    /// by default `up` makes that one call on the first control-plane
    /// node as soon as it reports ready (the others join as they come
    /// up), and none for a static formation (cluster.toml `[etcd]`).
    #[arg(long)]
    pub no_bootstrap: bool,
    /// `PORT=127.0.0.1:PORT`: the lab host (10.77.0.1) offers the nodes, on
    /// TCP PORT, a server on this machine's loopback (an identity provider
    /// or object store you run, say). Repeatable; loopback targets only.
    #[arg(long = "host-forward", value_name = "PORT=127.0.0.1:PORT")]
    pub host_forwards: Vec<nodeimg::lab::network::HostForward>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunDirArgs {
    /// The lab's run directory (default: ~/.cache/nodeimg/lab/NAME, NAME
    /// from --lab or the lab file; without either, the one lab there).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// The lab's name, for its default run directory.
    #[arg(long = "lab-name", value_name = "NAME", conflicts_with = "run_dir")]
    pub name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub run: RunDirArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// The node to power off hard.
    pub node: String,
    #[command(flatten)]
    pub run: RunDirArgs,
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The stopped node to boot again, on its tap and address.
    pub node: String,
    /// Boot it on a new, empty state disk (a replaced machine).
    #[arg(long)]
    pub blank_disk: bool,
    #[command(flatten)]
    pub run: RunDirArgs,
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for its boot report.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub run: RunDirArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    pub run_dir: PathBuf,
}

impl RunDirArgs {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.run_dir {
            return Ok(std::path::absolute(d)?);
        }
        if let Some(n) = &self.name {
            return Ok(up::default_run_dir(n));
        }
        let base = up::labs_dir();
        let labs: Vec<PathBuf> = std::fs::read_dir(&base)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.join(up::STATE_FILE).is_file())
                    .collect()
            })
            .unwrap_or_default();
        match labs.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!(
                "no lab under {}: give --run-dir or --lab-name",
                base.display()
            ),
            many => bail!(
                "several labs under {} ({}): give --run-dir or --lab-name",
                base.display(),
                many.iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

pub fn up(args: UpArgs) -> anyhow::Result<i32> {
    let plan = definition::load(&args.lab)?;
    // read before any VM starts: a bad cluster.toml leaves nothing running
    let formation = nodeimg::cluster::ClusterDir::load(&args.cluster)?
        .config
        .etcd
        .formation;
    let static_formation = formation == contract::config::EtcdFormation::Static;
    if static_formation && !args.no_bootstrap {
        eprintln!(
            "lab: etcd forms statically (cluster.toml [etcd] formation = \"static\"): no bootstrap call"
        );
    }
    let want_bootstrap = !args.no_bootstrap && !static_formation;
    let run_dir = match (&args.run.run_dir, &args.run.name) {
        (Some(d), _) => std::path::absolute(d)?,
        (None, Some(n)) => up::default_run_dir(n),
        (None, None) => up::default_run_dir(&plan.name),
    };
    let run = RunPlan {
        lab: plan,
        qemu: PathBuf::from("qemu-system-x86_64"),
        host_forwards: args.host_forwards.clone(),
    };
    up::prepare::prepare(
        &run,
        &args.cluster,
        &run_dir,
        time::OffsetDateTime::now_utc(),
    )
    .with_context(|| format!("preparing lab {} in {}", run.lab.name, run_dir.display()))?;
    let mut supervisor = spawn_supervisor(&run_dir)?;
    tracing::info!(
        pid = supervisor.id(),
        run_dir = %run_dir.display(),
        nodes = run.lab.nodes.len(),
        "lab supervisor started; waiting for every node's report"
    );
    // made as soon as the first control-plane node is ready, while the
    // others still boot: they join as soon as they are up
    let mut bootstrapped: Option<i32> = None;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let status = loop {
        if let Some(exit) = supervisor.try_wait()? {
            print_tail(&run_dir.join(up::SUPERVISOR_LOG));
            bail!(
                "the lab supervisor ended ({exit}) before the nodes reported; its log: {}",
                run_dir.join(up::SUPERVISOR_LOG).display()
            );
        }
        match control::request(&run_dir, &Request::Status, REQUEST_TIMEOUT) {
            Ok(s) if s.nodes.iter().all(settled) => break s,
            Ok(s) if Instant::now() >= deadline => {
                print_status(&s, args.json)?;
                let waiting: Vec<&str> = s
                    .nodes
                    .iter()
                    .filter(|n| !settled(n))
                    .map(|n| n.name.as_str())
                    .collect();
                eprintln!(
                    "error: no report from {} within {} s; the lab stays up (`nodeimg lab down --run-dir {}`)",
                    waiting.join(", "),
                    args.timeout,
                    run_dir.display()
                );
                return Ok(1);
            }
            Ok(s) => {
                if want_bootstrap && bootstrapped.is_none() && first_control_plane_ready(&s) {
                    bootstrapped = Some(bootstrap(&s, &args.cluster)?);
                }
            }
            // the supervisor binds its socket once the network is up
            Err(ControlError::Connect { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            bail!(
                "the lab supervisor did not answer within {} s",
                args.timeout
            );
        }
        std::thread::sleep(POLL);
    };
    print_status(&status, args.json)?;
    let code = verdict(&status, status.nodes.iter().collect());
    if code != 0 || !want_bootstrap {
        return Ok(code);
    }
    match bootstrapped {
        Some(code) => Ok(code),
        None => bootstrap(&status, &args.cluster),
    }
}

/// How long `up` keeps trying to reach the first control-plane node's API
/// for the bootstrap call.
const BOOTSTRAP_REACH: Duration = Duration::from_secs(60);

/// The lab's first control-plane node (the one the bootstrap call goes
/// to) has reported ready.
fn first_control_plane_ready(status: &LabStatus) -> bool {
    status
        .nodes
        .iter()
        .find(|n| n.role == contract::config::Role::ControlPlane)
        .and_then(|n| n.report.as_ref())
        .is_some_and(|r| r.report.ready)
}

/// The one bootstrap call, on the lab's first control-plane node (as
/// `talosctl cluster create` makes it); the others join by themselves.
fn bootstrap(status: &LabStatus, cluster: &Path) -> anyhow::Result<i32> {
    let Some(first) = status
        .nodes
        .iter()
        .find(|n| n.role == contract::config::Role::ControlPlane)
    else {
        return Ok(0);
    };
    let admin = nodeimg::cluster::AdminConfig::read(&cluster.join("admin.nodeconfig"))?;
    let api = format!("127.0.0.1:{}", first.api_port);
    let address = first.address.to_string();
    eprintln!("lab: bootstrapping etcd on {} ({address})", first.name);
    // The node API starts just after the node's report, and the lab's
    // loopback forward drops a connection the node does not take yet: a
    // call that got no answer is made again for a while. A node that
    // answered (even to refuse) is never asked twice.
    let deadline = Instant::now() + BOOTSTRAP_REACH;
    let answer = loop {
        match super::bootstrap::call(&api, Some(&address), &admin, 300) {
            Ok(answer) => break answer,
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %format!("{e:#}"), "node API not answering yet; again in 2 s");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    };
    match answer {
        Ok(said) => {
            eprint!("{said}");
            Ok(0)
        }
        Err(refusal) => {
            eprintln!(
                "error: {} refused the bootstrap: {refusal}\n(`--no-bootstrap` leaves it to you)",
                first.name
            );
            Ok(1)
        }
    }
}

/// A node `up` stops waiting for: it reported, or could not start, or
/// QEMU ended.
fn settled(n: &NodeStatus) -> bool {
    n.report.is_some() || n.error.is_some() || !n.running
}

/// 0 when every node in `nodes` reported ready and no console showed a
/// broken kernel or agent; the reasons on stderr otherwise.
fn verdict(status: &LabStatus, nodes: Vec<&NodeStatus>) -> i32 {
    let mut code = 0;
    for n in nodes {
        let ready = n.report.as_ref().is_some_and(|r| r.report.ready);
        if !ready {
            eprintln!(
                "error: {} is not ready{}; serial log {}",
                n.name,
                n.error
                    .as_deref()
                    .or(n.report.as_ref().and_then(|r| r.report.error.as_deref()))
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
                n.serial_log.display()
            );
            code = 1;
        }
    }
    code.max(hits(status))
}

/// Prints every console hit on stderr; 1 if there is one.
fn hits(status: &LabStatus) -> i32 {
    for h in &status.console_hits {
        eprintln!(
            "error: {} console: {}: {}",
            h.node, h.hit.marker, h.hit.line
        );
    }
    i32::from(!status.console_hits.is_empty())
}

/// `nodeimg lab serve RUN_DIR` in a session of its own, its output in
/// the run directory: it lives on after `lab up` returns.
fn spawn_supervisor(run_dir: &Path) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let log_path = run_dir.join(up::SUPERVISOR_LOG);
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the nodeimg executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(["lab", "serve"])
        .arg(run_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: runs in the forked child before exec; setsid(2) is
    // async-signal-safe and touches no memory of ours. A session of its
    // own keeps the supervisor out of the terminal's job control (a ^C
    // of the shell that ran `lab up` does not reach it).
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().context("starting the lab supervisor")
}

pub fn serve(args: ServeArgs) -> anyhow::Result<i32> {
    up::supervisor::serve(&args.run_dir)
        .with_context(|| format!("the lab supervisor of {}", args.run_dir.display()))?;
    Ok(0)
}

pub fn status(args: StatusArgs) -> anyhow::Result<i32> {
    let run_dir = args.run.resolve()?;
    match control::request(&run_dir, &Request::Status, REQUEST_TIMEOUT) {
        Ok(s) => {
            print_status(&s, args.json)?;
            Ok(0)
        }
        Err(ControlError::Connect { .. }) => {
            let s = up::read_state(&run_dir)
                .with_context(|| format!("no lab in {}", run_dir.display()))?;
            eprintln!("note: the lab's supervisor is not running; its last state:");
            print_status(&s, args.json)?;
            Ok(if s.down { 0 } else { 1 })
        }
        Err(e) => Err(e.into()),
    }
}

pub fn kill(args: KillArgs) -> anyhow::Result<i32> {
    let run_dir = args.run.resolve()?;
    let s = control::request(
        &run_dir,
        &Request::Kill {
            node: args.node.clone(),
        },
        REQUEST_TIMEOUT,
    )?;
    if let Some(n) = s.node(&args.node) {
        println!(
            "{} stopped ({})",
            n.name,
            n.exit.as_deref().unwrap_or("killed")
        );
    }
    Ok(0)
}

pub fn start(args: StartArgs) -> anyhow::Result<i32> {
    let run_dir = args.run.resolve()?;
    control::request(
        &run_dir,
        &Request::Start {
            node: args.node.clone(),
            blank_disk: args.blank_disk,
        },
        REQUEST_TIMEOUT,
    )?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let s = control::request(&run_dir, &Request::Status, REQUEST_TIMEOUT)?;
        let n = s
            .node(&args.node)
            .with_context(|| format!("the lab lost node {}", args.node))?;
        if settled(n) || Instant::now() >= deadline {
            if args.json {
                println!("{}", serde_json::to_string_pretty(n)?);
            } else {
                print_node(n);
            }
            return Ok(verdict(&s, vec![n]));
        }
        std::thread::sleep(POLL);
    }
}

pub fn down(args: DownArgs) -> anyhow::Result<i32> {
    let run_dir = args.run.resolve()?;
    let status = match control::request(&run_dir, &Request::Down, REQUEST_TIMEOUT) {
        Ok(s) => s,
        Err(ControlError::Connect { .. }) => {
            // the supervisor is gone: end the QEMUs it left, if any
            let s = up::read_state(&run_dir)
                .with_context(|| format!("no lab in {}", run_dir.display()))?;
            let killed = kill_leftovers(&s, &run_dir);
            eprintln!(
                "note: the lab's supervisor was not running; {killed} QEMU process(es) it left were killed"
            );
            s
        }
        Err(e) => return Err(e.into()),
    };
    // the namespace ends with the supervisor: wait for it to be gone
    let deadline = Instant::now() + Duration::from_secs(30);
    while up::supervisor_alive(status.supervisor_pid, &run_dir) {
        if Instant::now() >= deadline {
            bail!(
                "the lab supervisor (pid {}) is still running 30 s after `down`",
                status.supervisor_pid
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!(
            "lab {} is down; serial logs in {}",
            status.name,
            run_dir.join("nodes").display()
        );
    }
    Ok(hits(&status))
}

/// SIGKILLs the QEMUs `state` lists that still run with this run
/// directory on their command line (a reused pid is left alone).
fn kill_leftovers(state: &LabStatus, run_dir: &Path) -> usize {
    let mut killed = 0;
    for pid in state.nodes.iter().filter_map(|n| n.pid) {
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&*run_dir.to_string_lossy()))
            .unwrap_or(false);
        if ours {
            // SAFETY: kill(2) with a pid checked just above; no memory is shared.
            if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

fn print_status(s: &LabStatus, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!(
        "lab {} ({} nodes, {}), supervisor pid {}, run dir {}",
        s.name,
        s.nodes.len(),
        s.accel,
        s.supervisor_pid,
        s.run_dir.display()
    );
    for n in &s.nodes {
        print_node(n);
    }
    for h in &s.console_hits {
        println!("CONSOLE  {}: {}", h.node, h.hit.line);
    }
    Ok(())
}

fn print_node(n: &NodeStatus) {
    let (ready, hostname, address, boot) = match &n.report {
        Some(r) => (
            if r.report.ready { "ready" } else { "NOT READY" },
            r.report.hostname.clone().unwrap_or_else(|| "-".into()),
            r.report
                .network
                .as_ref()
                .and_then(|net| net.interfaces.iter().flat_map(|i| &i.addresses).next())
                .map(|a| a.address.clone())
                .unwrap_or_else(|| "-".into()),
            r.report
                .state
                .as_ref()
                .map(|s| {
                    format!(
                        "boot {} in {:.1} s",
                        s.boot_count,
                        r.boot_ms as f64 / 1000.0
                    )
                })
                .unwrap_or_default(),
        ),
        None => ("no report", "-".into(), "-".into(), String::new()),
    };
    let etcd = n
        .report
        .as_ref()
        .and_then(|r| r.report.etcd.as_ref())
        .map(|e| {
            format!(
                "  etcd {}{}{}",
                e.state.as_str(),
                e.leader
                    .as_deref()
                    .map(|l| format!(" leader {l}"))
                    .unwrap_or_default(),
                e.error
                    .as_deref()
                    .or(e.detail.as_deref())
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let kube = n
        .report
        .as_ref()
        .and_then(|r| r.report.kubernetes.as_ref())
        .map(|k| {
            format!(
                "  kubernetes {}{}{}{}{}",
                k.phase.as_str(),
                match k.node_ready {
                    Some(true) => " node Ready",
                    Some(false) => " node NotReady",
                    None => "",
                },
                k.version
                    .as_deref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default(),
                if k.roles.is_empty() {
                    String::new()
                } else {
                    format!(" roles {}", k.roles.join(","))
                },
                k.error
                    .as_deref()
                    .or(k.detail.as_deref())
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default();
    println!(
        "{:<12} {:<13} {:<11} {:<8} {:<10} {} {} {}{etcd}{kube}  api 127.0.0.1:{} etcd 127.0.0.1:{}{}  serial {}{}",
        n.name,
        n.role.as_str(),
        n.address,
        if n.running { "running" } else { "stopped" },
        ready,
        hostname,
        address,
        boot,
        n.api_port,
        n.etcd_port,
        if n.kube_port == 0 {
            String::new()
        } else {
            format!(" kube 127.0.0.1:{}", n.kube_port)
        },
        n.serial_log.display(),
        n.error
            .as_deref()
            .map(|e| format!("  error: {e}"))
            .unwrap_or_default()
    );
}

/// The last console lines of a log, on stderr.
fn print_tail(log: &Path) {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("--- last lines of {} ---", log.display());
    for line in &lines[lines.len().saturating_sub(25)..] {
        eprintln!("{line}");
    }
}
