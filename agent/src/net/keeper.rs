//! One thread per DHCP link that keeps its lease: it renews with the
//! server at T1, asks any server from T2, and when the lease runs out (or
//! a server refuses it) removes the address and starts over with DISCOVER.
//! Every wait is bounded; it logs to the console and never panics. It
//! runs for the life of PID 1.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::dhcp::{Lease, Reply, INFINITE};
use super::dhcp_client::Channel;
use super::files::{self, LinkNames};
use super::netlink::{Netlink, NetlinkError};
use crate::console::Console;
use crate::error::chain;

/// RFC 2131 §4.4.5: between retransmissions in RENEWING and REBINDING,
/// wait half the time left, but no less than 60 s.
const MIN_RENEW_WAIT: Duration = Duration::from_secs(60);
/// How long one renewal waits for its answer.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Without a lease: how long one round of DISCOVERs runs, and the pause
/// after a round that got nothing.
const DISCOVER_ROUND: Duration = Duration::from_secs(60);
const DISCOVER_PAUSE: Duration = Duration::from_secs(30);

/// Adds the lease's address and its default route.
pub fn apply(nl: &mut Netlink, ifindex: u32, lease: &Lease) -> Result<(), NetlinkError> {
    nl.add_address(ifindex, lease.address, lease.prefix)?;
    if let Some(gw) = lease.gateway() {
        nl.replace_default_route(ifindex, gw)?;
    }
    Ok(())
}

/// What the lease gives name resolution.
pub fn link_names(lease: &Lease) -> LinkNames {
    LinkNames {
        dns: lease.dns.iter().copied().map(IpAddr::V4).collect(),
        domain: lease.domain.clone(),
        address: Some(lease.address),
    }
}

/// What the keeper does next, from the lease's age (pure, so it is tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do until this much later.
    Sleep(Duration),
    /// Renew (unicast to the server), or rebind (broadcast), now; then
    /// wait at most this long before the next try.
    Renew { rebinding: bool, next_try: Duration },
    /// The lease is over.
    Expired,
}

pub fn next_step(lease: &Lease, age: Duration) -> Step {
    if lease.lease_secs == INFINITE {
        return Step::Sleep(Duration::from_secs(u64::from(u32::MAX)));
    }
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    let (t1, t2, end) = (
        secs(lease.renew_secs),
        secs(lease.rebind_secs),
        secs(lease.lease_secs),
    );
    if age >= end {
        return Step::Expired;
    }
    if age < t1 {
        return Step::Sleep(t1 - age);
    }
    let rebinding = age >= t2;
    let until = if rebinding { end - age } else { t2 - age };
    Step::Renew {
        rebinding,
        next_try: (until / 2).max(MIN_RENEW_WAIT).min(until),
    }
}

pub struct Keeper {
    pub channel: Channel,
    pub ifindex: u32,
    pub names: Arc<Mutex<files::Names>>,
}

impl Keeper {
    /// Starts the thread; `lease` is what the boot obtained (`None`: keep
    /// discovering).
    pub fn spawn(self, lease: Option<Lease>) -> std::io::Result<()> {
        let held = lease.map(|l| (l, Instant::now()));
        std::thread::Builder::new()
            .name(format!("dhcp-{}", self.channel.ifname))
            .spawn(move || self.run(held))
            .map(|_| ())
    }

    fn say(&self, text: &str) {
        Console::open().say(&format!("dhcp {}: {text}", self.channel.ifname));
    }

    fn run(self, mut lease: Option<(Lease, Instant)>) -> ! {
        loop {
            lease = match lease {
                None => self.discover(),
                Some((l, since)) => self.keep(l, since),
            };
        }
    }

    /// One round of DISCOVERs; a pause after a round that got nothing.
    fn discover(&self) -> Option<(Lease, Instant)> {
        match self.channel.acquire(Instant::now() + DISCOVER_ROUND) {
            Ok(l) => {
                self.install(None, &l);
                Some((l, Instant::now()))
            }
            Err(e) => {
                self.say(&chain(&e));
                std::thread::sleep(DISCOVER_PAUSE);
                None
            }
        }
    }

    /// Holds `lease` until it is renewed (a new lease) or lost (`None`).
    fn keep(&self, lease: Lease, since: Instant) -> Option<(Lease, Instant)> {
        loop {
            match next_step(&lease, since.elapsed()) {
                Step::Sleep(d) => std::thread::sleep(d),
                Step::Expired => {
                    self.say(&format!("lease of {} expired", lease.address));
                    self.drop_address(&lease);
                    return None;
                }
                Step::Renew {
                    rebinding,
                    next_try,
                } => {
                    let asked = Instant::now();
                    match self
                        .channel
                        .renew(&lease, rebinding, asked + ANSWER_WAIT.min(next_try))
                    {
                        Ok(Some(Reply::Ack(new))) => {
                            self.install(Some(&lease), &new);
                            return Some((new, asked));
                        }
                        Ok(Some(Reply::Nak { .. })) => {
                            self.say(&format!("server refused {}; starting over", lease.address));
                            self.drop_address(&lease);
                            return None;
                        }
                        Ok(_) => {}
                        Err(e) => self.say(&chain(&e)),
                    }
                    let left = next_try.saturating_sub(asked.elapsed());
                    std::thread::sleep(left);
                }
            }
        }
    }

    /// Applies a new lease (removing the old address if it changed) and
    /// rewrites resolv.conf and hosts when what they say changed.
    fn install(&self, old: Option<&Lease>, new: &Lease) {
        let result = Netlink::open().and_then(|mut nl| {
            if let Some(old) = old.filter(|o| (o.address, o.prefix) != (new.address, new.prefix)) {
                nl.del_address(self.ifindex, old.address, old.prefix)?;
            }
            apply(&mut nl, self.ifindex, new)
        });
        match result {
            Ok(()) if old.is_none() => self.say(&format!(
                "{}/{} for {} s",
                new.address, new.prefix, new.lease_secs
            )),
            Ok(()) => {}
            Err(e) => self.say(&chain(&e)),
        }
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let entry = link_names(new);
        if names.links.get(&self.channel.ifname) != Some(&entry) {
            names.links.insert(self.channel.ifname.clone(), entry);
            if let Err(e) = super::write_names(&names) {
                self.say(&e);
            }
        }
    }

    fn drop_address(&self, lease: &Lease) {
        if let Err(e) = Netlink::open()
            .and_then(|mut nl| nl.del_address(self.ifindex, lease.address, lease.prefix))
        {
            self.say(&chain(&e));
        }
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.links.remove(&self.channel.ifname);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(secs: u32) -> Lease {
        let (t1, t2) = super::super::dhcp::timers(secs, None, None);
        Lease {
            address: "10.0.2.15".parse().unwrap(),
            prefix: 24,
            server: "10.0.2.2".parse().unwrap(),
            routers: vec![],
            dns: vec![],
            ntp: vec![],
            hostname: None,
            domain: None,
            lease_secs: secs,
            renew_secs: t1,
            rebind_secs: t2,
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn sleeps_until_t1_then_renews_then_rebinds_then_expires() {
        let l = lease(86400); // T1 43200, T2 75600
        assert_eq!(next_step(&l, s(0)), Step::Sleep(s(43200)));
        assert_eq!(
            next_step(&l, s(43200)),
            Step::Renew {
                rebinding: false,
                next_try: s(16200)
            }
        );
        // close to T2: half the time left, but at least 60 s
        assert_eq!(
            next_step(&l, s(75500)),
            Step::Renew {
                rebinding: false,
                next_try: s(60)
            }
        );
        assert_eq!(
            next_step(&l, s(75600)),
            Step::Renew {
                rebinding: true,
                next_try: s(5400)
            }
        );
        // never past the end of the lease
        assert_eq!(
            next_step(&l, s(86380)),
            Step::Renew {
                rebinding: true,
                next_try: s(20)
            }
        );
        assert_eq!(next_step(&l, s(86400)), Step::Expired);
    }

    #[test]
    fn an_infinite_lease_only_sleeps() {
        assert!(matches!(
            next_step(&lease(INFINITE), s(1 << 40)),
            Step::Sleep(_)
        ));
    }
}
