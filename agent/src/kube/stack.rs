//! The cluster's security stack ([`contract::stack`]), applied by one
//! control-plane node at a time: the one holding the Lease
//! `kube-system/nodeimg-stack`. Each look it renews the Lease; a node
//! that sees the Lease's record unchanged for its whole duration (timed on
//! its own clock, so skewed clocks do not matter, as client-go does it)
//! takes it over.
//!
//! The holder server-side applies every rendered object, then deletes the
//! objects carrying the stack's label that no longer render (never a
//! Namespace: users' things live in them; never an object without the
//! label). The set is rendered from the config the node booted with, and
//! again from each config applied through the node API that changes
//! `[cluster.control_plane.stack]` ([`Applier::replace`]); it is applied
//! once the node holds the Lease, at once after a change, and again every
//! [`REAPPLY`] (so a hand edit of a stack object is undone). A failed pass
//! says why in the report and is tried again with a doubling backoff.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use contract::config::Stack;
use contract::kube::StackReport;
use contract::stack::{self, KINDS, MANAGED_BY_LABEL, MANAGER};
use serde_json::{json, Value};

use super::at;
use super::client::Client;

const LEASE_URL: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
pub const LEASE_NAME: &str = "nodeimg-stack";
/// How long a Lease record may stay unchanged before another node takes
/// it (the holder renews it every look, every 10 s).
const LEASE_S: u64 = 60;
/// A complete pass is repeated this often, changed or not.
const REAPPLY: Duration = Duration::from_secs(600);
const BACKOFF_MIN: u64 = 5;
const BACKOFF_MAX: u64 = 300;

/// The Lease as last seen, and when this node first saw it so.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    holder: String,
    renew: String,
    since: Instant,
}

/// What to do about the Lease after reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Move {
    /// Nobody has made it: create it, holding it.
    Create,
    /// Ours, or expired: write it holding it (`resourceVersion` makes the
    /// write fail if another node wrote first).
    Take { resource_version: String },
    /// Another node holds it.
    Wait,
}

/// The decision, pure: `lease` is the object read (None: 404).
fn decide(lease: Option<&Value>, me: &str, seen: &mut Option<Seen>, now: Instant) -> Move {
    let Some(lease) = lease else {
        *seen = None;
        return Move::Create;
    };
    let holder = at(lease, "/spec/holderIdentity")
        .as_str()
        .unwrap_or_default();
    let renew = at(lease, "/spec/renewTime").as_str().unwrap_or_default();
    let rv = at(lease, "/metadata/resourceVersion")
        .as_str()
        .unwrap_or_default()
        .to_string();
    let changed = seen
        .as_ref()
        .is_none_or(|s| s.holder != holder || s.renew != renew);
    if changed {
        *seen = Some(Seen {
            holder: holder.to_string(),
            renew: renew.to_string(),
            since: now,
        });
    }
    let stale = seen
        .as_ref()
        .is_some_and(|s| now.duration_since(s.since) > Duration::from_secs(LEASE_S));
    if holder == me || holder.is_empty() || stale {
        Move::Take {
            resource_version: rv,
        }
    } else {
        Move::Wait
    }
}

/// Kubernetes' MicroTime of a Unix time.
fn micro_time(unix: u64) -> String {
    let t = i64::try_from(unix)
        .ok()
        .and_then(|u| time::OffsetDateTime::from_unix_timestamp(u).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000000Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn lease_object(me: &str, unix: u64, resource_version: Option<&str>) -> Value {
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": LEASE_NAME, "namespace": "kube-system" },
        "spec": {
            "holderIdentity": me,
            "leaseDurationSeconds": LEASE_S,
            "renewTime": micro_time(unix),
        },
    });
    let meta = lease.get_mut("metadata").and_then(Value::as_object_mut);
    if let (Some(rv), Some(meta)) = (resource_version, meta) {
        meta.insert("resourceVersion".into(), json!(rv));
    }
    lease
}

/// sha256 of the rendered objects, in order.
fn digest(objects: &[&Value]) -> String {
    let bytes = serde_json::to_vec(objects).unwrap_or_default();
    crate::digest::sha256_hex(&bytes)
}

/// The listed objects to delete: carrying our label (the list asked for
/// it; checked again here), of a pruned kind, and not rendered now.
fn to_prune(list: &Value, rendered: &BTreeSet<(String, Option<String>, String)>) -> Vec<String> {
    let mut out = Vec::new();
    for item in at(list, "/items").as_array().into_iter().flatten() {
        if at(
            item,
            &format!("/metadata/labels/{}", MANAGED_BY_LABEL.replace('/', "~1")),
        ) != MANAGER
        {
            continue;
        }
        // list items carry no apiVersion and kind: the list's own say them
        let mut item = item.clone();
        if let Some(o) = item.as_object_mut() {
            let kind = at(list, "/kind")
                .as_str()
                .unwrap_or_default()
                .trim_end_matches("List");
            o.insert("apiVersion".into(), at(list, "/apiVersion").clone());
            o.insert("kind".into(), json!(kind));
        }
        let Some(k) = stack::kind_of(&item).filter(|k| k.pruned) else {
            continue;
        };
        let Some((kind, ns, name)) = stack::identity(&item) else {
            continue;
        };
        if !rendered.contains(&(kind.to_string(), ns.clone(), name.clone())) {
            out.push(k.object_url(ns.as_deref(), &name));
        }
    }
    out
}

/// The applier's memory between looks.
pub struct Applier {
    /// The rendered objects, in order, and their digest: the config is
    /// read once per boot, so they are rendered once.
    objects: Vec<Value>,
    digest: String,
    me: String,
    seen: Option<Seen>,
    /// When the last complete pass ended.
    applied: Option<Instant>,
    failures: u32,
    next_try: Option<Instant>,
    pub report: StackReport,
}

impl Applier {
    pub fn new(stack: &Stack, me: &str) -> Applier {
        let objects: Vec<Value> = stack::objects(&stack::render(stack))
            .into_iter()
            .cloned()
            .collect();
        Applier {
            digest: digest(&objects.iter().collect::<Vec<_>>()),
            objects,
            me: me.to_string(),
            seen: None,
            applied: None,
            failures: 0,
            next_try: None,
            report: StackReport::default(),
        }
    }

    /// Takes up `stack` from now on: when it renders another set, the next
    /// pass (at once, no backoff) applies it and prunes what is gone.
    pub fn replace(&mut self, stack: &Stack) {
        let fresh = Applier::new(stack, &self.me);
        if fresh.digest != self.digest {
            self.objects = fresh.objects;
            self.digest = fresh.digest;
            self.applied = None;
            self.failures = 0;
            self.next_try = None;
        }
    }

    /// Whether this node holds the Lease after this look.
    fn elect(&mut self, client: &Client, unix: u64) -> Result<bool, String> {
        let url = format!("{LEASE_URL}/{LEASE_NAME}");
        let lease = match client.get(&url) {
            Ok(l) => Some(l),
            Err(e) if e.status() == Some(404) => None,
            Err(e) => return Err(format!("reading the Lease: {}", crate::error::chain(&e))),
        };
        let written = match decide(lease.as_ref(), &self.me, &mut self.seen, Instant::now()) {
            Move::Wait => return Ok(false),
            Move::Create => client.create(LEASE_URL, &lease_object(&self.me, unix, None)),
            Move::Take { resource_version } => {
                client.put(&url, &lease_object(&self.me, unix, Some(&resource_version)))
            }
        };
        match written {
            Ok(_) => Ok(true),
            // another node wrote first
            Err(e) if e.status() == Some(409) => Ok(false),
            Err(e) => Err(format!("writing the Lease: {}", crate::error::chain(&e))),
        }
    }

    /// One look: elect, and apply when due. Returns a line for the
    /// console when a pass completed or failed anew.
    pub fn look(&mut self, client: &Client, unix: u64) -> Option<String> {
        let now = Instant::now();
        match self.elect(client, unix) {
            Ok(leader) => self.report.leader = leader,
            Err(why) => {
                self.report.leader = false;
                self.report.error = Some(why);
                return None;
            }
        }
        if !self.report.leader {
            return None;
        }
        let fresh = self
            .applied
            .as_ref()
            .is_some_and(|t| now.duration_since(*t) < REAPPLY);
        if fresh || self.next_try.is_some_and(|t| now < t) {
            return None;
        }
        match self.pass(client) {
            Ok(pruned) => {
                let first = self.applied.is_none();
                self.applied = Some(now);
                self.failures = 0;
                self.next_try = None;
                self.report.digest = Some(self.digest.clone());
                self.report.objects = u32::try_from(self.objects.len()).unwrap_or(u32::MAX);
                self.report.pruned += pruned;
                self.report.applied_at = Some(unix);
                self.report.error = None;
                self.report.retry_in_s = None;
                (first || pruned > 0).then(|| {
                    format!(
                        "kubernetes: security stack applied ({} objects, {pruned} pruned)",
                        self.objects.len()
                    )
                })
            }
            Err(why) => {
                let wait = BACKOFF_MIN
                    .saturating_mul(1 << self.failures.min(6))
                    .min(BACKOFF_MAX);
                self.failures += 1;
                self.next_try = Some(now + Duration::from_secs(wait));
                let again = self.report.error.as_deref() == Some(why.as_str());
                self.report.error = Some(why.clone());
                self.report.retry_in_s = Some(wait);
                (!again).then(|| format!("kubernetes: security stack not applied: {why}"))
            }
        }
    }

    /// Applies every object, then prunes; the number pruned.
    fn pass(&self, client: &Client) -> Result<u32, String> {
        let mut rendered = BTreeSet::new();
        for o in &self.objects {
            let url = stack::url_of(o).ok_or("an object of an unknown kind")?;
            client
                .apply(&url, o)
                .map_err(|e| format!("applying {url}: {}", crate::error::chain(&e)))?;
            if let Some((k, ns, name)) = stack::identity(o) {
                rendered.insert((k.to_string(), ns, name));
            }
        }
        let mut pruned = 0;
        for kind in KINDS.iter().filter(|k| k.pruned) {
            let url = format!(
                "{}?labelSelector={}%3D{MANAGER}",
                kind.list_url(),
                MANAGED_BY_LABEL.replace('/', "%2F")
            );
            let list = client
                .get(&url)
                .map_err(|e| format!("listing {}: {}", kind.plural, crate::error::chain(&e)))?;
            for gone in to_prune(&list, &rendered) {
                client
                    .delete(&gone)
                    .map_err(|e| format!("pruning {gone}: {}", crate::error::chain(&e)))?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn lease(holder: &str, renew: &str) -> Value {
        json!({
            "metadata": { "resourceVersion": "7" },
            "spec": { "holderIdentity": holder, "renewTime": renew },
        })
    }

    #[test]
    fn a_replaced_stack_is_applied_at_once_only_when_it_renders_another_set() {
        let stack = Stack::default();
        let mut a = Applier::new(&stack, "cp-1");
        let t = Instant::now();
        a.applied = Some(t);
        a.failures = 3;
        a.replace(&stack);
        assert_eq!(
            (a.applied, a.failures),
            (Some(t), 3),
            "same set: nothing to do"
        );
        let before = (a.digest.clone(), a.objects.len());
        let fewer = Stack {
            auditor_group: String::new(),
            ..Stack::default()
        };
        a.replace(&fewer);
        assert_eq!((a.applied, a.failures, a.next_try), (None, 0, None));
        assert_ne!(a.digest, before.0);
        assert_eq!(
            a.objects.len(),
            before.1 - 2,
            "the auditor role and its binding"
        );
    }

    #[test]
    fn a_lease_held_by_another_is_taken_only_once_unchanged_for_its_duration() {
        let t0 = Instant::now();
        let mut seen = None;
        assert_eq!(decide(None, "cp-1", &mut seen, t0), Move::Create);
        let theirs = lease("cp-2", "2026-12-07T03:00:00.000000Z");
        assert_eq!(decide(Some(&theirs), "cp-1", &mut seen, t0), Move::Wait);
        let later = t0 + Duration::from_secs(LEASE_S - 1);
        assert_eq!(decide(Some(&theirs), "cp-1", &mut seen, later), Move::Wait);
        // renewed: the clock starts again
        let renewed = lease("cp-2", "2026-12-07T03:00:10.000000Z");
        let t1 = t0 + Duration::from_secs(LEASE_S + 5);
        assert_eq!(decide(Some(&renewed), "cp-1", &mut seen, t1), Move::Wait);
        let t2 = t1 + Duration::from_secs(LEASE_S + 1);
        assert_eq!(
            decide(Some(&renewed), "cp-1", &mut seen, t2),
            Move::Take {
                resource_version: "7".into()
            }
        );
        // our own is renewed at once
        let mut fresh = None;
        assert!(matches!(
            decide(Some(&lease("cp-1", "x")), "cp-1", &mut fresh, t0),
            Move::Take { .. }
        ));
    }

    #[test]
    fn micro_time_is_rfc3339_utc_with_microseconds() {
        assert_eq!(micro_time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(micro_time(1_796_612_400), "2026-12-07T03:00:00.000000Z");
    }

    #[test]
    fn only_labelled_objects_no_longer_rendered_are_pruned() {
        let list = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicyList",
            "items": [
                { "metadata": { "name": "default-deny", "namespace": "apps",
                                "labels": { MANAGED_BY_LABEL: MANAGER } } },
                { "metadata": { "name": "default-deny", "namespace": "old",
                                "labels": { MANAGED_BY_LABEL: MANAGER } } },
                { "metadata": { "name": "users-own", "namespace": "old" } },
                { "metadata": { "name": "other-tool", "namespace": "old",
                                "labels": { MANAGED_BY_LABEL: "helm" } } },
            ],
        });
        let mut rendered = BTreeSet::new();
        rendered.insert((
            "NetworkPolicy".to_string(),
            Some("apps".to_string()),
            "default-deny".to_string(),
        ));
        assert_eq!(
            to_prune(&list, &rendered),
            ["/apis/networking.k8s.io/v1/namespaces/old/networkpolicies/default-deny"]
        );
        // namespaces are never pruned
        let namespaces = json!({
            "apiVersion": "v1", "kind": "NamespaceList",
            "items": [{ "metadata": { "name": "old", "labels": { MANAGED_BY_LABEL: MANAGER } } }],
        });
        assert!(to_prune(&namespaces, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn the_digest_follows_the_rendered_set() {
        let a = Stack::default();
        let mut b = Stack::default();
        b.quota.pods = 3;
        let d = |s: &Stack| digest(&stack::objects(&stack::render(s)));
        assert_eq!(d(&a), d(&a.clone()));
        assert_ne!(d(&a), d(&b));
        assert_eq!(d(&a).len(), 64);
    }
}
