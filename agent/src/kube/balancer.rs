//! The node's API balancer: a TCP forwarder on loopback
//! ([`spec::BALANCER_PORT`]) in front of every control-plane member's API
//! server. kubelet and kube-proxy dial it, so a node keeps its API when any
//! one control-plane node dies, with no virtual IP to move and no ARP on
//! the segment (Talos' KubePrism and k0s' node-local load balancing work
//! the same way). TLS passes through untouched: the API server's
//! certificate names 127.0.0.1, and each client still proves itself to the
//! API server, not to us.
//!
//! Written here rather than taken from a crate: the proxies that exist are
//! built on an async runtime the static agent does not carry, and what is
//! needed is a connect with failover plus two copy loops.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contract::kube as spec;

/// How long one dial of a backend may take: a dead node's address does not
/// refuse, it stays silent.
const DIAL_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a backend that failed a dial is passed over.
const HOLD_DOWN: Duration = Duration::from_secs(10);
/// A copy loop needs little stack; a node holds a few dozen connections.
const PIPE_STACK: usize = 128 * 1024;
/// How often the backends that carry connections are dialed, and how many
/// failed dials in a row mark one dead. A killed node never closes its
/// connections: without this, kubelet would notice only through its own
/// HTTP/2 pings (45 s), close to the 50 s after which its Node turns
/// NotReady.
const CHECK_EVERY: Duration = Duration::from_secs(2);
const DEAD_AFTER: u32 = 2;

pub struct Balancer {
    /// In the order tried: the node's own API server first on a control
    /// plane node, else an order that differs per node so workers spread.
    backends: Vec<SocketAddr>,
    down_until: Mutex<Vec<Option<Instant>>>,
    /// The backend the last connection went to (reported on change).
    last: Mutex<Option<SocketAddr>>,
    /// Every open connection: its backend's index, an id, and a handle to
    /// its backend socket to shut down when that backend dies.
    open: Mutex<Vec<(usize, u64, TcpStream)>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// The order a node tries the API servers in: its own first when it runs
/// one, then the others, rotated by a hash of its name so that workers do
/// not all land on the first member.
pub fn order(
    members: &[std::net::IpAddr],
    own: Option<std::net::IpAddr>,
    hostname: &str,
) -> Vec<SocketAddr> {
    let mut rest: Vec<std::net::IpAddr> = members
        .iter()
        .copied()
        .filter(|a| Some(*a) != own)
        .collect();
    if !rest.is_empty() {
        let spin = hostname.bytes().map(usize::from).sum::<usize>() % rest.len();
        rest.rotate_left(spin);
    }
    own.into_iter()
        .chain(rest)
        .map(|ip| SocketAddr::new(ip, spec::API_PORT))
        .collect()
}

impl Balancer {
    pub fn new(backends: Vec<SocketAddr>) -> Arc<Balancer> {
        let n = backends.len();
        Arc::new(Balancer {
            backends,
            down_until: Mutex::new(vec![None; n]),
            last: Mutex::new(None),
            open: Mutex::new(Vec::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Binds the loopback port and serves it on its own thread.
    pub fn listen(self: &Arc<Self>) -> io::Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", spec::BALANCER_PORT))?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("kube-balancer".into())
            .spawn(move || me.serve(&listener))?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("kube-balancer-check".into())
            .spawn(move || me.check())?;
        Ok(())
    }

    /// Dials every backend that carries connections; one that fails
    /// [`DEAD_AFTER`] times in a row has its connections shut, so their
    /// clients reconnect through [`Balancer::dial`] to a live one.
    fn check(&self) {
        let mut misses = vec![0u32; self.backends.len()];
        loop {
            std::thread::sleep(CHECK_EVERY);
            let busy: Vec<usize> = match self.open.lock() {
                Ok(open) => open.iter().map(|(i, _, _)| *i).collect(),
                Err(_) => continue,
            };
            for ((i, addr), missed) in self.backends.iter().enumerate().zip(misses.iter_mut()) {
                if !busy.contains(&i) || TcpStream::connect_timeout(addr, DIAL_TIMEOUT).is_ok() {
                    *missed = 0;
                    continue;
                }
                *missed += 1;
                if *missed >= DEAD_AFTER {
                    self.mark(i, Some(Instant::now() + HOLD_DOWN));
                    let shut = self.close_all(i);
                    crate::console::Console::open().say(&format!(
                        "kubernetes: API server {addr} does not answer; {shut} connections to it closed"
                    ));
                    *missed = 0;
                }
            }
        }
    }

    /// Shuts every connection to backend `i`; returns how many.
    fn close_all(&self, i: usize) -> usize {
        let Ok(open) = self.open.lock() else {
            return 0;
        };
        let mine: Vec<&TcpStream> = open.iter().filter(|c| c.0 == i).map(|c| &c.2).collect();
        for s in &mine {
            let _ = s.shutdown(Shutdown::Both);
        }
        mine.len()
    }

    fn serve(self: Arc<Self>, listener: &TcpListener) {
        for client in listener.incoming() {
            let Ok(client) = client else {
                // EMFILE and the like: back off rather than spin
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("kube-balancer-conn".into())
                .stack_size(PIPE_STACK)
                .spawn(move || me.forward(client));
            if let Err(e) = spawned {
                crate::console::Console::open().say(&format!(
                    "kubernetes: the API balancer has no thread for a connection: {e}"
                ));
            }
        }
    }

    fn forward(&self, client: TcpStream) {
        let Some((i, backend)) = self.dial() else {
            // the client sees its connection closed and retries
            let _ = client.shutdown(Shutdown::Both);
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = backend.set_nodelay(true);
        let (Ok(c2), Ok(b2)) = (client.try_clone(), backend.try_clone()) else {
            return;
        };
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let (Ok(mut open), Ok(handle)) = (self.open.lock(), backend.try_clone()) {
            open.push((i, id, handle));
        }
        let upstream = std::thread::Builder::new()
            .name("kube-balancer-conn".into())
            .stack_size(PIPE_STACK)
            .spawn(move || pipe(c2, b2));
        if upstream.is_ok() {
            pipe(backend, client);
        }
        if let Ok(mut open) = self.open.lock() {
            open.retain(|c| c.1 != id);
        }
    }

    /// A connection to the first backend that answers, passing over those
    /// that failed lately (unless every one did).
    pub fn dial(&self) -> Option<(usize, TcpStream)> {
        let now = Instant::now();
        let down = self
            .down_until
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        let fresh = |i: usize| down.get(i).copied().flatten().is_none_or(|t| t <= now);
        let mut tries: Vec<usize> = (0..self.backends.len()).filter(|i| fresh(*i)).collect();
        if tries.is_empty() {
            tries = (0..self.backends.len()).collect();
        }
        for i in tries {
            let Some(&addr) = self.backends.get(i) else {
                continue;
            };
            match TcpStream::connect_timeout(&addr, DIAL_TIMEOUT) {
                Ok(s) => {
                    self.mark(i, None);
                    self.note(addr);
                    return Some((i, s));
                }
                Err(_) => self.mark(i, Some(Instant::now() + HOLD_DOWN)),
            }
        }
        None
    }

    fn mark(&self, i: usize, until: Option<Instant>) {
        if let Ok(mut d) = self.down_until.lock() {
            if let Some(slot) = d.get_mut(i) {
                *slot = until;
            }
        }
    }

    fn note(&self, addr: SocketAddr) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if *last != Some(addr) {
            crate::console::Console::open()
                .say(&format!("kubernetes: the API balancer forwards to {addr}"));
            *last = Some(addr);
        }
    }
}

/// Copies one direction until either side ends, then closes both ways: a
/// dead backend never answers, and only the client's own timeout (kubelet's
/// HTTP/2 pings) ends such a connection; shutting both sockets down then
/// wakes the other direction's copy too.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{Read, Write};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_api_server_first_then_the_others_rotated_per_node() {
        let members = [ip("10.0.0.11"), ip("10.0.0.12"), ip("10.0.0.13")];
        let cp = order(&members, Some(ip("10.0.0.12")), "cp-2");
        assert_eq!(cp[0], "10.0.0.12:6443".parse().unwrap());
        assert_eq!(cp.len(), 3);
        let w1 = order(&members, None, "worker-1");
        let w2 = order(&members, None, "worker-2");
        assert_eq!(w1.len(), 3);
        assert_ne!(w1[0], w2[0], "two workers start at different members");
        let mut sorted = w1.clone();
        sorted.sort();
        assert_eq!(sorted, order(&members, None, "")); // a rotation, all kept
    }

    /// A real dial over loopback: the first backend refuses (nothing
    /// listens), the second answers; the refused one is then passed over.
    #[test]
    fn a_refusing_backend_is_passed_over() {
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let live_addr = live.local_addr().unwrap();
        let b = Balancer::new(vec![dead_addr, live_addr]);
        let server = std::thread::spawn(move || {
            let (mut s, _) = live.accept().unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let (i, mut s) = b.dial().unwrap();
        assert_eq!(i, 1);
        assert_eq!(s.peer_addr().unwrap(), live_addr);
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        server.join().unwrap();
        let down = b.down_until.lock().unwrap().clone();
        assert!(down[0].is_some() && down[1].is_none(), "{down:?}");
    }

    #[test]
    fn no_backend_answers_no_connection() {
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = dead.local_addr().unwrap();
        drop(dead);
        assert!(Balancer::new(vec![addr]).dial().is_none());
    }
}
