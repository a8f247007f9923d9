//! The lab's own network: one private L2 segment per lab run, inside a
//! network namespace the lab makes (`netns.rs`), on which the lab host
//! serves what a datacenter would.
//!
//! Takes the number of nodes and the API forwards wanted; produces a
//! [`LabNetwork`]: a bridge [`BRIDGE`] with the lab host's address
//! [`HOST`]/[`PREFIX`], one persistent tap per node on it ([`tap_name`],
//! with a fixed MAC per node, [`mac`]) for QEMU to open from inside the
//! namespace, an NTP server on `HOST:123` answering with this machine's
//! clock (`ntp_server.rs`), and a TCP forward from `127.0.0.1:PORT` on
//! this machine to a node's API (`proxy.rs`). Nodes take static addresses
//! from their machine configs; there is no DHCP on it.
//!
//! It never links the namespace to the host: no veth, no route, no NAT.
//! The only way in is the loopback forward, which the lab process itself
//! carries. Everything goes away with the namespace when the lab exits,
//! however it exits (see `netns.rs`).

pub mod netlink;
mod netns;
pub mod ntp_server;
pub mod proxy;
mod tap;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

pub use netns::{Netns, NetnsError};
pub use tap::TapError;

/// The bridge every node's tap is on.
pub const BRIDGE: &str = "nodeimg0";
/// The lab host's address on the bridge: the nodes' NTP server.
pub const HOST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const PREFIX: u8 = 24;

/// The tap of node `i` (0-based).
pub fn tap_name(i: usize) -> String {
    format!("nodeimg-tap{i}")
}

/// The fixed MAC of node `i`'s NIC (QEMU's prefix 52:54:00, then
/// `77:00` for the lab network and the node's number from 1), so a
/// machine config can name the link by it.
pub fn mac(i: usize) -> String {
    format!("52:54:00:77:00:{:02x}", (i + 1) & 0xff)
}

/// A node address on the lab network: `10.77.0.N` or `10.77.0.N/24`, N in
/// 2..=254 (1 is the lab host's).
pub fn parse_node_address(s: &str) -> Result<Ipv4Addr, String> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (s, None),
    };
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))?;
    if prefix.is_some_and(|p| p != PREFIX.to_string()) {
        return Err(format!(
            "{s:?}: the lab network is {HOST}/{PREFIX}; give /{PREFIX} or no prefix"
        ));
    }
    let [a, b, c, d] = ip.octets();
    let [ha, hb, hc, _] = HOST.octets();
    if (a, b, c) != (ha, hb, hc) || !(2..=254).contains(&d) {
        return Err(format!(
            "{s:?} is not a node address on the lab network ({ha}.{hb}.{hc}.2 to .254; .1 is the lab host)"
        ));
    }
    Ok(ip)
}

#[derive(Debug, thiserror::Error)]
pub enum LabNetError {
    #[error("making the lab's network namespace")]
    Netns(#[source] NetnsError),
    #[error("configuring the lab network")]
    Netlink(#[source] netlink::NetlinkError),
    #[error("making the lab's taps")]
    Tap(#[source] TapError),
    #[error("binding {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// One virtio NIC on a tap of the lab network. QEMU opens the tap by name
/// from inside the lab's namespace (`-netdev tap,ifname=…,script=no`: the
/// lab made the tap and put it on the bridge already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapNic {
    pub ifname: String,
    pub mac: String,
    pub netns: Netns,
}

impl TapNic {
    /// `-netdev` and `-device` values; PCI slot 2, beside a user NIC's 3.
    pub fn args(&self) -> [String; 4] {
        [
            "-netdev".into(),
            format!("tap,id=lab0,ifname={},script=no,downscript=no", self.ifname),
            "-device".into(),
            format!(
                "virtio-net-pci,netdev=lab0,mac={},bus=pcie.0,addr=0x2",
                self.mac
            ),
        ]
    }
}

/// A node API forward: `127.0.0.1:port` here to `address:50000` on the
/// lab network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub port: u16,
    pub address: Ipv4Addr,
}

/// A loopback forward to any TCP port of a node: `127.0.0.1:port` here
/// (0: a free port the kernel picks) to `address:guest_port` on the lab
/// network (the node API's 50000, etcd's 2379).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortForward {
    pub port: u16,
    pub address: Ipv4Addr,
    pub guest_port: u16,
}

/// A service of this machine offered on the lab network: the lab host's
/// `HOST:port` carries each connection to `target`, a server on this
/// machine's loopback (an identity provider or object store a test runs,
/// say). Loopback only: the lab never reaches any other address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostForward {
    pub port: u16,
    pub target: SocketAddrV4,
}

impl std::str::FromStr for HostForward {
    type Err = String;

    /// `PORT=127.0.0.1:TARGETPORT`.
    fn from_str(s: &str) -> Result<HostForward, String> {
        let want = "want PORT=127.0.0.1:PORT (the lab host's port, a loopback server here)";
        let (port, target) = s.split_once('=').ok_or(format!("{s:?}: {want}"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or(format!("{s:?}: port {port:?} is not 1..=65535; {want}"))?;
        let target: SocketAddrV4 = target
            .parse()
            .map_err(|_| format!("{s:?}: target {target:?} is not IPV4:PORT; {want}"))?;
        if !target.ip().is_loopback() || target.port() == 0 {
            return Err(format!(
                "{s:?}: target {target} is not a loopback address and port; the lab reaches nothing else"
            ));
        }
        if port == contract::ntp::PORT {
            return Err(format!("{s:?}: port {port} is the lab host's NTP server"));
        }
        Ok(HostForward { port, target })
    }
}

/// The running lab network. Dropping it stops its servers; the namespace
/// (bridge, taps) ends when QEMU, which holds it too, has exited.
pub struct LabNetwork {
    netns: Netns,
    nodes: usize,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    open: proxy::Open,
    /// Time requests the lab host answered.
    pub ntp_answered: Arc<AtomicU64>,
    /// Milliseconds the namespace, bridge, taps and servers took to set up.
    pub setup_ms: u64,
    /// The forwards as bound (a port asked as 0 is the one picked).
    pub forwards: Vec<PortForward>,
}

impl LabNetwork {
    /// Sets up the namespace, the bridge with [`HOST`], `nodes` taps on it,
    /// the NTP server and `forwards`.
    pub fn up(nodes: usize, forwards: &[Forward]) -> Result<LabNetwork, LabNetError> {
        let forwards: Vec<PortForward> = forwards
            .iter()
            .map(|f| PortForward {
                port: f.port,
                address: f.address,
                guest_port: contract::api::PORT,
            })
            .collect();
        LabNetwork::up_ports(nodes, &forwards)
    }

    /// [`LabNetwork::up`] with forwards to any node port.
    pub fn up_ports(nodes: usize, forwards: &[PortForward]) -> Result<LabNetwork, LabNetError> {
        LabNetwork::up_with(nodes, forwards, &[])
    }

    /// [`LabNetwork::up_ports`] with `host` services of this machine on the
    /// lab host's address.
    pub fn up_with(
        nodes: usize,
        forwards: &[PortForward],
        host: &[HostForward],
    ) -> Result<LabNetwork, LabNetError> {
        let t = Instant::now();
        // bound on this (host-namespace) thread first: a port already taken
        // fails before anything else is made
        let mut listeners = Vec::new();
        for f in forwards {
            let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, f.port));
            let l = TcpListener::bind(addr).map_err(|source| LabNetError::Bind {
                what: "a node forward",
                addr,
                source,
            })?;
            let port = l.local_addr().map(|a| a.port()).unwrap_or(f.port);
            listeners.push((l, PortForward { port, ..*f }));
        }
        let netns = Netns::create().map_err(LabNetError::Netns)?;
        netns
            .run(|| configure(nodes))
            .map_err(LabNetError::Netns)??;
        let ntp_addr = SocketAddr::V4(SocketAddrV4::new(HOST, contract::ntp::PORT));
        let server = netns
            .run(|| ntp_server::NtpServer::bind(ntp_addr))
            .map_err(LabNetError::Netns)?
            .map_err(|source| LabNetError::Bind {
                what: "the lab's NTP server",
                addr: ntp_addr,
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut net = LabNetwork {
            netns,
            nodes,
            stop: stop.clone(),
            threads: Vec::new(),
            open: proxy::Open::default(),
            ntp_answered: server.answered.clone(),
            setup_ms: 0,
            forwards: listeners.iter().map(|(_, f)| *f).collect(),
        };
        let s = stop.clone();
        let ntp = std::thread::Builder::new()
            .name("lab-ntp".into())
            .spawn(move || server.serve(&s))
            .map_err(|e| LabNetError::Netns(NetnsError::Thread(e)))?;
        net.threads.push(ntp);
        for (listener, f) in listeners {
            let target = SocketAddr::V4(SocketAddrV4::new(f.address, f.guest_port));
            let (s, open) = (stop.clone(), net.open.clone());
            let h = net
                .netns
                .spawn("lab-proxy", move || proxy::serve(listener, target, s, open))
                .map_err(LabNetError::Netns)?;
            net.threads.push(std::thread::spawn(move || {
                if let Ok(Err(e)) = h.join() {
                    tracing::warn!(error = %e, "lab proxy: could not enter the lab network");
                }
            }));
            tracing::info!(port = f.port, node = %f.address, guest_port = f.guest_port, "node forward on 127.0.0.1");
        }
        for h in host {
            let addr = SocketAddr::V4(SocketAddrV4::new(HOST, h.port));
            // bound from inside (the nodes reach it on the bridge), served
            // from a thread out here (its connections go to this machine's
            // loopback)
            let listener = net
                .netns
                .run(|| TcpListener::bind(addr))
                .map_err(LabNetError::Netns)?
                .map_err(|source| LabNetError::Bind {
                    what: "a lab host forward",
                    addr,
                    source,
                })?;
            let (s, open, target) = (stop.clone(), net.open.clone(), SocketAddr::V4(h.target));
            let t = std::thread::Builder::new()
                .name("lab-host-proxy".into())
                .spawn(move || proxy::serve(listener, target, s, open))
                .map_err(|e| LabNetError::Netns(NetnsError::Thread(e)))?;
            net.threads.push(t);
            tracing::info!(%addr, target = %h.target, "lab host forward to this machine's loopback");
        }
        net.setup_ms = t.elapsed().as_millis() as u64;
        tracing::info!(
            bridge = BRIDGE,
            host = %HOST,
            nodes,
            setup_ms = net.setup_ms,
            "lab network up (private namespace, no route to this machine's network)"
        );
        Ok(net)
    }

    /// Node `i`'s NIC for QEMU.
    pub fn nic(&self, i: usize) -> Option<TapNic> {
        (i < self.nodes).then(|| TapNic {
            ifname: tap_name(i),
            mac: mac(i),
            netns: self.netns.clone(),
        })
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }
}

impl Drop for LabNetwork {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        proxy::close_all(&self.open);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Inside the namespace: `lo` up, the bridge with the host's address, and
/// the taps on it, all up.
fn configure(nodes: usize) -> Result<(), LabNetError> {
    let mut nl = netlink::Netlink::open().map_err(LabNetError::Netlink)?;
    let lo = nl.index_of("lo").map_err(LabNetError::Netlink)?;
    nl.set_up(lo, "lo", None).map_err(LabNetError::Netlink)?;
    let bridge = nl.add_bridge(BRIDGE).map_err(LabNetError::Netlink)?;
    nl.add_address(bridge, HOST, PREFIX)
        .map_err(LabNetError::Netlink)?;
    nl.set_up(bridge, BRIDGE, None)
        .map_err(LabNetError::Netlink)?;
    for i in 0..nodes {
        let name = tap_name(i);
        tap::create_persistent(&name).map_err(LabNetError::Tap)?;
        let index = nl.index_of(&name).map_err(LabNetError::Netlink)?;
        nl.set_up(index, &name, Some(bridge))
            .map_err(LabNetError::Netlink)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_are_on_the_lab_network() {
        assert_eq!(
            parse_node_address("10.77.0.10/24"),
            Ok(Ipv4Addr::new(10, 77, 0, 10))
        );
        assert_eq!(
            parse_node_address("10.77.0.254"),
            Ok(Ipv4Addr::new(10, 77, 0, 254))
        );
        for bad in [
            "10.77.0.1",
            "10.77.0.255",
            "10.77.1.10",
            "10.0.2.15",
            "10.77.0.10/16",
            "x",
        ] {
            assert!(parse_node_address(bad).is_err(), "{bad}");
        }
        assert_eq!(mac(0), "52:54:00:77:00:01");
        assert!(tap_name(0).len() <= 15);
    }

    #[test]
    fn host_forwards_reach_loopback_only() {
        let f: HostForward = "8443=127.0.0.1:9000".parse().unwrap();
        assert_eq!(f.port, 8443);
        assert_eq!(f.target, "127.0.0.1:9000".parse().unwrap());
        for (bad, says) in [
            ("8443=10.0.0.1:9000", "not a loopback"),
            ("8443=127.0.0.1:0", "not a loopback"),
            ("0=127.0.0.1:9000", "not 1..=65535"),
            ("123=127.0.0.1:9000", "NTP"),
            ("8443", "want PORT="),
            ("8443=localhost:9000", "not IPV4:PORT"),
        ] {
            let e = bad.parse::<HostForward>().unwrap_err();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }

    /// Root only: a node on the bridge reaches a server on this machine's
    /// loopback through the lab host's address, and nothing else of it.
    #[test]
    fn a_lab_host_forward_reaches_a_loopback_server_here() {
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        use std::io::{Read, Write};
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = match server.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound on 127.0.0.1"),
        };
        let echo = std::thread::spawn(move || {
            let (mut c, _) = server.accept().unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            c.write_all(&buf).unwrap();
        });
        let net = LabNetwork::up_with(1, &[], &[HostForward { port: 8443, target }]).unwrap();
        let (got, direct) = net
            .netns()
            .run(|| {
                let mut c = std::net::TcpStream::connect((HOST, 8443)).unwrap();
                c.write_all(b"hello").unwrap();
                let mut buf = [0u8; 5];
                c.read_exact(&mut buf).unwrap();
                // the loopback server itself is not in the namespace
                let direct = std::net::TcpStream::connect(target).is_ok();
                (buf, direct)
            })
            .unwrap();
        assert_eq!(&got, b"hello");
        assert!(!direct, "the lab's namespace reached {target} directly");
        echo.join().unwrap();
    }

    /// Root only (here and in CI): the whole network in its namespace,
    /// checked from inside with iproute2 run in it, and gone afterwards.
    #[test]
    fn the_network_lives_in_its_namespace_only() {
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let host_links = std::fs::read_to_string("/proc/net/dev").unwrap();
        let net = LabNetwork::up(2, &[]).unwrap();
        let inside = net
            .netns()
            .run(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap())
            .unwrap();
        for name in [BRIDGE, "nodeimg-tap0", "nodeimg-tap1"] {
            assert!(inside.contains(name), "{inside}");
            assert!(!host_links.contains(name), "{host_links}");
        }
        let here = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        assert!(!here.contains(BRIDGE), "leaked to the host: {here}");
        // the NTP server answers on the bridge, from inside
        let got = net
            .netns()
            .run(|| {
                let c = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                let t1 = ntp_server::now();
                c.send_to(
                    &contract::ntp::Packet::request(t1).encode(),
                    (HOST, contract::ntp::PORT),
                )
                .unwrap();
                let mut buf = [0u8; 64];
                let (n, _) = c.recv_from(&mut buf).unwrap();
                contract::ntp::sample(t1, &buf[..n], ntp_server::now())
            })
            .unwrap()
            .unwrap();
        assert_eq!(got.stratum, ntp_server::STRATUM);
        drop(net);
    }
}
