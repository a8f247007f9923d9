//! NTP on the wire: the 48-byte header of RFC 5905 §7.3 (no extension
//! fields, no MAC) and the on-wire arithmetic of §8, as pure functions the
//! lab's time server and the agent's SNTP client share. No socket and no
//! clock here: callers pass the timestamps they read.
//!
//! Why written here and not taken from a crate: both ends of the lab's
//! time service need it (the lab answers in server mode, the agent asks in
//! client mode), the two programs share only this crate, and the client
//! crates (`sntpc` and kin) encode requests only and own the socket I/O.
//! The header is 48 fixed bytes; the checks a client must make are
//! RFC 4330 §5's.

/// The NTP service's UDP port.
pub const PORT: u16 = 123;
/// Bytes in a header without extension fields.
pub const PACKET_LEN: usize = 48;
/// Seconds from 1900-01-01 (the start of NTP era 0) to the Unix epoch.
pub const UNIX_OFFSET: u64 = 2_208_988_800;
/// The version this side speaks.
pub const VERSION: u8 = 4;
/// Mode 3: a client's request.
pub const MODE_CLIENT: u8 = 3;
/// Mode 4: a server's reply.
pub const MODE_SERVER: u8 = 4;
/// Leap indicator 3: the server's clock is not synchronised.
pub const LEAP_UNSYNCHRONISED: u8 = 3;
/// Stratum 16 and above: unsynchronised (§7.3).
pub const MAX_STRATUM: u8 = 16;

/// An NTP timestamp: seconds since the start of its era in the high 32
/// bits, the fraction of a second in the low 32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

const NANOS: i128 = 1_000_000_000;

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    /// The timestamp of a Unix time (`secs` may be negative, `nanos` below
    /// 10⁹); times past 2036 wrap into era 1, as on the wire.
    pub fn from_unix(secs: i64, nanos: u32) -> Timestamp {
        let era_secs = (i128::from(secs) + i128::from(UNIX_OFFSET)).rem_euclid(1 << 32) as u64;
        // round to the nearest 2^-32 s so a round trip gives the same nanos
        let frac = ((u128::from(nanos.min(999_999_999)) << 32) + 500_000_000) / 1_000_000_000;
        Timestamp((era_secs << 32) | (frac.min(u128::from(u32::MAX)) as u64))
    }

    /// The Unix time (seconds, nanoseconds) this timestamp stands for,
    /// with RFC 4330 §3's era rule: a set high bit is 1968–2036 (era 0),
    /// a clear one 2036–2104 (era 1).
    pub fn to_unix(self) -> (i64, u32) {
        let secs = self.0 >> 32;
        let era: i64 = if secs & 0x8000_0000 != 0 { 0 } else { 1 };
        let unix = secs as i64 + (era << 32) - UNIX_OFFSET as i64;
        let nanos = ((u128::from(self.0 & 0xffff_ffff) * 1_000_000_000 + (1 << 31)) >> 32) as u32;
        // the fraction rounds up to a whole second only for 2^32-1
        if nanos >= 1_000_000_000 {
            (unix + 1, 0)
        } else {
            (unix, nanos)
        }
    }

    /// `self - earlier` in nanoseconds, modulo an era: right whenever the
    /// two are less than 68 years apart (§6), whatever era each is in.
    pub fn since(self, earlier: Timestamp) -> i64 {
        let d = self.0.wrapping_sub(earlier.0) as i64;
        // to the nearest nanosecond (a 2^-32 s unit is 0.23 ns)
        ((i128::from(d) * NANOS + (1 << 31)) >> 32) as i64
    }
}

/// The 48-byte header, field by field (§7.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Packet {
    /// Leap indicator (2 bits): 0 none, 1/2 a leap second today, 3 unsynchronised.
    pub leap: u8,
    /// Version number (3 bits).
    pub version: u8,
    /// Association mode (3 bits): [`MODE_CLIENT`], [`MODE_SERVER`], …
    pub mode: u8,
    /// 1 primary, 2–15 secondary, 0 kiss-o'-death, 16 unsynchronised.
    pub stratum: u8,
    /// log2 of the poll interval in seconds.
    pub poll: i8,
    /// log2 of the clock's precision in seconds.
    pub precision: i8,
    /// Round-trip delay to the reference clock: NTP short format (16.16 s).
    pub root_delay: u32,
    /// Dispersion to the reference clock: NTP short format (16.16 s).
    pub root_dispersion: u32,
    /// Stratum 1: four ASCII letters naming the source; 2+: the upstream
    /// server's IPv4 address; stratum 0: the kiss code.
    pub reference_id: [u8; 4],
    /// When the server's clock was last set or corrected.
    pub reference: Timestamp,
    /// T1: the client's transmit time, echoed by the server.
    pub origin: Timestamp,
    /// T2: when the server received the request.
    pub receive: Timestamp,
    /// T3: when the server sent the reply (a client's own send time in a request).
    pub transmit: Timestamp,
}

/// Why bytes are not a usable NTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NtpError {
    #[error("{len} bytes are not an NTP header (at least {PACKET_LEN})")]
    Short { len: usize },
    #[error("mode {mode} is not a server's reply")]
    NotServer { mode: u8 },
    #[error("NTP version {version} is not spoken here")]
    Version { version: u8 },
    #[error("the reply's origin timestamp is not our request's transmit time")]
    Bogus,
    #[error("the server sent a kiss-o'-death ({code})")]
    KissOfDeath { code: String },
    #[error("the server says its clock is not synchronised (leap {leap}, stratum {stratum})")]
    Unsynchronised { leap: u8, stratum: u8 },
    #[error("the reply carries no transmit timestamp")]
    NoTransmit,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_be_bytes(w)
}

fn ts_at(b: &[u8], at: usize) -> Timestamp {
    Timestamp((u64::from(u32_at(b, at)) << 32) | u64::from(u32_at(b, at + 4)))
}

impl Packet {
    /// The header on the wire.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        let mut put = |at: usize, bytes: &[u8]| {
            if let Some(dst) = b.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        };
        put(
            0,
            &[
                (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7),
                self.stratum,
                self.poll as u8,
                self.precision as u8,
            ],
        );
        put(4, &self.root_delay.to_be_bytes());
        put(8, &self.root_dispersion.to_be_bytes());
        put(12, &self.reference_id);
        for (at, t) in [
            (16, self.reference),
            (24, self.origin),
            (32, self.receive),
            (40, self.transmit),
        ] {
            put(at, &t.0.to_be_bytes());
        }
        b
    }

    /// Reads a header; bytes after the first 48 (extension fields, a MAC)
    /// are ignored.
    pub fn decode(b: &[u8]) -> Result<Packet, NtpError> {
        let head = b
            .get(..PACKET_LEN)
            .ok_or(NtpError::Short { len: b.len() })?;
        let first = head.first().copied().unwrap_or(0);
        let byte = |i: usize| head.get(i).copied().unwrap_or(0);
        let mut reference_id = [0u8; 4];
        reference_id.copy_from_slice(head.get(12..16).unwrap_or(&[0; 4]));
        Ok(Packet {
            leap: first >> 6,
            version: (first >> 3) & 7,
            mode: first & 7,
            stratum: byte(1),
            poll: byte(2) as i8,
            precision: byte(3) as i8,
            root_delay: u32_at(head, 4),
            root_dispersion: u32_at(head, 8),
            reference_id,
            reference: ts_at(head, 16),
            origin: ts_at(head, 24),
            receive: ts_at(head, 32),
            transmit: ts_at(head, 40),
        })
    }

    /// A client's request (RFC 4330 §5): version 4, mode 3, everything
    /// zero but the transmit timestamp, which the reply must echo.
    pub fn request(transmit: Timestamp) -> Packet {
        Packet {
            version: VERSION,
            mode: MODE_CLIENT,
            transmit,
            ..Packet::default()
        }
    }
}

/// What a server says about its own clock in every reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerClock {
    pub leap: u8,
    pub stratum: u8,
    pub precision: i8,
    pub root_delay: u32,
    pub root_dispersion: u32,
    pub reference_id: [u8; 4],
    pub reference: Timestamp,
}

/// A server's reply to `request` (§9 with the server's half of §8):
/// mode 4, the client's version and poll, its transmit time as the origin,
/// `receive` (T2) and `transmit` (T3) read from the server's clock.
/// `None` for anything but a client request of version 1 to 4.
pub fn answer(
    request: &[u8],
    clock: &ServerClock,
    receive: Timestamp,
    transmit: Timestamp,
) -> Option<[u8; PACKET_LEN]> {
    let req = Packet::decode(request).ok()?;
    if req.mode != MODE_CLIENT || !(1..=VERSION).contains(&req.version) {
        return None;
    }
    let reply = Packet {
        leap: clock.leap,
        version: req.version,
        mode: MODE_SERVER,
        stratum: clock.stratum,
        poll: req.poll,
        precision: clock.precision,
        root_delay: clock.root_delay,
        root_dispersion: clock.root_dispersion,
        reference_id: clock.reference_id,
        reference: clock.reference,
        origin: req.transmit,
        receive,
        transmit,
    };
    Some(reply.encode())
}

/// One exchange's outcome, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Add this to the client's clock to get the server's (θ).
    pub offset_ns: i64,
    /// Round trip minus the server's own time (δ), never below 0.
    pub delay_ns: i64,
    pub stratum: u8,
    pub leap: u8,
    pub root_delay_ns: i64,
    pub root_dispersion_ns: i64,
    pub reference_id: [u8; 4],
}

impl Sample {
    /// The most the client's clock can be off after taking this sample
    /// (the root distance λ of §10 without the jitter terms): what the
    /// kernel's `maxerror` should say.
    pub fn max_error_ns(&self) -> i64 {
        self.root_dispersion_ns
            .saturating_add(self.root_delay_ns.saturating_add(self.delay_ns) / 2)
    }
}

/// NTP short format (16.16 seconds) in nanoseconds.
pub fn short_to_ns(v: u32) -> i64 {
    ((i128::from(v) * NANOS) >> 16) as i64
}

/// Judges a reply to the request we sent at `sent` (T1), received at
/// `received` (T4) by our clock, with RFC 4330 §5's checks, and computes
/// the offset and delay of §8:
/// θ = ((T2 − T1) + (T3 − T4)) / 2, δ = (T4 − T1) − (T3 − T2).
pub fn sample(sent: Timestamp, reply: &[u8], received: Timestamp) -> Result<Sample, NtpError> {
    let p = Packet::decode(reply)?;
    if p.mode != MODE_SERVER {
        return Err(NtpError::NotServer { mode: p.mode });
    }
    if !(3..=VERSION).contains(&p.version) {
        return Err(NtpError::Version { version: p.version });
    }
    if p.origin != sent {
        return Err(NtpError::Bogus);
    }
    if p.stratum == 0 {
        let code = String::from_utf8_lossy(&p.reference_id)
            .trim_end_matches('\0')
            .to_string();
        return Err(NtpError::KissOfDeath { code });
    }
    if p.leap == LEAP_UNSYNCHRONISED || p.stratum >= MAX_STRATUM {
        return Err(NtpError::Unsynchronised {
            leap: p.leap,
            stratum: p.stratum,
        });
    }
    if p.transmit == Timestamp::ZERO {
        return Err(NtpError::NoTransmit);
    }
    let (t1, t2, t3, t4) = (sent, p.receive, p.transmit, received);
    let offset = (i128::from(t2.since(t1)) + i128::from(t3.since(t4))) / 2;
    let delay = i128::from(t4.since(t1)) - i128::from(t3.since(t2));
    Ok(Sample {
        offset_ns: offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
        delay_ns: delay.clamp(0, i128::from(i64::MAX)) as i64,
        stratum: p.stratum,
        leap: p.leap,
        root_delay_ns: short_to_ns(p.root_delay),
        root_dispersion_ns: short_to_ns(p.root_dispersion),
        reference_id: p.reference_id,
    })
}

#[cfg(test)]
#[path = "ntp_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "ntp_props.rs"]
mod props;
