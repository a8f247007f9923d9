//! The node API: management without SSH. A TLS 1.3 server on TCP port
//! [`contract::api::PORT`] (all addresses) that admits only clients whose
//! certificate the machine config's `[api] client_ca` issued, and presents
//! the node's own `[api] certificate`. One JSON request line per
//! connection, one JSON answer (`contract::api`, the protocol).
//!
//! It takes the machine config and the latest report (shared with the
//! main loop, which updates it each time it prints one); it produces
//! answers. It never acts on the node itself: `reboot` and `shutdown`
//! become signals to PID 1 (SIGUSR1, SIGTERM) that the main loop's event
//! source turns into its own decision, exactly like the power button.
//! It runs on threads of its own and never panics; a bad client costs
//! one thread for at most [`IO_TIMEOUT`].

mod ops;
mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contract::api::{Request, Response, MAX_REQUEST, PORT};
use contract::config::MachineConfig;
use contract::report::Report;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::console::Console;

/// How long a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once.
const MAX_CLIENTS: usize = 8;

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("api.{key}: {what}")]
    Pem { key: &'static str, what: String },
    #[error("api.{key}: no PEM block of the right kind")]
    Missing { key: &'static str },
    #[error("TLS setup")]
    Tls(#[source] rustls::Error),
    #[error("client certificate verifier for api.client_ca: {0}")]
    Verifier(String),
    #[error("rendering the redacted config: {0}")]
    Render(String),
    #[error("listening on port {port}")]
    Listen {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the API thread")]
    Thread(#[source] std::io::Error),
}

/// What the answers are made from.
pub struct State {
    /// The latest boot report, as the main loop last printed it.
    pub report: Arc<Mutex<Report>>,
    /// The node's config: the boot's, or the last one applied through
    /// the API, and the tables of it that wait for a reboot.
    pub config: Mutex<Applied>,
    /// The `sha256:` of the boot source's config an applied one replaces.
    pub replaces: Option<String>,
    /// Where an applied config is stored, and its mark
    /// (`contract::paths::STORED_CONFIG`, `APPLIED_CONFIG_REPLACES`).
    pub stored: std::path::PathBuf,
    pub mark: std::path::PathBuf,
    /// What this image can serve, for checking an applied config.
    pub facts: contract::config::ImageFacts,
    /// Where service logs are (`/var/log/nodeimg`).
    pub log_dir: std::path::PathBuf,
    /// Where containerd's registry files go (`registries::CERTS_D`), or
    /// `None` on an image without containerd.
    pub certs_d: Option<std::path::PathBuf>,
    /// A control-plane node's etcd (`bootstrap`); `None` elsewhere.
    pub etcd: Option<Arc<crate::etcd::Etcd>>,
    /// A Kubernetes node's agent side (a changed security stack goes to
    /// it); `None` on an image without kubelet.
    pub kube: Option<Arc<crate::kube::Kube>>,
}

/// The config this boot started with, and the node's current one (the
/// boot's, or the last applied through the API).
pub struct Applied {
    pub boot: MachineConfig,
    pub config: MachineConfig,
}

/// Starts the API on its own thread; returns once it listens.
pub fn start(
    config: &MachineConfig,
    replaces: Option<String>,
    report: Arc<Mutex<Report>>,
    etcd: Option<Arc<crate::etcd::Etcd>>,
    kube: Option<Arc<crate::kube::Kube>>,
) -> Result<(), ApiError> {
    let tls = tls::server_config(&config.api)?;
    // rendered once here so a config that cannot be shown fails the start
    config
        .redacted()
        .to_toml()
        .map_err(|e| ApiError::Render(e.to_string()))?;
    let certs_d = std::path::Path::new(crate::registries::CERTS_D);
    let state = Arc::new(State {
        report,
        config: Mutex::new(Applied {
            boot: config.clone(),
            config: config.clone(),
        }),
        replaces,
        stored: contract::paths::STORED_CONFIG.into(),
        mark: contract::paths::APPLIED_CONFIG_REPLACES.into(),
        facts: crate::config_apply::image_facts(),
        log_dir: crate::services::logfile::LOG_DIR.into(),
        certs_d: certs_d
            .parent()
            .is_some_and(std::path::Path::is_dir)
            .then(|| certs_d.to_path_buf()),
        etcd,
        kube,
    });
    // `[::]` takes IPv4 too (v4-mapped) unless bindv6only is set; fall
    // back to IPv4 alone on a kernel without IPv6.
    let listener = TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, PORT)))
        .or_else(|_| TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], PORT))))
        .map_err(|source| ApiError::Listen { port: PORT, source })?;
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || serve(listener, tls, state))
        .map_err(ApiError::Thread)?;
    Ok(())
}

fn serve(listener: TcpListener, tls: Arc<ServerConfig>, state: Arc<State>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(_) => {
                // e.g. out of descriptors: do not spin
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: closed
        }
        let (tls, state, done) = (tls.clone(), state.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("api-client".into())
            .spawn(move || {
                let peer = stream
                    .peer_addr()
                    .map_or_else(|_| "?".to_string(), |a| a.to_string());
                if let Err(e) = client(stream, tls, &state) {
                    Console::open().say(&format!("api: client {peer}: {e}"));
                }
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

/// Writes the one answer line and ends the stream.
fn send(stream: &mut Tls, response: &Response) -> Result<(), String> {
    let body = serde_json::to_vec(response).unwrap_or_else(|e| {
        format!("{{\"error\":\"cannot encode the answer: {e}\"}}").into_bytes()
    });
    stream
        .write_all(&body)
        .and_then(|()| stream.write_all(b"\n"))
        .map_err(|e| format!("answering: {e}"))?;
    stream.conn.send_close_notify();
    let _ = stream.flush();
    Ok(())
}

/// The `blob` answer line, then `file`'s bytes (as many as it announces).
fn send_blob(
    stream: &mut Tls,
    file: &std::path::Path,
    blob: contract::api::Blob,
) -> Result<(), String> {
    let bytes = blob.bytes;
    let mut body = serde_json::to_vec(&Response::Blob(blob)).map_err(|e| e.to_string())?;
    body.push(b'\n');
    let mut f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    stream
        .write_all(&body)
        .and_then(|()| std::io::copy(&mut (&mut f).take(bytes), stream))
        .map_err(|e| format!("sending the snapshot: {e}"))?;
    stream.conn.send_close_notify();
    let _ = stream.flush();
    Ok(())
}

/// One connection: handshake (the client's certificate is checked here),
/// one request line, one answer. After the answer to `reboot` or
/// `shutdown` is sent, the signal goes to PID 1.
fn client(tcp: TcpStream, tls: Arc<ServerConfig>, state: &State) -> Result<(), String> {
    let peer = tcp
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let conn = ServerConnection::new(tls).map_err(|e| e.to_string())?;
    let mut stream = StreamOwned::new(conn, tcp);
    let mut line = Vec::new();
    let mut reader = BufReader::new(&mut stream);
    // Reading drives the handshake: a refused certificate ends here.
    (&mut reader)
        .take(MAX_REQUEST as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("handshake or request: {e}"))?;
    // a restore's snapshot or an import's archive follows its line on
    // the stream: read it with
    // what the line's reader already buffered
    let restored = match Request::parse(&line) {
        Ok(Request::Restore(blob)) => Some(ops::restore(state, &mut reader, &blob)),
        Ok(Request::Import(blob)) => Some(ops::import(state, &mut reader, &blob)),
        _ => None,
    };
    drop(reader);
    if let Some(answer) = restored {
        return send(&mut stream, &answer);
    }
    if let Ok(Request::EtcdSnapshot) = Request::parse(&line) {
        return match ops::snapshot(state) {
            Err(refused) => send(&mut stream, &refused),
            Ok((file, blob)) => {
                let sent = send_blob(&mut stream, &file, blob);
                let _ = std::fs::remove_file(&file);
                sent
            }
        };
    }
    if let Ok(Request::Logs {
        service,
        tail,
        follow: true,
    }) = Request::parse(&line)
    {
        // a stream: one JSON answer a line until the client goes away
        let _ = ops::follow(state, &service, tail, |answer| {
            let mut body = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
            body.push(b'\n');
            stream.write_all(&body)?;
            stream.flush()
        });
        stream.conn.send_close_notify();
        let _ = stream.flush();
        return Ok(());
    }
    let (response, then, request_name) = match Request::parse(&line) {
        Ok(request) => {
            let (response, then) = ops::answer(&request, state);
            (response, then, request.op())
        }
        Err(e) => (Response::Error(e.to_string()), None, "?"),
    };
    send(&mut stream, &response)?;
    if let Some(signal) = then {
        // on the console: who turned the node off, as for the button
        Console::open().say(&format!("api: client {peer} asked for {request_name}"));
        ops::signal_pid1(signal);
    }
    Ok(())
}
