//! `nodeimg lab relay 127.0.0.1:PORT`: one guest connection carried to a
//! loopback server. QEMU's user network spawns it for every connection
//! the guest makes to a `guestfwd` (`cmd:`), its stdin and stdout being
//! that connection; a `tcp:` guestfwd instead connects once when QEMU
//! starts and carries one guest connection only, so a guest that polls or
//! retries (etcd probes, a config fetch retried) would find it spent.
//! Loopback only: the lab's traffic never leaves this machine. It never
//! writes to stderr, which QEMU also points at the guest's connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpStream};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0} is not a loopback address: the lab relays to this machine's loopback only")]
    NotLoopback(SocketAddrV4),
    #[error("connecting to {0}")]
    Connect(SocketAddrV4, #[source] std::io::Error),
}

/// Copies stdin to `server` and `server` to stdout until both directions
/// end.
pub fn relay(server: SocketAddrV4) -> Result<(), RelayError> {
    if !server.ip().is_loopback() {
        return Err(RelayError::NotLoopback(server));
    }
    let upstream = TcpStream::connect(server).map_err(|e| RelayError::Connect(server, e))?;
    let mut to_server = upstream
        .try_clone()
        .map_err(|e| RelayError::Connect(server, e))?;
    let inbound = std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let mut from_server = upstream;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    // stdout unbuffered by hand: a reply must reach the guest at once
    loop {
        match from_server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
    }
    // the server is done: the guest's side ends with this process
    drop(inbound);
    Ok(())
}

/// The `cmd:` a `guestfwd` runs for each connection: this executable's
/// `lab relay SERVER` (QEMU's option syntax doubles a comma).
pub fn guestfwd_command(server: SocketAddrV4) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "nodeimg".into());
    format!("cmd:{} lab relay {server}", exe.replace(',', ",,"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_relayed_to() {
        let e = relay("10.0.2.2:80".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("not a loopback address"), "{e}");
    }
}
