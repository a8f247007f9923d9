//! The order services start in: every service after those it names in
//! `after`, ties broken by name so the order never depends on file order.
//! Stopping runs the same list backwards.

use std::collections::{BTreeMap, BTreeSet};

use super::{ServiceSpec, SpecError};

/// A dependency that cannot be satisfied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("service {service:?} runs after {missing:?}, which no layer declares")]
    Unknown { service: String, missing: String },
    #[error("services wait on each other in a cycle: {0}")]
    Cycle(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Indices into `specs` in start order (Kahn's algorithm over names).
pub fn start_order(specs: &[ServiceSpec]) -> Result<Vec<usize>, OrderError> {
    let mut index = BTreeMap::new();
    for (i, s) in specs.iter().enumerate() {
        if index.insert(s.name.as_str(), i).is_some() {
            return Err(SpecError::Duplicate(s.name.clone()).into());
        }
    }
    let mut waiting: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in specs {
        for dep in &s.after {
            if !index.contains_key(dep.as_str()) {
                return Err(OrderError::Unknown {
                    service: s.name.clone(),
                    missing: dep.clone(),
                });
            }
        }
        waiting.insert(&s.name, s.after.iter().map(String::as_str).collect());
    }
    let mut order = Vec::with_capacity(specs.len());
    loop {
        let next = waiting
            .iter()
            .find(|(_, deps)| deps.is_empty())
            .map(|(name, _)| *name);
        let Some(name) = next else { break };
        waiting.remove(name);
        for deps in waiting.values_mut() {
            deps.remove(name);
        }
        if let Some(i) = index.get(name) {
            order.push(*i);
        }
    }
    if !waiting.is_empty() {
        let names: Vec<&str> = waiting.keys().copied().collect();
        return Err(OrderError::Cycle(names.join(", ")));
    }
    Ok(order)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn svc(name: &str, after: &[&str]) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            exec: "/bin/x".into(),
            args: vec![],
            env: Default::default(),
            user: None,
            group: None,
            after: after.iter().map(|s| s.to_string()).collect(),
            ready: Default::default(),
            ready_timeout_ms: 1000,
            restart: Default::default(),
            capabilities: None,
            no_new_privs: true,
            roles: vec![],
            start: Default::default(),
            dirs: vec![],
        }
    }

    fn names(specs: &[ServiceSpec]) -> Vec<&str> {
        start_order(specs)
            .unwrap()
            .into_iter()
            .map(|i| specs[i].name.as_str())
            .collect()
    }

    #[test]
    fn dependencies_first_then_by_name() {
        let specs = [
            svc("kubelet", &["containerd"]),
            svc("etcd", &[]),
            svc("containerd", &[]),
            svc("apiserver", &["etcd"]),
        ];
        assert_eq!(
            names(&specs),
            ["containerd", "etcd", "apiserver", "kubelet"]
        );
    }

    #[test]
    fn unknown_dependency_and_cycle_are_named() {
        let e = start_order(&[svc("a", &["ghost"])]).unwrap_err();
        assert!(e.to_string().contains("\"ghost\""), "{e}");
        let e = start_order(&[svc("a", &["b"]), svc("b", &["a"]), svc("c", &[])]).unwrap_err();
        assert_eq!(e, OrderError::Cycle("a, b".into()));
        let e = start_order(&[svc("a", &[]), svc("a", &[])]).unwrap_err();
        assert!(e.to_string().contains("two services"), "{e}");
    }
}
