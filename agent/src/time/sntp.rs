//! One SNTP exchange (RFC 4330) over UDP: send a client request stamped
//! with our clock, take the first reply that answers it, and judge it with
//! the contract's checks (`contract::ntp::sample`). The packet code is
//! the contract's because the lab's server speaks the same bytes.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use contract::ntp::{self, Packet, Sample};

use super::clock;

#[derive(Debug, thiserror::Error)]
pub enum SntpError {
    #[error("{server}: {what}")]
    Io {
        server: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{server}: no answer within {ms} ms")]
    Timeout { server: String, ms: u128 },
    #[error("{server}: refused its answer")]
    Bad {
        server: String,
        #[source]
        source: ntp::NtpError,
    },
    #[error("{server}: a host name, and no name server is configured (/etc/resolv.conf)")]
    NoResolver { server: String },
    #[error("{server}: the name does not resolve to an IPv4 or IPv6 address")]
    Unresolved { server: String },
}

/// Where `server` (`IP`, `IP:PORT`, `[IPv6]:PORT`, `NAME`, `NAME:PORT`) is.
/// IP literals need nothing; a name goes to the system resolver only when
/// `/etc/resolv.conf` names a server (without one, glibc would ask
/// 127.0.0.1, where nothing listens on a node).
pub fn resolve(server: &str) -> Result<Vec<SocketAddr>, SntpError> {
    if let Ok(a) = server.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    if let Ok(ip) = server.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, ntp::PORT)]);
    }
    let has_resolver = std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| t.lines().any(|l| l.trim_start().starts_with("nameserver")))
        .unwrap_or(false);
    if !has_resolver {
        return Err(SntpError::NoResolver {
            server: server.into(),
        });
    }
    let with_port = if server.contains(':') {
        server.to_string()
    } else {
        format!("{server}:{}", ntp::PORT)
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|source| SntpError::Io {
            server: server.into(),
            what: "resolve",
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(SntpError::Unresolved {
            server: server.into(),
        });
    }
    Ok(addrs)
}

/// One request to `addr`, waiting at most `timeout` for its answer.
/// Replies from elsewhere, or to another request, are skipped (the
/// socket is connected, and the origin check catches stale answers).
pub fn query(addr: SocketAddr, timeout: Duration) -> Result<Sample, SntpError> {
    let server = addr.to_string();
    let io = |what| {
        let server = server.clone();
        move |source| SntpError::Io {
            server,
            what,
            source,
        }
    };
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(io("bind"))?;
    socket.connect(addr).map_err(io("connect"))?;
    let deadline = Instant::now() + timeout;
    let sent = clock::now();
    socket
        .send(&Packet::request(sent).encode())
        .map_err(io("send"))?;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SntpError::Timeout {
                server,
                ms: timeout.as_millis(),
            });
        }
        socket.set_read_timeout(Some(left)).map_err(io("timeout"))?;
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(io("receive")(e)),
        };
        let received = clock::now();
        match ntp::sample(sent, buf.get(..len).unwrap_or_default(), received) {
            Ok(s) => return Ok(s),
            // someone else's, or an old request's answer: keep waiting
            Err(ntp::NtpError::Bogus) => continue,
            Err(source) => return Err(SntpError::Bad { server, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::ntp::{ServerClock, Timestamp};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A server on loopback built from the contract's `answer`, the same
    /// function the lab's server calls, that runs `skew_ns` ahead of us.
    fn server(skew_ns: i64, stop: Arc<AtomicBool>) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = s.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 100];
            let skewed = || {
                let ns = clock::now_unix_ns() + i128::from(skew_ns);
                Timestamp::from_unix(
                    ns.div_euclid(1_000_000_000) as i64,
                    ns.rem_euclid(1_000_000_000) as u32,
                )
            };
            let clk = ServerClock {
                leap: 0,
                stratum: 2,
                precision: -20,
                root_delay: 0,
                root_dispersion: 0,
                reference_id: [10, 0, 0, 1],
                reference: skewed(),
            };
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let t2 = skewed();
                    if let Some(r) = ntp::answer(&buf[..n], &clk, t2, skewed()) {
                        s.send_to(&r, from).unwrap();
                    }
                }
            }
        });
        addr
    }

    #[test]
    fn a_loopback_server_ahead_by_an_hour_is_measured_so() {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = server(3_600_000_000_000, stop.clone());
        let s = query(addr, Duration::from_secs(5)).unwrap();
        stop.store(true, Ordering::Relaxed);
        assert!(
            (s.offset_ns - 3_600_000_000_000).abs() < 50_000_000,
            "{s:?}"
        );
        assert_eq!(s.stratum, 2);
        assert!(s.delay_ns < 1_000_000_000, "{s:?}");
    }

    #[test]
    fn silence_is_a_bounded_timeout() {
        // a bound socket that never answers
        let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = Instant::now();
        let e = query(quiet.local_addr().unwrap(), Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, SntpError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn ip_literals_resolve_without_a_resolver() {
        assert_eq!(
            resolve("10.77.0.1").unwrap(),
            vec!["10.77.0.1:123".parse().unwrap()]
        );
        assert_eq!(
            resolve("127.0.0.1:1123").unwrap(),
            vec!["127.0.0.1:1123".parse().unwrap()]
        );
        assert_eq!(
            resolve("fd00::1").unwrap(),
            vec!["[fd00::1]:123".parse().unwrap()]
        );
    }
}
