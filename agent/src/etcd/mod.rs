//! etcd on a control-plane node: the agent issues the member's
//! certificates from the etcd CA (and renews them at two thirds of their
//! lifetime), keeps etcd (a `start = "cluster"` service) from starting
//! until the cluster is bootstrapped or its data is already here, runs the
//! one-time `bootstrap`, joins a running cluster by itself when its data
//! is gone or was never here ([`join`]: learner first, promoted once in
//! sync), and watches the member through etcd's JSON gateway for the
//! report (state, member ID, leader, cluster ID). With `etcd_formation =
//! "static"` every member starts at once with the whole member list
//! instead: no bootstrap call, no join (the baseline the self-join is
//! measured against).
//!
//! It takes the machine config, the node's addresses and the supervisor's
//! [`Mailbox`]; it never starts or stops a process itself: it asks the
//! supervision loop to release the service with this node's arguments.

pub mod backup;
pub mod gateway;
pub mod join;
pub mod pki;
pub mod snapshot;
pub mod store;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use contract::config::{EtcdFormation, MachineConfig};
use contract::etcd::{self as spec, CertsReport, EtcdReport, EtcdState};

use crate::services::mailbox::Mailbox;

/// The supervised service's name (layers/etcd/layer.toml).
pub const SERVICE: &str = "etcd";
/// How often the watcher looks at the member and the certificates.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// How often it looks while this node joins (a cluster answered and the
/// node waits for its turn, its member starts, or its learner waits for
/// promotion): each look may be the one that moves the join on.
const WATCH_JOINING: Duration = Duration::from_secs(1);
/// How long a started member may take to answer before it counts as failed.
const START_DEADLINE_SECS: u64 = 180;
/// Failed status polls in a row before a running member counts as failed.
const MISSES_TO_FAIL: u32 = 3;
/// How long a configured peer gets to answer the bootstrap's probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Seconds between join attempts of a member without data while no peer
/// serves a cluster (the bootstrap may be hours away: each attempt costs
/// every peer a TLS handshake).
const JOIN_EVERY_SECS: u64 = 5;
/// How long after a cluster first answered a waiting node tries on every
/// look (a learner ahead of it is promoted within seconds).
const JOIN_EAGER_SECS: u64 = 30;

/// A new cluster (the bootstrap) or one this member is already in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// `https://ADDR:PORT`, IPv6 in brackets.
fn url(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("https://{a}:{port}"),
        IpAddr::V6(a) => format!("https://[{a}]:{port}"),
    }
}

/// The flags only this node knows, after the layer's fixed ones: its
/// name, where it listens and what it advertises, and the initial
/// cluster as (name, peer URL). (With data in `--data-dir` etcd ignores
/// the initial-cluster flags and rejoins its own cluster.)
pub fn member_args(
    name: &str,
    addr: IpAddr,
    cluster: &str,
    state: ClusterState,
    initial: &[(String, String)],
    timing: contract::config::EtcdTiming,
) -> Vec<String> {
    let client = url(addr, spec::CLIENT_PORT);
    let peer = url(addr, spec::PEER_PORT);
    let loopback = url(IpAddr::from([127, 0, 0, 1]), spec::CLIENT_PORT);
    let initial: Vec<String> = initial.iter().map(|(n, u)| format!("{n}={u}")).collect();
    vec![
        format!("--name={name}"),
        format!("--listen-client-urls={loopback},{client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster={}", initial.join(",")),
        format!(
            "--initial-cluster-state={}",
            match state {
                ClusterState::New => "new",
                ClusterState::Existing => "existing",
            }
        ),
        format!("--initial-cluster-token={cluster}"),
        format!("--heartbeat-interval={}", timing.heartbeat_interval_ms),
        format!("--election-timeout={}", timing.election_timeout_ms),
    ]
}

struct Inner {
    report: EtcdReport,
    certs: Option<pki::NodeCerts>,
    /// uptime (s) when etcd was released; `None` before.
    released_at: Option<u64>,
    /// Status polls that failed in a row (a loaded host misses one).
    misses: u32,
    /// uptime (s) of the last join attempt.
    joined_at: Option<u64>,
    /// The backup lease, if this member holds it.
    holder: backup::Holder,
    /// A static member's look at `/nodeimg/cluster`: `Ok` once it named
    /// this cluster, `Err` when it names another (kept: the member stays
    /// failed however well etcd answers).
    identity: Option<Result<(), String>>,
    /// uptime (s) when this node began waiting for its turn to join.
    joining_since: Option<u64>,
    /// A static member started etcd without data: if its peers formed
    /// without it, etcd refuses it, and a failure says so.
    static_blank: bool,
}

/// The node's etcd, shared by the watcher thread, the node API and the
/// main loop (which copies [`Etcd::report`] into the boot report).
pub struct Etcd {
    mailbox: Arc<Mailbox>,
    inner: Mutex<Inner>,
    /// One bootstrap at a time.
    bootstrapping: Mutex<()>,
    cluster: String,
    hostname: String,
    /// This node's address among the configured members.
    address: Option<IpAddr>,
    /// The other configured control-plane members: (name, address).
    peers: Vec<(String, String)>,
    /// A static formation's initial cluster, every member as (name, peer
    /// URL); `None` for the bootstrap-once formation.
    static_members: Option<Vec<(String, String)>>,
    ca: Option<(String, String)>,
    names: pki::Names,
    lifetime: u64,
    /// How often the elected member snapshots etcd, and how many it keeps.
    backups: contract::config::EtcdBackup,
    /// Where the holder copies each snapshot, or why it cannot.
    store: Option<Result<store::Store, String>>,
    timing: contract::config::EtcdTiming,
    data_dir: PathBuf,
    pki_dir: PathBuf,
    owner: (u32, u32),
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(id: Option<u64>) -> Option<String> {
    id.map(|i| format!("{i:x}"))
}

impl Etcd {
    /// etcd for a control-plane node (`None` on any other): issues the
    /// certificates, releases etcd at once when its data is here (a
    /// reboot), and starts the watcher thread.
    pub fn start(
        config: &MachineConfig,
        addresses: &[IpAddr],
        lifetime: u64,
        mailbox: Arc<Mailbox>,
    ) -> Option<Arc<Etcd>> {
        if config.role.as_str() != "control-plane" {
            return None;
        }
        let members = config
            .cluster
            .control_plane
            .as_ref()
            .map(|c| c.members.clone())
            .unwrap_or_default();
        let address = members
            .iter()
            .find(|m| m.hostname == config.hostname)
            .map(|m| m.address);
        let mut all = addresses.to_vec();
        all.extend(address);
        let formation = config
            .cluster
            .control_plane
            .as_ref()
            .and_then(|c| c.etcd_formation)
            .unwrap_or_default();
        // etcd's user owns its keys; without it etcd could not read them
        let owner =
            crate::services::users::resolve(std::path::Path::new("/etc"), Some(SERVICE), None);
        let etcd = Arc::new(Etcd {
            mailbox,
            inner: Mutex::new(Inner {
                report: EtcdReport::default(),
                certs: None,
                released_at: None,
                misses: 0,
                joined_at: None,
                holder: backup::Holder::default(),
                identity: None,
                joining_since: None,
                static_blank: false,
            }),
            bootstrapping: Mutex::new(()),
            cluster: config.cluster.name.clone(),
            hostname: config.hostname.clone(),
            address,
            peers: members
                .iter()
                .filter(|m| m.hostname != config.hostname)
                .map(|m| (m.hostname.clone(), m.address.to_string()))
                .collect(),
            static_members: (formation == EtcdFormation::Static).then(|| {
                members
                    .iter()
                    .map(|m| (m.hostname.clone(), url(m.address, spec::PEER_PORT)))
                    .collect()
            }),
            ca: config.cluster.etcd_ca.as_ref().map(|ca| {
                (
                    ca.certificate.clone(),
                    ca.key
                        .as_ref()
                        .map(|k| k.expose().to_string())
                        .unwrap_or_default(),
                )
            }),
            names: pki::Names {
                hostname: config.hostname.clone(),
                addresses: all,
            },
            lifetime,
            backups: config
                .cluster
                .control_plane
                .as_ref()
                .and_then(|c| c.etcd_backup)
                .unwrap_or_default(),
            store: config
                .cluster
                .control_plane
                .as_ref()
                .and_then(|c| c.etcd_backup_s3.as_ref())
                .map(store::Store::new),
            timing: config
                .cluster
                .control_plane
                .as_ref()
                .and_then(|c| c.etcd_timing)
                .unwrap_or_default(),
            data_dir: spec::DATA_DIR.into(),
            pki_dir: spec::PKI_DIR.into(),
            owner: owner.clone().unwrap_or((0, 0)),
        });
        etcd.wipe_after_reset();
        if let Err(why) = owner {
            etcd.fail(format!("etcd's user: {why}"));
        } else if let Err(why) = etcd.renew() {
            etcd.fail(why);
        } else if address.is_none() {
            etcd.fail(format!(
                "{} is not among [[cluster.control_plane.members]]: no address for etcd",
                config.hostname
            ));
        } else if etcd.has_data() {
            // a member's data: etcd rejoins its own cluster
            etcd.release(ClusterState::Existing, Vec::new());
        } else if let Some(initial) = etcd.static_members.clone() {
            etcd.lock().static_blank = true;
            etcd.release(ClusterState::New, initial);
        }
        let watcher = etcd.clone();
        let spawned = std::thread::Builder::new()
            .name("etcd".into())
            .spawn(move || watcher.watch());
        if let Err(e) = spawned {
            etcd.fail(format!("cannot start the etcd watcher thread: {e}"));
        }
        Some(etcd)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn report(&self) -> EtcdReport {
        self.lock().report.clone()
    }

    /// Changes the report; tells the main loop when it changed.
    fn update(&self, f: impl FnOnce(&mut EtcdReport)) {
        let mut inner = self.lock();
        let before = inner.report.clone();
        f(&mut inner.report);
        if inner.report != before {
            self.mailbox.changed();
        }
    }

    fn fail(&self, why: String) {
        self.update(|r| {
            r.state = EtcdState::Failed;
            r.error = Some(why);
        });
    }

    /// A `reset` before this boot: the member's data goes before etcd
    /// could start with it.
    fn wipe_after_reset(&self) {
        let mark = Path::new(spec::RESET_MARK);
        if !mark.exists() {
            return;
        }
        let member = self.data_dir.join("member");
        let wiped = match std::fs::remove_dir_all(&member) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => std::fs::remove_file(mark),
        };
        crate::console::Console::open().say(&match wiped {
            Ok(()) => format!("etcd: reset: {} wiped", member.display()),
            Err(e) => format!("etcd: reset: wiping {}: {e}", member.display()),
        });
    }

    /// `reset`: this member leaves the cluster, through a healthy voter,
    /// when the voters left could still make a quorum; the mark makes the
    /// next boot wipe its data. The caller reboots.
    pub fn leave(&self) -> Result<(), String> {
        let _one = self
            .bootstrapping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.static_members.is_some() {
            // wiped, it would start as a new member under its old name,
            // which its cluster refuses: it could never come back
            return Err(
                "refused: this cluster forms statically (etcd_formation = \"static\"): a member \
                 that leaves cannot rejoin it"
                    .to_string(),
            );
        }
        let report = self.report();
        let me = report
            .member_id
            .as_deref()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .filter(|_| report.state == EtcdState::Voter || report.state == EtcdState::Learner)
            .ok_or_else(|| {
                format!(
                    "refused: this node is no etcd member ({})",
                    report.state.as_str()
                )
            })?;
        let client = self.client(PROBE_TIMEOUT)?;
        let members = client
            .members("127.0.0.1")
            .map_err(|e| format!("listing the members: {}", crate::error::chain(&e)))?;
        let voters_left = members.iter().filter(|m| !m.learner && m.id != me).count();
        let mut healthy = Vec::new();
        for (name, host) in &self.peers {
            if client
                .status(host)
                .is_ok_and(|s| !s.learner && s.leader.is_some())
            {
                healthy.push((name, host));
            }
        }
        if voters_left == 0 || healthy.len() < voters_left / 2 + 1 {
            return Err(format!(
                "refused: without {} the cluster keeps {voters_left} voter(s), of which {} answer \
                 with a leader: not a quorum",
                self.hostname,
                healthy.len()
            ));
        }
        std::fs::write(spec::RESET_MARK, b"reset\n")
            .map_err(|e| format!("{}: {e}", spec::RESET_MARK))?;
        let mut why = Vec::new();
        for (name, host) in healthy {
            match client.member_remove(host, me) {
                Ok(()) => {
                    crate::console::Console::open().say(&format!(
                        "etcd: reset: member {me:x} removed through {name}; rebooting"
                    ));
                    return Ok(());
                }
                Err(e) => why.push(format!("{name}: {}", crate::error::chain(&e))),
            }
        }
        let _ = std::fs::remove_file(spec::RESET_MARK);
        Err(format!("removing member {me:x}: {}", why.join("; ")))
    }

    fn has_data(&self) -> bool {
        self.data_dir.join("member").is_dir()
    }

    /// Issues (or re-issues) the certificates and writes them.
    fn renew(&self) -> Result<(), String> {
        let Some((cert, key)) = &self.ca else {
            return Err("the config has no [cluster.etcd_ca]".into());
        };
        if key.is_empty() {
            return Err(pki::PkiError::NoCaKey.to_string());
        }
        let certs = pki::issue(cert, key, &self.names, unix_now(), self.lifetime)
            .map_err(|e| crate::error::chain(&e))?;
        pki::write(&self.pki_dir, &certs, self.owner.0, self.owner.1)
            .map_err(|e| crate::error::chain(&e))?;
        let mut inner = self.lock();
        let renewals = inner
            .report
            .certificates
            .as_ref()
            .map_or(0, |c| c.renewals + 1);
        inner.report.certificates = Some(CertsReport {
            issued: certs.issued,
            expires: certs.expires,
            renewals,
        });
        inner.certs = Some(certs);
        drop(inner);
        self.mailbox.changed();
        Ok(())
    }

    fn client(&self, timeout: Duration) -> Result<gateway::Client, String> {
        let certs = self
            .lock()
            .certs
            .clone()
            .ok_or("no etcd certificates were issued")?;
        gateway::Client::new(&certs, timeout).map_err(|e| e.to_string())
    }

    /// This node's peer URL, `None` when it is not a configured member.
    fn peer_url(&self) -> Option<String> {
        self.address.map(|a| url(a, spec::PEER_PORT))
    }

    /// Asks the supervision loop to start etcd with this node's flags;
    /// `initial` empty means this node alone (the bootstrap, or a member
    /// with data, where etcd ignores it).
    fn release(&self, state: ClusterState, mut initial: Vec<(String, String)>) {
        let (Some(addr), Some(peer)) = (self.address, self.peer_url()) else {
            return;
        };
        if initial.is_empty() {
            initial.push((self.hostname.clone(), peer));
        }
        let args = member_args(
            &self.hostname,
            addr,
            &self.cluster,
            state,
            &initial,
            self.timing,
        );
        self.mailbox.release(SERVICE, args);
        self.lock().released_at = Some(crate::sys::uptime_ms() / 1000);
        self.update(|r| {
            r.state = EtcdState::Starting;
            r.error = None;
        });
    }

    /// The watcher: renews certificates when due, and follows the member.
    fn watch(&self) {
        loop {
            let joining = matches!(
                self.report().state,
                EtcdState::Joining | EtcdState::Starting | EtcdState::Learner
            );
            std::thread::sleep(if joining { WATCH_JOINING } else { WATCH_EVERY });
            let due = self
                .lock()
                .certs
                .as_ref()
                .is_some_and(|c| spec::renewal_due(c.issued, c.expires, unix_now()));
            if due {
                if let Err(why) = self.renew() {
                    crate::console::Console::open()
                        .say(&format!("etcd: renewing the certificates: {why}"));
                }
            }
            let Some(since) = self.lock().released_at else {
                self.maybe_join();
                continue;
            };
            self.observe(since);
            let named =
                self.static_members.is_none() || matches!(self.lock().identity, Some(Ok(())));
            if self.report().state == EtcdState::Voter && named {
                self.backup();
            }
        }
    }

    /// A look at the backup lease every few seconds; a snapshot when this
    /// member holds it and the newest is `interval` old.
    fn backup(&self) {
        let now_up = crate::sys::uptime_ms() / 1000;
        let mut holder = {
            let mut inner = self.lock();
            let due = inner
                .holder
                .looked_at
                .is_none_or(|t| now_up.saturating_sub(t) >= backup::LOOK_EVERY);
            if !due {
                return;
            }
            inner.holder.looked_at = Some(now_up);
            std::mem::take(&mut inner.holder)
        };
        let mut report = self.report().backups.unwrap_or_default();
        // a look that fails claims nothing
        report.elected = false;
        let result = self.client(PROBE_TIMEOUT).and_then(|client| {
            let elected = backup::elect(&client, &mut holder, &self.hostname)?;
            report.elected = elected;
            let dir = Path::new(spec::BACKUP_DIR);
            let newest = holder.last_at.or_else(|| backup::kept(dir).last().copied());
            let now = unix_now();
            let interval = self.backups.interval.seconds();
            if elected && newest.is_none_or(|t| now.saturating_sub(t) >= interval) {
                backup::take(&self.pki_dir, now, self.backups.retain, &mut report)?;
                holder.last_at = Some(now);
            }
            if elected {
                if let Some(store) = &self.store {
                    backup::copy_out(store.as_ref(), &mut holder, &mut report, now);
                }
            }
            Ok(())
        });
        if let Err(why) = result {
            report.error = Some(why);
        }
        self.lock().holder = holder;
        self.update(|r| r.backups = Some(report));
    }

    /// A join attempt when one is due: no data, not started, not
    /// bootstrapping, a configured member.
    fn maybe_join(&self) {
        let now = crate::sys::uptime_ms() / 1000;
        {
            let mut inner = self.lock();
            // once a cluster answers, every look is an attempt for a
            // while (its turn comes within seconds), then every few seconds
            let eager = inner.report.state == EtcdState::Joining
                && inner
                    .joining_since
                    .is_some_and(|t| now.saturating_sub(t) < JOIN_EAGER_SECS);
            let every = if eager { 0 } else { JOIN_EVERY_SECS };
            let due = inner
                .joined_at
                .is_none_or(|t| now.saturating_sub(t) >= every);
            if !due || inner.certs.is_none() || self.address.is_none() {
                return;
            }
            inner.joined_at = Some(now);
        }
        // the bootstrap holds this while it decides and starts etcd
        let Ok(_one) = self.bootstrapping.try_lock() else {
            return;
        };
        if self.has_data() || self.lock().released_at.is_some() {
            return;
        }
        let (Some(peer_url), Ok(client)) = (self.peer_url(), self.client(PROBE_TIMEOUT)) else {
            return;
        };
        let joiner = join::Joiner {
            cluster: &self.cluster,
            hostname: &self.hostname,
            peer_url: &peer_url,
            peers: &self.peers,
        };
        match joiner.attempt(&client) {
            join::Outcome::NoCluster(answers) => self.update(|r| {
                if r.state == EtcdState::Joining {
                    r.state = EtcdState::WaitingForBootstrap;
                }
                r.detail = (!answers.is_empty())
                    .then(|| format!("no configured member serves etcd yet: {answers}"));
            }),
            join::Outcome::Wait(why) => {
                self.lock().joining_since.get_or_insert(now);
                self.update(|r| {
                    r.state = EtcdState::Joining;
                    r.error = None;
                    r.detail = Some(why);
                });
            }
            join::Outcome::Refused(why) => self.update(|r| {
                r.state = EtcdState::Failed;
                r.error = Some(why);
                r.detail = None;
            }),
            join::Outcome::Added { id, initial, via } => {
                crate::console::Console::open().say(&format!(
                    "etcd: {} added as learner {id:x} through {via}",
                    self.hostname
                ));
                self.release(ClusterState::Existing, initial);
                self.update(|r| {
                    r.member_id = hex(Some(id));
                    r.detail = Some(format!("added as a learner through {via}"));
                });
            }
        }
    }

    /// A learner asks a voter to promote it; etcd says no until it is in
    /// sync with the leader, so this runs on every look until it is done.
    fn promote(&self, id: u64) {
        let Ok(client) = self.client(PROBE_TIMEOUT) else {
            return;
        };
        match join::promote(&client, &self.peers, id) {
            Ok(via) => {
                crate::console::Console::open().say(&format!(
                    "etcd: {} promoted to voter through {via}",
                    self.hostname
                ));
                self.update(|r| r.detail = None);
            }
            Err(why) => self.update(|r| r.detail = Some(format!("waiting for promotion: {why}"))),
        }
    }

    /// One look at the local member's status.
    fn observe(&self, released_at: u64) {
        let status = self
            .client(Duration::from_secs(3))
            .and_then(|c| c.status("127.0.0.1").map_err(|e| crate::error::chain(&e)));
        let now = crate::sys::uptime_ms() / 1000;
        let misses = {
            let mut inner = self.lock();
            inner.misses = if status.is_ok() { 0 } else { inner.misses + 1 };
            inner.misses
        };
        let learner = status
            .as_ref()
            .ok()
            .filter(|s| s.learner)
            .and_then(|s| s.member_id);
        let (foreign, static_blank) = {
            let inner = self.lock();
            let foreign = match &inner.identity {
                Some(Err(why)) => Some(why.clone()),
                _ => None,
            };
            (foreign, inner.static_blank)
        };
        self.update(|r| match status {
            Ok(_) if foreign.is_some() => {
                r.state = EtcdState::Failed;
                r.error = foreign;
            }
            Ok(s) => {
                r.state = if s.learner {
                    EtcdState::Learner
                } else {
                    EtcdState::Voter
                };
                if !s.learner {
                    // a voter waits for nothing
                    r.detail = None;
                }
                r.error = None;
                r.member_id = hex(s.member_id);
                r.cluster_id = hex(s.cluster_id);
                r.leader = hex(s.leader);
            }
            Err(why) => {
                let starting = r.state == EtcdState::Starting
                    && now.saturating_sub(released_at) < START_DEADLINE_SECS;
                if !starting && misses >= MISSES_TO_FAIL {
                    r.state = EtcdState::Failed;
                    r.error = Some(if static_blank {
                        format!(
                            "{why} (etcd_formation = \"static\": a member that starts without \
                             data cannot join members that formed without it; its log says \
                             whether that is the cause)"
                        )
                    } else {
                        why
                    });
                    r.leader = None;
                }
            }
        });
        if let Some(id) = learner {
            self.promote(id);
        }
        if self.static_members.is_some()
            && self.report().state == EtcdState::Voter
            && self.lock().identity.is_none()
        {
            self.claim_identity();
        }
    }

    /// A static member's stand-in for the bootstrap's write: the first
    /// member to get there names the cluster in `/nodeimg/cluster` (a
    /// create-only transaction, so members never overwrite each other);
    /// every member then checks the name is its own, as a joining node
    /// does.
    fn claim_identity(&self) {
        let key = spec::CLUSTER_KEY;
        let named = self.client(Duration::from_secs(5)).and_then(|c| {
            c.create_with_lease("127.0.0.1", key, &self.cluster, 0)
                .and_then(|_| c.get("127.0.0.1", key))
                .map_err(|e| format!("{key}: {}", crate::error::chain(&e)))
        });
        match named {
            Ok(Some(name)) if name == self.cluster => self.lock().identity = Some(Ok(())),
            Ok(other) => {
                let why = format!(
                    "{key} names cluster {:?}, not {:?}: this member started in another cluster",
                    other.unwrap_or_default(),
                    self.cluster
                );
                self.lock().identity = Some(Err(why.clone()));
                self.fail(why);
            }
            // not yet (no leader, a slow answer): the next look tries
            // again; the member's own state says why
            Err(_) => {}
        }
    }

    /// Why a bootstrap (empty or from a snapshot) must not happen here:
    /// this node's etcd has data or runs, cannot run, or a configured
    /// peer already answers as an etcd member (a second bootstrap would
    /// split the cluster).
    fn refusal(&self) -> Result<(), String> {
        if self.static_members.is_some() {
            return Err(
                "refused: this cluster forms statically (etcd_formation = \"static\"): \
                 every member starts etcd by itself, with no bootstrap or restore call"
                    .to_string(),
            );
        }
        if self.has_data() {
            return Err(format!(
                "refused: this node's etcd already has data ({}/member): its cluster exists",
                self.data_dir.display()
            ));
        }
        let state = self.report().state;
        if self.lock().released_at.is_some() {
            return Err(format!(
                "refused: etcd already runs on this node ({})",
                state.as_str()
            ));
        }
        if state == EtcdState::Failed {
            let why = self.report().error.unwrap_or_default();
            return Err(format!("refused: etcd cannot run on this node: {why}"));
        }
        let probe = self.client(PROBE_TIMEOUT)?;
        for (name, host) in &self.peers {
            // one call only: any answer through the gateway, with a
            // certificate of this cluster's etcd CA, is a serving member
            if let Ok(members) = probe.members(host) {
                return Err(format!(
                    "refused: member {name} ({host}) already answers as an etcd member \
                     ({} member(s)); a second bootstrap would split the cluster",
                    members.len()
                ));
            }
        }
        Ok(())
    }

    /// Waits for the just-released member to see a leader.
    fn await_leader(&self, client: &gateway::Client) -> Result<gateway::Status, String> {
        let t0 = crate::sys::uptime_ms() / 1000;
        loop {
            let last = match client.status("127.0.0.1") {
                Ok(s) if s.leader.is_some() => return Ok(s),
                Ok(_) => "no leader yet".to_string(),
                Err(e) => crate::error::chain(&e),
            };
            if (crate::sys::uptime_ms() / 1000).saturating_sub(t0) > START_DEADLINE_SECS {
                return Err(format!(
                    "etcd did not become healthy within {START_DEADLINE_SECS} s: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The member is a voter with a leader: into the report, and the
    /// bootstrap's answer.
    fn serving(&self, status: &gateway::Status, how: &str) -> String {
        self.update(|r| {
            r.state = EtcdState::Voter;
            r.error = None;
            r.detail = None;
            r.member_id = hex(status.member_id);
            r.cluster_id = hex(status.cluster_id);
            r.leader = hex(status.leader);
        });
        format!(
            "etcd cluster {} {how} on {}: member {}, cluster ID {}\n",
            self.cluster,
            self.hostname,
            hex(status.member_id).unwrap_or_default(),
            hex(status.cluster_id).unwrap_or_default()
        )
    }

    /// `bootstrap`: a new cluster with this node as its one member, once
    /// (see [`Etcd::refusal`]). Returns what was done.
    pub fn bootstrap(&self) -> Result<String, String> {
        let _one = self
            .bootstrapping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.refusal()?;
        self.release(ClusterState::New, Vec::new());
        let client = self.client(Duration::from_secs(5))?;
        let status = self.await_leader(&client)?;
        let key = spec::CLUSTER_KEY;
        let written = client
            .put("127.0.0.1", key, &self.cluster)
            .and_then(|()| client.get("127.0.0.1", key))
            .map_err(|e| format!("writing {key}: {}", crate::error::chain(&e)))?;
        if written.as_deref() != Some(self.cluster.as_str()) {
            return Err(format!("{key} reads back as {written:?} after the write"));
        }
        Ok(self.serving(&status, "bootstrapped"))
    }

    /// `restore`: the bootstrap from a snapshot (received and checked at
    /// `snapshot`), refused as a bootstrap is. The restored cluster must
    /// name this one in `/nodeimg/cluster`.
    pub fn restore(&self, snapshot: &Path) -> Result<String, String> {
        let _one = self
            .bootstrapping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.refusal()?;
        let peer_url = self
            .peer_url()
            .ok_or("this node is not among the configured members")?;
        snapshot::Restore {
            name: &self.hostname,
            peer_url: &peer_url,
            token: &self.cluster,
            data_dir: &self.data_dir,
            owner: self.owner,
        }
        .run(snapshot)?;
        self.release(ClusterState::Existing, Vec::new());
        let client = self.client(Duration::from_secs(5))?;
        let status = self.await_leader(&client)?;
        let key = spec::CLUSTER_KEY;
        let named = client
            .get("127.0.0.1", key)
            .map_err(|e| format!("reading {key}: {}", crate::error::chain(&e)))?;
        if named.as_deref() != Some(self.cluster.as_str()) {
            let why = format!(
                "the restored snapshot names cluster {named:?}, not {:?}",
                self.cluster
            );
            self.fail(why.clone());
            return Err(why);
        }
        Ok(self.serving(&status, "restored from a snapshot"))
    }

    /// `etcd-snapshot`: a snapshot of this running member, written under
    /// [`snapshot::DIR`]; the caller sends it and removes it.
    pub fn snapshot(&self) -> Result<(PathBuf, contract::api::Blob), String> {
        if self.lock().released_at.is_none() {
            return Err(format!(
                "etcd does not run on this node ({})",
                self.report().state.as_str()
            ));
        }
        let out = Path::new(snapshot::DIR).join(format!(".api-{}.db", unix_now()));
        let blob = snapshot::save(&self.pki_dir, &out)?;
        Ok((out, blob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_flags_name_the_node_its_urls_and_the_initial_cluster() {
        let a: IpAddr = "10.0.2.15".parse().unwrap();
        let initial = [("cp-1".to_string(), url(a, spec::PEER_PORT))];
        let timing = contract::config::EtcdTiming {
            heartbeat_interval_ms: 500,
            election_timeout_ms: 5000,
        };
        let args = member_args("cp-1", a, "lab", ClusterState::New, &initial, timing);
        assert_eq!(
            args,
            [
                "--name=cp-1",
                "--listen-client-urls=https://127.0.0.1:2379,https://10.0.2.15:2379",
                "--advertise-client-urls=https://10.0.2.15:2379",
                "--listen-peer-urls=https://10.0.2.15:2380",
                "--initial-advertise-peer-urls=https://10.0.2.15:2380",
                "--initial-cluster=cp-1=https://10.0.2.15:2380",
                "--initial-cluster-state=new",
                "--initial-cluster-token=lab",
                "--heartbeat-interval=500",
                "--election-timeout=5000",
            ]
        );
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let args = member_args("cp-2", v6, "lab", ClusterState::Existing, &[], timing);
        assert!(args.contains(&"--listen-peer-urls=https://[fd00::1]:2380".to_string()));
        assert!(args.contains(&"--initial-cluster-state=existing".to_string()));
    }
}
