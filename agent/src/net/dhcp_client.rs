//! The DHCPv4 client's sockets and clock: it sends through a UDP socket
//! bound to 0.0.0.0:68 on one interface (SO_BINDTODEVICE, SO_BROADCAST)
//! and receives through an `AF_PACKET` socket on the same interface.
//!
//! Why a packet socket for replies: before the lease the interface has no
//! address and no route, and the image's `rp_filter=1` makes the kernel
//! drop a reply from a source it has no route back to before any UDP
//! socket sees it. A packet socket sees the frame first (as dhclient's
//! and systemd-networkd's do). Every wait is bounded by a deadline.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use dhcproto::v4::{Message, SERVER_PORT};
use rustix::net::{AddressFamily, SocketType};

use super::dhcp::{self, Lease, Reply};

/// What the client failed at; each names the interface.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("{ifname}: {step}")]
    Socket {
        ifname: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{ifname}: {what}")]
    Protocol { ifname: String, what: String },
    #[error("{ifname}: no lease within {secs} s ({attempts} DISCOVERs{last})")]
    NoLease {
        ifname: String,
        secs: u64,
        attempts: u32,
        last: String,
    },
}

/// One interface's DHCP sockets.
pub struct Channel {
    pub ifname: String,
    pub mac: [u8; 6],
    udp: UdpSocket,
    packet: OwnedFd,
}

impl Channel {
    pub fn open(ifname: &str, ifindex: u32, mac: [u8; 6]) -> Result<Channel, DhcpError> {
        let err = |step: &'static str| {
            let ifname = ifname.to_string();
            move |e: rustix::io::Errno| DhcpError::Socket {
                ifname,
                step,
                source: e.into(),
            }
        };
        let udp = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)
            .map_err(err("UDP socket"))?;
        rustix::net::sockopt::set_socket_reuseaddr(&udp, true).map_err(err("SO_REUSEADDR"))?;
        rustix::net::sockopt::set_socket_broadcast(&udp, true).map_err(err("SO_BROADCAST"))?;
        bind_to_device(&udp, ifname).map_err(err("SO_BINDTODEVICE"))?;
        let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dhcproto::v4::CLIENT_PORT);
        rustix::net::bind(&udp, &any).map_err(err("bind 0.0.0.0:68"))?;
        // Replies arrive on the packet socket; keep this one's queue tiny.
        rustix::net::sockopt::set_socket_recv_buffer_size(&udp, 1024).map_err(err("SO_RCVBUF"))?;
        let packet = rustix::net::socket(
            AddressFamily::PACKET,
            SocketType::DGRAM,
            Some(rustix::net::eth::IP),
        )
        .map_err(err("AF_PACKET socket"))?;
        bind_packet(&packet, ifindex).map_err(err("bind AF_PACKET"))?;
        Ok(Channel {
            ifname: ifname.into(),
            mac,
            udp: UdpSocket::from(udp),
            packet,
        })
    }

    fn send(&self, m: Result<Message, String>, to: Ipv4Addr) -> Result<(), DhcpError> {
        let bytes = m
            .and_then(|m| dhcp::encode(&m))
            .map_err(|what| DhcpError::Protocol {
                ifname: self.ifname.clone(),
                what,
            })?;
        self.udp
            .send_to(&bytes, SocketAddrV4::new(to, SERVER_PORT))
            .map_err(|source| DhcpError::Socket {
                ifname: self.ifname.clone(),
                step: "send",
                source,
            })?;
        Ok(())
    }

    /// Replies for transaction `xid` until `until` or until `done` says
    /// enough, in arrival order.
    fn replies(
        &self,
        xid: u32,
        until: Instant,
        mut done: impl FnMut(&Reply) -> bool,
    ) -> Vec<Reply> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 2048];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            let timeout = left.max(Duration::from_millis(1));
            if rustix::net::sockopt::set_socket_timeout(
                &self.packet,
                rustix::net::sockopt::Timeout::Recv,
                Some(timeout),
            )
            .is_err()
            {
                return out;
            }
            let n = match rustix::net::recv(&self.packet, &mut buf, rustix::net::RecvFlags::empty())
            {
                Ok((n, _)) => n,
                // the timeout or a signal: the loop checks the clock
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    // e.g. ENETDOWN: do not spin until the deadline
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let Some(payload) = buf.get(..n).and_then(dhcp::dhcp_payload) else {
                continue;
            };
            if let Some(r) = dhcp::parse_reply(payload, xid, &self.mac) {
                let enough = done(&r);
                out.push(r);
                if enough {
                    return out;
                }
            }
        }
    }

    /// DISCOVER → OFFER → REQUEST → ACK until `deadline`, retransmitting
    /// with a doubling wait (1, 2, 4… s).
    pub fn acquire(&self, deadline: Instant) -> Result<Lease, DhcpError> {
        let start = Instant::now();
        let mut attempt = 0u32;
        let mut last = String::new();
        while Instant::now() < deadline {
            let wait_until = (Instant::now() + dhcp::backoff(attempt)).min(deadline);
            attempt = attempt.saturating_add(1);
            let xid = new_xid(&self.mac, attempt);
            self.send(dhcp::discover(xid, &self.mac), Ipv4Addr::BROADCAST)?;
            // The first offer ends the wait: servers answer at once or not
            // at all, and waiting for more only delays the boot.
            let offers: Vec<Lease> = self
                .replies(xid, wait_until, |r| matches!(r, Reply::Offer(_)))
                .into_iter()
                .filter_map(|r| match r {
                    Reply::Offer(l) => Some(l),
                    _ => None,
                })
                .collect();
            let Some(offer) = dhcp::pick_offer(&offers) else {
                last = ", no OFFER".into();
                continue;
            };
            self.send(
                dhcp::request_offer(xid, &self.mac, offer),
                Ipv4Addr::BROADCAST,
            )?;
            let until = (Instant::now() + dhcp::backoff(attempt)).min(deadline);
            let answer = self.replies(xid, until, |r| {
                matches!(r, Reply::Ack(_) | Reply::Nak { .. })
            });
            match answer
                .into_iter()
                .rev()
                .find(|r| !matches!(r, Reply::Offer(_)))
            {
                Some(Reply::Ack(lease)) => return Ok(lease),
                Some(_) => last = format!(", {} refused the REQUEST (NAK)", offer.server),
                None => last = format!(", no ACK from {}", offer.server),
            }
        }
        Err(DhcpError::NoLease {
            ifname: self.ifname.clone(),
            secs: deadline.saturating_duration_since(start).as_secs(),
            attempts: attempt,
            last,
        })
    }

    /// One renewal: REQUEST with `ciaddr` to the server (RENEWING) or to
    /// everyone (REBINDING), answered by `until`. `Ok(None)`: no answer.
    pub fn renew(
        &self,
        lease: &Lease,
        rebinding: bool,
        until: Instant,
    ) -> Result<Option<Reply>, DhcpError> {
        let xid = new_xid(&self.mac, 0);
        let to = if rebinding {
            Ipv4Addr::BROADCAST
        } else {
            lease.server
        };
        self.send(dhcp::request_renew(xid, &self.mac, lease), to)?;
        let replies = self.replies(xid, until, |r| !matches!(r, Reply::Offer(_)));
        Ok(replies.into_iter().find(|r| !matches!(r, Reply::Offer(_))))
    }
}

/// A transaction id that differs per client and per attempt: the boot
/// clock's nanoseconds mixed with the MAC (dhcproto would draw one from
/// the RNG, which may still be filling this early in a boot).
fn new_xid(mac: &[u8; 6], attempt: u32) -> u32 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    xid_from(now.tv_sec as u64, now.tv_nsec as u32, mac, attempt)
}

fn xid_from(secs: u64, nanos: u32, mac: &[u8; 6], attempt: u32) -> u32 {
    let mut x = nanos ^ (secs as u32).rotate_left(20) ^ attempt.rotate_left(12);
    for (i, b) in mac.iter().enumerate() {
        x ^= u32::from(*b) << ((i % 4) * 8);
    }
    x
}

/// SO_BINDTODEVICE: rustix has no wrapper for it.
fn bind_to_device(sock: &impl AsFd, ifname: &str) -> Result<(), rustix::io::Errno> {
    let name = ifname.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(rustix::io::Errno::NAMETOOLONG);
    }
    // SAFETY: setsockopt reads exactly `name.len()` bytes from the pointer,
    // which points into `name`, alive for the call; the fd is open (borrowed).
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(
            rustix::io::Errno::from_io_error(&std::io::Error::last_os_error())
                .unwrap_or(rustix::io::Errno::INVAL),
        )
    }
}

/// Binds a packet socket to one interface, so it sees that link's IPv4
/// packets only.
fn bind_packet(sock: &impl AsFd, ifindex: u32) -> Result<(), rustix::io::Errno> {
    let index = i32::try_from(ifindex).map_err(|_| rustix::io::Errno::INVAL)?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    sll.sll_ifindex = index;
    // SAFETY: the pointer and length describe `sll`, a sockaddr_ll alive
    // for the call; bind(2) only reads it. The fd is open (borrowed).
    let rc = unsafe {
        libc::bind(
            sock.as_fd().as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(
            rustix::io::Errno::from_io_error(&std::io::Error::last_os_error())
                .unwrap_or(rustix::io::Errno::INVAL),
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn xids_differ_per_attempt_and_per_client() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let other = [0x52, 0x54, 0, 0x12, 0x34, 0x57];
        let x = super::xid_from(3, 500, &mac, 1);
        assert_ne!(x, super::xid_from(3, 500, &mac, 2));
        assert_ne!(x, super::xid_from(3, 500, &other, 1));
    }
}
