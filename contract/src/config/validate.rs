//! The checks serde cannot express: names, addresses, selectors and the
//! API's PEM material (the cluster's, in `cluster.rs`). Each problem names
//! its dotted key.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::pem::{self, KeyFacts};
use super::{Api, Interface, MachineConfig, Problem, SCHEMA};

pub(super) fn problems(c: &MachineConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    if c.schema != SCHEMA {
        out.push(Problem::new(
            "schema",
            format!("is {}, this build reads schema {SCHEMA}", c.schema),
        ));
    }
    if let Err(why) = dns_name(&c.hostname) {
        out.push(Problem::new("hostname", why));
    }
    if let Err(why) = dns_label(&c.cluster.name) {
        out.push(Problem::new("cluster.name", why));
    }
    interfaces(&c.network.interfaces, &mut out);
    for (i, s) in c.time.servers.iter().enumerate() {
        if s.parse::<IpAddr>().is_err() && dns_name(s).is_err() {
            out.push(Problem::new(
                format!("time.servers[{i}]"),
                format!("{s:?} is neither an IP address nor a host name"),
            ));
        }
    }
    super::cluster::problems(&c.cluster, c.role, &c.hostname, &mut out);
    let ca_keys: Vec<Vec<u8>> = c
        .cluster
        .cas()
        .filter_map(|(_, p)| p.public_key())
        .collect();
    api(&c.api, &ca_keys, &mut out);
    for (host, mirrors) in &c.containerd.registry_mirrors {
        if let Err(why) = registry_host(host) {
            out.push(Problem::new(
                format!("containerd.registry_mirrors.\"{host}\""),
                why,
            ));
        }
        for (i, m) in mirrors.iter().enumerate() {
            let url_ok = super::registries::url_host(m).is_some_and(|h| registry_host(h).is_ok())
                && !m.contains(|ch: char| ch.is_whitespace() || ch.is_control() || ch == '"');
            if !url_ok {
                out.push(Problem::new(
                    format!("containerd.registry_mirrors.\"{host}\"[{i}]"),
                    format!("{m:?} is not an http:// or https:// URL of a host[:port]"),
                ));
            }
        }
    }
    for (host, cred) in &c.containerd.registry_credentials {
        let key = format!("containerd.registry_credentials.\"{host}\"");
        if let Err(why) = registry_host(host) {
            out.push(Problem::new(key.clone(), why));
        }
        match (&cred.username, &cred.password, &cred.token) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            _ => out.push(Problem::new(
                key,
                "give username and password, or token alone",
            )),
        }
    }
    out
}

/// A registry as image references name it: `host[:port]`, the host a
/// DNS name or an IPv4 address (it becomes a directory name on the node,
/// so nothing else gets through: no `/`, no `..`).
pub(super) fn registry_host(s: &str) -> Result<(), String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port {
        if !p.bytes().all(|b| b.is_ascii_digit()) || !matches!(p.parse::<u32>(), Ok(1..=65535)) {
            return Err(format!("{s:?}: port {p:?} is not 1 to 65535"));
        }
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() || dns_name(host).is_ok() {
        Ok(())
    } else {
        Err(format!("{s:?} is not a registry host[:port]"))
    }
}

/// A DNS name as Kubernetes takes a node name: lower-case RFC 1123 labels,
/// at most 253 characters.
pub(super) fn dns_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("{s:?} must be 1 to 253 characters"));
    }
    for label in s.split('.') {
        dns_label(label).map_err(|why| format!("{s:?}: {why}"))?;
    }
    Ok(())
}

/// One lower-case RFC 1123 label: `a-z 0-9 -`, 1 to 63, no `-` at either end.
pub(super) fn dns_label(s: &str) -> Result<(), String> {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if s.is_empty() || s.len() > 63 || !ok_chars || s.starts_with('-') || s.ends_with('-') {
        return Err(format!(
            "label {s:?} must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'"
        ));
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff`, any case.
pub(super) fn mac(s: &str) -> Result<[u8; 6], String> {
    let mut out = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address like 52:54:00:12:34:56"));
    }
    for (o, p) in out.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return Err(format!("{s:?} is not a MAC address like 52:54:00:12:34:56"));
        }
        *o = u8::from_str_radix(p, 16)
            .map_err(|_| format!("{s:?} is not a MAC address like 52:54:00:12:34:56"))?;
    }
    if out == [0; 6] || out.first().is_some_and(|b| b & 1 == 1) {
        return Err(format!("{s:?} is not a unicast MAC address"));
    }
    Ok(out)
}

/// A kernel link name: 1 to 15 bytes, no `/`, `:` or whitespace.
fn ifname(s: &str) -> Result<(), String> {
    let bad = s.is_empty()
        || s.len() > 15
        || s == "."
        || s == ".."
        || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(format!(
            "{s:?} is not a link name (1 to 15 characters, no '/', ':' or spaces)"
        ));
    }
    Ok(())
}

/// An address with its prefix length, `10.0.0.2/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub(super) fn parse(s: &str) -> Result<Cidr, String> {
        let why = || format!("{s:?} is not an address in CIDR form like 10.0.0.2/24");
        let (a, p) = s.split_once('/').ok_or_else(why)?;
        let addr: IpAddr = a.parse().map_err(|_| why())?;
        let prefix: u8 = p.parse().map_err(|_| why())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max || p.starts_with('+') || (p.len() > 1 && p.starts_with('0')) {
            return Err(format!("{s:?}: prefix length must be 0 to {max}"));
        }
        Ok(Cidr { addr, prefix })
    }

    /// `true` when `ip` is in this address's subnet.
    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(a.to_bits()), u128::from(b.to_bits()), 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
            _ => return false,
        };
        let host_bits = bits - u32::from(self.prefix);
        a.checked_shr(host_bits).unwrap_or(0) == b.checked_shr(host_bits).unwrap_or(0)
    }
}

fn interfaces(list: &[Interface], out: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for (i, nic) in list.iter().enumerate() {
        let key = format!("network.interfaces[{i}]");
        let selector = match (&nic.mac, &nic.name) {
            (Some(m), None) => match mac(m) {
                Ok(b) => Some(format!("mac {b:02x?}")),
                Err(why) => {
                    out.push(Problem::new(format!("{key}.mac"), why));
                    None
                }
            },
            (None, Some(n)) => match ifname(n) {
                Ok(()) => Some(format!("name {n}")),
                Err(why) => {
                    out.push(Problem::new(format!("{key}.name"), why));
                    None
                }
            },
            (Some(_), Some(_)) => {
                out.push(Problem::new(
                    key.clone(),
                    "choose the link by mac or by name, not both",
                ));
                None
            }
            (None, None) => {
                out.push(Problem::new(
                    key.clone(),
                    "needs mac or name to choose its link",
                ));
                None
            }
        };
        if let Some(s) = selector {
            if !seen.insert(s) {
                out.push(Problem::new(
                    key.clone(),
                    "chooses the same link as an interface before it",
                ));
            }
        }
        match (nic.dhcp, nic.addresses.is_empty()) {
            (true, false) => out.push(Problem::new(
                key.clone(),
                "use dhcp = true or static addresses, not both",
            )),
            (false, true) => out.push(Problem::new(
                key.clone(),
                "needs dhcp = true or static addresses",
            )),
            _ => {}
        }
        let mut cidrs = Vec::new();
        for (j, a) in nic.addresses.iter().enumerate() {
            match Cidr::parse(a) {
                Ok(c) => cidrs.push(c),
                Err(why) => out.push(Problem::new(format!("{key}.addresses[{j}]"), why)),
            }
        }
        if let Some(g) = &nic.gateway {
            let gkey = format!("{key}.gateway");
            match g.parse::<IpAddr>() {
                Err(_) => out.push(Problem::new(gkey, format!("{g:?} is not an IP address"))),
                Ok(_) if nic.dhcp => {
                    out.push(Problem::new(gkey, "DHCP provides the gateway; remove it"))
                }
                Ok(ip) if !cidrs.is_empty() && !cidrs.iter().any(|c| c.contains(ip)) => out.push(
                    Problem::new(gkey, format!("{g} is in none of this interface's subnets")),
                ),
                Ok(_) => {}
            }
        }
        for (j, d) in nic.dns.iter().enumerate() {
            if d.parse::<IpAddr>().is_err() {
                out.push(Problem::new(
                    format!("{key}.dns[{j}]"),
                    format!("{d:?} is not an IP address"),
                ));
            }
        }
    }
}

/// `other_cas`: the public keys of the cluster's other CAs, whose private
/// keys a node's API key must not be either.
fn api(a: &Api, other_cas: &[Vec<u8>], out: &mut Vec<Problem>) {
    let ca = certificates("api.client_ca", &a.client_ca, out);
    let cert = certificates("api.certificate", &a.certificate, out);
    let key = match pem::parse(a.key.expose()) {
        Err(e) => {
            out.push(Problem::new("api.key", e.to_string()));
            None
        }
        Ok(blocks) => match blocks.as_slice() {
            [one] => match pem::private_key(one) {
                Ok(k) => Some(k),
                Err(why) => {
                    out.push(Problem::new("api.key", why));
                    None
                }
            },
            _ => {
                out.push(Problem::new(
                    "api.key",
                    format!(
                        "holds {} PEM blocks; give exactly one private key",
                        blocks.len()
                    ),
                ));
                None
            }
        },
    };
    if let Some(node) = cert.first() {
        if node.is_ca == Some(true) {
            out.push(Problem::new(
                "api.certificate",
                "is a CA certificate (basicConstraints CA:TRUE); give the node's own certificate",
            ));
        }
    }
    let Some(KeyFacts {
        public_key: Some(public),
    }) = key
    else {
        // the key does not carry its public half (e.g. Ed25519 PKCS#8 v1):
        // deriving it needs the curve arithmetic this crate leaves out
        return;
    };
    if ca
        .iter()
        .any(|c| c.public_key.as_deref() == Some(&public[..]))
    {
        out.push(Problem::new(
            "api.key",
            "is the private key of the cluster CA in api.client_ca: a node never holds a CA key",
        ));
    } else if other_cas.iter().any(|k| k[..] == public[..]) {
        out.push(Problem::new(
            "api.key",
            "is the private key of one of the cluster's CAs: the node API needs its own key",
        ));
    } else if let Some(node) = cert.first().and_then(|c| c.public_key.as_deref()) {
        if node != &public[..] {
            out.push(Problem::new(
                "api.key",
                "does not belong to api.certificate (their public keys differ)",
            ));
        }
    }
}

/// Reads a PEM bundle that must hold certificates only; records problems.
pub(super) fn certificates(key: &str, text: &str, out: &mut Vec<Problem>) -> Vec<pem::CertFacts> {
    let blocks = match pem::parse(text) {
        Ok(b) => b,
        Err(e) => {
            out.push(Problem::new(key, e.to_string()));
            return Vec::new();
        }
    };
    if blocks.is_empty() {
        out.push(Problem::new(key, "holds no PEM certificate"));
    }
    let mut facts = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        if b.label.contains("PRIVATE KEY") {
            out.push(Problem::new(
                key,
                format!(
                    "PEM block {} is a private key ({}); this key holds certificates only, and a node never holds a CA key",
                    i + 1,
                    b.label
                ),
            ));
            continue;
        }
        if b.label != "CERTIFICATE" {
            out.push(Problem::new(
                key,
                format!("PEM block {} is {:?}, expected CERTIFICATE", i + 1, b.label),
            ));
            continue;
        }
        match pem::certificate(&b.der) {
            Ok(f) => facts.push(f),
            Err(why) => out.push(Problem::new(
                key,
                format!("PEM block {} is not an X.509 certificate: {why}", i + 1),
            )),
        }
    }
    facts
}
