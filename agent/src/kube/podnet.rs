//! Pod networking on one network segment, "host-gw" style: each node's pods
//! sit on a bridge (CNI's `bridge` and `host-local` from Debian's
//! containernetworking-plugins) in the /24 kube-controller-manager gave the
//! node, and the agent routes every other node's /24 through that node's
//! address, as it reads them from the Node objects. No overlay, no
//! masquerading inside the cluster: a pod's address is what its peers see.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{json, Value};

use super::at;

/// The conflist's file (`contract::kube::CNI_CONF_DIR`).
pub const CONFLIST: &str = "10-nodeimg.conflist";

/// The CNI network config for a node whose pods get `pod_cidr`.
pub fn conflist(pod_cidr: &str) -> String {
    let doc = json!({
        "cniVersion": "1.0.0",
        "name": "nodeimg",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": pod_cidr }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            },
            { "type": "loopback" },
        ],
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// `a.b.c.d/n` as an IPv4 network.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, n) = s.split_once('/')?;
    let n: u8 = n.parse().ok().filter(|n| *n <= 32)?;
    Some((a.parse().ok()?, n))
}

/// One route another node's pods need: (pod network, its node's address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub node: String,
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub via: Ipv4Addr,
}

/// The routes to every node but `me`, from a NodeList.
pub fn routes(nodes: &Value, me: &str) -> Vec<Route> {
    let mut out = Vec::new();
    for n in at(nodes, "/items").as_array().into_iter().flatten() {
        let name = at(n, "/metadata/name").as_str().unwrap_or_default();
        if name == me {
            continue;
        }
        let Some((dst, prefix)) = at(n, "/spec/podCIDR").as_str().and_then(parse_cidr) else {
            continue;
        };
        let via = at(n, "/status/addresses")
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| at(a, "/type") == "InternalIP")
            .find_map(
                |a| match at(a, "/address").as_str()?.parse::<IpAddr>().ok()? {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                },
            );
        if let Some(via) = via {
            out.push(Route {
                node: name.to_string(),
                dst,
                prefix,
                via,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn every_other_node_with_a_pod_cidr_gets_a_route() {
        let nodes = json!({ "items": [
            { "metadata": { "name": "cp-1" }, "spec": { "podCIDR": "10.244.0.0/24" },
              "status": { "addresses": [{ "type": "InternalIP", "address": "10.77.0.11" }] } },
            { "metadata": { "name": "worker-1" }, "spec": { "podCIDR": "10.244.1.0/24" },
              "status": { "addresses": [
                  { "type": "Hostname", "address": "worker-1" },
                  { "type": "InternalIP", "address": "10.77.0.21" }] } },
            // not allocated yet: no route
            { "metadata": { "name": "worker-2" }, "spec": {},
              "status": { "addresses": [{ "type": "InternalIP", "address": "10.77.0.22" }] } },
        ]});
        assert_eq!(
            routes(&nodes, "cp-1"),
            [Route {
                node: "worker-1".into(),
                dst: "10.244.1.0".parse().unwrap(),
                prefix: 24,
                via: "10.77.0.21".parse().unwrap(),
            }]
        );
        assert_eq!(routes(&nodes, "worker-1")[0].node, "cp-1");
    }

    #[test]
    fn the_conflist_puts_pods_on_the_nodes_range() {
        let c: Value = serde_json::from_str(&conflist("10.244.1.0/24")).unwrap();
        assert_eq!(c["plugins"][0]["type"], "bridge");
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.1.0/24"
        );
        assert_eq!(
            parse_cidr("10.244.1.0/24"),
            Some(("10.244.1.0".parse().unwrap(), 24))
        );
        assert_eq!(parse_cidr("10.244.1.0/33"), None);
    }
}
