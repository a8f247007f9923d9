use std::collections::BTreeSet;

use super::*;
use contract::services::{ReadyCheck, RestartPolicy};

/// Records starts and kills; a service is ready when its name is in `ready`.
#[derive(Default)]
struct Fake {
    next_pid: i32,
    started: Vec<String>,
    killed: Vec<i32>,
    ready: BTreeSet<String>,
    refuse: BTreeSet<String>,
}

impl Launcher for Fake {
    fn start(&mut self, spec: &ServiceSpec) -> Result<i32, String> {
        if self.refuse.contains(&spec.name) {
            return Err(format!("{}: no such file", spec.exec));
        }
        self.next_pid += 1;
        self.started.push(spec.name.clone());
        Ok(100 + self.next_pid)
    }
    fn is_ready(&mut self, spec: &ServiceSpec) -> bool {
        self.ready.contains(&spec.name)
    }
    fn kill(&mut self, pid: i32) {
        self.killed.push(pid);
    }
}

fn svc(name: &str, after: &[&str]) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        exec: format!("/usr/bin/{name}"),
        args: vec![],
        env: Default::default(),
        user: None,
        group: None,
        after: after.iter().map(|s| s.to_string()).collect(),
        ready: ReadyCheck::Started,
        ready_timeout_ms: 1_000,
        restart: RestartPolicy::default(),
        capabilities: None,
        no_new_privs: true,
        roles: vec![],
        start: StartWhen::Boot,
        dirs: vec![],
    }
}

#[test]
fn starts_in_order_and_waits_for_readiness_of_dependencies() {
    let mut sup = Supervisor::new(
        vec![svc("kubelet", &["containerd"]), svc("containerd", &[])],
        Some("worker"),
        true,
    )
    .unwrap();
    let mut l = Fake::default();
    sup.tick(0, &mut l);
    assert_eq!(l.started, ["containerd"], "kubelet waits for containerd");
    assert!(!sup.settled());
    l.ready.insert("containerd".into());
    let changes = sup.tick(120, &mut l);
    assert!(changes.contains(&Change::Ready {
        name: "containerd".into(),
        ms: 120
    }));
    sup.tick(130, &mut l);
    assert_eq!(l.started, ["containerd", "kubelet"]);
    l.ready.insert("kubelet".into());
    sup.tick(140, &mut l);
    assert!(sup.settled());
    assert_eq!(sup.healthy(), Ok(()));
    let stop: Vec<String> = sup.begin_stop().into_iter().map(|(n, _)| n).collect();
    assert_eq!(stop, ["kubelet", "containerd"], "stop runs backwards");
}

#[test]
fn exits_restart_with_capped_doubling_backoff() {
    let mut sup = Supervisor::new(vec![svc("containerd", &[])], None, false).unwrap();
    let mut l = Fake::default();
    l.ready.insert("containerd".into());
    sup.tick(0, &mut l);
    sup.tick(10, &mut l);
    let pid = sup.pid_of("containerd").unwrap();
    let c = sup.exited(pid, Exit::Signal(9), 1_000).unwrap();
    assert_eq!(
        c,
        Change::Exited {
            name: "containerd".into(),
            exit: Exit::Signal(9),
            restart_in_ms: Some(250)
        }
    );
    assert!(sup.tick(1_100, &mut l).is_empty(), "not before the delay");
    sup.tick(1_250, &mut l);
    assert_eq!(l.started.len(), 2);
    let r = &sup.report()[0];
    assert_eq!((r.restarts, r.last_exit.as_deref()), (1, Some("signal 9")));
    assert_eq!(backoff_ms(250, 30_000, 1), 250);
    assert_eq!(backoff_ms(250, 30_000, 3), 1_000);
    assert_eq!(backoff_ms(250, 30_000, 20), 30_000);
    assert_eq!(backoff_ms(250, 30_000, u32::MAX), 30_000);
}

#[test]
fn a_service_that_keeps_dying_is_a_crash_loop_and_the_node_is_not_healthy() {
    let mut sup = Supervisor::new(vec![svc("flaky", &[])], None, false).unwrap();
    let mut l = Fake::default();
    let mut now = 0;
    let mut looped = false;
    for _ in 0..10 {
        sup.tick(now, &mut l);
        if let Some(pid) = sup.pid_of("flaky") {
            if let Some(Change::CrashLoop { exits, .. }) = sup.exited(pid, Exit::Code(1), now) {
                assert_eq!(exits, 5);
                looped = true;
            }
        }
        now += 31_000;
        if now > 100_000 {
            now = 100_000; // keep every exit inside the two-minute window
        }
    }
    assert!(looped);
    assert!(sup.settled(), "a crash loop does not hold the report back");
    let err = sup.healthy().unwrap_err();
    assert!(err.contains("flaky") && err.contains("crash loop"), "{err}");
    assert_eq!(sup.report()[0].state, State::CrashLoop);
}

#[test]
fn a_start_that_misses_its_deadline_is_killed_once() {
    let mut sup = Supervisor::new(vec![svc("slow", &[])], None, false).unwrap();
    let mut l = Fake::default();
    sup.tick(0, &mut l);
    sup.tick(1_001, &mut l);
    sup.tick(1_500, &mut l);
    assert_eq!(l.killed, [101]);
    assert!(sup.healthy().unwrap_err().contains("not ready within"));
}

#[test]
fn services_of_other_roles_and_cluster_services_do_not_start() {
    let mut etcd = svc("etcd", &[]);
    etcd.roles = vec!["control-plane".into()];
    let mut kubelet = svc("kubelet", &[]);
    kubelet.start = StartWhen::Cluster;
    let mut sup = Supervisor::new(vec![etcd, kubelet], Some("worker"), true).unwrap();
    let mut l = Fake::default();
    sup.tick(0, &mut l);
    assert!(l.started.is_empty());
    assert_eq!(sup.report().len(), 1, "etcd is not a worker's");
    assert_eq!(sup.report()[0].state, State::Waiting);
    assert!(sup.settled());
    assert_eq!(sup.healthy(), Ok(()));
}

#[test]
fn a_released_cluster_service_starts_with_its_extra_args_and_keeps_the_node_healthy() {
    let mut etcd = svc("etcd", &[]);
    etcd.start = StartWhen::Cluster;
    etcd.args = vec!["--data-dir=/var/lib/etcd".into()];
    let mut sup = Supervisor::new(vec![etcd, svc("containerd", &[])], Some("cp"), true).unwrap();
    let mut l = Fake::default();
    l.ready.insert("containerd".into());
    sup.tick(0, &mut l);
    sup.tick(10, &mut l);
    assert_eq!(l.started, ["containerd"]);
    assert!(sup.settled());
    assert_eq!(sup.healthy(), Ok(()));
    // only a waiting cluster service is released, and only once
    assert!(!sup.release("containerd", &[]));
    assert!(!sup.release("kubelet", &[]));
    let extra = vec!["--name=cp-1".to_string()];
    assert!(sup.release("etcd", &extra));
    assert!(!sup.release("etcd", &extra));
    sup.tick(20, &mut l);
    assert_eq!(l.started, ["containerd", "etcd"]);
    let etcd = |sup: &Supervisor| sup.report().into_iter().find(|r| r.name == "etcd").unwrap();
    assert_eq!(etcd(&sup).state, State::Starting);
    assert_eq!(sup.healthy(), Ok(()), "starting etcd leaves the node ready");
    let args = &sup
        .services
        .iter()
        .find(|s| s.spec.name == "etcd")
        .unwrap()
        .spec
        .args;
    assert_eq!(args, &["--data-dir=/var/lib/etcd", "--name=cp-1"]);
    // a crash loop still shows
    for t in 0..5 {
        let pid = sup.pid_of("etcd").unwrap();
        sup.exited(pid, Exit::Code(1), 100 + t * 20_000);
        sup.tick(100 + t * 20_000 + 19_000, &mut l);
    }
    assert!(sup.healthy().is_err());
}

#[test]
fn a_service_that_cannot_start_fails_with_the_reason() {
    let mut sup = Supervisor::new(vec![svc("ghost", &[])], None, false).unwrap();
    let mut l = Fake::default();
    l.refuse.insert("ghost".into());
    sup.tick(0, &mut l);
    assert!(sup.settled());
    assert!(sup.healthy().unwrap_err().contains("no such file"));
}

#[test]
fn exits_during_stop_are_not_restarted() {
    let mut sup = Supervisor::new(vec![svc("containerd", &[])], None, false).unwrap();
    let mut l = Fake::default();
    sup.tick(0, &mut l);
    let pid = sup.pid_of("containerd").unwrap();
    sup.begin_stop();
    assert_eq!(sup.exited(pid, Exit::Signal(15), 10), None);
    sup.tick(10_000, &mut l);
    assert_eq!(l.started.len(), 1);
    assert_eq!(sup.report()[0].state, State::Stopped);
    assert_eq!(
        sup.exited(4242, Exit::Code(0), 10),
        None,
        "orphans are not ours"
    );
}
