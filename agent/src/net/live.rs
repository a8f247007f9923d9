//! A new machine config's `[network]` applied to the running node (the
//! node API's `apply-config`), for what can change without a lease in
//! the way: links whose old and new plans are both static (or a static
//! link that is new). Their addresses are diffed (added, removed), the
//! default route replaced when the gateway changed, and resolv.conf and
//! hosts rewritten. A change that touches a DHCP link (its keeper thread
//! owns that link's addresses for the life of PID 1) is refused whole,
//! before anything changes: it takes effect at the next boot.

use std::net::{IpAddr, Ipv4Addr};

use super::{InterfacePlan, Mode, Selector};

/// What to do to one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    pub selector: Selector,
    pub add: Vec<(Ipv4Addr, u8)>,
    pub remove: Vec<(Ipv4Addr, u8)>,
    /// The gateway to route through now (`None`: leave the route).
    pub gateway: Option<Ipv4Addr>,
    /// The link's whole new static state (empty: the link is no longer
    /// configured).
    pub addresses: Vec<(Ipv4Addr, u8)>,
    pub dns: Vec<IpAddr>,
}

fn find<'a>(plans: &'a [InterfacePlan], s: &Selector) -> Option<&'a Mode> {
    plans.iter().find(|p| &p.selector == s).map(|p| &p.mode)
}

/// The changes from `old` to `new`, or why they cannot be made live.
pub fn plan(old: &[InterfacePlan], new: &[InterfacePlan]) -> Result<Vec<LinkChange>, String> {
    let mut selectors: Vec<&Selector> = old.iter().map(|p| &p.selector).collect();
    for p in new {
        if !selectors.contains(&&p.selector) {
            selectors.push(&p.selector);
        }
    }
    let empty = Mode::Static {
        addresses: Vec::new(),
        gateway: None,
        dns: Vec::new(),
    };
    let mut out = Vec::new();
    for s in selectors {
        let (was, now) = (find(old, s), find(new, s));
        if was == now {
            continue;
        }
        let (
            Mode::Static {
                addresses: before, ..
            },
            Mode::Static {
                addresses,
                gateway,
                dns,
            },
        ) = (was.unwrap_or(&empty), now.unwrap_or(&empty))
        else {
            return Err(format!(
                "the link with {s} changes to or from DHCP; that takes effect at the next boot"
            ));
        };
        let old_gateway = match was {
            Some(Mode::Static { gateway, .. }) => *gateway,
            _ => None,
        };
        out.push(LinkChange {
            selector: s.clone(),
            add: addresses
                .iter()
                .filter(|a| !before.contains(a))
                .copied()
                .collect(),
            remove: before
                .iter()
                .filter(|a| !addresses.contains(a))
                .copied()
                .collect(),
            gateway: gateway.filter(|g| Some(*g) != old_gateway),
            addresses: addresses.clone(),
            dns: dns.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(name: &str, addrs: &[&str], gw: Option<&str>) -> InterfacePlan {
        InterfacePlan {
            selector: Selector::Name(name.into()),
            mode: Mode::Static {
                addresses: addrs
                    .iter()
                    .map(|a| {
                        let (ip, p) = a.split_once('/').unwrap();
                        (ip.parse().unwrap(), p.parse().unwrap())
                    })
                    .collect(),
                gateway: gw.map(|g| g.parse().unwrap()),
                dns: Vec::new(),
            },
        }
    }

    #[test]
    fn static_changes_are_diffed() {
        let old = [st("eth0", &["10.0.0.2/24"], Some("10.0.0.1"))];
        let new = [
            st("eth0", &["10.0.0.2/24", "10.0.0.3/24"], Some("10.0.0.1")),
            st("eth1", &["10.1.0.2/24"], None),
        ];
        let c = plan(&old, &new).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].add, [("10.0.0.3".parse().unwrap(), 24)]);
        assert!(c[0].remove.is_empty() && c[0].gateway.is_none());
        assert_eq!(c[1].add.len(), 1);
        // back again: the extra address goes, eth1 is emptied
        let back = plan(&new, &old).unwrap();
        assert_eq!(back[0].remove, [("10.0.0.3".parse().unwrap(), 24)]);
        assert_eq!(back[1].remove.len(), 1);
        assert!(back[1].addresses.is_empty());
        assert!(plan(&old, &old).unwrap().is_empty());
    }

    #[test]
    fn a_dhcp_link_in_the_change_refuses_it_whole() {
        let old = [st("eth0", &["10.0.0.2/24"], None)];
        let dhcp = [InterfacePlan {
            selector: Selector::Name("eth0".into()),
            mode: Mode::Dhcp,
        }];
        assert!(plan(&old, &dhcp).unwrap_err().contains("DHCP"));
        assert!(plan(&dhcp, &old).unwrap_err().contains("DHCP"));
        // an unchanged DHCP link beside a static change is fine
        let mut both_old = dhcp.to_vec();
        both_old.push(st("eth1", &["10.1.0.2/24"], None));
        let mut both_new = dhcp.to_vec();
        both_new.push(st("eth1", &["10.1.0.3/24"], None));
        assert_eq!(plan(&both_old, &both_new).unwrap().len(), 1);
    }
}
