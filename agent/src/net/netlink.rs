//! Links, addresses and routes over rtnetlink (`NETLINK_ROUTE`), one
//! request at a time on a blocking socket.
//!
//! Why these crates: `netlink-packet-route` (message types) and
//! `netlink-sys` (a plain socket) are the synchronous building blocks of the
//! `rtnetlink` crate, kept by the same maintainers, without its tokio
//! runtime, which PID 1 has no use for. Each request waits for the kernel's
//! ACK (or its errno) and a receive timeout bounds every wait.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// How long one request may wait for the kernel's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// `RT_TABLE_MAIN`.
const MAIN_TABLE: u8 = 254;

/// What a netlink request failed at.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("open the rtnetlink socket")]
    Open(#[source] std::io::Error),
    #[error("{what}: send")]
    Send {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: receive")]
    Receive {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: undecodable reply: {detail}")]
    Decode { what: String, detail: String },
    #[error("{what}: the kernel said")]
    Kernel {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// One network link as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The hardware address (six bytes on ethernet).
    pub mac: Option<[u8; 6]>,
    /// An ethernet link with no `IFLA_LINKINFO` kind: a NIC, not a bridge,
    /// veth or tunnel someone created.
    pub ethernet: bool,
    pub up: bool,
}

/// An open rtnetlink socket.
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
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(REPLY_TIMEOUT),
        )
        .map_err(|e| NetlinkError::Open(e.into()))?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends `msg` and collects the replies: a dump's messages up to
    /// `NLMSG_DONE`, or nothing for a request the kernel ACKs.
    fn request(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        // serialize() needs a buffer of exactly buffer_len() bytes
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|source| NetlinkError::Send {
                what: what.into(),
                source,
            })?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut rx: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            rx.clear();
            self.socket
                .recv(&mut rx, 0)
                .map_err(|source| NetlinkError::Receive {
                    what: what.into(),
                    source,
                })?;
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
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => match e.code {
                            None => return Ok(out),
                            Some(code) => {
                                return Err(NetlinkError::Kernel {
                                    what: what.into(),
                                    source: std::io::Error::from_raw_os_error(-code.get()),
                                })
                            }
                        },
                        NetlinkPayload::InnerMessage(m) => out.push(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                at = at.saturating_add(len);
            }
            if !dump && !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Every link, in the kernel's (index) order.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let msgs = self.request(
            "list links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from(&l)),
                _ => None,
            })
            .collect())
    }

    /// Sets `IFF_UP` on the link with `index`.
    pub fn set_up(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(
            &format!("set {name} up"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(|_| ())
    }

    /// Adds `addr/prefix` to the link (replacing the same address, so a
    /// renewed lease re-adds it without an error).
    pub fn add_address(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let msg = address_message(index, addr, prefix);
        self.request(
            &format!("add {addr}/{prefix} to link {index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(|_| ())
    }

    /// Removes `addr/prefix` from the link (its routes go with it).
    pub fn del_address(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let msg = address_message(index, addr, prefix);
        self.request(
            &format!("remove {addr}/{prefix} from link {index}"),
            RouteNetlinkMessage::DelAddress(msg),
            NLM_F_ACK,
        )
        .map(|_| ())
    }

    /// The IPv4 default route through `gateway` on the link, replacing
    /// any other default route.
    pub fn replace_default_route(
        &mut self,
        index: u32,
        gateway: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        self.route(None, gateway, Some(index), RouteProtocol::Boot)
    }

    /// A route to `dst/prefix` through `gateway` (the link found by the
    /// kernel), replacing one to the same destination: host-gw routing to
    /// another node's pods.
    pub fn replace_route(
        &mut self,
        dst: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        self.route(Some((dst, prefix)), gateway, None, RouteProtocol::Static)
    }

    /// Adds or replaces the main table's route to `dst` (the default route
    /// when `None`) through `gateway`, on link `oif` when given.
    fn route(
        &mut self,
        dst: Option<(Ipv4Addr, u8)>,
        gateway: Ipv4Addr,
        oif: Option<u32>,
        protocol: RouteProtocol,
    ) -> Result<(), NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = dst.map_or(0, |(_, p)| p);
        msg.header.table = MAIN_TABLE;
        msg.header.protocol = protocol;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        if let Some((d, _)) = dst {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(d)));
        }
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        if let Some(i) = oif {
            msg.attributes.push(RouteAttribute::Oif(i));
        }
        let what = match dst {
            None => format!("default route via {gateway}"),
            Some((d, p)) => format!("route to {d}/{p} via {gateway}"),
        };
        let what = match oif {
            Some(i) => format!("{what} on link {i}"),
            None => what,
        };
        self.request(
            &what,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(|_| ())
    }
}

fn address_message(index: u32, addr: Ipv4Addr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(addr)),
        AddressAttribute::Address(IpAddr::V4(addr)),
    ];
    if let Some(bcast) = broadcast(addr, prefix) {
        msg.attributes.push(AddressAttribute::Broadcast(bcast));
    }
    msg
}

/// The subnet's broadcast address (none for /31 and /32).
pub fn broadcast(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Addr> {
    if prefix >= 31 {
        return None;
    }
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    Some(Ipv4Addr::from(u32::from(addr) | host_bits))
}

fn link_from(l: &LinkMessage) -> Link {
    let mut name = String::new();
    let mut mac = None;
    let mut has_kind = false;
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Address(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok();
            }
            LinkAttribute::LinkInfo(_) => has_kind = true,
            _ => {}
        }
    }
    Link {
        index: l.header.index,
        name,
        mac,
        ethernet: l.header.link_layer_type == LinkLayerType::Ether
            && !l.header.flags.contains(LinkFlags::Loopback)
            && !has_kind,
        up: l.header.flags.contains(LinkFlags::Up),
    }
}

/// `52:54:00:12:34:56`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `52:54:00:12:34:56` (either case): for plans chosen by MAC.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for slot in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *slot = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_of_a_slash_24() {
        let a = Ipv4Addr::new(10, 0, 2, 15);
        assert_eq!(broadcast(a, 24), Some(Ipv4Addr::new(10, 0, 2, 255)));
        assert_eq!(broadcast(a, 0), Some(Ipv4Addr::BROADCAST));
        assert_eq!(broadcast(a, 31), None);
        assert_eq!(broadcast(a, 32), None);
    }

    #[test]
    fn macs_round_trip() {
        let m = parse_mac("52:54:00:12:34:5A").unwrap();
        assert_eq!(mac_string(&m), "52:54:00:12:34:5a");
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("52:54:00:12:34:5"), None);
    }

    #[test]
    fn an_address_message_carries_local_address_and_broadcast() {
        let m = address_message(2, Ipv4Addr::new(10, 0, 2, 15), 24);
        assert_eq!(m.header.prefix_len, 24);
        assert_eq!(m.header.index, 2);
        assert!(m
            .attributes
            .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 0, 2, 255))));
        assert!(m
            .attributes
            .contains(&AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(
                10, 0, 2, 15
            )))));
    }

    #[test]
    fn a_nic_is_ethernet_a_bridge_or_loopback_is_not() {
        let mut nic = LinkMessage::default();
        nic.header.index = 2;
        nic.header.link_layer_type = LinkLayerType::Ether;
        nic.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Address(vec![0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        ];
        let l = link_from(&nic);
        assert!(l.ethernet && !l.up);
        assert_eq!(l.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        let mut lo = LinkMessage::default();
        lo.header.link_layer_type = LinkLayerType::Loopback;
        lo.header.flags = LinkFlags::Loopback | LinkFlags::Up;
        let l = link_from(&lo);
        assert!(!l.ethernet && l.up);
    }
}
