//! The few rtnetlink requests the lab network needs (a bridge, links up, an
//! address, a tap on the bridge), one at a time on a blocking socket.
//!
//! Why these crates: `netlink-packet-route` (message types) and
//! `netlink-sys` (a plain socket) are the synchronous building blocks of
//! the `rtnetlink` crate, the ones the agent uses too; `rtnetlink` itself
//! would bring a tokio runtime into the CLI for five requests. A socket
//! acts in the namespace it was opened in: open it inside the lab's.

use std::net::Ipv4Addr;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// How long one request may wait for the kernel's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening an rtnetlink socket")]
    Open(#[source] std::io::Error),
    #[error("{what}: talking to the kernel")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: undecodable reply: {detail}")]
    Decode { what: String, detail: String },
    #[error("{what}: the kernel refused")]
    Kernel {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: no answer")]
    NoAnswer { what: String },
}

pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    pub fn open() -> Result<Netlink, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        socket.bind_auto().map_err(NetlinkError::Open)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Open)?;
        set_recv_timeout(&socket).map_err(NetlinkError::Open)?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends `msg` and returns the first reply message, or `None` when the
    /// kernel only ACKs.
    fn request(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Option<RouteNetlinkMessage>, NetlinkError> {
        let io = |source| NetlinkError::Io {
            what: what.into(),
            source,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(io)?;
        let mut rx: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            rx.clear();
            self.socket.recv(&mut rx, 0).map_err(io)?;
            let mut at = 0usize;
            while let Some(bytes) = rx.get(at..).filter(|b| !b.is_empty()) {
                let reply: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(bytes)
                    .map_err(|e| NetlinkError::Decode {
                        what: what.into(),
                        detail: e.to_string(),
                    })?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(None),
                                Some(code) => Err(NetlinkError::Kernel {
                                    what: what.into(),
                                    source: std::io::Error::from_raw_os_error(-code.get()),
                                }),
                            }
                        }
                        NetlinkPayload::InnerMessage(m) => return Ok(Some(m)),
                        NetlinkPayload::Done(_) => {
                            return Err(NetlinkError::NoAnswer { what: what.into() })
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                at = at.saturating_add(len);
            }
        }
    }

    /// The index of the link called `name`.
    pub fn index_of(&mut self, name: &str) -> Result<u32, NetlinkError> {
        let what = format!("find link {name}");
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        match self.request(&what, RouteNetlinkMessage::GetLink(msg), 0)? {
            Some(RouteNetlinkMessage::NewLink(l)) => Ok(l.header.index),
            _ => Err(NetlinkError::NoAnswer { what }),
        }
    }

    /// Creates a bridge called `name` (down; STP off, the kernel's
    /// default, so a port forwards as soon as it is up).
    pub fn add_bridge(&mut self, name: &str) -> Result<u32, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(
            &format!("create bridge {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        )?;
        self.index_of(name)
    }

    /// Sets the link up, and on `controller` (a bridge) when given.
    pub fn set_up(
        &mut self,
        index: u32,
        name: &str,
        controller: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(c) = controller {
            msg.attributes.push(LinkAttribute::Controller(c));
        }
        self.request(
            &format!("set {name} up"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(|_| ())
    }

    /// Adds `addr/prefix` to the link.
    pub fn add_address(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes
            .push(AddressAttribute::Local(std::net::IpAddr::V4(addr)));
        msg.attributes
            .push(AddressAttribute::Address(std::net::IpAddr::V4(addr)));
        self.request(
            &format!("add {addr}/{prefix} to link {index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        )
        .map(|_| ())
    }
}

/// A receive timeout on the netlink socket, so no request waits forever.
fn set_recv_timeout(socket: &Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: `tv` is a live timeval for the call's duration and its size
    // is passed with it; the fd is the socket's own.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
