//! The node API's client (`nodeimg node`): one request over TLS 1.3 to a
//! node's port 50000, authenticated with the admin's nodeconfig (a client
//! certificate of the API CA), the node checked against that same CA.
//! The protocol is `contract::api`'s.
//!
//! It takes an address, a name to check the node's certificate against,
//! the identity and a request; it produces the node's answer. It writes
//! nothing and prints nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use contract::api::{Request, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::cluster::AdminConfig;

pub mod blob;

/// The longest answer read (logs and dmesg are the big ones).
const MAX_ANSWER: u64 = 64 << 20;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("nodeconfig {what}: {message}")]
    Identity { what: &'static str, message: String },
    #[error("`{name}` is not a server name or IP address")]
    ServerName { name: String },
    #[error("connecting to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup")]
    Tls(#[source] rustls::Error),
    #[error("the node at {addr} refused the TLS handshake: our client certificate is not one its API CA issued, or none was sent ({why})")]
    Refused { addr: String, why: String },
    #[error("the node at {addr} failed the TLS handshake: its certificate does not check against the nodeconfig's CA for `{name}` ({why})")]
    NodeCertificate {
        addr: String,
        name: String,
        why: String,
    },
    #[error("talking to {addr}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the node at {addr} sent an answer that is not this protocol's: {why}")]
    Answer { addr: String, why: String },
    #[error("{path}")]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the snapshot from {addr} is not what the node said: {why}; nothing was written")]
    Blob { addr: String, why: String },
}

/// Whom to trust and who we are: PEM text from a nodeconfig. Without a
/// client identity the handshake is expected to fail (tests show that).
pub struct Trust {
    pub ca: String,
    pub identity: Option<(String, String)>,
}

impl From<&AdminConfig> for Trust {
    fn from(a: &AdminConfig) -> Trust {
        Trust {
            ca: a.ca.clone(),
            identity: Some((a.certificate.clone(), a.key.expose().to_string())),
        }
    }
}

fn bad(what: &'static str) -> impl Fn(String) -> NodeError {
    move |message| NodeError::Identity { what, message }
}

fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, NodeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(trust.ca.as_bytes()) {
        let c = c.map_err(|e| bad("ca")(e.to_string()))?;
        roots.add(c).map_err(|e| bad("ca")(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("ca")("no certificate".into()));
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NodeError::Tls)?
        .with_root_certificates(roots);
    let config = match &trust.identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("certificate")(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|_| bad("key")("not a PEM private key".into()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(NodeError::Tls)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A TLS connection to the node's API, both sides checked, with `timeout`
/// on the connection and on every read and write; and the name the node's
/// certificate was checked for.
fn connect(
    addr: &str,
    server_name: Option<&str>,
    trust: &Trust,
    timeout: Duration,
) -> Result<(StreamOwned<ClientConnection, TcpStream>, String), NodeError> {
    let config = client_config(trust)?;
    let host = server_name.map_or_else(
        || {
            addr.rsplit_once(':')
                .map_or(addr, |(h, _)| h)
                .trim_matches(['[', ']'])
                .to_string()
        },
        str::to_string,
    );
    let name = ServerName::try_from(host.clone())
        .map_err(|_| NodeError::ServerName { name: host.clone() })?;
    let connect_err = |source| NodeError::Connect {
        addr: addr.to_string(),
        source,
    };
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .map_err(connect_err)?
        .next()
        .ok_or_else(|| connect_err(std::io::ErrorKind::NotFound.into()))?;
    let tcp = TcpStream::connect_timeout(&sock, timeout).map_err(connect_err)?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
        .map_err(connect_err)?;
    let conn = ClientConnection::new(config, name).map_err(NodeError::Tls)?;
    Ok((StreamOwned::new(conn, tcp), host))
}

/// One request, one answer (see `contract::api`).
pub fn request(
    addr: &str,
    server_name: Option<&str>,
    trust: &Trust,
    request: &Request,
    timeout: Duration,
) -> Result<Response, NodeError> {
    let (mut tls, host) = connect(addr, server_name, trust, timeout)?;
    let io = |source: std::io::Error| classify(addr, &host, source);
    tls.write_all(request.line().as_bytes()).map_err(io)?;
    tls.flush().map_err(io)?;
    read_answer(&mut tls, addr, &host)
}

/// The one answer of a request: everything until the node closes.
fn read_answer(
    tls: &mut StreamOwned<ClientConnection, TcpStream>,
    addr: &str,
    host: &str,
) -> Result<Response, NodeError> {
    let io = |source: std::io::Error| classify(addr, host, source);
    let mut body = Vec::new();
    match tls.take(MAX_ANSWER).read_to_end(&mut body) {
        Ok(_) => {}
        // Some peers close without close_notify after a whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !body.is_empty() => {}
        Err(e) => return Err(io(e)),
    }
    if body.is_empty() {
        // TLS 1.3: the node checks our certificate after our side of the
        // handshake is done, so a refusal can look like a closed stream.
        return Err(NodeError::Refused {
            addr: addr.to_string(),
            why: "the node closed the connection without an answer".into(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| NodeError::Answer {
        addr: addr.to_string(),
        why: e.to_string(),
    })
}

/// A streaming request (`logs` with `follow`): every answer line to
/// `on_answer` until it returns `false` or the node closes. The node sends
/// an empty `text` every few seconds when it has nothing, so a read that
/// waits longer than `timeout` (at least three of those) means it is gone.
pub fn stream(
    addr: &str,
    server_name: Option<&str>,
    trust: &Trust,
    request: &Request,
    timeout: Duration,
    mut on_answer: impl FnMut(Response) -> bool,
) -> Result<(), NodeError> {
    use std::io::BufRead;
    let quiet = Duration::from_secs(3 * contract::api::FOLLOW_KEEPALIVE_SECS);
    let (mut tls, host) = connect(addr, server_name, trust, timeout.max(quiet))?;
    let io = |source: std::io::Error| classify(addr, &host, source);
    tls.write_all(request.line().as_bytes()).map_err(io)?;
    tls.flush().map_err(io)?;
    let mut lines = std::io::BufReader::new(tls).take(MAX_ANSWER);
    let mut seen = false;
    loop {
        let mut line = Vec::new();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && seen => break,
            Err(e) => return Err(io(e)),
        }
        seen = true;
        lines.set_limit(MAX_ANSWER);
        let answer = serde_json::from_slice(&line).map_err(|e| NodeError::Answer {
            addr: addr.to_string(),
            why: e.to_string(),
        })?;
        if !on_answer(answer) {
            break;
        }
    }
    if !seen {
        return Err(NodeError::Refused {
            addr: addr.to_string(),
            why: "the node closed the connection without an answer".into(),
        });
    }
    Ok(())
}

/// Names a TLS failure by who refused whom.
fn classify(addr: &str, host: &str, e: std::io::Error) -> NodeError {
    let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::AlertReceived(alert)) => NodeError::Refused {
            addr: addr.to_string(),
            why: format!("alert {alert:?}"),
        },
        Some(
            why @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
        ) => NodeError::NodeCertificate {
            addr: addr.to_string(),
            name: host.to_string(),
            why: why.to_string(),
        },
        _ if matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ) =>
        {
            NodeError::Refused {
                addr: addr.to_string(),
                why: e.to_string(),
            }
        }
        _ => NodeError::Io {
            addr: addr.to_string(),
            source: e,
        },
    }
}
