//! nodeagent: nodeimg's PID 1. As `/init` in the initramfs (stage 1) it verifies
//! the root image with dm-verity, mounts it read-only and switches to it; as
//! `/usr/sbin/nodeagent --stage2` on that root (stage 2) it sets the node up,
//! prints the `NODEIMG-REPORT` line and waits for a shutdown request.
//!
//! This file is the one top loop: it runs the phases of `plan::boot_plan`, and it
//! alone decides power-off, reboot or hang, kills, syncs and unmounts. Nothing
//! below it exits, and a panic anywhere is caught here, because PID 1 returning
//! or dying panics the kernel. Run as any other PID it is a small host tool.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod api;
mod bless;
mod child;
mod config_apply;
mod config_fetch;
mod config_source;
mod console;
mod devices;
mod digest;
mod dm;
mod error;
mod etcd;
mod events;
#[cfg(test)]
mod fake;
mod gpt;
mod issuer;
mod kube;
mod loopdev;
mod modules;
mod net;
mod plan;
mod registries;
mod runtime;
mod services;
mod stage1;
mod stage2;
mod state_partition;
mod sys;
mod sysctl;
mod time;
mod verity;

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use console::Console;
use contract::cmdline::{self, Cmdline, FailureAction, FailurePolicy};
use contract::config::MachineConfig;
use contract::report::{self, Report};
use error::{chain, BootError};
use events::Request;
use plan::{Phase, Stage, DM_NAME, STAGE2_ARG};
use services::run::Supervision;
use services::supervisor::Supervisor;
use verity::VerityState;

/// Env var stage 1 hands to stage 2: `<stage1 start ms>:<exec ms>`.
const STAGE1_MS_ENV: &str = "NODEIMG_STAGE1_MS";
/// How long processes get between SIGTERM and SIGKILL at shutdown.
const STOP_GRACE_MS: u64 = 5_000;

/// How a boot ended.
enum Outcome {
    /// Stage 2 reported; then a power-off or a reboot was asked for (the
    /// cause, for the console, and which).
    Shutdown(String, Request),
    /// A phase failed.
    Failed {
        phase: &'static str,
        error: BootError,
        policy: FailurePolicy,
        report: Box<Report>,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if rustix::process::getpid() != rustix::process::Pid::INIT {
        return tool(&args);
    }
    let stage = match (
        args.first().map(String::as_str),
        args.get(1).map(String::as_str),
    ) {
        (Some(argv0), Some(STAGE2_ARG)) if argv0 != "/init" => Stage::Root,
        _ => Stage::Initramfs,
    };
    std::panic::set_hook(Box::new(|info| {
        Console::open().line(&format!("nodeagent: panic: {info}"))
    }));
    let mut console = Console::open();
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| boot(stage, &mut console)))
            .unwrap_or_else(|_| Outcome::Failed {
                phase: "panic",
                error: BootError::Root {
                    what: "nodeagent panicked (see the line above)".into(),
                },
                policy: read_policy(),
                report: Box::new(Report::new(kernel_release(), String::new())),
            });
    finish(outcome, &mut console)
}

fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

fn read_cmdline() -> Result<String, BootError> {
    std::fs::read_to_string("/proc/cmdline").map_err(|source| BootError::Read {
        path: "/proc/cmdline".into(),
        source,
    })
}

fn read_policy() -> FailurePolicy {
    read_cmdline()
        .map(|raw| cmdline::failure_policy(&raw))
        .unwrap_or_default()
}

/// Runs one stage to its end: stage 1 ends in exec (so it returns only on
/// failure), stage 2 in a shutdown request.
fn boot(stage: Stage, con: &mut Console) -> Outcome {
    let start = sys::uptime_ms();
    let mut report = Report::new(kernel_release(), String::new());
    let label = match stage {
        Stage::Initramfs => "stage 1 (initramfs)",
        Stage::Root => "stage 2 (root)",
    };
    con.say(&format!("{label} starting at {start} ms since boot"));
    if stage == Stage::Root {
        if let Err(e) = events::block_signals() {
            con.say(&format!("cannot block signals: {e}"));
        }
        stage1_times(&mut report);
        report.stage_ms.insert("stage2_start".into(), start);
    } else {
        report.stage_ms.insert("stage1_start".into(), start);
    }
    let fail = |phase, error, report| Outcome::Failed {
        phase,
        error,
        policy: read_policy(),
        report: Box::new(report),
    };

    let mut s = sys::Real;
    let mut found = stage1::Found::default();
    for phase in plan::prelude(stage) {
        if let Err(e) = run_phase(&phase, None, stage, &mut s, &mut found, &mut report, con) {
            return fail(phase.name(), e, report);
        }
    }
    let raw = match read_cmdline() {
        Ok(raw) => raw,
        Err(e) => return fail("cmdline", e, report),
    };
    report.cmdline = raw.trim().to_string();
    let c = match Cmdline::parse(&raw) {
        Ok(c) => c,
        Err(e) => return fail("cmdline", e.into(), report),
    };
    for phase in plan::boot_plan(&c, stage) {
        if phase == Phase::ExecStage2 {
            let env = format!("{start}:{}", sys::uptime_ms());
            std::env::set_var(STAGE1_MS_ENV, env);
        }
        if let Err(e) = run_phase(
            &phase,
            Some(&c),
            stage,
            &mut s,
            &mut found,
            &mut report,
            con,
        ) {
            return fail(phase.name(), e, report);
        }
    }
    // only stage 2 gets here (stage 1's last phase execs or fails)
    stage2::fill_facts(&mut report);
    // Open the event sources before anything starts: services' exits
    // arrive as SIGCHLD, and the lab (or an operator) may press the power
    // button as soon as it sees the report; a press before the device is
    // open is lost.
    let mut ev = match events::Events::open() {
        Ok(ev) => ev,
        Err(e) => {
            con.say(&format!("cannot watch signals ({e}); reaping only"));
            con.line(&report.line());
            hang()
        }
    };
    let config = match read_config(c.config_url.as_ref(), con, &mut report) {
        Ok(config) => config,
        Err(e) => return fail("config", e, report),
    };
    match (&report.network, &config) {
        // `nodeimg.config` brought the network up already to fetch the
        // config (DHCP on every NIC). Re-applying it with the fetched
        // config's own interfaces is not done (yet): a differing config is
        // a warning, and the network is never configured twice.
        (Some(net), Some(cfg)) => {
            if let Some(w) = config_fetch::network_mismatch(cfg, net) {
                let w = format!("network: {w}");
                con.line(&report::warn_line(&w));
                report.warnings.push(w);
            }
        }
        (Some(_), None) => {}
        (None, _) => network(config.as_ref(), &mut report, con),
    }
    // before the services: they start on a synchronised clock when a
    // server answers within time::DEADLINE
    time::at_boot(config.as_ref(), &mut report, con);
    let specs = match services::load(Path::new(services::SERVICES_FILE)) {
        Ok(specs) => specs,
        Err(what) => return fail("services", BootError::Services { what }, report),
    };
    let role = config.as_ref().map(|c| c.role.as_str());
    let sup = match Supervisor::new(specs, role, config.is_some()) {
        Ok(sup) => sup,
        Err(e) => {
            let what = e.to_string();
            return fail("services", BootError::Services { what }, report);
        }
    };
    if sup.is_empty() {
        // Nothing to supervise: the report need not wait for late modules.
        report.ready = true;
        report.stage_ms.insert("report".into(), sys::uptime_ms());
        con.line(&report.line());
        load_deferred_modules(con, &mut report);
    } else {
        // Services (containerd: overlay, netfilter) need the late modules.
        load_deferred_modules(con, &mut report);
    }
    report.stage_ms.insert("services".into(), sys::uptime_ms());
    let mut sv = Supervision::new(sup, con);
    sv.test_kill = c.test_kill.as_ref().map(|t| services::run::TestKill {
        service: t.service.clone(),
        always: t.always,
        done: false,
    });
    if let Some(request) = sv.until_settled(&mut ev, con) {
        sv.stop(&mut ev, con);
        return Outcome::Shutdown(ev.last_cause.clone(), request);
    }
    let mut containers = None;
    if sv.sup.is_ready("containerd") {
        let t = sys::uptime_ms();
        containers = runtime::preload_and_check();
        report.runtime = containers.as_ref().map(runtime::Runtime::report);
        if let Some(r) = &report.runtime {
            let fine = format!(
                "sandbox image imported ({} ms), container confined ({} ms); {} more importing",
                r.images.first().and_then(|i| i.import_ms).unwrap_or(0),
                r.probe_ms.unwrap_or(0),
                r.importing.len()
            );
            con.say(&format!(
                "runtime check ({} ms): {}",
                sys::uptime_ms().saturating_sub(t),
                r.error.as_deref().unwrap_or(&fine)
            ));
        }
        report.stage_ms.insert("runtime".into(), sys::uptime_ms());
    }
    // etcd on a control-plane node: certificates now, etcd itself once
    // bootstrapped (or at once with its data); reported apart from `ready`
    let mailbox = Arc::new(services::mailbox::Mailbox::default());
    sv.mailbox = Some(mailbox.clone());
    let etcd = config.as_ref().and_then(|cfg| {
        let lifetime = c.test_cert_lifetime.unwrap_or(etcd::pki::LIFETIME_SECS);
        etcd::Etcd::start(cfg, &node_addresses(&report), lifetime, mailbox.clone())
    });
    report.etcd = etcd.as_ref().map(|e| e.report());
    // Kubernetes on an image that carries kubelet: the control plane once
    // etcd serves, kubelet after it (or at once on a worker)
    let kube = config.as_ref().and_then(|cfg| {
        let lifetime = c.test_cert_lifetime.unwrap_or(etcd::pki::LIFETIME_SECS);
        kube::Kube::start(
            cfg,
            &node_addresses(&report),
            lifetime,
            mailbox,
            etcd.clone(),
        )
    });
    report.kubernetes = kube.as_ref().map(|k| k.report());
    if !sv.sup.is_empty() {
        services_into(&mut report, &sv.sup);
        report.stage_ms.insert("report".into(), sys::uptime_ms());
        con.line(&report.line());
    }
    // The latest report, for the node API's `status`: replaced each time
    // one is printed.
    let latest = Arc::new(Mutex::new(report.clone()));
    start_api(config.as_ref(), &latest, etcd.clone(), kube.clone(), con);
    con.say(&format!(
        "ready; waiting for SIGTERM, ctrl-alt-del or the power button ({} found)",
        ev.button_count()
    ));
    let request = sv.watch(&mut ev, con, |sup, con| {
        report.runtime = containers.as_ref().map(runtime::Runtime::report);
        report.etcd = etcd.as_ref().map(|e| e.report());
        report.kubernetes = kube.as_ref().map(|k| k.report());
        services_into(&mut report, sup);
        con.line(&report.line());
        publish(&latest, &report);
    });
    sv.stop(&mut ev, con);
    Outcome::Shutdown(ev.last_cause.clone(), request)
}

/// The node API (`api/`), when the node has a machine config (its `[api]`
/// is the trust). Never fails the boot: a node without its API still
/// runs its workloads, and says so.
fn start_api(
    config: Option<&MachineConfig>,
    latest: &Arc<Mutex<Report>>,
    etcd: Option<Arc<etcd::Etcd>>,
    kube: Option<Arc<kube::Kube>>,
    con: &mut Console,
) {
    let Some(config) = config else {
        con.say("node API: off (no machine config, so no [api] trust)");
        return;
    };
    // What an applied config replaces: the boot source's config (a stored
    // copy used for want of a source replaces none).
    let replaces = latest.lock().ok().and_then(|r| {
        let c = r.config.as_ref()?;
        match c.source.as_str() {
            "applied" => c.replaces.clone(),
            "stored" | "none" => None,
            _ => c.sha256.clone(),
        }
    });
    match api::start(config, replaces, latest.clone(), etcd, kube) {
        Ok(()) => con.say(&format!(
            "node API: listening on TCP port {} (TLS 1.3, client certificates of api.client_ca)",
            contract::api::PORT
        )),
        Err(e) => {
            let w = format!("node API: {}", chain(&e));
            con.line(&report::warn_line(&w));
        }
    }
}

/// Replaces the report the API serves.
fn publish(latest: &Mutex<Report>, report: &Report) {
    match latest.lock() {
        Ok(mut r) => *r = report.clone(),
        Err(poisoned) => *poisoned.into_inner() = report.clone(),
    }
}

/// Finds this boot's machine config, checks it whole (schema, every key,
/// and against what this image can run) before any of it is used, keeps a
/// copy on the state partition for boots that have no source, and applies
/// the hostname. `None`: the node has no config.
fn read_config(
    url: Option<&cmdline::ConfigUrl>,
    con: &mut Console,
    report: &mut Report,
) -> Result<Option<MachineConfig>, BootError> {
    let load_vfat = || {
        let list = Path::new(plan::UEFI_MODULES_ORDER);
        modules::load_list(&mut sys::Real, list, true)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let bad = |what: String| BootError::Config { what };
    let mut found = config_source::find_attached(load_vfat).map_err(|e| bad(e.to_string()))?;
    if let (None, Some(url)) = (&found, url) {
        found = Some(fetch_config(url, report, con).map_err(|e| bad(chain(&e)))?);
    }
    if found.is_none() {
        found = config_source::find_stored().map_err(|e| bad(e.to_string()))?;
    }
    let found = config_apply::prefer(found);
    let Some((source, data)) = found else {
        con.say("config: none (no fw_cfg entry, config drive, nodeimg.config URL or stored copy)");
        report.config = Some(config_source::ConfigReport::none());
        return Ok(None);
    };
    con.say(&format!("config: {} bytes from {source}", data.len()));
    report.config = Some(config_source::report_for(source.clone(), &data));
    let config = config_apply::check(&data, &source.to_string(), &config_apply::image_facts())
        .map_err(bad)?;
    let kept = matches!(
        source,
        config_source::Source::Stored | config_source::Source::Applied { .. }
    );
    if !kept {
        config_source::store(&data).map_err(|e| bad(e.to_string()))?;
    }
    if Path::new(registries::CERTS_D)
        .parent()
        .is_some_and(Path::is_dir)
    {
        registries::write(Path::new(registries::CERTS_D), &config.containerd)
            .map_err(|e| bad(format!("containerd registries: {e}")))?;
    }
    rustix::system::sethostname(config.hostname.as_bytes()).map_err(|e| BootError::Hostname {
        name: config.hostname.clone(),
        source: e.into(),
    })?;
    report.hostname = Some(config.hostname.clone());
    con.say(&format!(
        "config: {} ({}), cluster {}",
        config.hostname,
        config.role.as_str(),
        config.cluster.name
    ));
    Ok(Some(config))
}

/// `nodeimg.config`: the network first, DHCP on every NIC (the config
/// that could name the interfaces is the one being fetched; the name it
/// sets wins over DHCP's), then the URL, its pin checked before the bytes
/// are returned.
fn fetch_config(
    url: &cmdline::ConfigUrl,
    report: &mut Report,
    con: &mut Console,
) -> Result<(config_source::Source, Vec<u8>), config_fetch::FetchError> {
    network_with(&[], true, report, con);
    let location = url.location();
    con.say(&format!(
        "config: fetching {location} (sha256 {})",
        url.sha256
    ));
    let t = sys::uptime_ms();
    let policy = config_fetch::Policy::default();
    let data = config_fetch::fetch(url, &policy, |note| con.say(&format!("config: {note}")))?;
    con.say(&format!(
        "config: fetched {location} ({} ms), sha256 matches",
        sys::uptime_ms().saturating_sub(t)
    ));
    report
        .stage_ms
        .insert("config_fetched".into(), sys::uptime_ms());
    Ok((config_source::Source::Url { url: location }, data))
}

/// The node's network (`net/`): the machine config's interfaces, or DHCP
/// on every NIC without a config (or one that names none). Never fails the
/// boot: a link without a lease is a warning (its thread keeps asking),
/// and `ready` stays the services' to decide, because a verified node with
/// running services is better reachable late than powered off.
fn network(config: Option<&MachineConfig>, report: &mut Report, con: &mut Console) {
    let plans = config.map(net::plans_from_config).unwrap_or_default();
    network_with(&plans, config.is_some(), report, con);
}

/// [`network`] with its plans; `config_names_host`: a machine config
/// (found, or being fetched) names the host, so DHCP's name is not used.
fn network_with(
    plans: &[net::InterfacePlan],
    config_names_host: bool,
    report: &mut Report,
    con: &mut Console,
) {
    let t = sys::uptime_ms();
    // A name from the machine config or the image wins over DHCP's.
    let hostname_given = config_names_host || Path::new("/etc/hostname").exists();
    let net = net::configure(plans, hostname_given);
    let took = sys::uptime_ms().saturating_sub(t);
    let summary: Vec<String> = net
        .interfaces
        .iter()
        .map(|i| {
            let addrs: Vec<&str> = i.addresses.iter().map(|a| a.address.as_str()).collect();
            format!("{} {}", i.name, addrs.join(","))
        })
        .collect();
    con.say(&format!(
        "network ok ({took} ms): {}",
        if summary.is_empty() {
            "no interface".to_string()
        } else {
            summary.join("; ")
        }
    ));
    for p in net.problems() {
        let w = format!("network: {p}");
        con.line(&report::warn_line(&w));
        report.warnings.push(w);
    }
    if let Some(h) = &net.hostname {
        report.hostname = Some(h.clone());
    }
    report.stage_ms.insert("network".into(), sys::uptime_ms());
    report.network = Some(net);
}

/// The node's interface addresses (without prefix lengths), for the
/// names of the certificates it issues.
fn node_addresses(report: &Report) -> Vec<std::net::IpAddr> {
    report
        .network
        .iter()
        .flat_map(|n| &n.interfaces)
        .flat_map(|i| &i.addresses)
        .filter_map(|a| a.address.split('/').next()?.parse().ok())
        .collect()
}

/// The services' states into the report; `ready` covers them and the
/// runtime check.
fn services_into(report: &mut Report, sup: &Supervisor) {
    report.services = sup.report();
    for s in &mut report.services {
        s.rss_kib = s.pid.and_then(sys::rss_kib_of);
        s.cpu_ms = s.pid.and_then(sys::cpu_ms_of);
    }
    report.agent_rss_kib = sys::rss_kib();
    let runtime = match &report.runtime {
        Some(r) if !r.ok => Err(format!(
            "runtime: {}",
            r.error.as_deref().unwrap_or("check failed")
        )),
        _ => Ok(()),
    };
    match sup.healthy().and(runtime) {
        Ok(()) => {
            report.ready = true;
            report.error = None;
        }
        Err(e) => {
            report.ready = false;
            report.error = Some(format!("services: {e}"));
        }
    }
}

/// Modules nothing before `ready` needs (netfilter, CNI, overlay networks)
/// load after the report, so they do not delay it. A failure is reported
/// loudly but does not undo `ready`: the root is verified and up.
/// Then, with every module the image lists loaded, module loading is
/// switched off for the rest of the boot (`kernel.modules_disabled=1`,
/// KSPP) unless the image opts out (`contract::paths::MODULES_OPEN`): the
/// image knows its module set, and the images carry no modprobe anyway.
fn load_deferred_modules(con: &mut Console, report: &mut Report) {
    let list = std::path::Path::new(plan::DEFERRED_MODULES_ORDER);
    let t = sys::uptime_ms();
    match modules::load_list(&mut sys::Real, list, true) {
        Ok(sum) => con.say(&format!(
            "deferred modules ok ({} ms): {sum}",
            sys::uptime_ms().saturating_sub(t)
        )),
        Err(e) => con.line(&report::warn_line(&format!("deferred modules: {e}"))),
    }
    report.modules_disabled = Some(
        match modules::lock(Path::new(contract::paths::MODULES_OPEN)) {
            Ok(locked) => {
                con.say(if locked {
                    "modules: loading disabled until the next boot (kernel.modules_disabled=1)"
                } else {
                    "modules: loading stays open (the image opts out)"
                });
                locked
            }
            Err(e) => {
                let w = format!("modules: cannot disable loading: {e}");
                con.line(&report::warn_line(&w));
                report.warnings.push(w);
                false
            }
        },
    );
}

fn run_phase(
    phase: &Phase,
    c: Option<&Cmdline>,
    stage: Stage,
    s: &mut sys::Real,
    found: &mut stage1::Found,
    report: &mut Report,
    con: &mut Console,
) -> Result<(), BootError> {
    let t = sys::uptime_ms();
    let warned = report.warnings.len();
    let note = match (stage, c) {
        (Stage::Initramfs, None) => stage1::run_prelude(phase, s)?,
        (Stage::Initramfs, Some(c)) => stage1::run(phase, c, found, s)?,
        (Stage::Root, Some(c)) => stage2::run(phase, c, s, report)?,
        (Stage::Root, None) => String::new(),
    };
    let took = sys::uptime_ms().saturating_sub(t);
    con.say(&format!(
        "{} ok ({took} ms){}{note}",
        phase.name(),
        if note.is_empty() { "" } else { ": " }
    ));
    for w in report.warnings.iter().skip(warned) {
        con.line(&report::warn_line(w));
    }
    Ok(())
}

fn stage1_times(report: &mut Report) {
    let Ok(v) = std::env::var(STAGE1_MS_ENV) else {
        return;
    };
    std::env::remove_var(STAGE1_MS_ENV);
    if let Some((a, b)) = v.split_once(':') {
        if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
            report.stage_ms.insert("stage1_start".into(), a);
            report.stage_ms.insert("stage1_exec".into(), b);
        }
    }
}

/// The only place that ends a boot: it never returns.
fn finish(outcome: Outcome, con: &mut Console) -> ! {
    match outcome {
        Outcome::Shutdown(cause, request) => {
            let action = match request {
                Request::PowerOff => FailureAction::PowerOff,
                Request::Reboot => FailureAction::Reboot,
            };
            con.say(&format!("shutdown requested by {cause}"));
            stop_everything(con);
            power(action, con)
        }
        Outcome::Failed {
            phase,
            error,
            policy,
            mut report,
        } => {
            let verdict = verity::verity_state(DM_NAME);
            let error = match (verdict, error) {
                (VerityState::Corrupted, e @ BootError::VerityCorrupted { .. }) => e,
                (VerityState::Corrupted, e) => BootError::VerityCorrupted {
                    name: DM_NAME,
                    source: Box::new(e),
                },
                (_, e) => e,
            };
            let cause = chain(&error);
            stage2::fill_facts(&mut report);
            report.ready = false;
            report.error = Some(format!("{phase}: {cause}"));
            report.root.verity = verdict;
            con.line(&report::error_line(phase, &cause));
            con.line(&report.line());
            let what = match policy.action {
                FailureAction::PowerOff => "powering off",
                FailureAction::Reboot => "rebooting",
                FailureAction::Hang => "hanging (nodeimg.on_failure=hang)",
            };
            if policy.action == FailureAction::Hang {
                con.say(what);
                hang()
            }
            con.say(&format!("{what} in {} s", policy.delay.as_secs()));
            std::thread::sleep(policy.delay);
            stop_everything(con);
            power(policy.action, con)
        }
    }
}

/// SIGTERM to every process, a grace period, SIGKILL, then sync and unmount /var.
fn stop_everything(con: &mut Console) {
    // SAFETY: kill(2) with pid -1 signals every process we may signal except
    // ourselves (PID 1) and kernel threads; it touches no memory of ours.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    let deadline = sys::uptime_ms() + STOP_GRACE_MS;
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
            Err(rustix::io::Errno::CHILD) => break, // nothing left
            Ok(Some(_)) => continue,
            _ if sys::uptime_ms() >= deadline => {
                con.say("processes left after the grace period: SIGKILL");
                // SAFETY: as above.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                events::reap();
                break;
            }
            _ => sys::sleep_ms(20),
        }
    }
    rustix::fs::sync();
    if Path::new("/var").exists() {
        use rustix::mount::{mount_remount, unmount, MountFlags, UnmountFlags};
        match unmount("/var", UnmountFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => {} // unmounted, or never mounted
            Err(e) => {
                con.say(&format!("unmount /var: {e}; remounting it read-only"));
                let _ = mount_remount("/var", MountFlags::RDONLY, "");
            }
        }
    }
    rustix::fs::sync();
}

fn power(action: FailureAction, con: &mut Console) -> ! {
    use rustix::system::{reboot, RebootCommand};
    let (cmd, word) = match action {
        FailureAction::Reboot => (RebootCommand::Restart, "reboot"),
        _ => (RebootCommand::PowerOff, "poweroff"),
    };
    con.line(&format!("{}{word}", report::SHUTDOWN_PREFIX));
    if let Err(e) = reboot(cmd) {
        con.say(&format!("reboot({word}) failed: {e}; hanging"));
    }
    hang()
}

/// Stays alive forever (PID 1 must not exit), reaping orphans.
fn hang() -> ! {
    loop {
        events::reap();
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Host mode: `nodeagent plan [--stage2] CMDLINE` prints the boot plan.
fn tool(args: &[String]) -> ExitCode {
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match rest.as_slice() {
        ["--version"] => {
            println!("nodeagent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["ntp-query", server] => match time::query_tool(server) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nodeagent: ntp-query {server}: {e}");
                ExitCode::FAILURE
            }
        },
        ["plan", more @ ..] => {
            let (stage, line) = match more {
                [STAGE2_ARG, line] => (Stage::Root, *line),
                [line] => (Stage::Initramfs, *line),
                _ => return usage(),
            };
            match Cmdline::parse(line) {
                Ok(c) => {
                    for p in plan::prelude(stage)
                        .iter()
                        .chain(&plan::boot_plan(&c, stage))
                    {
                        println!("{:<16} {p:?}", p.name());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("nodeagent: kernel command line: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "nodeagent runs as PID 1 (/init, or {} {STAGE2_ARG}).",
        plan::STAGE2_BIN
    );
    eprintln!("usage: nodeagent plan [{STAGE2_ARG}] 'KERNEL COMMAND LINE' | nodeagent --version");
    eprintln!("       nodeagent ntp-query SERVER[:PORT]   (one SNTP exchange, printed as JSON; the clock is not touched)");
    ExitCode::from(2)
}
