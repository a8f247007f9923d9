//! Fetching the machine config named by `nodeimg.config=URL#sha256=HEX`
//! (PXE bare metal's way: the node has no fw_cfg and no config drive).
//!
//! Takes a checked [`ConfigUrl`] and a [`Policy`]; returns the bytes only
//! once their sha256 is the URL's pin, so nothing downstream ever parses a
//! config the operator did not name.
//!
//! The HTTP/1.1 client ([`http`]) is ours, over std's `TcpStream` and the
//! rustls the node API already links, with `httparse` for the response
//! head. Measured on the static agent (x86_64, stripped): `ureq` 3 (no
//! default features, rustls without a bundled provider) added 1008 KiB,
//! this client 273 KiB, almost all of it rustls' client side. PID 1 ships
//! in every initramfs, and a GET whose body is pinned needs little of a
//! general client.
//!
//! What it refuses, and why:
//! - https without the image's CA bundle ([`CA_BUNDLE`]): no silent
//!   fall-back to an unverified server. The sha256 pin is the integrity
//!   check either way; TLS keeps the node's private key off the wire;
//! - TLS below 1.3 (the agent's rustls is built without TLS 1.2);
//! - a body larger than [`Policy::max_bytes`], announced or read;
//! - more than [`MAX_REDIRECTS`] redirects, and https redirected to http.
//!   Redirects are followed (boot servers behind a load balancer and object
//!   stores redirect) because the pin, not the server, says what the
//!   config is;
//! - 4xx answers, at once: the URL is wrong and asking again will not fix
//!   it. Connect errors, timeouts and 5xx answers are retried a bounded
//!   number of times with capped exponential backoff; the last cause is
//!   kept for the error.
//!
//! A host name is resolved through the C library (`getaddrinfo`, with the
//! `/etc/resolv.conf` the network step wrote); an IP address is not
//! looked up at all.

pub mod http;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use contract::cmdline::ConfigUrl;
use contract::config::MachineConfig;
use contract::report::{InterfaceReport, NetReport};
use http::HttpError;

/// The image's CA bundle (Debian's ca-certificates, assembled by the
/// builder): the only trust https servers are checked against.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Redirects followed before giving up.
pub const MAX_REDIRECTS: u32 = 3;

/// How hard to try.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Attempts in all, the first included.
    pub tries: u32,
    /// The wait after the first failed attempt; doubled after each.
    pub first_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// One read or write.
    pub io_timeout: Duration,
    /// One request, connect to last byte.
    pub request_timeout: Duration,
    pub max_bytes: u64,
    pub ca_bundle: PathBuf,
}

impl Default for Policy {
    /// 6 tries, 0.5 s doubling to 8 s between them (15.5 s of waiting).
    fn default() -> Self {
        Policy {
            tries: 6,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_bytes: crate::config_source::MAX_BYTES,
            ca_bundle: PathBuf::from(CA_BUNDLE),
        }
    }
}

impl Policy {
    /// The wait after failed attempt `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    fn limits(&self) -> http::Limits {
        http::Limits {
            connect: self.connect_timeout,
            io: self.io_timeout,
            total: self.request_timeout,
            max_body: self.max_bytes,
        }
    }
}

/// Each names the URL as the command line gives it (without the pin).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: https needs the image's CA bundle {bundle}, which is missing")]
    NoCaBundle { url: String, bundle: PathBuf },
    #[error("{url}: CA bundle {bundle}: {what}")]
    CaBundle {
        url: String,
        bundle: PathBuf,
        what: String,
    },
    #[error("{url}: sha256 mismatch (expected {expected}, got {got})")]
    Mismatch {
        url: String,
        expected: String,
        got: String,
    },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: larger than {max} bytes")]
    TooLarge { url: String, max: u64 },
    #[error("{url}: redirect refused: {what}")]
    Redirect { url: String, what: String },
    #[error("{url}: unreachable after {tries} tries")]
    Unreachable {
        url: String,
        tries: u32,
        #[source]
        last: HttpError,
    },
    #[error("{url}")]
    Failed {
        url: String,
        #[source]
        source: HttpError,
    },
}

/// `data` when its sha256 is `url`'s pin.
pub fn verified(url: &ConfigUrl, data: Vec<u8>) -> Result<Vec<u8>, FetchError> {
    let got = crate::digest::sha256_hex(&data);
    if got != url.sha256 {
        return Err(FetchError::Mismatch {
            url: url.location(),
            expected: url.sha256.clone(),
            got,
        });
    }
    Ok(data)
}

/// Fetches `url` under `policy` and checks its pin; `note` hears of each
/// failed attempt that will be retried (for the console).
pub fn fetch(
    url: &ConfigUrl,
    policy: &Policy,
    mut note: impl FnMut(&str),
) -> Result<Vec<u8>, FetchError> {
    let mut tls = TlsTrust {
        bundle: &policy.ca_bundle,
        config: None,
    };
    if url.tls {
        // a missing bundle is said before anything is sent
        tls.get(url)?;
    }
    let tries = policy.tries.max(1);
    let mut n = 0;
    loop {
        n += 1;
        let e = match attempt(url, policy, &mut tls) {
            Ok(data) => return verified(url, data),
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Retry(e)) => e,
        };
        if n >= tries {
            return Err(FetchError::Unreachable {
                url: url.location(),
                tries,
                last: e,
            });
        }
        let wait = policy.backoff(n);
        note(&format!(
            "{}: try {n} of {tries} failed ({}); again in {} ms",
            url.location(),
            crate::error::chain(&e),
            wait.as_millis()
        ));
        std::thread::sleep(wait);
    }
}

enum Failure {
    Retry(HttpError),
    Final(FetchError),
}

/// One try: the URL and the redirects it leads to.
fn attempt(url: &ConfigUrl, policy: &Policy, tls: &mut TlsTrust) -> Result<Vec<u8>, Failure> {
    let location = url.location();
    let final_error = |e: FetchError| Failure::Final(e);
    let mut here = url.clone();
    let mut redirects = 0;
    loop {
        let authority = match here.port {
            Some(p) => format!("{}:{p}", here.host),
            None => here.host.clone(),
        };
        let target = http::Target {
            tls: if here.tls {
                Some(tls.get(url).map_err(final_error)?)
            } else {
                None
            },
            host: here.connect_host(),
            port: here.port(),
            authority: &authority,
            path: &here.path,
        };
        let response = match http::get(&target, &policy.limits()) {
            Ok(r) => r,
            Err(HttpError::TooLarge { max }) => {
                return Err(final_error(FetchError::TooLarge { url: location, max }))
            }
            Err(e) if e.retryable() => return Err(Failure::Retry(e)),
            Err(source) => {
                return Err(final_error(FetchError::Failed {
                    url: location,
                    source,
                }))
            }
        };
        match (response.status, response.location) {
            (200, _) => return Ok(response.body),
            (301 | 302 | 303 | 307 | 308, Some(next)) => {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    let what = format!("more than {MAX_REDIRECTS} redirects");
                    return Err(final_error(FetchError::Redirect {
                        url: location,
                        what,
                    }));
                }
                let redirect = |what: String| {
                    final_error(FetchError::Redirect {
                        url: location.clone(),
                        what,
                    })
                };
                let next_url = follow(&here, &next).map_err(redirect)?;
                if here.tls && !next_url.tls {
                    return Err(redirect(format!("https redirected to http ({next})")));
                }
                here = next_url;
            }
            (status, _) if status >= 500 => {
                return Err(Failure::Retry(HttpError::Status { status }))
            }
            (status, _) => {
                return Err(final_error(FetchError::Status {
                    url: location,
                    status,
                }))
            }
        }
    }
}

/// The URL a `Location` leads to from `here` (absolute, absolute path, or
/// relative to `here`'s folder), keeping the pin.
fn follow(here: &ConfigUrl, next: &str) -> Result<ConfigUrl, String> {
    let pin = format!("#{}{}", contract::config_url::HASH_PREFIX, here.sha256);
    let next = next.split('#').next().unwrap_or_default();
    let text = if next.starts_with("http://") || next.starts_with("https://") {
        format!("{next}{pin}")
    } else {
        let path = if next.starts_with('/') {
            next.to_string()
        } else {
            let folder = here.path.rsplit_once('/').map(|(f, _)| f).unwrap_or("");
            format!("{folder}/{next}")
        };
        let base = ConfigUrl {
            path,
            ..here.clone()
        };
        base.to_string()
    };
    ConfigUrl::parse(&text).map_err(|why| format!("Location {next:?}: {why}"))
}

/// The rustls client config, made from the CA bundle the first time an
/// https URL needs it.
struct TlsTrust<'a> {
    bundle: &'a Path,
    config: Option<Arc<rustls::ClientConfig>>,
}

impl TlsTrust<'_> {
    fn get(&mut self, url: &ConfigUrl) -> Result<Arc<rustls::ClientConfig>, FetchError> {
        if let Some(c) = &self.config {
            return Ok(c.clone());
        }
        let c = Arc::new(client_config(url, self.bundle)?);
        self.config = Some(c.clone());
        Ok(c)
    }
}

fn client_config(url: &ConfigUrl, bundle: &Path) -> Result<rustls::ClientConfig, FetchError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let fail = |what: String| FetchError::CaBundle {
        url: url.location(),
        bundle: bundle.to_path_buf(),
        what,
    };
    let pem = match std::fs::read(bundle) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FetchError::NoCaBundle {
                url: url.location(),
                bundle: bundle.to_path_buf(),
            })
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    let mut roots = rustls::RootCertStore::empty();
    // a certificate the store cannot use (an old format) is skipped, as
    // every TLS client does with a system bundle
    let certs = CertificateDer::pem_slice_iter(&pem).flatten();
    let (added, _skipped) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(fail("holds no usable CA certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Why the network brought up to fetch a config (DHCP on every NIC) is
/// not what that config asks for; `None` when it is (no interfaces named,
/// or each NIC named for DHCP and no other link). The caller warns: this
/// boot keeps the network it has.
pub fn network_mismatch(config: &MachineConfig, got: &NetReport) -> Option<String> {
    use crate::net::{Mode, Selector};
    let plans = crate::net::plans_from_config(config);
    if plans.is_empty() {
        return None;
    }
    let matches = |sel: &Selector, i: &InterfaceReport| match sel {
        Selector::Name(n) => &i.name == n,
        Selector::Mac(m) => {
            let mac: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
            i.mac.as_deref() == Some(mac.join(":").as_str())
        }
    };
    let same = plans
        .iter()
        .all(|p| p.mode == Mode::Dhcp && got.interfaces.iter().any(|i| matches(&p.selector, i)))
        && got
            .interfaces
            .iter()
            .all(|i| plans.iter().any(|p| matches(&p.selector, i)));
    if same {
        return None;
    }
    let wanted: Vec<String> = plans
        .iter()
        .map(|p| match &p.mode {
            Mode::Dhcp => format!("{} by DHCP", p.selector),
            Mode::Static { .. } => format!("{} static", p.selector),
        })
        .collect();
    Some(format!(
        "the fetched config names interfaces ({}), but the network was brought up with \
         DHCP on every NIC to fetch it and is kept as it is this boot",
        wanted.join("; ")
    ))
}

#[cfg(test)]
mod tests;
