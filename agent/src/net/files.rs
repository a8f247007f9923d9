//! `/etc/resolv.conf` and `/etc/hosts` from what the links were given.
//! Rendering is pure; writing goes to a temporary name in `/etc` (the
//! writable overlay in stage 2), is synced, then renamed over the old file,
//! so a reader sees the old file or the new one, never half of one.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

pub const RESOLV_CONF: &str = "/etc/resolv.conf";
pub const HOSTS: &str = "/etc/hosts";
/// glibc reads at most this many `nameserver` lines (MAXNS).
const MAX_NAMESERVERS: usize = 3;

/// What one link contributes to name resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkNames {
    pub dns: Vec<IpAddr>,
    /// A search domain (DHCP option 15).
    pub domain: Option<String>,
    /// The link's first IPv4 address: what the host name resolves to.
    pub address: Option<Ipv4Addr>,
}

/// Every configured link's names, by link name (so the output does not
/// depend on which lease came first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub links: BTreeMap<String, LinkNames>,
}

impl Names {
    /// `resolv.conf`, or `None` when no link has a DNS server (the image's
    /// file then stays as it is).
    pub fn resolv_conf(&self) -> Option<String> {
        let mut servers: Vec<IpAddr> = Vec::new();
        for s in self.links.values().flat_map(|l| &l.dns) {
            if !servers.contains(s) {
                servers.push(*s);
            }
        }
        if servers.is_empty() {
            return None;
        }
        let mut out = String::from("# written by nodeagent from the network configuration\n");
        for s in servers.iter().take(MAX_NAMESERVERS) {
            out.push_str(&format!("nameserver {s}\n"));
        }
        let mut domains: Vec<&str> = Vec::new();
        for d in self.links.values().filter_map(|l| l.domain.as_deref()) {
            if !domains.contains(&d) {
                domains.push(d);
            }
        }
        if !domains.is_empty() {
            out.push_str(&format!("search {}\n", domains.join(" ")));
        }
        Some(out)
    }

    /// `/etc/hosts`: localhost, and the host name on the first link's
    /// address (with its short name when it is qualified).
    pub fn hosts(&self, hostname: &str) -> String {
        let mut out =
            String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
        if let Some(addr) = self.links.values().find_map(|l| l.address) {
            match hostname.split_once('.') {
                Some((short, _)) => out.push_str(&format!("{addr} {hostname} {short}\n")),
                None => out.push_str(&format!("{addr} {hostname}\n")),
            }
        }
        out
    }
}

/// Writes `text` to `path` atomically (see [`crate::sys::write_atomic`]).
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    crate::sys::write_atomic(path, text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let mut n = Names::default();
        n.links.insert(
            "eth1".into(),
            LinkNames {
                dns: vec!["10.0.2.3".parse().unwrap(), "192.0.2.53".parse().unwrap()],
                domain: Some("b.example".into()),
                address: Some(Ipv4Addr::new(192, 0, 2, 7)),
            },
        );
        n.links.insert(
            "eth0".into(),
            LinkNames {
                dns: vec!["10.0.2.3".parse().unwrap()],
                domain: Some("a.example".into()),
                address: Some(Ipv4Addr::new(10, 0, 2, 15)),
            },
        );
        n
    }

    #[test]
    fn resolv_conf_merges_links_in_name_order() {
        assert_eq!(
            names().resolv_conf().unwrap(),
            "# written by nodeagent from the network configuration\n\
             nameserver 10.0.2.3\nnameserver 192.0.2.53\nsearch a.example b.example\n"
        );
        assert_eq!(Names::default().resolv_conf(), None);
    }

    #[test]
    fn resolv_conf_keeps_three_servers() {
        let mut n = Names::default();
        n.links.insert(
            "eth0".into(),
            LinkNames {
                dns: (1..=5)
                    .map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)))
                    .collect(),
                ..LinkNames::default()
            },
        );
        let text = n.resolv_conf().unwrap();
        assert_eq!(text.matches("nameserver").count(), 3, "{text}");
        assert!(!text.contains("search"));
    }

    #[test]
    fn hosts_names_the_first_links_address() {
        assert_eq!(
            names().hosts("node-1"),
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n10.0.2.15 node-1\n"
        );
        assert!(names()
            .hosts("node-1.lab.example")
            .ends_with("10.0.2.15 node-1.lab.example node-1\n"));
        assert!(!Names::default().hosts("n").contains("n\n"));
    }

    #[test]
    fn write_atomic_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        std::fs::write(&p, "old").unwrap();
        write_atomic(&p, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
    }
}
