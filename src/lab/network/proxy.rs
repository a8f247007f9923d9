//! A TCP forward from this machine's loopback into the lab network: how
//! tests and users reach a node's API on an isolated network. The listener
//! is bound before its thread enters the lab's namespace (so it stays on
//! the host's `127.0.0.1`); the thread then enters the namespace, and each
//! connection it makes to the node is made from inside. Bytes are copied
//! as they are (the API's TLS runs end to end, the lab sees none of it).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the accept loop looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// A connection to the node must be made within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections, so the lab can cut them when it stops.
pub type Open = Arc<Mutex<Vec<TcpStream>>>;

/// Accepts on `listener` until `stop` and joins each client to `target`.
/// Run it on a thread in the namespace `target` is in (the lab's for a
/// node, this machine's for a lab host forward).
pub fn serve(listener: TcpListener, target: SocketAddr, stop: Arc<AtomicBool>, open: Open) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::warn!(error = %e, "lab proxy: cannot poll its listener; not serving");
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(STOP_POLL);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "lab proxy: accept failed");
                std::thread::sleep(STOP_POLL);
                continue;
            }
        };
        // the accepted socket inherits nothing of the listener's mode
        let _ = client.set_nonblocking(false);
        // made on this thread, so inside the lab's namespace
        let node = match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(%target, error = %e, "lab proxy: node not reachable");
                continue; // dropping `client` closes it: the caller sees a reset or EOF
            }
        };
        if let Err(e) = join(client, node, &open) {
            tracing::warn!(error = %e, "lab proxy: cannot forward a connection");
        }
    }
}

/// One copying thread per direction; each half-closes its write side when
/// its read side ends, so TLS close_notify and EOF pass through.
fn join(client: TcpStream, node: TcpStream, open: &Open) -> std::io::Result<()> {
    let (c2, n2) = (client.try_clone()?, node.try_clone()?);
    if let Ok(mut list) = open.lock() {
        list.retain(|s| s.peer_addr().is_ok());
        list.push(client.try_clone()?);
        list.push(node.try_clone()?);
    }
    std::thread::Builder::new()
        .name("lab-proxy-up".into())
        .spawn(move || pipe(client, node))?;
    std::thread::Builder::new()
        .name("lab-proxy-down".into())
        .spawn(move || pipe(n2, c2))?;
    Ok(())
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(buf.get(..n).unwrap_or_default()).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Cuts every open connection (their threads then end).
pub fn close_all(open: &Open) {
    if let Ok(mut list) = open.lock() {
        for s in list.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback to loopback (the namespace part is the lab test's): bytes
    /// pass both ways, EOF passes through, and a stop ends the loop.
    #[test]
    fn forwards_both_ways_and_stops() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got.reverse();
            s.write_all(&got).unwrap();
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let front = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let open = Open::default();
        let (s2, o2) = (stop.clone(), open.clone());
        let t = std::thread::spawn(move || serve(listener, target, s2, o2));
        let mut c = TcpStream::connect(front).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"lab").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "bal");
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        close_all(&open);
        assert!(open.lock().unwrap().is_empty());
    }
}
