//! Boots the worker image in QEMU with and without a NIC on QEMU's
//! restricted user network (`nodeimg lab boot --net user`) and judges the
//! node's own report of its network: with no machine config, the agent
//! runs DHCP on every ethernet NIC, and a boot without a NIC reports none
//! and is as ready as before.
//!
//! QEMU's slirp leases 10.0.2.15/24 for 24 h. With `restrict=on` (which
//! the lab always sets, so no guest traffic leaves this machine) libslirp
//! leaves the router (option 3) and DNS (option 6) out of its replies, so
//! the lease here carries no gateway or name server; the agent's handling
//! of both is covered by its unit tests (`agent/src/net/`).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::OnceLock;

use serde_json::Value;
use support::lab_boot;

fn built() -> &'static support::Built {
    static BUILT: OnceLock<support::Built> = OnceLock::new();
    support::built_once(&BUILT, &["--format", "none"])
}

/// The lab's NIC (`UserNic::MAC` in src/lab/vm.rs).
const LAB_MAC: &str = "52:54:00:12:34:56";

fn interfaces(r: &Value) -> &Vec<Value> {
    r["network"]["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("no network.interfaces in the report: {r:#}"))
}

#[test]
fn a_node_on_the_user_network_leases_its_address_by_dhcp() {
    let b = built();
    let (code, r) = lab_boot(&b.out, &["--net", "user"]);
    assert_eq!(r["ready"], true, "report: {r:#}");
    assert_eq!(code, 0);
    let ifs = interfaces(&r);
    assert_eq!(ifs.len(), 1, "{r:#}");
    let eth = &ifs[0];
    assert_eq!(eth["mac"], LAB_MAC, "{r:#}");
    assert!(eth.get("error").is_none(), "{r:#}");
    assert_eq!(
        eth["addresses"],
        serde_json::json!([{ "address": "10.0.2.15/24", "source": "dhcp" }]),
        "{r:#}"
    );
    assert_eq!(eth["lease_secs"], 86400, "slirp leases for 24 h: {r:#}");
    // restrict=on: slirp sends no router and no DNS (see the file's doc)
    assert!(
        eth.get("gateway").is_none() && eth.get("dns").is_none(),
        "{r:#}"
    );
    assert!(
        r["modules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "virtio_net"),
        "virtio_net must load before the network is configured: {r:#}"
    );
    assert!(r["stage_ms"]["network"].as_u64().is_some(), "{r:#}");
    assert!(r.get("warnings").is_none(), "{r:#}");
}

#[test]
fn a_node_without_a_nic_reports_no_interface_and_boots_as_before() {
    let b = built();
    let (code, r) = lab_boot(&b.out, &[]);
    assert_eq!(r["ready"], true, "report: {r:#}");
    assert_eq!(code, 0);
    assert!(interfaces(&r).is_empty(), "{r:#}");
    assert!(r["network"].get("errors").is_none(), "{r:#}");
    assert!(r.get("warnings").is_none(), "{r:#}");
}
