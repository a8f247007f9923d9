//! `nodeimg lab up`: a lab definition's two workers booted at once on ONE
//! lab network, each with the config `lab up` rendered from a cluster
//! directory (its static address on the lab NIC, the lab host as time
//! server), one through fw_cfg and one through a config drive. Both
//! report ready with their addresses and a clock synchronised to the lab
//! host (both reach it over the shared bridge), both node APIs answer on
//! their forwards while `--hold` keeps the lab up, and an API `shutdown`
//! of each ends the run.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{free_port, nodeimg, s};

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

fn built() -> &'static support::Built {
    static BUILT: OnceLock<support::Built> = OnceLock::new();
    support::built_once(&BUILT, &["--format", "none"])
}

#[test]
fn two_workers_come_up_on_one_lab_network_with_rendered_configs() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("cluster");
    let out = nodeimg(&[
        "cluster",
        "init",
        "--name",
        "pair",
        "--control-plane-endpoint",
        "10.77.0.2:6443",
        "--out",
        s(&cdir),
    ]);
    assert!(out.status.success(), "{out:?}");
    let ports = [free_port(), free_port()];
    let lab = dir.path().join("pair.toml");
    std::fs::write(
        &lab,
        format!(
            "schema = 1\nname = \"pair\"\n[defaults]\nimage = {:?}\nmemory_mib = 1024\n\
             [[nodes]]\nname = \"worker-1\"\nrole = \"worker\"\naddress = \"10.77.0.11\"\napi_port = {}\n\
             [[nodes]]\nname = \"worker-2\"\nrole = \"worker\"\naddress = \"10.77.0.12\"\napi_port = {}\n\
             config = \"config-drive\"\n",
            s(&built().out),
            ports[0],
            ports[1]
        ),
    )
    .unwrap();
    let (lab_s, cdir_s) = (s(&lab).to_string(), s(&cdir).to_string());
    let run = std::thread::spawn(move || {
        nodeimg(&[
            "lab",
            "up",
            &lab_s,
            "--cluster",
            &cdir_s,
            "--hold",
            "400",
            "--json",
        ])
    });
    let admin = cdir.join("admin.nodeconfig");
    let status = |port: u16, ip: &str| {
        nodeimg(&[
            "node",
            "--node",
            &format!("127.0.0.1:{port}"),
            "--nodeconfig",
            s(&admin),
            "--server-name",
            ip,
            "status",
            "--json",
            "--timeout",
            "10",
        ])
    };
    for (port, ip, name) in [
        (ports[0], "10.77.0.11", "worker-1"),
        (ports[1], "10.77.0.12", "worker-2"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(400);
        let r: Value = loop {
            let out = status(port, ip);
            if out.status.success() {
                break serde_json::from_slice(&out.stdout).unwrap();
            }
            assert!(
                !run.is_finished() && Instant::now() < deadline,
                "{name}'s API never answered: {out:?}"
            );
            std::thread::sleep(Duration::from_secs(2));
        };
        assert_eq!(r["ready"], true, "{r:#}");
        assert_eq!(r["hostname"], name, "{r:#}");
        assert_eq!(
            r["network"]["interfaces"][0]["addresses"][0]["address"],
            format!("{ip}/24"),
            "{r:#}"
        );
        assert_eq!(r["time"]["synchronised"], true, "{r:#}");
        assert_eq!(r["time"]["server"], "10.77.0.1", "{r:#}");
    }
    for (port, ip) in [(ports[0], "10.77.0.11"), (ports[1], "10.77.0.12")] {
        let out = nodeimg(&[
            "node",
            "--node",
            &format!("127.0.0.1:{port}"),
            "--nodeconfig",
            s(&admin),
            "--server-name",
            ip,
            "shutdown",
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = run.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let nodes: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:#?}");
    assert_eq!(nodes[0]["config"]["source"], "fw-cfg", "{:#}", nodes[0]);
    assert_eq!(
        nodes[1]["config"]["source"], "config-drive",
        "{:#}",
        nodes[1]
    );
    for n in &nodes {
        assert_eq!(n["ready"], true, "{n:#}");
    }
}
