//! The lab host's time server: answers NTP client requests (mode 3) with
//! this machine's clock, as a datacenter's time source would, through the
//! contract's packet code (`contract::ntp`, shared with the agent's client).
//!
//! What it claims: stratum 1 with reference id `LOCL` (RFC 4330's
//! "uncalibrated local clock"): the host's clock is the lab's reference,
//! whether or not the host itself is synchronised, and saying leap 3
//! ("unsynchronised") would make every correct client refuse it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use contract::ntp::{self, ServerClock, Timestamp};

/// How often the serving loop looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);
/// The stratum the lab serves (see the module's doc).
pub const STRATUM: u8 = 1;
pub const REFERENCE_ID: [u8; 4] = *b"LOCL";
/// 2^-20 s ≈ 1 µs: what the host's clock resolution (`clock_gettime`) gives.
const PRECISION: i8 = -20;
/// 1/65536 s: the dispersion a local reference admits to.
const ROOT_DISPERSION: u32 = 1;

/// This machine's clock as an NTP timestamp.
pub fn now() -> Timestamp {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp::from_unix(d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            Timestamp::from_unix(-(d.as_secs() as i64), 0)
        }
    }
}

fn clock(reference: Timestamp) -> ServerClock {
    ServerClock {
        leap: 0,
        stratum: STRATUM,
        precision: PRECISION,
        root_delay: 0,
        root_dispersion: ROOT_DISPERSION,
        reference_id: REFERENCE_ID,
        reference,
    }
}

/// A bound time server socket; [`NtpServer::serve`] answers on it until
/// the stop flag is set.
pub struct NtpServer {
    socket: UdpSocket,
    /// Requests answered so far.
    pub answered: Arc<AtomicU64>,
}

impl NtpServer {
    /// Binds `addr` (UDP). Bind on the thread whose namespace it serves.
    pub fn bind(addr: SocketAddr) -> std::io::Result<NtpServer> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_read_timeout(Some(STOP_POLL))?;
        Ok(NtpServer {
            socket,
            answered: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Answers requests until `stop`; a malformed or non-client packet
    /// gets no answer. Never returns an error: a failed send is logged and
    /// the next request served.
    pub fn serve(&self, stop: &AtomicBool) {
        let mut buf = [0u8; 512];
        // the reference timestamp: when the lab's reference was "set",
        // i.e. when this server started serving the host's clock
        let reference = now();
        while !stop.load(Ordering::Relaxed) {
            let (len, from) = match self.socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lab NTP server: receive failed");
                    std::thread::sleep(STOP_POLL);
                    continue;
                }
            };
            let received = now();
            let request = buf.get(..len).unwrap_or_default();
            let Some(reply) = ntp::answer(request, &clock(reference), received, now()) else {
                tracing::debug!(%from, len, "lab NTP server: not a client request");
                continue;
            };
            match self.socket.send_to(&reply, from) {
                Ok(_) => {
                    self.answered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%from, "lab NTP server: answered");
                }
                Err(e) => tracing::warn!(%from, error = %e, "lab NTP server: send failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::ntp::Packet;

    /// The server on loopback, asked as a client asks: the reply is a mode-4
    /// answer to our request whose offset against this very clock is ~0.
    #[test]
    fn answers_a_client_on_loopback_with_this_clock() {
        let server = NtpServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let answered = server.answered.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || server.serve(&s2));
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // garbage first: no answer, and the server keeps serving
        client.send_to(&[1, 2, 3], addr).unwrap();
        let t1 = now();
        client.send_to(&Packet::request(t1).encode(), addr).unwrap();
        let mut buf = [0u8; 100];
        let (len, _) = client.recv_from(&mut buf).unwrap();
        let t4 = now();
        let s = ntp::sample(t1, &buf[..len], t4).unwrap();
        assert!(s.offset_ns.abs() < 50_000_000, "{s:?}");
        assert_eq!((s.stratum, s.reference_id), (STRATUM, REFERENCE_ID));
        let p = Packet::decode(&buf[..len]).unwrap();
        assert_eq!((p.mode, p.version, p.leap), (4, 4, 0));
        assert!(p.receive <= p.transmit && t1 <= p.receive && p.transmit <= t4);
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        assert_eq!(answered.load(Ordering::Relaxed), 1);
    }
}
