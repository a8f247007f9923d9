//! The node's network, brought up by the agent itself in stage 2.
//!
//! Takes a list of [`InterfacePlan`]s (a link chosen by MAC or name, and
//! DHCP or static addresses); with none (no machine config yet) it runs
//! DHCP on every ethernet NIC. It brings the links up over rtnetlink, adds
//! the addresses and the default route, writes `/etc/resolv.conf` and
//! `/etc/hosts`, sets the host name from DHCP when none was given, and
//! leaves one thread per lease that renews it. It produces a
//! [`NetReport`] for the boot report.
//!
//! It never fails the boot: a link that gets no lease in time is reported
//! (and its thread keeps asking), because a node whose root is verified
//! and whose services run is better reachable late than powered off; the
//! services decide `ready`. It never touches links no plan names, nor
//! IPv6 (the kernel's own link-local addressing stays).

mod dhcp;
mod dhcp_client;
mod files;
mod keeper;
pub mod live;
mod loopback;
pub mod netlink;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::chain;
pub use loopback::loopback_up;
use netlink::{Link, Netlink};

/// How long the boot waits for DHCP on all links together. Past it the
/// boot goes on and each link's thread keeps trying in the background.
pub const DHCP_DEADLINE: Duration = Duration::from_secs(15);

/// Which link a plan is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Mac([u8; 6]),
    Name(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Mac(m) => write!(f, "MAC {}", netlink::mac_string(m)),
            Selector::Name(n) => write!(f, "name {n}"),
        }
    }
}

/// How a link gets its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Dhcp,
    Static {
        addresses: Vec<(Ipv4Addr, u8)>,
        gateway: Option<Ipv4Addr>,
        dns: Vec<IpAddr>,
    },
}

/// One link's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfacePlan {
    pub selector: Selector,
    pub mode: Mode,
}

pub use contract::report::{AddressReport, InterfaceReport, NetReport, Obtained};

/// The machine config's interfaces as plans (the config was checked
/// whole before: every address parses). IPv6 static addresses are not
/// applied yet and are skipped; an interface with neither DHCP nor an IPv4
/// address gets no plan.
pub fn plans_from_config(config: &contract::config::MachineConfig) -> Vec<InterfacePlan> {
    config
        .network
        .interfaces
        .iter()
        .filter_map(|i| {
            let selector = match (&i.mac, &i.name) {
                (Some(m), _) => Selector::Mac(netlink::parse_mac(m)?),
                (None, Some(n)) => Selector::Name(n.clone()),
                (None, None) => return None,
            };
            let mode = if i.dhcp {
                Mode::Dhcp
            } else {
                let addresses: Vec<(Ipv4Addr, u8)> = i
                    .addresses
                    .iter()
                    .filter_map(|a| {
                        let (ip, len) = a.split_once('/')?;
                        Some((ip.parse().ok()?, len.parse().ok()?))
                    })
                    .collect();
                if addresses.is_empty() {
                    return None;
                }
                Mode::Static {
                    addresses,
                    gateway: i.gateway.as_deref().and_then(|g| g.parse().ok()),
                    dns: i.dns.iter().filter_map(|d| d.parse().ok()).collect(),
                }
            };
            Some(InterfacePlan { selector, mode })
        })
        .collect()
}

/// With no plan: DHCP on every ethernet NIC that has a MAC.
pub fn default_plans(links: &[Link]) -> Vec<InterfacePlan> {
    links
        .iter()
        .filter(|l| l.ethernet && l.mac.is_some())
        .map(|l| InterfacePlan {
            selector: Selector::Name(l.name.clone()),
            mode: Mode::Dhcp,
        })
        .collect()
}

fn resolve<'a>(selector: &Selector, links: &'a [Link]) -> Option<&'a Link> {
    links.iter().find(|l| match selector {
        Selector::Mac(m) => l.mac.as_ref() == Some(m),
        Selector::Name(n) => &l.name == n,
    })
}

fn report_for(link: &Link) -> InterfaceReport {
    InterfaceReport {
        name: link.name.clone(),
        mac: link.mac.as_ref().map(netlink::mac_string),
        addresses: Vec::new(),
        gateway: None,
        dns: Vec::new(),
        lease_secs: None,
        ntp: Vec::new(),
        error: None,
    }
}

/// Brings the planned links up (see the module's doc). `hostname_given`:
/// the node's name came from its image or config, so DHCP's is not used.
pub fn configure(plans: &[InterfacePlan], hostname_given: bool) -> NetReport {
    let mut report = NetReport::default();
    let mut nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            report.errors.push(chain(&e));
            return report;
        }
    };
    let links = match nl.links() {
        Ok(l) => l,
        Err(e) => {
            report.errors.push(chain(&e));
            return report;
        }
    };
    let plans = if plans.is_empty() {
        default_plans(&links)
    } else {
        plans.to_vec()
    };
    let names = Arc::new(Mutex::new(files::Names::default()));
    let _ = NAMES.set(Arc::clone(&names));
    let mut dhcp_links: Vec<(usize, Link, [u8; 6])> = Vec::new();
    for plan in &plans {
        let Some(link) = resolve(&plan.selector, &links) else {
            report
                .errors
                .push(format!("no link matches {}", plan.selector));
            continue;
        };
        let mut ir = report_for(link);
        if let Err(e) = nl.set_up(link.index, &link.name) {
            ir.error = Some(chain(&e));
            report.interfaces.push(ir);
            continue;
        }
        match &plan.mode {
            Mode::Static {
                addresses,
                gateway,
                dns,
            } => {
                if let Err(e) = apply_static(&mut nl, link, addresses, *gateway, &mut ir) {
                    ir.error = Some(chain(&e));
                }
                ir.dns = dns.clone();
                lock(&names).links.insert(
                    link.name.clone(),
                    files::LinkNames {
                        dns: dns.clone(),
                        domain: None,
                        address: addresses.first().map(|(a, _)| *a),
                    },
                );
            }
            Mode::Dhcp => match link.mac {
                Some(mac) => dhcp_links.push((report.interfaces.len(), link.clone(), mac)),
                None => ir.error = Some("DHCP needs a MAC address; the link has none".into()),
            },
        }
        report.interfaces.push(ir);
    }
    run_dhcp(dhcp_links, &mut report, &names, hostname_given);
    if let Err(e) = write_names(&lock(&names)) {
        report.errors.push(e);
    }
    report
}

/// Runs DHCP on every link at once (one thread each, one shared deadline),
/// applies the leases, and leaves a keeper thread per link.
fn run_dhcp(
    jobs: Vec<(usize, Link, [u8; 6])>,
    report: &mut NetReport,
    names: &Arc<Mutex<files::Names>>,
    hostname_given: bool,
) {
    let deadline = Instant::now() + DHCP_DEADLINE;
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(slot, link, mac)| {
                let (name, index) = (link.name.clone(), link.index);
                let h = s.spawn(move || {
                    let ch = dhcp_client::Channel::open(&name, index, mac)
                        .map_err(|e| (None, chain(&e)))?;
                    match ch.acquire(deadline) {
                        Ok(lease) => Ok((ch, lease)),
                        Err(e) => Err((Some(ch), chain(&e))),
                    }
                });
                (slot, link, h)
            })
            .collect();
        handles
            .into_iter()
            .map(|(slot, link, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err((None, "the DHCP thread panicked".to_string())));
                (slot, link, r)
            })
            .collect()
    });
    let mut nl = Netlink::open().ok();
    for (slot, link, result) in results {
        let Some(ir) = report.interfaces.get_mut(slot) else {
            continue;
        };
        let (ch, lease) = match result {
            Ok((ch, lease)) => (ch, Some(lease)),
            Err((Some(ch), e)) => {
                ir.error = Some(format!("{e}; retrying in the background"));
                (ch, None)
            }
            Err((None, e)) => {
                ir.error = Some(e);
                continue;
            }
        };
        if let Some(lease) = &lease {
            let applied = match nl.as_mut() {
                Some(nl) => keeper::apply(nl, link.index, lease).map_err(|e| chain(&e)),
                None => Err("rtnetlink socket closed".into()),
            };
            match applied {
                Ok(()) => {
                    fill_from_lease(ir, lease);
                    lock(names)
                        .links
                        .insert(link.name.clone(), keeper::link_names(lease));
                    if !hostname_given && report.hostname.is_none() {
                        if let Some(h) = lease.hostname.as_deref() {
                            match rustix::system::sethostname(h.as_bytes()) {
                                Ok(()) => report.hostname = Some(h.to_string()),
                                Err(e) => report.errors.push(format!("set host name {h}: {e}")),
                            }
                        }
                    }
                }
                Err(e) => ir.error = Some(e),
            }
        }
        let k = keeper::Keeper {
            channel: ch,
            ifindex: link.index,
            names: Arc::clone(names),
        };
        if let Err(e) = k.spawn(lease) {
            report
                .errors
                .push(format!("{}: start the lease thread: {e}", link.name));
        }
    }
}

fn fill_from_lease(ir: &mut InterfaceReport, lease: &dhcp::Lease) {
    ir.addresses.push(AddressReport {
        address: format!("{}/{}", lease.address, lease.prefix),
        source: Obtained::Dhcp,
    });
    ir.gateway = lease.gateway();
    ir.dns = lease.dns.iter().copied().map(IpAddr::V4).collect();
    ir.lease_secs = Some(lease.lease_secs);
    ir.ntp = lease.ntp.clone();
}

fn apply_static(
    nl: &mut Netlink,
    link: &Link,
    addresses: &[(Ipv4Addr, u8)],
    gateway: Option<Ipv4Addr>,
    ir: &mut InterfaceReport,
) -> Result<(), netlink::NetlinkError> {
    for (a, p) in addresses {
        nl.add_address(link.index, *a, *p)?;
        ir.addresses.push(AddressReport {
            address: format!("{a}/{p}"),
            source: Obtained::Static,
        });
    }
    if let Some(gw) = gateway {
        nl.replace_default_route(link.index, gw)?;
        ir.gateway = Some(gw);
    }
    Ok(())
}

/// The names every link contributes, shared with the keepers: a live
/// change updates its links' entries in the same set.
static NAMES: std::sync::OnceLock<Arc<Mutex<files::Names>>> = std::sync::OnceLock::new();

/// The network as changed live since boot (`None`: as the boot report says).
static LIVE: Mutex<Option<NetReport>> = Mutex::new(None);

/// The network report as changed live, when it was.
pub fn live_report() -> Option<NetReport> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Applies a new config's interfaces live where that can be done (see
/// `live.rs`): every change is planned first and refused whole when a
/// DHCP link is in it; then links are changed one by one, and the
/// returned report (also what [`live_report`] gives from now on) says
/// what each link holds.
pub fn apply_live(
    old: &[InterfacePlan],
    new: &[InterfacePlan],
    current: &NetReport,
) -> Result<NetReport, String> {
    let changes = live::plan(old, new)?;
    let mut report = live_report().unwrap_or_else(|| current.clone());
    if changes.is_empty() {
        return Ok(report);
    }
    let mut nl = Netlink::open().map_err(|e| chain(&e))?;
    let links = nl.links().map_err(|e| chain(&e))?;
    let mut resolved = Vec::new();
    for c in &changes {
        let link = resolve(&c.selector, &links)
            .ok_or_else(|| format!("no link matches {}", c.selector))?;
        resolved.push((c, link.clone()));
    }
    for (c, link) in &resolved {
        let fail = |e: netlink::NetlinkError| format!("{}: {}", link.name, chain(&e));
        if !c.add.is_empty() {
            nl.set_up(link.index, &link.name).map_err(fail)?;
        }
        for (a, p) in &c.add {
            nl.add_address(link.index, *a, *p).map_err(fail)?;
        }
        for (a, p) in &c.remove {
            nl.del_address(link.index, *a, *p).map_err(fail)?;
        }
        if let Some(gw) = c.gateway {
            nl.replace_default_route(link.index, gw).map_err(fail)?;
        }
        if let Some(names) = NAMES.get() {
            let mut n = lock(names);
            if c.addresses.is_empty() {
                n.links.remove(&link.name);
            } else {
                n.links.insert(
                    link.name.clone(),
                    files::LinkNames {
                        dns: c.dns.clone(),
                        domain: None,
                        address: c.addresses.first().map(|(a, _)| *a),
                    },
                );
            }
        }
        if !report.interfaces.iter().any(|i| i.name == link.name) {
            report.interfaces.push(report_for(link));
        }
        let Some(ir) = report.interfaces.iter_mut().find(|i| i.name == link.name) else {
            continue;
        };
        ir.addresses = c
            .addresses
            .iter()
            .map(|(a, p)| AddressReport {
                address: format!("{a}/{p}"),
                source: Obtained::Static,
            })
            .collect();
        ir.dns = c.dns.clone();
        if c.gateway.is_some() {
            ir.gateway = c.gateway;
        }
        ir.error = None;
    }
    if let Some(names) = NAMES.get() {
        write_names(&lock(names))?;
    }
    *LIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
    Ok(report)
}

/// The lock, even if a keeper panicked while holding it: the names are
/// plain data and stay consistent.
fn lock(names: &Mutex<files::Names>) -> std::sync::MutexGuard<'_, files::Names> {
    names.lock().unwrap_or_else(|p| p.into_inner())
}

/// Renders both files first, then writes them (resolv.conf only when some
/// link has a DNS server; hosts only when some link has an address).
fn write_names(names: &files::Names) -> Result<(), String> {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let resolv = names.resolv_conf();
    let hosts = names
        .links
        .values()
        .any(|l| l.address.is_some())
        .then(|| names.hosts(&host));
    if let Some(text) = resolv {
        files::write_atomic(std::path::Path::new(files::RESOLV_CONF), &text)
            .map_err(|e| format!("write {}: {e}", files::RESOLV_CONF))?;
    }
    if let Some(text) = hosts {
        files::write_atomic(std::path::Path::new(files::HOSTS), &text)
            .map_err(|e| format!("write {}: {e}", files::HOSTS))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, mac: Option<[u8; 6]>, ethernet: bool) -> Link {
        Link {
            index,
            name: name.into(),
            mac,
            ethernet,
            up: false,
        }
    }

    #[test]
    fn default_plan_is_dhcp_on_every_nic() {
        let links = [
            link(1, "lo", None, false),
            link(2, "eth0", Some([2, 0, 0, 0, 0, 1]), true),
            link(3, "br0", Some([2, 0, 0, 0, 0, 2]), false),
            link(4, "eth1", Some([2, 0, 0, 0, 0, 3]), true),
        ];
        let plans = default_plans(&links);
        assert_eq!(
            plans,
            vec![
                InterfacePlan {
                    selector: Selector::Name("eth0".into()),
                    mode: Mode::Dhcp
                },
                InterfacePlan {
                    selector: Selector::Name("eth1".into()),
                    mode: Mode::Dhcp
                },
            ]
        );
        assert!(default_plans(&links[..1]).is_empty());
    }

    #[test]
    fn selectors_match_by_mac_or_name() {
        let links = [
            link(2, "eth0", Some([2, 0, 0, 0, 0, 1]), true),
            link(3, "eth1", Some([2, 0, 0, 0, 0, 3]), true),
        ];
        let by_mac = Selector::Mac([2, 0, 0, 0, 0, 3]);
        assert_eq!(resolve(&by_mac, &links).map(|l| l.index), Some(3));
        let by_name = Selector::Name("eth0".into());
        assert_eq!(resolve(&by_name, &links).map(|l| l.index), Some(2));
        assert!(resolve(&Selector::Name("eth9".into()), &links).is_none());
        assert_eq!(by_mac.to_string(), "MAC 02:00:00:00:00:03");
    }

    #[test]
    fn report_shape() {
        let mut ir = report_for(&link(
            2,
            "eth0",
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            true,
        ));
        fill_from_lease(
            &mut ir,
            &dhcp::Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                server: Ipv4Addr::new(10, 0, 2, 2),
                routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                ntp: vec![],
                hostname: None,
                domain: None,
                lease_secs: 86400,
                renew_secs: 43200,
                rebind_secs: 75600,
            },
        );
        let r = NetReport {
            interfaces: vec![ir],
            hostname: None,
            errors: vec![],
        };
        let v = serde_json::to_value(&r).unwrap();
        let i = &v["interfaces"][0];
        assert_eq!(i["name"], "eth0");
        assert_eq!(i["mac"], "52:54:00:12:34:56");
        assert_eq!(i["addresses"][0]["address"], "10.0.2.15/24");
        assert_eq!(i["addresses"][0]["source"], "dhcp");
        assert_eq!(i["gateway"], "10.0.2.2");
        assert_eq!(i["dns"][0], "10.0.2.3");
        assert_eq!(i["lease_secs"], 86400);
        assert!(i.get("error").is_none() && v.get("errors").is_none());
        assert!(r.problems().is_empty());
    }
}
