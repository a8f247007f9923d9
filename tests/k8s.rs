//! Kubernetes in QEMU: `nodeimg lab up qemu/k8s-small.toml` boots a
//! control-plane node and a worker from the Kubernetes images; the agents
//! run etcd, the control plane and kubelet, the worker joins through TLS
//! bootstrap and reaches the API through its agent's balancer. Judged by
//! upstream's kubectl (the locked one), through the lab's loopback forward
//! of the control-plane node's API only:
//!
//! - two Ready nodes at the pinned version; the control-plane node carries
//!   the role label and the NoSchedule taint;
//! - a pod from a builder-made image (preloaded, non-root, read-only root)
//!   runs on the worker and its log is read through the API (so the API
//!   server reached the worker's kubelet, whose serving certificate the
//!   agent approved);
//! - a pod on the control-plane node reaches a pod on the worker (host-gw
//!   routes), and a pod on the worker reaches the API through the
//!   `kubernetes` Service (the worker's kube-proxy, whose certificate its
//!   agent asked the cluster for);
//! - an anonymous request gets 401, a ServiceAccount without bindings 403,
//!   and the worker's kubelet identity reads a Secret its pod mounts but
//!   not another, nor may it label itself control plane (Node authorizer
//!   and NodeRestriction);
//! - every component is a ready service of the agent (its memory and CPU
//!   time printed);
//! - the security stack (tests/support/stack.rs): applied by the node
//!   holding its Lease and equal to `DIR/manifests/` (`kubectl diff`);
//!   Pod Security refuses a privileged pod and runs a restricted one with
//!   the LimitRange's defaults; the auditor group reads but neither writes
//!   nor reads Secrets, and no ServiceAccount outside kube-system holds a
//!   cluster-wide writing role; a Secret is sealed in etcd (`etcdctl`);
//!   the audit log records its creation by the admin and rotates at the
//!   lab's 1 MiB; a 48 h token lives 1 h; an event burst is throttled;
//!   the NetworkPolicy engine stops what default deny denies and passes
//!   what allow policies name; CoreDNS answers pods in a default-deny
//!   namespace (allow-dns) and in `default`; each admission policy
//!   type-checks clean and refuses the pod that breaks its rule; the
//!   add-ons run from their images named by digest; a user of a real
//!   OpenID Provider (on this machine, offered on the lab host's address)
//!   is mapped to its group's role, and tokens from another provider, an
//!   impostor, or expired are refused;
//! - kube-bench (upstream's, from a builder-made image imported through
//!   the node API) runs as a Job on both nodes, after the other checks;
//!   every FAIL is a documented exception (tests/support/kube_bench.rs).
//!
//! One lab bring-up for all of it: each boot costs minutes under TCG. The
//! checks after Ready run side by side where they touch different objects.
//! Three control planes and a leader kill are tests/k8s_ha.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::kube::{check_services, check_workloads, KubeLab};
use support::kube_bench;
use support::oidc::OidcLab;
use support::stack::check_stack;
use support::timed;

#[test]
fn a_control_plane_and_a_worker_run_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // the audit log rotates at 1 MiB, so the test reaches a rotation, and
    // a namespace takes 1 event a second (burst 10); the
    // lab's nodes have no name servers (CoreDNS would refuse to forward to
    // none) and one CoreDNS spares the emulated CPUs
    // a real OpenID Provider on this machine, offered to the nodes on the
    // lab host's address, trusted by the cluster
    let oidc = OidcLab::start();
    let forward = oidc.host_forward();
    let up_args = ["--host-forward", forward.as_str()];
    let lab = KubeLab::up(d, "k8s-small", &["cp-1=10.77.0.11"], &up_args, |t| {
        oidc.tune(t)
            .replace("audit_max_size_mb = 100", "audit_max_size_mb = 1")
            // an emulated API server answers too slowly to outrun 20/s
            .replace(
                "events_per_namespace_qps = 20",
                "events_per_namespace_qps = 1",
            )
            .replace(
                "events_per_namespace_burst = 50",
                "events_per_namespace_burst = 10",
            )
            .replace("forward = [\"/etc/resolv.conf\"]", "forward = []")
            .replace("replicas = 2", "replicas = 1")
    });
    let admins = lab.admins(d);
    let k = &admins[0].1;
    timed("ready", || lab.ready(k, 2, 1200, "worker-1"));
    timed("services", || check_services(&lab.up, &lab.cluster));
    // one lab, two sets of checks on different objects, side by side: under
    // emulation a pod's start is mostly waiting, and the two overlap
    let judge = std::thread::scope(|scope| {
        scope.spawn(|| timed("workloads", || check_workloads(k, d, "cp-1", "worker-1")));
        let judge = scope.spawn(|| kube_bench::prepare(d));
        check_stack(&lab, k, d, &oidc);
        judge.join().unwrap()
    });
    // last, alone: each of its checks starts processes on an emulated CPU
    timed("kube-bench", || {
        kube_bench::check(k, d, &lab.cluster, &lab.up, &judge)
    });
}
