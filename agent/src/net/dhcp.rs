//! DHCPv4 (RFC 2131) without sockets: the messages a client sends, the
//! replies it accepts, the lease it keeps and the times it acts at. The
//! wire format is `dhcproto`'s; the choices are ours. `dhcp_client.rs`
//! moves these messages over the network.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, CLIENT_PORT};
use dhcproto::{Decodable, Encodable};

/// A lease of "infinity" (RFC 2131 §3.3): never renewed.
pub const INFINITE: u32 = u32::MAX;
/// First retransmission delay; it doubles per attempt (RFC 2131 §4.1).
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// No wait between retransmissions is longer than this.
const MAX_RETRY: Duration = Duration::from_secs(16);
/// The largest message we take (an ethernet MTU's worth).
const MAX_MESSAGE: u16 = 1500;

/// What a server offered or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// The server's identifier (option 54): where renewals go.
    pub server: Ipv4Addr,
    /// Routers in order of preference (option 3); the first is the gateway.
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// NTP servers (option 42), in order of preference.
    pub ntp: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub domain: Option<String>,
    /// Lease time in seconds ([`INFINITE`] for ever).
    pub lease_secs: u32,
    /// T1: when to renew with the server, seconds after the lease began.
    pub renew_secs: u32,
    /// T2: when to ask any server, seconds after the lease began.
    pub rebind_secs: u32,
}

impl Lease {
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.routers.first().copied()
    }
}

/// A server's reply to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Lease),
    Ack(Lease),
    Nak { server: Option<Ipv4Addr> },
}

/// The options every request asks for.
fn parameter_list() -> DhcpOption {
    DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::Hostname,
        OptionCode::DomainName,
        OptionCode::NtpServers,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ])
}

/// An empty BOOTREQUEST from `mac` with transaction `xid`. Built by
/// decoding a fixed header, not with `Message::default()` or `new_with_id`:
/// both draw an unused random xid from the kernel's RNG (`getrandom`),
/// which blocks PID 1 until the CRNG is seeded; under TCG early in a boot
/// that took minutes.
fn blank(xid: u32, mac: &[u8; 6]) -> Result<Message, String> {
    let mut b = Vec::with_capacity(241);
    b.extend_from_slice(&[1, 1, 6, 0]); // BOOTREQUEST, ethernet, hlen 6, hops
    b.extend_from_slice(&xid.to_be_bytes());
    b.extend_from_slice(&[0; 4]); // secs, flags
    b.extend_from_slice(&[0; 16]); // ciaddr, yiaddr, siaddr, giaddr
    b.extend_from_slice(mac);
    b.extend_from_slice(&[0; 10 + 64 + 128]); // chaddr padding, sname, file
    b.extend_from_slice(&dhcproto::v4::MAGIC);
    b.push(255); // end of options
    Message::from_bytes(&b).map_err(|e| format!("build a DHCP message: {e}"))
}

fn base(xid: u32, mac: &[u8; 6], kind: MessageType) -> Result<Message, String> {
    let mut m = blank(xid, mac)?;
    let mut client_id = vec![1u8]; // hardware type 1: ethernet
    client_id.extend_from_slice(mac);
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::MaxMessageSize(MAX_MESSAGE));
    opts.insert(parameter_list());
    Ok(m)
}

/// DHCPDISCOVER, broadcast. The BROADCAST flag asks servers to broadcast
/// their replies: the interface has no address for a unicast to reach.
pub fn discover(xid: u32, mac: &[u8; 6]) -> Result<Message, String> {
    let mut m = base(xid, mac, MessageType::Discover)?;
    m.set_flags(Flags::default().set_broadcast());
    Ok(m)
}

/// DHCPREQUEST in SELECTING state: takes `offer` from its server (and,
/// being broadcast, tells the other servers their offers were declined).
pub fn request_offer(xid: u32, mac: &[u8; 6], offer: &Lease) -> Result<Message, String> {
    let mut m = base(xid, mac, MessageType::Request)?;
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.address));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(offer.server));
    Ok(m)
}

/// DHCPREQUEST in RENEWING (unicast to the server) or REBINDING
/// (broadcast) state: `ciaddr` carries the address, and no server id or
/// requested address may be sent (RFC 2131 §4.3.2).
pub fn request_renew(xid: u32, mac: &[u8; 6], lease: &Lease) -> Result<Message, String> {
    let mut m = base(xid, mac, MessageType::Request)?;
    m.set_ciaddr(lease.address);
    Ok(m)
}

/// Bytes to send.
pub fn encode(m: &Message) -> Result<Vec<u8>, String> {
    m.to_vec().map_err(|e| format!("encode DHCP message: {e}"))
}

/// A reply for us: a BOOTREPLY with our transaction id and hardware address,
/// and the fields a lease needs. Anything else is `None` (another client's,
/// a stray, or broken).
pub fn parse_reply(bytes: &[u8], xid: u32, mac: &[u8; 6]) -> Option<Reply> {
    // Any host on the link can send this. dhcproto asserts option lengths
    // it should check (debug builds panic on them, found by the property
    // test below): a datagram must never take a thread of PID 1 down, so a
    // panic while decoding is a packet ignored.
    let m = std::panic::catch_unwind(|| Message::from_bytes(bytes))
        .ok()?
        .ok()?;
    // hlen first: dhcproto's `chaddr()` slices its 16-byte field by the
    // packet's hlen and panics past 16, and any host on the link can
    // send that (found by the property test below)
    if m.opcode() != Opcode::BootReply
        || m.xid() != xid
        || usize::from(m.hlen()) != mac.len()
        || m.chaddr() != mac.as_slice()
    {
        return None;
    }
    let server = match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
        _ => None,
    };
    match m.opts().msg_type()? {
        MessageType::Offer => lease_from(&m, server?).map(Reply::Offer),
        MessageType::Ack => lease_from(&m, server?).map(Reply::Ack),
        MessageType::Nak => Some(Reply::Nak { server }),
        _ => None,
    }
}

fn lease_from(m: &Message, server: Ipv4Addr) -> Option<Lease> {
    let address = m.yiaddr();
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return None;
    }
    let mut lease = Lease {
        address,
        prefix: default_prefix(address),
        server,
        routers: Vec::new(),
        dns: Vec::new(),
        ntp: Vec::new(),
        hostname: None,
        domain: None,
        lease_secs: 0,
        renew_secs: 0,
        rebind_secs: 0,
    };
    let (mut t1, mut t2) = (None, None);
    for (_, opt) in m.opts().iter() {
        match opt {
            DhcpOption::SubnetMask(mask) => lease.prefix = prefix_of(*mask)?,
            DhcpOption::Router(r) => lease.routers = r.clone(),
            DhcpOption::DomainNameServer(d) => lease.dns = d.clone(),
            DhcpOption::NtpServers(n) => lease.ntp = n.clone(),
            DhcpOption::Hostname(h) if valid_hostname(h) => lease.hostname = Some(h.clone()),
            DhcpOption::DomainName(d) if valid_hostname(d) => lease.domain = Some(d.clone()),
            DhcpOption::AddressLeaseTime(t) => lease.lease_secs = *t,
            DhcpOption::Renewal(t) => t1 = Some(*t),
            DhcpOption::Rebinding(t) => t2 = Some(*t),
            _ => {}
        }
    }
    // An ACK must carry a lease time (RFC 2131 table 3); an OFFER without
    // one is useless to us as well.
    if lease.lease_secs == 0 {
        return None;
    }
    (lease.renew_secs, lease.rebind_secs) = timers(lease.lease_secs, t1, t2);
    Some(lease)
}

/// T1 and T2 (RFC 2131 §4.4.5): the server's when sane (T1 ≤ T2 ≤ lease),
/// else 0.5 and 0.875 of the lease.
pub fn timers(lease: u32, t1: Option<u32>, t2: Option<u32>) -> (u32, u32) {
    if lease == INFINITE {
        return (INFINITE, INFINITE);
    }
    let frac = |num: u64, den: u64| (u64::from(lease) * num / den) as u32;
    let t2 = t2.filter(|t| *t <= lease).unwrap_or(frac(7, 8));
    let t1 = t1.filter(|t| *t <= t2).unwrap_or(frac(1, 2).min(t2));
    (t1, t2)
}

/// A netmask's prefix length, `None` if its ones are not contiguous.
pub fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// The classful prefix, for a server that sends no subnet mask.
fn default_prefix(a: Ipv4Addr) -> u8 {
    match a.octets().first().copied().unwrap_or(0) {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// A host or domain name we would write into /etc/hosts or resolv.conf:
/// letters, digits, hyphens and dots, no empty label.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The offer to take: the first with a usable router, else the first.
/// (Servers answer in the order they are; preferring one that gives a
/// gateway avoids a lease the node cannot leave its subnet with.)
pub fn pick_offer(offers: &[Lease]) -> Option<&Lease> {
    offers
        .iter()
        .find(|o| o.gateway().is_some())
        .or_else(|| offers.first())
}

/// How long to wait for replies after attempt `n` (0-based): 1, 2, 4, 8,
/// 16, 16… seconds.
pub fn backoff(attempt: u32) -> Duration {
    FIRST_RETRY
        .checked_mul(1u32.checked_shl(attempt.min(8)).unwrap_or(1))
        .unwrap_or(MAX_RETRY)
        .min(MAX_RETRY)
}

/// The UDP payload of an IPv4 packet (as an `AF_PACKET` `SOCK_DGRAM`
/// socket hands it over) when it is unfragmented UDP to the DHCP client
/// port; `None` for everything else.
pub fn dhcp_payload(ip: &[u8]) -> Option<&[u8]> {
    let first = *ip.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
    // a set MF bit or a fragment offset: we do not reassemble
    if *ip.get(9)? != 17 || frag & 0x3fff != 0 || ihl < 20 || total > ip.len() {
        return None;
    }
    let udp = ip.get(ihl..total)?;
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let ulen = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    if dport != CLIENT_PORT || ulen < 8 {
        return None;
    }
    udp.get(8..ulen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn lease() -> Lease {
        Lease {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            server: Ipv4Addr::new(10, 0, 2, 2),
            routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            ntp: vec![],
            hostname: None,
            domain: None,
            lease_secs: 86400,
            renew_secs: 43200,
            rebind_secs: 75600,
        }
    }

    /// A server's reply as QEMU's slirp would send it.
    fn reply(kind: MessageType, xid: u32, extra: &[DhcpOption]) -> Vec<u8> {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_xid(xid)
            .set_chaddr(&MAC)
            .set_yiaddr(Ipv4Addr::new(10, 0, 2, 15));
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        for e in extra {
            o.insert(e.clone());
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn discover_is_broadcast_and_asks_for_what_a_lease_needs() {
        let bytes = encode(&discover(7, &MAC).unwrap()).unwrap();
        let m = Message::from_bytes(&bytes).unwrap();
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), 7);
        assert_eq!(m.chaddr(), &MAC);
        assert!(m.flags().broadcast());
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert!(m.ciaddr().is_unspecified());
        let Some(DhcpOption::ParameterRequestList(list)) =
            m.opts().get(OptionCode::ParameterRequestList)
        else {
            panic!("no parameter list")
        };
        for c in [
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::Hostname,
            OptionCode::NtpServers,
        ] {
            assert!(list.contains(&c), "{c:?}");
        }
        assert_eq!(
            m.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 0x52, 0x54, 0, 0x12, 0x34, 0x56
            ]))
        );
    }

    #[test]
    fn a_blank_request_is_a_clean_bootrequest() {
        let m = blank(0x01020304, &MAC).unwrap();
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.htype(), dhcproto::v4::HType::Eth);
        assert_eq!(m.xid(), 0x01020304);
        assert_eq!(m.chaddr(), &MAC);
        assert!(m.opts().is_empty() && m.sname().is_none() && m.fname().is_none());
        assert!(m.ciaddr().is_unspecified() && !m.flags().broadcast());
        // what we build encodes to the minimum BOOTP size or more
        assert!(encode(&m).unwrap().len() >= 240);
    }

    #[test]
    fn selecting_request_names_the_server_and_the_address() {
        let m = request_offer(9, &MAC, &lease()).unwrap();
        assert!(m.flags().broadcast());
        assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 2, 15)))
        );
        assert_eq!(
            m.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)))
        );
        assert!(m.ciaddr().is_unspecified());
    }

    #[test]
    fn renewing_request_uses_ciaddr_and_no_server_id() {
        let m = request_renew(9, &MAC, &lease()).unwrap();
        assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 0, 2, 15));
        assert!(!m.flags().broadcast());
        assert!(!m.opts().contains(OptionCode::ServerIdentifier));
        assert!(!m.opts().contains(OptionCode::RequestedIpAddress));
    }

    #[test]
    fn an_offer_parses_into_a_lease() {
        let bytes = reply(
            MessageType::Offer,
            5,
            &[
                DhcpOption::Hostname("node-1".into()),
                DhcpOption::DomainName("lab.example".into()),
                DhcpOption::NtpServers(vec![
                    Ipv4Addr::new(10, 0, 2, 4),
                    Ipv4Addr::new(10, 0, 2, 5),
                ]),
            ],
        );
        let Some(Reply::Offer(l)) = parse_reply(&bytes, 5, &MAC) else {
            panic!("not an offer")
        };
        assert_eq!(
            l,
            Lease {
                hostname: Some("node-1".into()),
                domain: Some("lab.example".into()),
                ntp: vec![Ipv4Addr::new(10, 0, 2, 4), Ipv4Addr::new(10, 0, 2, 5)],
                ..lease()
            }
        );
        assert_eq!(l.gateway(), Some(Ipv4Addr::new(10, 0, 2, 2)));
    }

    #[test]
    fn replies_for_others_or_broken_ones_are_ignored() {
        let bytes = reply(MessageType::Ack, 5, &[]);
        assert!(matches!(parse_reply(&bytes, 5, &MAC), Some(Reply::Ack(_))));
        assert_eq!(parse_reply(&bytes, 6, &MAC), None, "another transaction");
        assert_eq!(
            parse_reply(&bytes, 5, &[1, 2, 3, 4, 5, 6]),
            None,
            "another client"
        );
        assert_eq!(parse_reply(&bytes[..100], 5, &MAC), None, "truncated");
        let no_lease_time = {
            let mut m = Message::from_bytes(&bytes).unwrap();
            m.opts_mut().remove(OptionCode::AddressLeaseTime);
            m.to_vec().unwrap()
        };
        assert_eq!(parse_reply(&no_lease_time, 5, &MAC), None);
        let bad_mask = reply(
            MessageType::Ack,
            5,
            &[DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0))],
        );
        assert_eq!(parse_reply(&bad_mask, 5, &MAC), None);
        let bad_name = reply(MessageType::Ack, 5, &[DhcpOption::Hostname("a b\n".into())]);
        let Some(Reply::Ack(l)) = parse_reply(&bad_name, 5, &MAC) else {
            panic!()
        };
        assert_eq!(l.hostname, None, "a name unfit for /etc/hosts is dropped");
    }

    #[test]
    fn a_nak_is_a_nak() {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply).set_xid(5).set_chaddr(&MAC);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Nak));
        assert_eq!(
            parse_reply(&m.to_vec().unwrap(), 5, &MAC),
            Some(Reply::Nak { server: None })
        );
    }

    #[test]
    fn lease_arithmetic() {
        assert_eq!(timers(3600, None, None), (1800, 3150));
        assert_eq!(timers(3600, Some(600), Some(1200)), (600, 1200));
        // T2 past the lease: the default T2; a T1 below it stays
        assert_eq!(timers(3600, Some(3000), Some(4000)), (3000, 3150));
        // T1 past T2: the default T1
        assert_eq!(timers(3600, Some(3200), None), (1800, 3150));
        assert_eq!(timers(INFINITE, Some(5), None), (INFINITE, INFINITE));
        assert_eq!(timers(1, None, None), (0, 0));
    }

    #[test]
    fn masks_and_prefixes() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 128, 0)), Some(17));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(default_prefix(Ipv4Addr::new(10, 0, 0, 1)), 8);
        assert_eq!(default_prefix(Ipv4Addr::new(172, 16, 0, 1)), 16);
        assert_eq!(default_prefix(Ipv4Addr::new(192, 168, 0, 1)), 24);
    }

    #[test]
    fn picking_an_offer_prefers_one_with_a_gateway() {
        let no_gw = Lease {
            routers: vec![],
            address: Ipv4Addr::new(10, 0, 2, 99),
            ..lease()
        };
        let offers = [no_gw.clone(), lease()];
        assert_eq!(pick_offer(&offers), Some(&lease()));
        assert_eq!(pick_offer(std::slice::from_ref(&no_gw)), Some(&no_gw));
        assert_eq!(pick_offer(&[]), None);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let secs: Vec<u64> = (0..7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 16, 16]);
        assert_eq!(backoff(u32::MAX).as_secs(), 16);
    }

    fn ip_udp(dport: u16, payload: &[u8], frag: u16) -> Vec<u8> {
        let total = (20 + 8 + payload.len()) as u16;
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 2, 2, 255, 255, 255, 255,
        ];
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&67u16.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn dhcp_payload_takes_only_unfragmented_udp_to_port_68() {
        let p = ip_udp(68, b"hello", 0);
        assert_eq!(dhcp_payload(&p), Some(&b"hello"[..]));
        // ethernet padding after the IP packet is not payload
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(dhcp_payload(&padded), Some(&b"hello"[..]));
        assert_eq!(dhcp_payload(&ip_udp(67, b"hello", 0)), None);
        assert_eq!(dhcp_payload(&ip_udp(68, b"hello", 0x2000)), None, "MF");
        assert_eq!(dhcp_payload(&p[..25]), None, "truncated");
        let mut tcp = p.clone();
        tcp[9] = 6;
        assert_eq!(dhcp_payload(&tcp), None);
        assert_eq!(dhcp_payload(&[]), None);
    }

    // Property tests, bounded: a datagram off the wire is read without
    // panicking whatever its bytes, the IPv4/UDP unwrapping takes back
    // exactly what was wrapped, and a reply is a lease only for our own
    // transaction and hardware address.
    mod props {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 1024,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_packet_is_read_without_panicking(
                bytes in proptest::collection::vec(any::<u8>(), 0..700),
                xid in any::<u32>(),
            ) {
                let _ = dhcp_payload(&bytes);
                let _ = parse_reply(&bytes, xid, &MAC);
            }

            #[test]
            fn a_mutated_reply_never_panics_and_stays_ours(
                at in 0usize..400,
                byte in any::<u8>(),
            ) {
                let mut bytes = reply(MessageType::Ack, 5, &[]);
                if let Some(b) = bytes.get_mut(at) {
                    *b = byte;
                }
                // a lease comes only from a reply that still names our
                // transaction and address
                if parse_reply(&bytes, 5, &MAC).is_some() {
                    let m = Message::from_bytes(&bytes).unwrap();
                    prop_assert_eq!(m.xid(), 5);
                    prop_assert_eq!(usize::from(m.hlen()), MAC.len());
                    prop_assert_eq!(m.chaddr(), MAC.as_slice());
                }
            }

            #[test]
            fn udp_to_port_68_unwraps_to_its_payload(
                payload in proptest::collection::vec(any::<u8>(), 0..600),
                dport in any::<u16>(),
            ) {
                let packet = ip_udp(dport, &payload, 0);
                let got = dhcp_payload(&packet);
                if dport == CLIENT_PORT {
                    prop_assert_eq!(got, Some(payload.as_slice()));
                } else {
                    prop_assert_eq!(got, None);
                }
                // a fragment is never taken, whatever its port
                let fragment = ip_udp(dport, &payload, 0x2000);
                prop_assert_eq!(dhcp_payload(&fragment), None);
            }
        }
    }
}
