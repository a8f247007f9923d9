//! Persistent tap devices: the kernel makes taps only through the
//! `TUNSETIFF` ioctl on `/dev/net/tun` (rtnetlink refuses to create
//! them), so this is the one ioctl the lab issues. A tap is made
//! persistent so it exists, on the bridge, before QEMU opens it by name
//! (`-netdev tap,ifname=…`); it goes away with the namespace.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("opening /dev/net/tun (a lab run without root needs it readable and writable by its user, mode 0666)")]
    Open(#[source] std::io::Error),
    #[error("{ioctl} for tap {name}")]
    Ioctl {
        ioctl: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tap name {name:?} is longer than {max} bytes")]
    Name { name: String, max: usize },
}

/// Creates the persistent tap `name` in the calling thread's network
/// namespace (the namespace `/dev/net/tun` is opened in).
pub fn create_persistent(name: &str) -> Result<(), TapError> {
    let max = libc::IFNAMSIZ - 1;
    if name.len() > max || name.bytes().any(|b| b == 0) {
        return Err(TapError::Name {
            name: name.into(),
            max,
        });
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(TapError::Open)?;
    // SAFETY: ifreq is plain old data (arrays, integers, a union of them),
    // for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    let fail = |ioctl| {
        let source = std::io::Error::last_os_error();
        TapError::Ioctl {
            ioctl,
            name: name.into(),
            source,
        }
    };
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req`
    // is, alive and exclusively borrowed for the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
        return Err(fail("TUNSETIFF"));
    }
    // SAFETY: TUNSETPERSIST takes its argument by value; no memory is passed.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } != 0 {
        return Err(fail("TUNSETPERSIST"));
    }
    Ok(()) // closing `tun` leaves the persistent device
}
