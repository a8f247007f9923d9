//! The machine config's cluster material (issue 11): the cluster's CAs,
//! the control-plane endpoint and members, the bootstrap token, and on a
//! control-plane node the keys it signs and encrypts with. All optional,
//! so a config without them (and an agent that ignores them) still boots.
//!
//! The one rule that matters most: a worker never holds a CA private key,
//! the service-account private key or the encryption key. The renderer
//! (`nodeimg cluster config`) never puts them there, and the checks here
//! refuse a worker config that carries one, naming the key.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::pem::{self, KeyFacts};
use super::validate::{certificates, dns_name};
use super::{Problem, Role, Secret};

/// A CA as a node holds it: its certificate always, its private key only
/// on a control-plane node (which issues certificates from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaPair {
    /// PEM: the CA's certificate (more may follow, for a rotation).
    pub certificate: String,
    /// PEM: the CA's private key. Control-plane nodes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
}

/// `[cluster.control_plane.service_account]`: the key pair that signs and
/// checks service-account tokens (kube-apiserver's
/// `--service-account-signing-key-file` and `--service-account-key-file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountKeys {
    /// PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub public_key: String,
    /// PEM private key of `public_key`.
    pub private_key: Secret,
}

/// One control-plane node: the name it runs under and the address its
/// peers reach it at (etcd's peer and client URLs are made from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub hostname: String,
    pub address: IpAddr,
}

/// `[etcd.backup]` (cluster.toml) and `[cluster.control_plane.etcd_backup]`:
/// how often the elected node snapshots etcd and how many it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdBackup {
    #[serde(default = "EtcdBackup::default_interval")]
    pub interval: Interval,
    #[serde(default = "EtcdBackup::default_retain")]
    pub retain: u32,
}

impl EtcdBackup {
    /// The shortest interval taken: a snapshot costs the member I/O and
    /// the holder's lease is looked at every few seconds.
    pub const MIN_INTERVAL: u64 = 10;

    /// What is wrong with these settings, keys under `at`.
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.retain == 0 {
            out.push(Problem::new(
                format!("{at}.retain"),
                "must keep at least 1 snapshot",
            ));
        }
        if self.interval.seconds() < Self::MIN_INTERVAL {
            out.push(Problem::new(
                format!("{at}.interval"),
                format!("must be at least {}s", Self::MIN_INTERVAL),
            ));
        }
        out
    }

    fn default_interval() -> Interval {
        Interval(3600)
    }

    fn default_retain() -> u32 {
        24
    }
}

impl Default for EtcdBackup {
    fn default() -> EtcdBackup {
        EtcdBackup {
            interval: EtcdBackup::default_interval(),
            retain: EtcdBackup::default_retain(),
        }
    }
}

/// `[etcd] formation` (cluster.toml) and `[cluster.control_plane]
/// etcd_formation`: how the control plane's etcd cluster comes to be.
///
/// `bootstrap` (the default) is one bootstrap call on one node, every other
/// member joining by itself as a learner and then a voter; a blank machine
/// replacing a member heals the membership on its own. `static` is etcd's
/// own static bootstrap: every member starts at once with the whole
/// `[[control_plane.members]]` list, no bootstrap call and no learner step.
/// It forms a little sooner but never heals: a member whose disk is lost
/// cannot rejoin (etcd refuses a second "new" member under its name). It
/// is here as the baseline the self-join is measured against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdFormation {
    #[default]
    Bootstrap,
    Static,
}

impl EtcdFormation {
    /// What is wrong with this formation for `members` (listed in the
    /// table `members_table`), under the key `at`.
    pub fn problem(self, members: &[Member], at: &str, members_table: &str) -> Option<Problem> {
        (self == EtcdFormation::Static && members.is_empty()).then(|| {
            Problem::new(
                at,
                format!("static needs every member listed in {members_table}"),
            )
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EtcdFormation::Bootstrap => "bootstrap",
            EtcdFormation::Static => "static",
        }
    }
}

/// `[etcd.timing]` (cluster.toml) and `[cluster.control_plane.etcd_timing]`:
/// etcd's `--heartbeat-interval` and `--election-timeout`, in milliseconds.
/// etcd's defaults suit machines that answer within milliseconds; where
/// members are slow to be scheduled (emulated labs, overloaded hosts) a
/// missed heartbeat starts an election, and elections in a row stall every
/// write: raise both there (the lab's Kubernetes test takes 500 and 5000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTiming {
    #[serde(default = "EtcdTiming::default_heartbeat")]
    pub heartbeat_interval_ms: u32,
    #[serde(default = "EtcdTiming::default_election")]
    pub election_timeout_ms: u32,
}

impl EtcdTiming {
    /// etcd refuses an election timeout above this.
    pub const MAX_ELECTION_MS: u32 = 50_000;

    /// What is wrong with these settings, keys under `at`.
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.heartbeat_interval_ms == 0 {
            out.push(Problem::new(
                format!("{at}.heartbeat_interval_ms"),
                "must be at least 1",
            ));
        }
        // etcd itself refuses a timeout under five heartbeats; its docs ask
        // for ten
        if u64::from(self.election_timeout_ms) < 5 * u64::from(self.heartbeat_interval_ms) {
            out.push(Problem::new(
                format!("{at}.election_timeout_ms"),
                format!(
                    "must be at least 5 heartbeats ({} ms)",
                    5 * u64::from(self.heartbeat_interval_ms)
                ),
            ));
        }
        if self.election_timeout_ms > Self::MAX_ELECTION_MS {
            out.push(Problem::new(
                format!("{at}.election_timeout_ms"),
                format!("must be at most {} (etcd's limit)", Self::MAX_ELECTION_MS),
            ));
        }
        out
    }

    fn default_heartbeat() -> u32 {
        100
    }

    fn default_election() -> u32 {
        1000
    }
}

impl Default for EtcdTiming {
    fn default() -> EtcdTiming {
        EtcdTiming {
            heartbeat_interval_ms: EtcdTiming::default_heartbeat(),
            election_timeout_ms: EtcdTiming::default_election(),
        }
    }
}

/// `[control_plane.leader_election]` (cluster.toml) and
/// `[cluster.control_plane.leader_election]`: kube-controller-manager's and
/// kube-scheduler's leases, in seconds (their `--leader-elect-*` flags;
/// the defaults are upstream's). A leader that cannot renew within the
/// deadline exits: where the API answers slowly (emulated labs, overloaded
/// hosts) leaders then come and go; raise all three there (the lab's
/// Kubernetes test takes 60, 45 and 8). Longer leases move work off a dead
/// node later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElection {
    #[serde(default = "LeaderElection::default_lease")]
    pub lease_duration_s: u32,
    #[serde(default = "LeaderElection::default_renew")]
    pub renew_deadline_s: u32,
    #[serde(default = "LeaderElection::default_retry")]
    pub retry_period_s: u32,
}

impl LeaderElection {
    /// What is wrong with these settings, keys under `at`.
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.retry_period_s == 0 {
            out.push(Problem::new(
                format!("{at}.retry_period_s"),
                "must be at least 1",
            ));
        }
        // client-go refuses a renew deadline not above the retry period
        // and a lease not above the renew deadline
        if self.renew_deadline_s <= self.retry_period_s {
            out.push(Problem::new(
                format!("{at}.renew_deadline_s"),
                "must be longer than retry_period_s",
            ));
        }
        if self.lease_duration_s <= self.renew_deadline_s {
            out.push(Problem::new(
                format!("{at}.lease_duration_s"),
                "must be longer than renew_deadline_s",
            ));
        }
        out
    }

    fn default_lease() -> u32 {
        15
    }

    fn default_renew() -> u32 {
        10
    }

    fn default_retry() -> u32 {
        2
    }
}

impl Default for LeaderElection {
    fn default() -> LeaderElection {
        LeaderElection {
            lease_duration_s: LeaderElection::default_lease(),
            renew_deadline_s: LeaderElection::default_renew(),
            retry_period_s: LeaderElection::default_retry(),
        }
    }
}

/// A whole number of seconds, written `1h`, `30m`, `1h30m`, `45s`, `1d`.
/// Parsed when the document is read, so a bad one is a TOML error placed
/// at its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval(pub u64);

impl Interval {
    pub fn seconds(self) -> u64 {
        self.0
    }

    pub fn parse(s: &str) -> Result<Interval, String> {
        let why = || format!("{s:?} is not a duration like 1h, 30m, 1h30m or 45s");
        let mut total: u64 = 0;
        let mut digits = String::new();
        let mut last_unit = u64::MAX;
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                'd' => 86_400,
                'h' => 3_600,
                'm' => 60,
                's' => 1,
                _ => return Err(why()),
            };
            // units in falling order, each once: `1m1h` is a typo
            if digits.is_empty() || unit >= last_unit {
                return Err(why());
            }
            let n: u64 = digits.parse().map_err(|_| why())?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(why)?;
            digits.clear();
            last_unit = unit;
        }
        if !digits.is_empty() || last_unit == u64::MAX {
            return Err(why());
        }
        if total == 0 {
            return Err(format!("{s:?} is zero; give at least 1s"));
        }
        Ok(Interval(total))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut left = self.0;
        for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
            if left >= unit {
                write!(f, "{}{name}", left / unit)?;
                left %= unit;
            }
        }
        Ok(())
    }
}

impl Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Interval, D::Error> {
        let s = String::deserialize(d)?;
        Interval::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `HOST:PORT` as clients dial the Kubernetes API: a DNS name, an IPv4
/// address or a bracketed IPv6 address, and a port 1 to 65535.
pub fn check_endpoint(s: &str) -> Result<(), String> {
    let why = || format!("{s:?} is not HOST:PORT (a DNS name or IP address, and a port)");
    let (host, port) = s.rsplit_once(':').ok_or_else(why)?;
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && matches!(port.parse::<u32>(), Ok(1..=65535));
    if !port_ok {
        return Err(format!("{s:?}: port {port:?} is not 1 to 65535"));
    }
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok() || dns_name(host).is_ok(),
    };
    if host_ok {
        Ok(())
    } else {
        Err(why())
    }
}

/// Kubernetes' bootstrap token format: `[a-z0-9]{6}.[a-z0-9]{16}` (the
/// token id, public, and the token secret).
pub fn check_bootstrap_token(s: &str) -> Result<(), String> {
    let part = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match s.split_once('.') {
        Some((id, secret)) if part(id, 6) && part(secret, 16) => Ok(()),
        // the value is a secret: never echo it
        _ => Err("is not a bootstrap token of the form [a-z0-9]{6}.[a-z0-9]{16}".into()),
    }
}

/// The key length aescbc and secretbox both take.
pub const ENCRYPTION_KEY_BYTES: usize = 32;

/// An encryption-at-rest key: standard base64 of exactly 32 bytes.
pub fn check_encryption_key(s: &str) -> Result<(), String> {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(s.trim()) {
        Ok(k) if k.len() == ENCRYPTION_KEY_BYTES => Ok(()),
        Ok(k) => Err(format!(
            "decodes to {} bytes; an encryption key is {ENCRYPTION_KEY_BYTES} bytes (base64)",
            k.len()
        )),
        Err(_) => Err("is not standard base64".into()),
    }
}

/// Reads one private key PEM block; records a problem at `key` otherwise.
fn private_key(key: &str, text: &str, out: &mut Vec<Problem>) -> Option<KeyFacts> {
    let blocks = match pem::parse(text) {
        Ok(b) => b,
        Err(e) => {
            out.push(Problem::new(key, e.to_string()));
            return None;
        }
    };
    match blocks.as_slice() {
        [one] => match pem::private_key(one) {
            Ok(k) => Some(k),
            Err(why) => {
                out.push(Problem::new(key, why));
                None
            }
        },
        _ => {
            out.push(Problem::new(
                key,
                format!(
                    "holds {} PEM blocks; give exactly one private key",
                    blocks.len()
                ),
            ));
            None
        }
    }
}

impl CaPair {
    /// The pair's own checks, keys relative to the pair's table
    /// (`certificate`, `key`): the certificate is a CA's, and the key (if
    /// any) is its key. Role rules are the caller's.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let certs = certificates("certificate", &self.certificate, &mut out);
        if let Some(first) = certs.first() {
            if first.is_ca != Some(true) {
                out.push(Problem::new(
                    "certificate",
                    "is not a CA certificate (no basicConstraints CA:TRUE)",
                ));
            }
        }
        let Some(key) = &self.key else {
            return out;
        };
        let facts = private_key("key", key.expose(), &mut out);
        let public = certs.first().and_then(|c| c.public_key.as_deref());
        if let (
            Some(KeyFacts {
                public_key: Some(k),
            }),
            Some(c),
        ) = (facts, public)
        {
            if k != c {
                out.push(Problem::new(
                    "key",
                    "does not belong to certificate (their public keys differ)",
                ));
            }
        }
        out
    }

    /// The public key of the CA's (first) certificate, when readable.
    pub(super) fn public_key(&self) -> Option<Vec<u8>> {
        let blocks = pem::parse(&self.certificate).ok()?;
        let der = &blocks.first()?.der;
        pem::certificate(der).ok()?.public_key
    }
}

impl ServiceAccountKeys {
    /// `public_key` is one PUBLIC KEY block and `private_key` is its key;
    /// keys relative to the table.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let public = match pem::parse(&self.public_key) {
            Err(e) => {
                out.push(Problem::new("public_key", e.to_string()));
                None
            }
            Ok(blocks) => match blocks.as_slice() {
                [one] if one.label == "PUBLIC KEY" => match pem::public_key(&one.der) {
                    Ok(k) => Some(k),
                    Err(why) => {
                        out.push(Problem::new(
                            "public_key",
                            format!("is not a readable public key: {why}"),
                        ));
                        None
                    }
                },
                _ => {
                    out.push(Problem::new(
                        "public_key",
                        "give exactly one PEM PUBLIC KEY block",
                    ));
                    None
                }
            },
        };
        let private = private_key("private_key", self.private_key.expose(), &mut out);
        if let (
            Some(p),
            Some(KeyFacts {
                public_key: Some(k),
            }),
        ) = (public, private)
        {
            if p != k {
                out.push(Problem::new(
                    "private_key",
                    "does not belong to public_key (their public keys differ)",
                ));
            }
        }
        out
    }
}

/// Every problem of the members list, keys `{prefix}[i]...`.
pub fn member_problems(prefix: &str, members: &[Member]) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for (i, m) in members.iter().enumerate() {
        let key = format!("{prefix}[{i}]");
        if let Err(why) = dns_name(&m.hostname) {
            out.push(Problem::new(format!("{key}.hostname"), why));
        }
        if !names.insert(m.hostname.as_str()) {
            out.push(Problem::new(
                format!("{key}.hostname"),
                format!("{:?} is listed twice", m.hostname),
            ));
        }
        if m.address.is_unspecified() || m.address.is_multicast() {
            out.push(Problem::new(
                format!("{key}.address"),
                format!("{} is not a node's address", m.address),
            ));
        }
        if !addresses.insert(m.address) {
            out.push(Problem::new(
                format!("{key}.address"),
                format!("{} is listed twice", m.address),
            ));
        }
    }
    out
}

/// What the machine config's `[cluster]` carries beyond its name, checked
/// for `role`: the material's own checks, then who may hold what.
pub(super) fn problems(c: &super::Cluster, role: Role, hostname: &str, out: &mut Vec<Problem>) {
    if let Some(e) = &c.control_plane_endpoint {
        if let Err(why) = check_endpoint(e) {
            out.push(Problem::new("cluster.control_plane_endpoint", why));
        }
    }
    if let Some(t) = &c.bootstrap_token {
        if let Err(why) = check_bootstrap_token(t.expose()) {
            out.push(Problem::new("cluster.bootstrap_token", why));
        }
    }
    for (name, pair) in c.cas() {
        let table = format!("cluster.{name}");
        for p in pair.problems() {
            out.push(Problem::new(format!("{table}.{}", p.key), p.message));
        }
        match (role, &pair.key) {
            (Role::Worker, Some(_)) => out.push(Problem::new(
                format!("{table}.key"),
                "a worker never holds a CA private key",
            )),
            (Role::ControlPlane, None) => out.push(Problem::new(
                format!("{table}.key"),
                "missing: a control-plane node issues certificates from this CA, give its key",
            )),
            _ => {}
        }
    }
    let Some(cp) = &c.control_plane else {
        return;
    };
    out.extend(member_problems(
        "cluster.control_plane.members",
        &cp.members,
    ));
    if role == Role::ControlPlane
        && !cp.members.is_empty()
        && !cp.members.iter().any(|m| m.hostname == hostname)
    {
        out.push(Problem::new(
            "hostname",
            format!(
                "{hostname:?} is a control-plane node but not one of cluster.control_plane.members"
            ),
        ));
    }
    if let Some(k) = &cp.encryption_key {
        if role == Role::Worker {
            out.push(Problem::new(
                "cluster.control_plane.encryption_key",
                "a worker never holds the encryption-at-rest key",
            ));
        } else if let Err(why) = check_encryption_key(k.expose()) {
            out.push(Problem::new("cluster.control_plane.encryption_key", why));
        }
    }
    if let Some(name) = &cp.encryption_key_name {
        if let Err(why) = super::check_key_name(name) {
            out.push(Problem::new(
                "cluster.control_plane.encryption_key_name",
                why,
            ));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    names.insert(
        cp.encryption_key_name
            .clone()
            .unwrap_or_else(|| super::DEFAULT_KEY_NAME.into()),
    );
    for (i, k) in cp.encryption_read_keys.iter().enumerate() {
        let at = format!("cluster.control_plane.encryption_read_keys[{i}]");
        if role == Role::Worker {
            out.push(Problem::new(
                at.clone(),
                "a worker never holds an encryption-at-rest key",
            ));
        }
        if let Err(why) = super::check_key_name(&k.name) {
            out.push(Problem::new(format!("{at}.name"), why));
        } else if !names.insert(k.name.clone()) {
            out.push(Problem::new(
                format!("{at}.name"),
                format!("{} names two keys", k.name),
            ));
        }
        if let Err(why) = check_encryption_key(k.key.expose()) {
            out.push(Problem::new(format!("{at}.key"), why));
        }
    }
    if let Some(sa) = &cp.service_account {
        if role == Role::Worker {
            out.push(Problem::new(
                "cluster.control_plane.service_account.private_key",
                "a worker never holds the service-account private key",
            ));
        }
        for p in sa.problems() {
            out.push(Problem::new(
                format!("cluster.control_plane.service_account.{}", p.key),
                p.message,
            ));
        }
    }
    if let Some(b) = &cp.etcd_backup {
        out.extend(b.problems("cluster.control_plane.etcd_backup"));
    }
    if let Some(s3) = &cp.etcd_backup_s3 {
        if role == Role::Worker {
            out.push(Problem::new(
                "cluster.control_plane.etcd_backup_s3",
                "a worker takes no etcd backups",
            ));
        }
        out.extend(s3.problems("cluster.control_plane.etcd_backup_s3"));
    }
    if let Some(t) = &cp.etcd_timing {
        out.extend(t.problems("cluster.control_plane.etcd_timing"));
    }
    if let Some(f) = cp.etcd_formation {
        out.extend(f.problem(
            &cp.members,
            "cluster.control_plane.etcd_formation",
            "[[cluster.control_plane.members]]",
        ));
    }
    if let Some(l) = &cp.leader_election {
        out.extend(l.problems("cluster.control_plane.leader_election"));
    }
    if let Some(o) = &cp.oidc {
        out.extend(o.problems("cluster.control_plane.oidc"));
    }
    if let Some(a) = &cp.api_server {
        out.extend(a.problems("cluster.control_plane.api_server"));
    }
    if let Some(st) = &cp.stack {
        out.extend(st.problems("cluster.control_plane.stack"));
    }
}
