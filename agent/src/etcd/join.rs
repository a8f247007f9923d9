//! Joining a running etcd cluster, with no operator step: find a voting
//! member among the configured control-plane peers, check that it serves
//! this cluster (the bootstrap's `/nodeimg/cluster` key), remove this
//! node's previous life (a member with its name or its peer URL: a blank
//! machine replacing it, or a learner that never started), add this node
//! as a learner, and hand back the member list etcd must start with.
//! Promotion happens once the started learner is in sync ([`promote`]).
//!
//! etcd 3.5 takes one learner at a time and refuses a member add while a
//! voting member is unreachable: both are waits, retried by the caller.

use super::gateway::{Client, GatewayError, Member};

/// What one join attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No configured peer serves etcd yet: the cluster waits for its
    /// bootstrap. Says what each peer answered.
    NoCluster(String),
    /// Added as a learner with `id`: start etcd with `initial`
    /// (name, peer URL) and `--initial-cluster-state=existing`.
    Added {
        id: u64,
        initial: Vec<(String, String)>,
        via: String,
    },
    /// A cluster serves, but this node must wait (another learner, an
    /// unreachable member); retried.
    Wait(String),
    /// A peer serves another cluster (or none named): never joined.
    Refused(String),
}

/// Who this node is, as the join needs it.
pub struct Joiner<'a> {
    pub cluster: &'a str,
    pub hostname: &'a str,
    /// This node's `https://ADDR:2380`.
    pub peer_url: &'a str,
    /// The other configured control-plane members: (name, address).
    pub peers: &'a [(String, String)],
}

/// Members to remove before this node joins: its previous life, by name
/// or by peer URL (an added learner that never started has no name).
pub fn stale<'m>(members: &'m [Member], hostname: &str, peer_url: &str) -> Vec<&'m Member> {
    members
        .iter()
        .filter(|m| m.name == hostname || m.peer_urls.iter().any(|u| u == peer_url))
        .collect()
}

/// `--initial-cluster` after the add: every member by name with its peer
/// URLs, the new one (nameless in etcd's answer) under this node's name.
pub fn initial_cluster(members: &[Member], added: u64, hostname: &str) -> Vec<(String, String)> {
    members
        .iter()
        .flat_map(|m| {
            let name = if m.id == added {
                hostname.to_string()
            } else {
                m.name.clone()
            };
            m.peer_urls.iter().map(move |u| (name.clone(), u.clone()))
        })
        .collect()
}

impl Joiner<'_> {
    /// One attempt, through the first peer that answers as a voter.
    pub fn attempt(&self, client: &Client) -> Outcome {
        let mut answers = Vec::new();
        for (name, host) in self.peers {
            let status = match client.status(host) {
                Ok(s) => s,
                Err(e) => {
                    answers.push(format!("{name} ({host}): {}", crate::error::chain(&e)));
                    continue;
                }
            };
            if status.learner {
                // a learner serves no member changes and no linearizable reads
                answers.push(format!("{name} ({host}): a learner"));
                continue;
            }
            return self.through(client, name, host);
        }
        Outcome::NoCluster(answers.join("; "))
    }

    fn through(&self, client: &Client, name: &str, host: &str) -> Outcome {
        // every refusal after a voter answered passes with time here
        // (another learner, a member down, a leader election): retried
        let fail = |what: &str, e: GatewayError| {
            Outcome::Wait(format!(
                "{what} through {name} ({host}): {}",
                crate::error::chain(&e)
            ))
        };
        match client.get(host, contract::etcd::CLUSTER_KEY) {
            Ok(Some(c)) if c == self.cluster => {}
            Ok(Some(other)) => {
                return Outcome::Refused(format!(
                    "{name} ({host}) serves etcd cluster {other:?}, not {:?}: not joining it",
                    self.cluster
                ))
            }
            Ok(None) => {
                return Outcome::Refused(format!(
                    "{name} ({host}) serves an etcd cluster that names none \
                     ({} unset): not joining it",
                    contract::etcd::CLUSTER_KEY
                ))
            }
            Err(e) => return fail("reading the cluster's name", e),
        }
        let members = match client.members(host) {
            Ok(m) => m,
            Err(e) => return fail("listing the members", e),
        };
        for old in stale(&members, self.hostname, self.peer_url) {
            if let Err(e) = client.member_remove(host, old.id) {
                return fail(
                    &format!("removing this node's stale member {:x}", old.id),
                    e,
                );
            }
            crate::console::Console::open().say(&format!(
                "etcd: removed this node's previous member {:x} ({}) through {name}",
                old.id,
                if old.name.is_empty() {
                    "never started"
                } else {
                    old.name.as_str()
                }
            ));
        }
        match client.member_add(host, self.peer_url, true) {
            Ok((id, after)) => Outcome::Added {
                id,
                initial: initial_cluster(&after, id, self.hostname),
                via: name.to_string(),
            },
            Err(e) => fail("adding this node as a learner", e),
        }
    }
}

/// Asks the configured voters, in turn, to promote learner `id`. `Ok` once
/// one did; `Err` with etcd's reason (usually: not in sync yet).
pub fn promote(client: &Client, peers: &[(String, String)], id: u64) -> Result<String, String> {
    let mut why = Vec::new();
    for (name, host) in peers {
        match client.member_promote(host, id) {
            Ok(()) => return Ok(name.clone()),
            Err(e) => why.push(format!("{name}: {}", crate::error::chain(&e))),
        }
    }
    Err(why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, name: &str, url: &str) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![url.into()],
            learner: false,
        }
    }

    #[test]
    fn a_previous_life_is_found_by_name_or_peer_url() {
        let list = [
            m(1, "cp-1", "https://10.77.0.11:2380"),
            m(2, "cp-2", "https://10.77.0.12:2380"),
            m(3, "", "https://10.77.0.13:2380"),
        ];
        let ids = |v: Vec<&Member>| v.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(stale(&list, "cp-2", "https://10.77.0.12:2380")), [2]);
        // a learner added for cp-3 that never started has no name
        assert_eq!(ids(stale(&list, "cp-3", "https://10.77.0.13:2380")), [3]);
        assert!(stale(&list, "cp-4", "https://10.77.0.14:2380").is_empty());
    }

    #[test]
    fn the_new_member_takes_this_nodes_name_in_the_initial_cluster() {
        let list = [
            m(1, "cp-1", "https://10.77.0.11:2380"),
            m(9, "", "https://10.77.0.12:2380"),
        ];
        assert_eq!(
            initial_cluster(&list, 9, "cp-2"),
            [
                ("cp-1".to_string(), "https://10.77.0.11:2380".to_string()),
                ("cp-2".to_string(), "https://10.77.0.12:2380".to_string()),
            ]
        );
    }
}
