//! One HTTP/1.1 GET over a std `TcpStream`, optionally inside rustls
//! (TLS 1.3, the agent's ring provider): connect with a timeout, send the
//! request, read the head (parsed by `httparse`) and a body bounded by a
//! cap, delimited by `Content-Length`, chunked encoding or the end of the
//! stream. No redirects, retries or pins here: [`super::fetch`] decides.
//!
//! The request carries no `Connection: close`: QEMU's `guestfwd` (the
//! lab's way to serve a config) carries every guest connection over one
//! connection to the server, which must therefore stay open; the body's
//! length, not the end of the stream, ends a response.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A response head larger than this is refused.
pub const MAX_HEAD: usize = 16 << 10;
/// What is read (and dropped) of a body that is not the config, so the
/// connection stays in step.
const MAX_OTHER_BODY: u64 = 64 << 10;

/// Where one request goes.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// As resolved: a name or an IP address (IPv6 without brackets).
    pub host: &'a str,
    pub port: u16,
    /// The `Host` header's value.
    pub authority: &'a str,
    /// Starts with `/`.
    pub path: &'a str,
}

/// Timeouts and the body's cap.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    /// One read or write.
    pub io: Duration,
    /// The whole request, connect to last byte.
    pub total: Duration,
    /// A 200 body larger than this is refused.
    pub max_body: u64,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// `Location`, for redirects.
    pub location: Option<String>,
    /// The body (another status's only up to 64 KiB, empty when it was
    /// cut short).
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("resolving {host}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{host} is not a name TLS can check")]
    ServerName { host: String },
    #[error("TLS with {host}")]
    Tls {
        host: String,
        #[source]
        source: rustls::Error,
    },
    #[error("{step} timed out")]
    Timeout { step: &'static str },
    #[error("{step}")]
    Io {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("bad response: {what}")]
    Protocol { what: String },
    #[error("body larger than {max} bytes")]
    TooLarge { max: u64 },
    /// Not made here: [`super::fetch`]'s record of a 5xx answer.
    #[error("HTTP status {status}")]
    Status { status: u16 },
}

impl HttpError {
    /// Worth another try: the server, or the path to it, may come back.
    pub fn retryable(&self) -> bool {
        match self {
            HttpError::Resolve { .. }
            | HttpError::NoAddress { .. }
            | HttpError::Connect { .. }
            | HttpError::Timeout { .. }
            | HttpError::Io { .. } => true,
            HttpError::Status { status } => *status >= 500,
            HttpError::ServerName { .. }
            | HttpError::Tls { .. }
            | HttpError::Protocol { .. }
            | HttpError::TooLarge { .. } => false,
        }
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A TLS client that trusts only `ca_pem` and shows `cert_pem` with
/// `key_pem` (mutual TLS: etcd's gateway, the Kubernetes API); TLS 1.3
/// only when `tls13_only`. The error says what could not be read.
pub fn mtls_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    tls13_only: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| format!("the CA: {e}"))?)
            .map_err(|e| format!("the CA: {e}"))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the client certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| "the client key is not PEM".to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(tls))
}

/// Sends one GET and reads the answer.
pub fn get(t: &Target, limits: &Limits) -> Result<Response, HttpError> {
    send(t, limits, "GET", None)
}

/// Sends one POST of a JSON body (etcd's v3 gateway) and reads the answer.
pub fn post_json(t: &Target, limits: &Limits, body: &[u8]) -> Result<Response, HttpError> {
    send(t, limits, "POST", Some(("application/json", body)))
}

/// Sends one request with `method` and an optional (content type, body):
/// the Kubernetes API's PATCH and PUT.
pub fn send(
    t: &Target,
    limits: &Limits,
    method: &str,
    body: Option<(&str, &[u8])>,
) -> Result<Response, HttpError> {
    let (headers, mut bytes) = match body {
        None => (Vec::new(), None),
        Some((kind, b)) => (vec![("Content-Type", kind.to_string())], Some(b)),
    };
    let body = match &mut bytes {
        None => Body::None,
        Some(b) => Body::Stream {
            length: b.len() as u64,
            from: b,
        },
    };
    send_with(t, limits, method, &headers, body)
}

/// A request's body.
pub enum Body<'a> {
    None,
    /// `length` bytes read from `from` as they are sent (an etcd snapshot
    /// to an object store), never held whole in memory.
    Stream {
        length: u64,
        from: &'a mut dyn Read,
    },
}

/// Sends one request with `method`, extra `headers` and `body`, and reads
/// the answer.
pub fn send_with(
    t: &Target,
    limits: &Limits,
    method: &str,
    headers: &[(&str, String)],
    body: Body,
) -> Result<Response, HttpError> {
    let deadline = Instant::now() + limits.total;
    let tcp = connect(t.host, t.port, limits)?;
    let mut stream: Box<dyn Stream> = match &t.tls {
        None => Box::new(tcp),
        Some(config) => Box::new(handshake(config.clone(), t.host, tcp)?),
    };
    let mut extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    if let Body::Stream { length, .. } = &body {
        extra.push_str(&format!("Content-Length: {length}\r\n"));
    }
    let request = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nodeagent/{}\r\nAccept: */*\r\n{extra}\r\n",
        t.path,
        t.authority,
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io_error("sending the request", e))?;
    if let Body::Stream { length, from } = body {
        let sent = io::copy(&mut from.take(length), &mut stream)
            .map_err(|e| io_error("sending the body", e))?;
        if sent != length {
            return Err(HttpError::Protocol {
                what: format!("the body ended after {sent} of {length} bytes"),
            });
        }
    }
    stream
        .flush()
        .map_err(|e| io_error("sending the request", e))?;
    let mut r = Reader {
        inner: stream,
        buf: Vec::new(),
        pos: 0,
        deadline,
    };
    let head = r.head()?;
    let cap = if head.status == 200 {
        limits.max_body
    } else {
        MAX_OTHER_BODY
    };
    let body = match (head.chunked, head.length) {
        (true, _) => r.chunked(cap),
        (false, Some(n)) => r.exact(n, cap),
        (false, None) if method == "HEAD" || head.status == 204 => Ok(Vec::new()),
        (false, None) => r.until_end(cap),
    };
    let body = match body {
        Ok(b) => b,
        // a refused answer's body is only drained: its failure changes nothing
        Err(_) if head.status != 200 => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(Response {
        status: head.status,
        location: head.location,
        body,
    })
}

fn io_error(step: &'static str, source: io::Error) -> HttpError {
    match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HttpError::Timeout { step },
        _ => HttpError::Io { step, source },
    }
}

/// The first address of `host` that accepts, or the last failure.
fn connect(host: &str, port: u16, limits: &Limits) -> Result<TcpStream, HttpError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| HttpError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    let mut last = HttpError::NoAddress {
        host: host.to_string(),
    };
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, limits.connect) {
            Ok(tcp) => {
                let timeout = Some(limits.io);
                tcp.set_read_timeout(timeout)
                    .and_then(|()| tcp.set_write_timeout(timeout))
                    .map_err(|source| HttpError::Connect { addr, source })?;
                // the request is one small write: send it at once
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(source) => last = HttpError::Connect { addr, source },
        }
    }
    Err(last)
}

fn handshake(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    mut tcp: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, HttpError> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| {
        HttpError::ServerName {
            host: host.to_string(),
        }
    })?;
    let tls_error = |source| HttpError::Tls {
        host: host.to_string(),
        source,
    };
    let mut conn = rustls::ClientConnection::new(config, name).map_err(tls_error)?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            // rustls reports a failed check (certificate, protocol) as an
            // I/O error carrying its own: that one is final, not the network's
            let tls = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .cloned();
            return Err(match tls {
                Some(source) => tls_error(source),
                None => io_error("TLS handshake", e),
            });
        }
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

struct Head {
    status: u16,
    length: Option<u64>,
    chunked: bool,
    location: Option<String>,
}

/// A buffered reader that keeps to the request's deadline.
struct Reader {
    inner: Box<dyn Stream>,
    buf: Vec<u8>,
    pos: usize,
    deadline: Instant,
}

impl Reader {
    /// More bytes into `buf`; `false` at the end of the stream.
    fn fill(&mut self, step: &'static str) -> Result<bool, HttpError> {
        if Instant::now() > self.deadline {
            return Err(HttpError::Timeout { step });
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 8192];
        loop {
            match self.inner.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf
                        .extend_from_slice(chunk.get(..n).unwrap_or_default());
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(step, e)),
            }
        }
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn head(&mut self) -> Result<Head, HttpError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            let parsed = resp
                .parse(self.pending())
                .map_err(|e| HttpError::Protocol {
                    what: format!("response head: {e}"),
                })?;
            if let httparse::Status::Complete(len) = parsed {
                let head = head_of(&resp)?;
                self.pos += len;
                return Ok(head);
            }
            if self.pending().len() > MAX_HEAD {
                return Err(HttpError::Protocol {
                    what: format!("response head larger than {MAX_HEAD} bytes"),
                });
            }
            if !self.fill("reading the response head")? {
                return Err(HttpError::Io {
                    step: "reading the response head",
                    source: io::ErrorKind::UnexpectedEof.into(),
                });
            }
        }
    }

    /// Takes up to `n` pending bytes, reading more when none are pending.
    fn take(&mut self, n: u64, step: &'static str) -> Result<Vec<u8>, HttpError> {
        if self.pending().is_empty() && !self.fill(step)? {
            return Err(HttpError::Io {
                step,
                source: io::ErrorKind::UnexpectedEof.into(),
            });
        }
        let k = self
            .pending()
            .len()
            .min(usize::try_from(n).unwrap_or(usize::MAX));
        let out = self.pending().get(..k).unwrap_or_default().to_vec();
        self.pos += k;
        Ok(out)
    }

    fn exact(&mut self, n: u64, cap: u64) -> Result<Vec<u8>, HttpError> {
        if n > cap {
            return Err(HttpError::TooLarge { max: cap });
        }
        let mut body = Vec::new();
        while (body.len() as u64) < n {
            let more = self.take(n - body.len() as u64, "reading the body")?;
            body.extend_from_slice(&more);
        }
        Ok(body)
    }

    fn until_end(&mut self, cap: u64) -> Result<Vec<u8>, HttpError> {
        let mut body = self.pending().to_vec();
        self.pos = self.buf.len();
        loop {
            if body.len() as u64 > cap {
                return Err(HttpError::TooLarge { max: cap });
            }
            if !self.fill("reading the body")? {
                return Ok(body);
            }
            body.extend_from_slice(self.pending());
            self.pos = self.buf.len();
        }
    }

    /// One CRLF-terminated line (without the CRLF), bounded.
    fn line(&mut self) -> Result<String, HttpError> {
        loop {
            if let Some(i) = self.pending().windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(self.pending().get(..i).unwrap_or_default())
                    .into_owned();
                self.pos += i + 2;
                return Ok(line);
            }
            if self.pending().len() > 4096 {
                return Err(HttpError::Protocol {
                    what: "chunk line longer than 4096 bytes".into(),
                });
            }
            if !self.fill("reading a chunk")? {
                return Err(HttpError::Io {
                    step: "reading a chunk",
                    source: io::ErrorKind::UnexpectedEof.into(),
                });
            }
        }
    }

    fn chunked(&mut self, cap: u64) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| HttpError::Protocol {
                what: format!("chunk size {size:?}"),
            })?;
            if size == 0 {
                // trailers, up to the empty line
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            if body.len() as u64 + size > cap {
                return Err(HttpError::TooLarge { max: cap });
            }
            let chunk = self.exact(size, cap)?;
            body.extend_from_slice(&chunk);
            if !self.line()?.is_empty() {
                return Err(HttpError::Protocol {
                    what: "chunk not followed by CRLF".into(),
                });
            }
        }
    }
}

fn head_of(resp: &httparse::Response) -> Result<Head, HttpError> {
    let status = resp.code.ok_or_else(|| HttpError::Protocol {
        what: "no status".into(),
    })?;
    let mut head = Head {
        status,
        length: None,
        chunked: false,
        location: None,
    };
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value.parse::<u64>().map_err(|_| HttpError::Protocol {
                what: format!("Content-Length {value:?}"),
            })?;
            if head.length.is_some_and(|m| m != n) {
                return Err(HttpError::Protocol {
                    what: "two different Content-Length headers".into(),
                });
            }
            head.length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(HttpError::Protocol {
                    what: format!("Transfer-Encoding {value:?}"),
                });
            }
            head.chunked = true;
        } else if h.name.eq_ignore_ascii_case("location") {
            head.location = Some(value);
        }
    }
    Ok(head)
}
