//! Loopback: set `IFF_UP` on `lo` with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls (the
//! kernel then adds 127.0.0.1/8 and ::1 itself), and prove it by binding a UDP
//! socket to 127.0.0.1. No netlink, no addresses of our own.

use std::io;

use rustix::ioctl::{Opcode, Updater};
use rustix::net::{AddressFamily, SocketType};

const SIOCGIFFLAGS: Opcode = 0x8913;
const SIOCSIFFLAGS: Opcode = 0x8914;
const IFF_UP: i16 = 0x1;

/// `struct ifreq` with the `ifr_flags` member of its union (40 bytes on x86-64).
#[repr(C)]
struct IfreqFlags {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Why bringing `lo` up failed.
pub type Failure = (&'static str, io::Error);

pub fn loopback_up() -> Result<(), Failure> {
    let sock = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)
        .map_err(|e| ("socket", e.into()))?;
    let mut ifr = IfreqFlags {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    if let Some(dst) = ifr.name.get_mut(..2) {
        dst.copy_from_slice(b"lo");
    }
    // SAFETY: SIOCGIFFLAGS takes a `struct ifreq`; IfreqFlags has its size and
    // layout (16-byte name, then the union whose first member is a short), and it
    // is exclusively borrowed for the call.
    unsafe { rustix::ioctl::ioctl(&sock, Updater::<SIOCGIFFLAGS, IfreqFlags>::new(&mut ifr)) }
        .map_err(|e| ("SIOCGIFFLAGS lo", e.into()))?;
    ifr.flags |= IFF_UP;
    // SAFETY: as above; SIOCSIFFLAGS reads the same `struct ifreq`.
    unsafe { rustix::ioctl::ioctl(&sock, Updater::<SIOCSIFFLAGS, IfreqFlags>::new(&mut ifr)) }
        .map_err(|e| ("SIOCSIFFLAGS lo", e.into()))?;
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| ("bind 127.0.0.1", e))?;
    drop(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ifreq_is_40_bytes() {
        assert_eq!(std::mem::size_of::<super::IfreqFlags>(), 40);
        assert_eq!(std::mem::offset_of!(super::IfreqFlags, flags), 16);
    }
}
