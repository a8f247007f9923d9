//! The HA control plane in QEMU: `nodeimg lab up qemu/ha.toml` boots
//! three control-plane nodes and a worker on the lab's private network and
//! makes the one bootstrap call; the other two join by themselves (learner,
//! then voter). Judged by trixie's `etcdctl` over mTLS through the lab's
//! loopback forwards, never by our own client:
//!
//! - three voters, no learner, one leader; the worker is no member; a key
//!   written through one member reads back through the others;
//! - the leader killed: a new leader, writes resume, every acknowledged
//!   write is there once the old leader is back;
//! - a member replaced by a blank machine (same name and address): its
//!   stale member is removed by the newcomer, which joins as a learner and
//!   is promoted; three voters, every earlier key present;
//! - two of three killed: writes fail cleanly; both back: every key;
//! - a second bootstrap, on any member, is refused;
//! - the scheduled snapshots copied to a real S3 server (Versity's
//!   gateway, on this machine, offered on the lab host's address): each
//!   object is the holder's snapshot byte for byte (judged by `etcdutl`),
//!   and the store keeps `retain`;
//! - a snapshot taken through the node API (judged by `etcdutl`), every
//!   control plane wiped, a damaged snapshot refused, the newest snapshot
//!   in the object store restored by one call on one node: the others
//!   join, every key is back;
//! - `node reset`: refused without a quorum; otherwise the member leaves,
//!   reboots wiped and joins again as a new member.
//!
//! One lab bring-up for all of it: each boot costs tens of seconds under TCG.
//! A second test brings the same lab up with etcd's static bootstrap, the
//! baseline the self-join is measured against (`make bench` prints both).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::s3::ObjectStore;
use support::{json, nodeimg, ok, s, text, LabDown};

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

const CPS: [(&str, &str); 3] = [
    ("cp-1", "10.77.0.11"),
    ("cp-2", "10.77.0.12"),
    ("cp-3", "10.77.0.13"),
];

struct Lab {
    run: PathBuf,
    tls: PathBuf,
    admin: PathBuf,
    /// Each node's loopback forward to its etcd client port.
    etcd: Vec<(String, u16)>,
    api: Vec<(String, u16)>,
}

impl Lab {
    fn status(&self) -> Value {
        json(&ok(&["lab", "status", "--run-dir", s(&self.run), "--json"]))
    }

    fn port(&self, name: &str) -> u16 {
        self.etcd.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn ctl(&self, names: &[&str], timeout_s: u32, args: &[&str]) -> Output {
        let endpoints: Vec<String> = names
            .iter()
            .map(|n| format!("127.0.0.1:{}", self.port(n)))
            .collect();
        support::etcd::etcdctl(&self.tls, &endpoints.join(","), timeout_s, args)
    }

    fn ctl_ok(&self, names: &[&str], args: &[&str]) -> String {
        let out = self.ctl(names, 20, args);
        assert!(out.status.success(), "etcdctl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of `key` read (linearizably) through `name`.
    fn get(&self, name: &str, key: &str) -> String {
        self.ctl_ok(&[name], &["get", key, "--print-value-only"])
            .trim()
            .to_string()
    }

    /// `member list` through `name`: (name, id, learner).
    fn members(&self, name: &str) -> Option<Vec<(String, u64, bool)>> {
        let out = self.ctl(&[name], 10, &["member", "list", "-w", "json"]);
        if !out.status.success() {
            return None;
        }
        let v = json(&String::from_utf8_lossy(&out.stdout));
        Some(
            v["members"]
                .as_array()?
                .iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("").to_string(),
                        m["ID"].as_u64().unwrap_or(0),
                        m["isLearner"].as_bool().unwrap_or(false),
                    )
                })
                .collect(),
        )
    }

    /// `endpoint status` of `name`'s member: (member id, leader id).
    fn endpoint(&self, name: &str) -> Option<(u64, u64)> {
        let out = self.ctl(&[name], 10, &["endpoint", "status", "-w", "json"]);
        if !out.status.success() {
            return None;
        }
        let v = json(&String::from_utf8_lossy(&out.stdout));
        let st = &v[0]["Status"];
        Some((st["header"]["member_id"].as_u64()?, st["leader"].as_u64()?))
    }

    /// Waits until the members named in `voters` are the cluster's
    /// voters, with no learner and none else, as `through` sees it.
    fn wait_voters(&self, what: &str, through: &str, voters: &[&str]) -> Vec<(String, u64, bool)> {
        self.wait_voters_and(what, through, voters, |_| true)
    }

    /// [`Lab::wait_voters`], and `also` holds of the member list.
    fn wait_voters_and(
        &self,
        what: &str,
        through: &str,
        voters: &[&str],
        also: impl Fn(&[(String, u64, bool)]) -> bool,
    ) -> Vec<(String, u64, bool)> {
        let deadline = Instant::now() + Duration::from_secs(420);
        let mut last = None;
        loop {
            if let Some(m) = self.members(through) {
                let mut names: Vec<&str> = m.iter().map(|(n, _, _)| n.as_str()).collect();
                names.sort_unstable();
                if names == voters && m.iter().all(|(_, _, l)| !l) && also(&m) {
                    return m;
                }
                last = Some(m);
            }
            assert!(
                Instant::now() < deadline,
                "{what}: members never became {voters:?}: {last:?}\n{:#}",
                self.status()
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// The name of the leader, once the members in `names` agree on one.
    fn leader(&self, names: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let seen: Vec<Option<(u64, u64)>> = names.iter().map(|n| self.endpoint(n)).collect();
            if let Some(Some((_, leader))) = seen.first() {
                if seen.iter().all(|s| s.is_some_and(|(_, l)| l == *leader)) {
                    let at = names
                        .iter()
                        .zip(&seen)
                        .find(|(_, s)| s.is_some_and(|(id, _)| id == *leader));
                    if let Some((name, _)) = at {
                        return name.to_string();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no one leader among {names:?}: {seen:?}"
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    fn kill(&self, name: &str) {
        ok(&["lab", "kill", name, "--run-dir", s(&self.run)]);
    }

    fn start(&self, name: &str, blank: bool) {
        let mut args = vec!["lab", "start", name, "--run-dir", s(&self.run)];
        if blank {
            args.push("--blank-disk");
        }
        let out = nodeimg(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "lab start {name}: {}",
            text(&out)
        );
    }

    /// [`Lab::start`] for each of `names` at once: each waits for its own
    /// report, and under emulation boots overlap well.
    fn start_all(&self, names: &[&str], blank: bool) {
        std::thread::scope(|scope| {
            for &name in names {
                scope.spawn(move || self.start(name, blank));
            }
        });
    }

    /// `nodeimg ARGS[0] ARGS[1] --node … ARGS[2..]` against `name` as the admin.
    fn node(&self, name: &str, args: &[&str]) -> Output {
        let port = self.api.iter().find(|(n, _)| n == name).unwrap().1;
        let address = CPS.iter().find(|(n, _)| *n == name).unwrap().1;
        let api = format!("127.0.0.1:{port}");
        let mut all = vec![
            args[0],
            args[1],
            "--node",
            &api,
            "--nodeconfig",
            s(&self.admin),
            "--server-name",
            address,
        ];
        all.extend(&args[2..]);
        nodeimg(&all)
    }

    /// The one member holding the backup lease once it has taken a
    /// snapshot (among `names`), and its report's `etcd.backups`.
    fn backup_holder(&self, names: &[&str]) -> (String, Value) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let seen: Vec<(String, Value)> = names
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        self.etcd_report(n)["etcd"]["backups"].clone(),
                    )
                })
                .collect();
            let elected: Vec<&(String, Value)> =
                seen.iter().filter(|(_, b)| b["elected"] == true).collect();
            assert!(elected.len() <= 1, "two backup holders: {seen:?}");
            if let Some((name, b)) = elected.first() {
                if b["taken"].as_u64().unwrap_or(0) >= 1 {
                    return (name.clone(), b.clone());
                }
            }
            assert!(Instant::now() < deadline, "no backup holder: {seen:?}");
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// Once `holder` reports a copy in the object store of a snapshot
    /// taken at or after `since`: that object's time and the report's
    /// `store`; the object is the holder's snapshot (its sha256) and
    /// `etcdutl` reads it.
    fn stored(&self, holder: &str, store: &ObjectStore, since: u64) -> (u64, Value) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let (at, b) = loop {
            let b = self.etcd_report(holder)["etcd"]["backups"].clone();
            let at = b["store"]["last"]
                .as_str()
                .and_then(|k| contract::etcd::backup_time(k.strip_prefix(PREFIX)?));
            if let Some(at) = at.filter(|t| *t >= since) {
                break (at, b);
            }
            assert!(
                Instant::now() < deadline,
                "{holder} copied nothing since {since}: {b:#}"
            );
            std::thread::sleep(Duration::from_secs(3));
        };
        let object = b["store"].clone();
        assert!(object["error"].is_null(), "{holder}: {b:#}");
        assert_eq!(
            object["target"],
            format!("s3://{}/{PREFIX}", support::s3::BUCKET)
        );
        let file = store
            .snapshots(PREFIX)
            .into_iter()
            .find(|(t, _)| *t == at)
            .unwrap_or_else(|| {
                panic!(
                    "etcd-{at}.db is not in the store: {:?}",
                    store.snapshots(PREFIX)
                )
            })
            .1;
        if b["last_at"] == at {
            let sha = support::sha256_hex(&std::fs::read(&file).unwrap());
            assert_eq!(b["last_sha256"], sha, "{holder}: {b:#}");
        }
        let etcdutl = support::judge_package("etcd-server").join("usr/bin/etcdutl");
        let st = std::process::Command::new(&etcdutl)
            .args(["snapshot", "status", "-w", "json"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "etcdutl on {}: {}",
            file.display(),
            text(&st)
        );
        (at, object)
    }

    /// Waits for each member of `formed` to report itself a ready voter
    /// with the member ID etcd lists: a node's report follows its member
    /// within a look or two, so etcd may list a voter its agent still
    /// reports a learner.
    fn wait_voter_reports(&self, formed: &[(String, u64, bool)]) {
        for (name, id, _) in formed {
            let deadline = Instant::now() + Duration::from_secs(60);
            let r = loop {
                let r = self.etcd_report(name);
                if r["etcd"]["state"] == "voter" || Instant::now() > deadline {
                    break r;
                }
                std::thread::sleep(Duration::from_secs(2));
            };
            assert_eq!(r["ready"], true, "{r:#}");
            let e = &r["etcd"];
            assert_eq!(e["state"], "voter", "{name}: {r:#}");
            assert_eq!(e["member_id"], format!("{id:x}"), "{name}: {r:#}");
        }
    }

    /// A node's etcd state in its report, through the node API.
    fn etcd_report(&self, name: &str) -> Value {
        let port = self.api.iter().find(|(n, _)| n == name).unwrap().1;
        let address = CPS
            .iter()
            .chain(&[("worker-1", "10.77.0.21")])
            .find(|(n, _)| *n == name)
            .unwrap()
            .1;
        let out = nodeimg(&[
            "node",
            "--node",
            &format!("127.0.0.1:{port}"),
            "--nodeconfig",
            s(&self.admin),
            "--server-name",
            address,
            "status",
            "--json",
            "--timeout",
            "20",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        json(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Writes `ha/N` through whichever of `names` takes it, for `for_s`
/// seconds; returns the acknowledged keys and the longest gap between two
/// acknowledged writes (ms).
fn write_through(lab: &Lab, names: &[&str], from: usize, for_s: u64) -> (Vec<String>, u128) {
    let end = Instant::now() + Duration::from_secs(for_s);
    let (mut acked, mut last, mut gap) = (Vec::new(), Instant::now(), 0u128);
    let mut i = from;
    while Instant::now() < end {
        let key = format!("ha/{i:05}");
        let out = lab.ctl(names, 3, &["put", &key, &format!("v{i}")]);
        if out.status.success() {
            gap = gap.max(last.elapsed().as_millis());
            last = Instant::now();
            acked.push(key);
        }
        i += 1;
    }
    (acked, gap)
}

/// What [`write_through`] wrote to `key`.
/// Where the lab's cluster keeps its snapshots in the object store.
const PREFIX: &str = "ha/";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn value_of(key: &str) -> String {
    format!(
        "v{}",
        key.trim_start_matches("ha/").parse::<usize>().unwrap()
    )
}

/// The two tests each bring up four VMs: one at a time (whichever takes
/// this first), or they would share the two cores and time each other.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What a test brings up: the cluster directory made by `cluster init`
/// with `edit` applied to its cluster.toml, and the committed lab file
/// pointing at one control-plane image (the worker boots it too: its role
/// comes from its config, which saves a second build).
fn prepare(dir: &std::path::Path, edit: impl FnOnce(&str) -> String) -> (PathBuf, PathBuf) {
    let image = dir.join("control-plane");
    support::build_image_with("control-plane", &image, &["--format", "none"]);
    let cluster = dir.join("cluster");
    let mut init = vec![
        "cluster",
        "init",
        "--name",
        "ha",
        "--control-plane-endpoint",
        "10.77.0.11:6443",
        "--out",
        s(&cluster),
    ];
    let members: Vec<String> = CPS.iter().map(|(n, a)| format!("{n}={a}")).collect();
    for m in &members {
        init.extend(["--member", m.as_str()]);
    }
    ok(&init);
    let toml = cluster.join("cluster.toml");
    std::fs::write(&toml, edit(&std::fs::read_to_string(&toml).unwrap())).unwrap();
    let committed = std::fs::read_to_string(support::repo().join("qemu/ha.toml")).unwrap();
    let lab_file = dir.join("ha.toml");
    let image_path = format!("image = {:?}", s(&image));
    std::fs::write(
        &lab_file,
        committed
            .replace("image = \"out/control-plane\"", &image_path)
            .replace("image = \"out/worker\"", &image_path),
    )
    .unwrap();
    (cluster, lab_file)
}

/// `lab up` (with `extra` arguments), its stderr judged by `said_ok`,
/// until cp-1 lists the three control-plane nodes as voters; prints
/// `ha: {what} to three voters in S s` (`make bench` reads it).
fn up_to_three_voters(
    what: &str,
    lab_file: &std::path::Path,
    cluster: &std::path::Path,
    run: &std::path::Path,
    extra: &[&str],
    said_ok: impl Fn(&str) -> bool,
) -> (Lab, Vec<(String, u64, bool)>) {
    let t = Instant::now();
    let out = support::lab_up_with(lab_file, cluster, run, 600, extra);
    assert_eq!(out.status.code(), Some(0), "lab up: {}", text(&out));
    assert!(
        said_ok(&String::from_utf8_lossy(&out.stderr)),
        "{}",
        text(&out)
    );
    // the lab `lab up` printed (`--json`), reached through its forwards
    let up = json(&String::from_utf8_lossy(&out.stdout));
    let port = |n: &Value, k: &str| n[k].as_u64().unwrap() as u16;
    let nodes = up["nodes"].as_array().unwrap();
    let name = |n: &Value| n["name"].as_str().unwrap().to_string();
    let tls = run.parent().unwrap().join("etcdctl");
    support::etcd::client_cert(cluster, &tls);
    let lab = Lab {
        run: run.to_path_buf(),
        tls,
        admin: cluster.join("admin.nodeconfig"),
        etcd: nodes
            .iter()
            .map(|n| (name(n), port(n, "etcd_port")))
            .collect(),
        api: nodes
            .iter()
            .map(|n| (name(n), port(n, "api_port")))
            .collect(),
    };
    let formed = lab.wait_voters(what, "cp-1", &["cp-1", "cp-2", "cp-3"]);
    eprintln!(
        "ha: {what} to three voters in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    (lab, formed)
}

/// Prints each control-plane node's etcd and agent memory, from its own
/// report (`make bench` tabulates these lines).
fn print_memory(lab: &Lab, formation: &str) {
    for (name, _) in CPS {
        let r = lab.etcd_report(name);
        let etcd = r["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "etcd"))
            .and_then(|s| s["rss_kib"].as_u64())
            .unwrap_or(0);
        let agent = r["agent_rss_kib"].as_u64().unwrap_or(0);
        assert!(etcd > 0 && agent > 0, "{name}: {r:#}");
        eprintln!("ha: rss {formation} {name} etcd {} MiB", etcd / 1024);
        eprintln!("ha: rss {formation} {name} nodeagent {} MiB", agent / 1024);
    }
}

/// The baseline the self-join is measured against: the same images and
/// lab with etcd's static bootstrap (`[etcd] formation = "static"`): every
/// member starts at once with the whole list, no bootstrap call, no
/// learner. `lab up` makes no bootstrap call itself, a call is refused (and
/// so is a reset), and the first voter names the cluster.
#[test]
fn a_static_formation_needs_no_bootstrap_call() {
    let _one = ONE_LAB
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let (cluster, lab_file) = prepare(dir.path(), |t| {
        assert!(t.contains("formation = \"bootstrap\""), "{t}");
        t.replace("formation = \"bootstrap\"", "formation = \"static\"")
    });
    let run = dir.path().join("run");
    let _down = LabDown(run.clone());
    let all = ["cp-1", "cp-2", "cp-3"];
    let (lab, formed) =
        up_to_three_voters("static lab up", &lab_file, &cluster, &run, &[], |said| {
            said.contains("etcd forms statically") && !said.contains("bootstrapping")
        });
    let leader = lab.leader(&all);
    assert!(all.contains(&leader.as_str()), "{leader} among {formed:?}");
    // the cluster is named once, by whichever voter got there first
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab.get("cp-3", "/nodeimg/cluster") != "ha" {
        assert!(Instant::now() < deadline, "/nodeimg/cluster never named ha");
        std::thread::sleep(Duration::from_secs(2));
    }
    lab.ctl_ok(&["cp-2"], &["put", "ha/static", "through cp-2"]);
    assert_eq!(lab.get("cp-1", "ha/static"), "through cp-2");
    lab.wait_voter_reports(&formed);
    // nothing that a static cluster could not come back from: no
    // bootstrap, and no reset (wiped, a member cannot rejoin)
    for (name, call) in [
        ("cp-2", ["cluster", "bootstrap"]),
        ("cp-3", ["node", "reset"]),
    ] {
        let out = lab.node(name, &call);
        assert!(
            !out.status.success() && text(&out).contains("forms statically"),
            "{call:?} on {name}: {}",
            text(&out)
        );
    }
    print_memory(&lab, "static");
    let out = nodeimg(&["lab", "down", "--run-dir", s(&run)]);
    assert_eq!(out.status.code(), Some(0), "lab down: {}", text(&out));
}

#[test]
fn three_control_planes_form_heal_and_refuse_a_second_bootstrap() {
    let _one = ONE_LAB
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    // backups every 20 s, two kept: the test sees the schedule, the
    // election and the pruning within its run
    let (cluster, lab_file) = prepare(dir.path(), |defaults| {
        assert!(
            defaults.contains("interval = \"1h\"") && defaults.contains("retain = 24"),
            "{defaults}"
        );
        defaults
            .replace("interval = \"1h\"", "interval = \"20s\"")
            .replace("retain = 24", "retain = 2")
    });
    // and each one copied to an S3 server on this machine, two kept there
    let store = ObjectStore::start();
    store.configure(&cluster, PREFIX, 2);
    let run = dir.path().join("run");
    let _down = LabDown(run.clone());

    // Up: every node reports; `lab up` makes the one bootstrap call.
    // Formed: three voters, one leader, the worker no member.
    let all = ["cp-1", "cp-2", "cp-3"];
    let forward = store.host_forward();
    let extra = ["--host-forward", forward.as_str()];
    let (lab, formed) = up_to_three_voters("lab up", &lab_file, &cluster, &run, &extra, |said| {
        said.contains("bootstrapped on cp-1")
    });
    let leader = lab.leader(&all);
    lab.wait_voter_reports(&formed);
    print_memory(&lab, "self-join");
    let w = lab.etcd_report("worker-1");
    assert_eq!(w["ready"], true, "{w:#}");
    assert!(w.get("etcd").is_none_or(Value::is_null), "{w:#}");
    lab.ctl_ok(&["cp-1"], &["put", "ha/first", "through cp-1"]);
    for name in ["cp-2", "cp-3"] {
        assert_eq!(lab.get(name, "ha/first"), "through cp-1");
    }
    assert_eq!(lab.get("cp-2", "/nodeimg/cluster"), "ha");
    // exactly one member takes the scheduled backups
    let (holder, b) = lab.backup_holder(&all);
    let sha = b["last_sha256"].as_str().unwrap();
    assert!(sha.len() == 64 && b["error"].is_null(), "{holder}: {b:#}");
    eprintln!("ha: {holder} holds the backup lease: {b}");
    let (at, object) = lab.stored(&holder, &store, 0);
    eprintln!("ha: {holder} copied etcd-{at}.db to the object store: {object}");

    // The leader killed: a new leader; no acknowledged write is lost.
    let survivors: Vec<&str> = all.iter().copied().filter(|n| *n != leader).collect();
    lab.kill(&leader);
    let (acked, outage_ms) = write_through(&lab, &survivors, 0, 40);
    assert!(
        !acked.is_empty(),
        "no write went through after the leader died"
    );
    let new_leader = lab.leader(&survivors);
    assert_ne!(new_leader, leader);
    eprintln!(
        "ha: leader {leader} killed: {new_leader} leads; longest write gap {outage_ms} ms, {} writes acknowledged",
        acked.len()
    );
    lab.start(&leader, false);
    lab.wait_voters("the old leader back", &leader, &all);
    for key in &acked {
        assert_eq!(
            lab.get(&leader, key),
            value_of(key),
            "{key} through {leader}"
        );
    }

    // A blank machine replaces cp-2: the stale member goes, the new one
    // joins as learner and is promoted, with every key.
    let old_id = lab
        .members("cp-1")
        .unwrap()
        .iter()
        .find(|m| m.0 == "cp-2")
        .unwrap()
        .1;
    lab.kill("cp-2");
    let t = Instant::now();
    lab.start("cp-2", true);
    // the old member stays listed until the newcomer removes it
    let healed = lab.wait_voters_and("blank cp-2", "cp-1", &all, |m| {
        m.iter().any(|(n, id, _)| n == "cp-2" && *id != old_id)
    });
    assert!(
        healed.iter().all(|(_, id, _)| *id != old_id),
        "the stale member is still there: {healed:?}"
    );
    eprintln!(
        "ha: blank cp-2 a voter {:.1} s after its start",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(lab.get("cp-2", "ha/first"), "through cp-1");
    for key in &acked {
        assert_eq!(lab.get("cp-2", key), value_of(key), "{key} through cp-2");
    }
    let serial = std::fs::read_to_string(run.join("nodes/cp-2/serial.log")).unwrap();
    assert!(
        serial.contains("removed this node's previous member"),
        "{serial}"
    );

    // Two of three down: writes fail cleanly; both back: every key.
    lab.kill("cp-2");
    lab.kill("cp-3");
    let out = lab.ctl(&["cp-1"], 5, &["put", "ha/no-quorum", "x"]);
    assert!(
        !out.status.success(),
        "a write without quorum: {}",
        text(&out)
    );
    // nor may the last member standing leave
    let out = lab.node("cp-1", &["node", "reset"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not a quorum"), "{}", text(&out));
    lab.start_all(&["cp-2", "cp-3"], false);
    lab.wait_voters("quorum back", "cp-3", &all);
    lab.ctl_ok(&["cp-3"], &["put", "ha/after", "quorum back"]);
    // a snapshot taken after this second holds every write
    let written = unix_now() + 1;
    for name in all {
        assert_eq!(lab.get(name, "ha/first"), "through cp-1");
        assert_eq!(lab.get(name, "ha/after"), "quorum back");
    }

    // A second bootstrap, on any member, is refused.
    for name in all {
        let out = lab.node(name, &["cluster", "bootstrap"]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        assert!(text(&out).contains("refused"), "{name}: {}", text(&out));
    }
    assert_eq!(lab.members("cp-1").unwrap().len(), 3);

    // A snapshot through the node API, judged by trixie's etcdutl.
    let snap = dir.path().join("ha.db");
    let out = lab.node("cp-1", &["node", "etcd-snapshot", "--out", s(&snap)]);
    assert!(out.status.success(), "etcd-snapshot: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    let sha = support::sha256_hex(&std::fs::read(&snap).unwrap());
    assert!(said.contains(&sha), "{said} (file sha256 {sha})");
    let etcdutl = support::judge_package("etcd-server").join("usr/bin/etcdutl");
    let st = std::process::Command::new(&etcdutl)
        .args(["snapshot", "status", "-w", "json"])
        .arg(&snap)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "etcdutl snapshot status: {}",
        text(&st)
    );
    let st = json(&String::from_utf8_lossy(&st.stdout));
    assert!(
        st["totalKey"].as_u64().unwrap() > acked.len() as u64,
        "{st:#}"
    );

    // The store holds a snapshot taken after the last write.
    let holder = lab.backup_holder(&all).0;
    let (at, _) = lab.stored(&holder, &store, written);
    eprintln!("ha: etcd-{at}.db in the object store holds every write");

    // Every control plane wiped: blank machines wait for a bootstrap.
    for name in all {
        lab.kill(name);
    }
    lab.start_all(&all, true);
    for name in all {
        let r = lab.etcd_report(name);
        assert_eq!(r["etcd"]["state"], "waiting-for-bootstrap", "{name}: {r:#}");
    }
    // a damaged snapshot (its own hash announced, so it travels) is
    // refused by etcdutl's integrity check and starts nothing
    let bad = dir.path().join("bad.db");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&bad, bytes).unwrap();
    let out = lab.node(
        "cp-2",
        &["cluster", "bootstrap", "--from-snapshot", s(&bad)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = lab.etcd_report("cp-2");
    assert_eq!(r["etcd"]["state"], "waiting-for-bootstrap", "{r:#}");
    // the restore: one call, from the newest snapshot in the object store
    // (taken after the last write); the others join by themselves
    let t = Instant::now();
    let out = lab.node(
        "cp-2",
        &[
            "cluster",
            "bootstrap",
            "--from-store",
            s(&cluster),
            "--store-endpoint",
            &store.endpoint(),
        ],
    );
    assert!(out.status.success(), "restore: {}", text(&out));
    let newest = store.snapshots(PREFIX).last().unwrap().0;
    assert!(
        text(&out).contains(&format!("downloaded {PREFIX}etcd-{newest}.db")),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("restored from a snapshot on cp-2"),
        "{}",
        text(&out)
    );
    lab.wait_voters("after the restore", "cp-2", &all);
    eprintln!(
        "ha: restored and three voters again {:.1} s after the restore call",
        t.elapsed().as_secs_f64()
    );
    for name in all {
        assert_eq!(lab.get(name, "ha/first"), "through cp-1");
        assert_eq!(lab.get(name, "ha/after"), "quorum back");
        assert_eq!(lab.get(name, "/nodeimg/cluster"), "ha");
    }
    for key in &acked {
        assert_eq!(
            lab.get("cp-3", key),
            value_of(key),
            "{key} after the restore"
        );
    }
    // the restored lease of the old holder runs out; a member takes over
    let (holder, b) = lab.backup_holder(&all);
    eprintln!("ha: after the restore {holder} holds the backup lease: {b}");
    // and the schedule prunes to `retain`: wait for a third snapshot
    let deadline = Instant::now() + Duration::from_secs(120);
    let b = loop {
        let b = lab.etcd_report(&holder)["etcd"]["backups"].clone();
        if b["taken"].as_u64().unwrap_or(0) >= 3 || Instant::now() > deadline {
            break b;
        }
        std::thread::sleep(Duration::from_secs(5));
    };
    assert!(b["taken"].as_u64().unwrap() >= 3, "{holder}: {b:#}");
    assert_eq!(b["kept"], 2, "{holder}: {b:#}");
    // the store too keeps two, however many were copied
    let (_, object) = lab.stored(&holder, &store, b["last_at"].as_u64().unwrap());
    assert_eq!(object["kept"], 2, "{holder}: {object:#}");
    assert_eq!(
        store.snapshots(PREFIX).len(),
        2,
        "{:?}",
        store.snapshots(PREFIX)
    );

    // A reset: cp-3 leaves, reboots with its etcd data wiped, and joins
    // again as a new member.
    let before = lab.members("cp-1").unwrap();
    let old_id = before.iter().find(|m| m.0 == "cp-3").unwrap().1;
    let out = lab.node("cp-3", &["node", "reset"]);
    assert!(out.status.success(), "reset: {}", text(&out));
    let t = Instant::now();
    let after = lab.wait_voters_and("cp-3 after its reset", "cp-1", &all, |m| {
        m.iter().any(|(n, id, _)| n == "cp-3" && *id != old_id)
    });
    assert!(after.iter().all(|(_, id, _)| *id != old_id), "{after:?}");
    eprintln!(
        "ha: cp-3 reset and a voter again as a new member in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(lab.get("cp-3", "ha/after"), "quorum back");

    // Down: no console showed a broken kernel or agent.
    let out = nodeimg(&["lab", "down", "--run-dir", s(&run)]);
    assert_eq!(out.status.code(), Some(0), "lab down: {}", text(&out));
}
