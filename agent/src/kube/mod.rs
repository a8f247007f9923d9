//! Kubernetes on a node: no static pods and no image pulls for the control
//! plane. The agent renders every certificate, kubeconfig and config file
//! from the machine config ([`render`], [`pki`]) and asks the supervision
//! loop to release the layers' `start = "cluster"` services: on a
//! control-plane node, once its etcd member is a voter, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kube-proxy, then kubelet once
//! the cluster's first objects are applied ([`objects`]); on a worker,
//! kubelet at once (it joins through TLS bootstrap with the cluster's
//! token). Then, every few seconds: the node's pod network once it has a
//! pod CIDR ([`podnet`]), routes to the other nodes' pods, and on a
//! control-plane node the role label and the approval of kubelet serving
//! certificates ([`approver`]), and on the one holding its Lease the
//! cluster's security stack ([`stack`]).

pub mod approver;
pub mod balancer;
pub mod client;
pub mod objects;
pub mod pki;
pub mod podnet;
pub mod proxy_cert;
pub mod render;
pub mod stack;

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use contract::config::MachineConfig;
use contract::etcd::EtcdState;
use contract::kube::{self as spec, KubePhase, KubeReport};

use crate::etcd::Etcd;
use crate::services::mailbox::Mailbox;
use client::Client;
use render::{NodeFacts, Owner};
use serde_json::Value;

/// The longest a control-plane node holds its API server back for
/// another's to finish starting ([`Kube::await_peer_bootstrap`]).
const PEER_BOOTSTRAP_WAIT: Duration = Duration::from_secs(600);
/// How often the agent looks at its node: each look is a few API requests
/// on fresh TLS connections, which a control-plane node on a slow host
/// feels; a CSR waits at most this long for its approval.
const LOOK_EVERY: Duration = Duration::from_secs(10);
/// kubelet on the root: the image carries Kubernetes.
const KUBELET_BIN: &str = "/usr/bin/kubelet";
/// What kubelet's `resolvConf` names (render.rs).
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// kubelet's client certificate and key once TLS bootstrap is done.
const KUBELET_CLIENT: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";

/// What the thread needs from the machine config.
struct Setup {
    facts: NodeFacts,
    ca_cert: String,
    ca_key: Option<String>,
    etcd_ca: Option<(String, String)>,
    front_proxy_ca: Option<(String, String)>,
    service_account: Option<(String, String)>,
    /// `(name, base64)`, the encrypting key first.
    encryption_keys: Vec<(String, String)>,
    token: String,
    endpoint_host: String,
    addresses: Vec<IpAddr>,
    members: Vec<(String, IpAddr)>,
    lifetime: u64,
    balancer: Arc<balancer::Balancer>,
    /// The security stack to apply (a control-plane node whose config
    /// says to).
    stack: Option<contract::config::Stack>,
}

/// A worker's kube-proxy certificate: not asked for, asked for (the CSR's
/// name and the key waiting for its certificate), or in place.
enum ProxyCert {
    None,
    Asked { name: String, key: String },
    Released,
}

pub struct Kube {
    mailbox: Arc<Mailbox>,
    report: Mutex<KubeReport>,
    /// A security stack applied through the node API, for the kube loop
    /// to take up (`None` inside: the config names none any more).
    stack_update: Mutex<Option<Option<contract::config::Stack>>>,
}

/// The value at JSON pointer `p`, null when absent (API objects are read
/// field by field; a missing one is as good as null).
pub(crate) fn at<'a>(v: &'a Value, p: &str) -> &'a Value {
    v.pointer(p).unwrap_or(&Value::Null)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn pair(ca: Option<&contract::config::CaPair>) -> Option<(String, String)> {
    let ca = ca?;
    Some((
        ca.certificate.clone(),
        ca.key.as_ref()?.expose().to_string(),
    ))
}

impl Kube {
    /// Kubernetes for a node whose image carries kubelet and whose config
    /// names the cluster's Kubernetes CA and token; `None` otherwise.
    pub fn start(
        config: &MachineConfig,
        addresses: &[IpAddr],
        lifetime: u64,
        mailbox: Arc<Mailbox>,
        etcd: Option<Arc<Etcd>>,
    ) -> Option<Arc<Kube>> {
        if !Path::new(KUBELET_BIN).exists() {
            return None;
        }
        let kube = Arc::new(Kube {
            mailbox,
            report: Mutex::new(KubeReport::default()),
            stack_update: Mutex::new(None),
        });
        match setup(config, addresses, lifetime) {
            Ok(s) => {
                let runner = kube.clone();
                let spawned = std::thread::Builder::new()
                    .name("kube".into())
                    .spawn(move || runner.run(&s, etcd.as_deref()));
                if let Err(e) = spawned {
                    kube.fail(format!("cannot start the kube thread: {e}"));
                }
            }
            Err(why) => kube.fail(why),
        }
        Some(kube)
    }

    fn lock(&self) -> MutexGuard<'_, KubeReport> {
        self.report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn report(&self) -> KubeReport {
        self.lock().clone()
    }

    /// The stack an applied config names (`None`: none, or `apply =
    /// false`): this node renders it from its next look on, and applies
    /// it when it holds the Lease, pruning what no longer renders.
    pub fn set_stack(&self, stack: Option<contract::config::Stack>) {
        let mut pending = match self.stack_update.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        *pending = Some(stack.filter(|st| st.apply));
    }

    fn take_stack_update(&self) -> Option<Option<contract::config::Stack>> {
        match self.stack_update.lock() {
            Ok(mut p) => p.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut KubeReport)) {
        let mut r = self.lock();
        let before = r.clone();
        f(&mut r);
        if *r != before {
            self.mailbox.changed();
        }
    }

    fn fail(&self, why: String) {
        crate::console::Console::open().say(&format!("kubernetes: {why}"));
        self.update(|r| {
            r.phase = KubePhase::Failed;
            r.error = Some(why);
        });
    }

    fn detail(&self, what: impl Into<String>) {
        let what = what.into();
        self.update(|r| r.detail = Some(what));
    }

    fn run(&self, s: &Setup, etcd: Option<&Etcd>) {
        if let Err(e) = s.balancer.listen() {
            return self.fail(format!(
                "the API balancer cannot listen on 127.0.0.1:{}: {e}",
                spec::BALANCER_PORT
            ));
        }
        if s.facts.control_plane {
            // kube-apiserver needs its local etcd member to serve
            while etcd.is_none_or(|e| e.report().state != EtcdState::Voter) {
                std::thread::sleep(LOOK_EVERY);
            }
        }
        if let Err(why) = prepare(s) {
            return self.fail(why);
        }
        let admin = match s.facts.control_plane {
            true => match self.start_control_plane(s) {
                Ok(c) => Some(c),
                Err(why) => return self.fail(why),
            },
            false => {
                self.await_endpoint(s);
                None
            }
        };
        self.mailbox
            .release(render::KUBELET, render::kubelet_args(&s.facts));
        crate::console::Console::open().say("kubernetes: kubelet released");
        self.update(|r| {
            r.phase = KubePhase::Running;
            r.detail = None;
        });
        let mut labelled = false;
        let mut stack = admin
            .as_ref()
            .and(s.stack.as_ref())
            .map(|st| stack::Applier::new(st, &s.facts.hostname));
        // a control-plane node issued kube-proxy's certificate itself
        let mut proxy = if s.facts.control_plane {
            ProxyCert::Released
        } else {
            ProxyCert::None
        };
        loop {
            std::thread::sleep(LOOK_EVERY);
            let own = if admin.is_none() {
                kubelet_client(s)
            } else {
                None
            };
            let Some(client) = admin.as_ref().or(own.as_ref()) else {
                self.detail("waiting for kubelet's TLS bootstrap");
                continue;
            };
            if admin.is_some() && !labelled {
                labelled = self.label(client, s);
            }
            proxy = self.proxy_cert(client, s, proxy);
            self.look(client, s);
            if admin.is_some() {
                self.approve(client, s);
            }
            if let Some(update) = self.take_stack_update() {
                stack = match (update, stack.take()) {
                    (Some(st), Some(mut applier)) if admin.is_some() => {
                        applier.replace(&st);
                        Some(applier)
                    }
                    (Some(st), None) if admin.is_some() && s.facts.control_plane => {
                        Some(stack::Applier::new(&st, &s.facts.hostname))
                    }
                    _ => {
                        self.update(|r| r.stack = None);
                        None
                    }
                };
                crate::console::Console::open().say(match &stack {
                    Some(_) => "kubernetes: security stack replaced by an applied config",
                    None => {
                        "kubernetes: security stack no longer applied by this node (applied config)"
                    }
                });
            }
            if let Some(applier) = stack.as_mut() {
                if let Some(line) = applier.look(client, unix_now()) {
                    crate::console::Console::open().say(&line);
                }
                let report = applier.report.clone();
                self.update(|r| r.stack = Some(report));
            }
        }
    }

    /// A worker's kubelet would only crash-loop before the control plane
    /// listens: wait until one of its API servers accepts a connection.
    fn await_endpoint(&self, s: &Setup) {
        self.update(|r| {
            r.phase = KubePhase::Starting;
            r.detail = Some("waiting for an API server of the control plane".into());
        });
        while s.balancer.dial().is_none() {
            std::thread::sleep(LOOK_EVERY);
        }
    }

    /// Releases the control plane, waits for the API, applies the first
    /// objects; returns the agent's admin client of the local API.
    fn start_control_plane(&self, s: &Setup) -> Result<Client, String> {
        let key = s.ca_key.as_deref().unwrap_or_default();
        let me = pki::agent_identity((&s.ca_cert, key), &s.facts.hostname, unix_now(), s.lifetime)
            .map_err(|e| crate::error::chain(&e))?;
        self.await_peer_bootstrap(s, &me);
        // the API server first: the controllers and kube-proxy crash-loop
        // on a loaded host until its RBAC roles exist, which the first
        // applied object below proves
        let services = render::services(&s.facts);
        for (name, args) in &services {
            if *name == render::APISERVER {
                self.mailbox.release(name, args.clone());
            }
        }
        self.update(|r| {
            r.phase = KubePhase::Starting;
            r.detail = Some("waiting for kube-apiserver".into());
        });
        let client = Client::new(&s.ca_cert, &me.cert, &me.key, "127.0.0.1", spec::API_PORT)
            .map_err(|e| e.to_string())?;
        let mut last = String::new();
        let objects = objects::bootstrap(&s.token);
        let mut applied = 0;
        // the API may take minutes on a loaded host: keep trying; the
        // report says what is awaited
        while applied < objects.len() {
            std::thread::sleep(Duration::from_secs(2));
            let Some((url, object)) = objects.get(applied) else {
                break;
            };
            match client.apply(url, object) {
                Ok(_) => applied += 1,
                Err(e) => {
                    let why = crate::error::chain(&e);
                    if why != last {
                        self.detail(format!("applying {url}: {why}"));
                        last = why;
                    }
                }
            }
        }
        // the controllers exit when a read RBAC has not granted yet fails,
        // and each restart costs a loaded host dearly: wait until the API
        // server says its roles are bootstrapped and etcd answers
        while let Err(e) = client.ready() {
            let why = crate::error::chain(&e);
            if why != last {
                self.detail(format!("waiting for kube-apiserver to be ready: {why}"));
                last = why;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        for (name, args) in services {
            if name != render::APISERVER && name != render::KUBELET {
                self.mailbox.release(name, args);
            }
        }
        crate::console::Console::open().say(&format!(
            "kubernetes: API serving; {} bootstrap objects applied",
            objects.len()
        ));
        Ok(client)
    }

    /// A new API server writes the cluster's default RBAC roles, priority
    /// classes and flow schemas at its start; three doing it at once over
    /// one etcd, on slow machines, time each other out for many minutes.
    /// So while another member's API server listens but is not ready yet,
    /// this one waits (at most [`PEER_BOOTSTRAP_WAIT`]); when none listens
    /// (the first, or a whole cluster starting cold) or one is ready, it
    /// starts at once.
    fn await_peer_bootstrap(&self, s: &Setup, me: &crate::issuer::Pair) {
        let deadline = std::time::Instant::now() + PEER_BOOTSTRAP_WAIT;
        let peers: Vec<IpAddr> = s
            .members
            .iter()
            .filter(|(n, _)| *n != s.facts.hostname)
            .map(|(_, a)| *a)
            .collect();
        while std::time::Instant::now() < deadline {
            let mut starting = None;
            for peer in &peers {
                let addr = std::net::SocketAddr::new(*peer, spec::API_PORT);
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).is_err()
                {
                    continue;
                }
                let ready = Client::new(
                    &s.ca_cert,
                    &me.cert,
                    &me.key,
                    &peer.to_string(),
                    spec::API_PORT,
                )
                .is_ok_and(|c| c.ready().is_ok());
                if ready {
                    return;
                }
                starting = Some(*peer);
            }
            let Some(peer) = starting else {
                return;
            };
            self.update(|r| {
                r.phase = KubePhase::Starting;
                r.detail = Some(format!(
                    "waiting for the API server at {peer} to finish its start before starting ours"
                ));
            });
            std::thread::sleep(LOOK_EVERY);
        }
    }

    /// One step of a worker's request for kube-proxy's certificate; kube-proxy
    /// is released once it is written.
    fn proxy_cert(&self, client: &Client, s: &Setup, state: ProxyCert) -> ProxyCert {
        let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
        match state {
            ProxyCert::Released => ProxyCert::Released,
            ProxyCert::None => {
                let name = format!("kube-proxy-{}-{}", s.facts.hostname, unix_now());
                let made = proxy_cert::request(&name).and_then(|(csr, key)| {
                    client
                        .create(path, &csr)
                        .map(|_| ProxyCert::Asked { name, key })
                        .map_err(|e| crate::error::chain(&e))
                });
                made.unwrap_or_else(|why| {
                    self.detail(format!("asking for kube-proxy's certificate: {why}"));
                    ProxyCert::None
                })
            }
            ProxyCert::Asked { name, key } => {
                let csr = match client.get(&format!("{path}/{name}")) {
                    Ok(c) => c,
                    Err(e) => {
                        self.detail(format!("CSR {name}: {}", crate::error::chain(&e)));
                        return ProxyCert::Asked { name, key };
                    }
                };
                match proxy_cert::outcome(&csr) {
                    proxy_cert::Outcome::Waiting => ProxyCert::Asked { name, key },
                    proxy_cert::Outcome::Refused(why) => {
                        self.detail(format!("CSR {name} for kube-proxy: {why}"));
                        ProxyCert::None
                    }
                    proxy_cert::Outcome::Issued(cert) => {
                        let dir = render::dir_of(render::PROXY);
                        let written = pki::write(&format!("{dir}/client.key"), &key, 0o600, (0, 0))
                            .and_then(|()| {
                                pki::write(&format!("{dir}/client.crt"), &cert, 0o600, (0, 0))
                            });
                        if let Err(e) = written {
                            self.detail(crate::error::chain(&e));
                            return ProxyCert::Asked { name, key };
                        }
                        self.mailbox.release(render::PROXY, render::proxy_args());
                        crate::console::Console::open().say(
                            "kubernetes: kube-proxy's certificate issued; kube-proxy released",
                        );
                        ProxyCert::Released
                    }
                }
            }
        }
    }

    /// The control-plane role label on this node, once it registered.
    fn label(&self, client: &Client, s: &Setup) -> bool {
        let (url, object) = objects::control_plane_label(&s.facts.hostname);
        // an apply would create the Node: only kubelet registers it
        client.get(&url).is_ok() && client.apply(&url, &object).is_ok()
    }

    /// The node's own state, its pod network, and routes to the others'.
    fn look(&self, client: &Client, s: &Setup) {
        let node = match client.get(&format!("/api/v1/nodes/{}", s.facts.hostname)) {
            Ok(n) => n,
            Err(e) => {
                self.detail(format!("reading the Node: {}", crate::error::chain(&e)));
                return;
            }
        };
        let ready = at(&node, "/status/conditions")
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| at(c, "/type") == "Ready")
            .map(|c| at(c, "/status") == "True");
        let cidr = at(&node, "/spec/podCIDR").as_str().map(str::to_string);
        let version = at(&node, "/status/nodeInfo/kubeletVersion")
            .as_str()
            .map(str::to_string);
        let roles: Vec<String> = at(&node, "/metadata/labels")
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .map(str::to_string)
            .collect();
        if let Some(c) = &cidr {
            if let Err(why) = write_conflist(c) {
                self.detail(why);
            }
        }
        let mut routes = 0;
        let mut problem = None;
        match client.get("/api/v1/nodes") {
            Ok(list) => {
                for r in podnet::routes(&list, &s.facts.hostname) {
                    let done = crate::net::netlink::Netlink::open()
                        .and_then(|mut nl| nl.replace_route(r.dst, r.prefix, r.via));
                    match done {
                        Ok(()) => routes += 1,
                        Err(e) => {
                            problem = Some(format!(
                                "route to {}'s pods: {}",
                                r.node,
                                crate::error::chain(&e)
                            ))
                        }
                    }
                }
            }
            Err(e) => problem = Some(format!("listing Nodes: {}", crate::error::chain(&e))),
        }
        self.update(|r| {
            r.node_ready = ready;
            r.version = version;
            r.roles = roles;
            r.pod_cidr = cidr;
            r.routes = routes;
            r.detail = problem;
        });
    }

    /// One pass of the serving-certificate approver.
    fn approve(&self, client: &Client, s: &Setup) {
        let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
        let Ok(list) = client.get(path) else {
            return;
        };
        for csr in at(&list, "/items").as_array().into_iter().flatten() {
            let reported = |node: &str| {
                client
                    .get(&format!("/api/v1/nodes/{node}"))
                    .map(|n| approver::node_addresses(&n))
                    .unwrap_or_default()
            };
            let name = at(csr, "/metadata/name").as_str().unwrap_or_default();
            match approver::judge(csr, reported, &s.members) {
                approver::Verdict::Ignore => {}
                approver::Verdict::Refuse(why) => {
                    self.detail(format!("CSR {name} left pending: {why}"));
                }
                approver::Verdict::Approve { node } => {
                    let body = approver::approved(csr, &node);
                    match client.put(&format!("{path}/{name}/approval"), &body) {
                        Ok(_) => {
                            crate::console::Console::open().say(&format!(
                                "kubernetes: approved {node}'s serving certificate ({name})"
                            ));
                            self.update(|r| r.approved += 1);
                        }
                        Err(e) => self
                            .detail(format!("approving CSR {name}: {}", crate::error::chain(&e))),
                    }
                }
            }
        }
    }
}

/// kubelet's own client identity (after TLS bootstrap), for a worker's
/// agent to read its Node with.
fn kubelet_client(s: &Setup) -> Option<Client> {
    let pem = std::fs::read_to_string(KUBELET_CLIENT).ok()?;
    Client::new(&s.ca_cert, &pem, &pem, "127.0.0.1", spec::BALANCER_PORT).ok()
}

fn write_conflist(cidr: &str) -> Result<(), String> {
    let dir = Path::new(spec::CNI_CONF_DIR);
    let path = dir.join(podnet::CONFLIST);
    let text = podnet::conflist(cidr);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::issuer::write_file(&path, &text, 0o644, 0, 0).map_err(|e| crate::error::chain(&e))
}

fn setup(config: &MachineConfig, addresses: &[IpAddr], lifetime: u64) -> Result<Setup, String> {
    let c = &config.cluster;
    let control_plane = config.role.as_str() == "control-plane";
    let ca = c
        .kubernetes_ca
        .as_ref()
        .ok_or("the config has no [cluster.kubernetes_ca]")?;
    let token = c
        .bootstrap_token
        .as_ref()
        .ok_or("the config has no cluster.bootstrap_token")?
        .expose()
        .to_string();
    let endpoint = c
        .control_plane_endpoint
        .clone()
        .ok_or("the config has no cluster.control_plane_endpoint")?;
    let members: Vec<(String, IpAddr)> = c
        .control_plane
        .as_ref()
        .map(|cp| {
            cp.members
                .iter()
                .map(|m| (m.hostname.clone(), m.address))
                .collect()
        })
        .unwrap_or_default();
    if members.is_empty() {
        return Err(
            "the config has no [[cluster.control_plane.members]]: no API server to reach".into(),
        );
    }
    // a member's configured address, else the first the network gave
    let address = members
        .iter()
        .find(|(n, _)| *n == config.hostname)
        .map(|(_, a)| *a)
        .or_else(|| addresses.iter().copied().find(|a| a.is_ipv4()))
        .ok_or("the node has no address to register with")?;
    let endpoint_host = endpoint
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .unwrap_or_default();
    let cp = c.control_plane.as_ref();
    Ok(Setup {
        facts: NodeFacts {
            cluster: c.name.clone(),
            hostname: config.hostname.clone(),
            address,
            control_plane,
            oidc: cp.and_then(|cp| cp.oidc.clone()),
            leader_election: cp.and_then(|cp| cp.leader_election).unwrap_or_default(),
            api_server: cp.and_then(|cp| cp.api_server).unwrap_or_default(),
            registry: !config.containerd.registry_mirrors.is_empty()
                || !config.containerd.registry_credentials.is_empty(),
        },
        ca_cert: ca.certificate.clone(),
        ca_key: ca.key.as_ref().map(|k| k.expose().to_string()),
        etcd_ca: pair(c.etcd_ca.as_ref()),
        front_proxy_ca: pair(c.front_proxy_ca.as_ref()),
        service_account: cp
            .and_then(|cp| cp.service_account.as_ref())
            .map(|sa| (sa.public_key.clone(), sa.private_key.expose().to_string())),
        encryption_keys: cp
            .map(|cp| {
                cp.encryption_keys()
                    .into_iter()
                    .map(|(n, k)| (n.to_string(), k.to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        token,
        endpoint_host,
        addresses: addresses.to_vec(),
        balancer: balancer::Balancer::new(balancer::order(
            &members.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
            control_plane.then_some(address),
            &config.hostname,
        )),
        members,
        lifetime,
        stack: cp
            .and_then(|cp| cp.stack.clone())
            .filter(|st| control_plane && st.apply),
    })
}

/// A key rotation applied through the node API: the API server's
/// encryption config written again (temp file, rename), which it reloads
/// within a minute. Only where the image runs the control plane.
pub fn apply_encryption_keys(config: &MachineConfig) -> Result<(), String> {
    if !Path::new(KUBELET_BIN).exists() || config.role != contract::config::Role::ControlPlane {
        return Err("this node runs no Kubernetes control plane".into());
    }
    let keys = config
        .cluster
        .control_plane
        .as_ref()
        .map(|cp| cp.encryption_keys())
        .unwrap_or_default();
    let f = render::encryption_file(&keys)
        .ok_or("the config names no encryption key: a control plane keeps the one it has")?;
    pki::write(&f.path, &f.text, f.mode, owner_ids(f.owner)?).map_err(|e| crate::error::chain(&e))
}

/// (uid, gid) of a rendered file's owner.
fn owner_ids(owner: Owner) -> Result<(u32, u32), String> {
    match owner {
        Owner::Root => Ok((0, 0)),
        Owner::Service(user) => {
            crate::services::users::resolve(Path::new("/etc"), Some(user), None)
        }
    }
}

/// Writes the node's certificates, keys and files.
fn prepare(s: &Setup) -> Result<(), String> {
    let chain = |e: pki::PkiError| crate::error::chain(&e);
    pki::make_dir(Path::new(spec::DIR), 0o755, 0, 0).map_err(chain)?;
    pki::make_dir(Path::new(spec::PKI_DIR), 0o755, 0, 0).map_err(chain)?;
    pki::write(&render::ca_cert(), &s.ca_cert, 0o644, (0, 0)).map_err(chain)?;
    pki::make_dir(Path::new(&render::dir_of(render::PROXY)), 0o700, 0, 0).map_err(chain)?;
    // kubelet gives pods the host's resolv.conf and cannot make a sandbox
    // without one; a config without DNS servers leaves none (the network
    // code writes it once servers are configured)
    let resolv = Path::new(RESOLV_CONF);
    if !resolv.exists() {
        pki::write(
            RESOLV_CONF,
            "# no DNS servers in the machine config\n",
            0o644,
            (0, 0),
        )
        .map_err(chain)?;
    }
    if s.facts.control_plane {
        let need = |v: &Option<(String, String)>, what: &'static str| {
            v.clone().ok_or(pki::PkiError::Missing(what)).map_err(chain)
        };
        let etcd_ca = need(&s.etcd_ca, "cluster.etcd_ca")?;
        let front = need(&s.front_proxy_ca, "cluster.front_proxy_ca")?;
        let sa = need(&s.service_account, "cluster.control_plane.service_account")?;
        let key = s
            .ca_key
            .clone()
            .ok_or(pki::PkiError::Missing("cluster.kubernetes_ca"))
            .map_err(chain)?;
        let material = pki::Material {
            kubernetes_ca: (&s.ca_cert, &key),
            etcd_ca: (&etcd_ca.0, &etcd_ca.1),
            front_proxy_ca: (&front.0, &front.1),
            service_account: (&sa.0, &sa.1),
        };
        let server = pki::apiserver_names(&s.facts.hostname, &s.addresses, &s.endpoint_host);
        let mut server = server;
        server.ips.push(s.facts.address);
        let files = pki::issue(&material, &server, unix_now(), s.lifetime).map_err(chain)?;
        for component in [
            render::APISERVER,
            render::CONTROLLER_MANAGER,
            render::SCHEDULER,
        ] {
            let ids = owner_ids(render::owner_of(component))?;
            pki::make_dir(Path::new(&render::dir_of(component)), 0o700, ids.0, ids.1)
                .map_err(chain)?;
        }
        for f in files {
            pki::write(&f.path, &f.text, f.mode, owner_ids(f.owner)?).map_err(chain)?;
        }
    }
    let keys: Vec<(&str, &str)> = s
        .encryption_keys
        .iter()
        .map(|(n, k)| (n.as_str(), k.as_str()))
        .collect();
    for f in render::files(&s.facts, &keys, &s.token) {
        pki::write(&f.path, &f.text, f.mode, owner_ids(f.owner)?).map_err(chain)?;
    }
    Ok(())
}
