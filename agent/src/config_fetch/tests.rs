//! The client against real servers on 127.0.0.1 (threads of this test):
//! plain HTTP with canned answers, and HTTPS through rustls with a CA
//! made here.

use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;

const CONFIG: &[u8] = b"schema = 1\nhostname = \"w1\"\n";

fn sha(data: &[u8]) -> String {
    crate::digest::sha256_hex(data)
}

fn fast() -> Policy {
    Policy {
        tries: 4,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(5),
        max_bytes: 4096,
        ca_bundle: PathBuf::from("/nonexistent/ca.crt"),
    }
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn status(code: u16, extra: &str) -> Vec<u8> {
    format!("HTTP/1.1 {code} X\r\nContent-Length: 4\r\n{extra}\r\nnope").into_bytes()
}

/// Answers each connection's one request with the next of `answers` (the
/// last repeats) and keeps the request lines.
struct Server {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn url(&self, path: &str, body: &[u8]) -> ConfigUrl {
        ConfigUrl::parse(&format!("http://{}{path}#sha256={}", self.addr, sha(body))).unwrap()
    }
}

fn serve(answers: Vec<Vec<u8>>) -> Server {
    serve_with(answers, |tcp| Box::new(tcp))
}

fn serve_with(
    answers: Vec<Vec<u8>>,
    wrap: impl Fn(TcpStream) -> Box<dyn Stream> + Send + 'static,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (i, tcp) in listener.incoming().enumerate() {
            let Ok(tcp) = tcp else { return };
            let mut s = wrap(tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            log.lock().unwrap().push(text);
            let answer = answers.get(i).or(answers.last()).unwrap();
            let _ = s.write_all(answer);
            let _ = s.flush();
        }
    });
    Server { addr, seen }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

#[test]
fn a_200_with_the_pinned_body_is_returned_and_the_request_is_plain_http_1_1() {
    let srv = serve(vec![ok(CONFIG)]);
    let got = fetch(&srv.url("/nodes/w1.toml", CONFIG), &fast(), |_| {}).unwrap();
    assert_eq!(got, CONFIG);
    let req = &srv.requests()[0];
    assert!(req.starts_with("GET /nodes/w1.toml HTTP/1.1\r\n"), "{req}");
    assert!(
        req.contains(&format!("\r\nHost: {}\r\n", srv.addr)),
        "{req}"
    );
    assert!(
        !req.to_ascii_lowercase().contains("connection: close"),
        "{req}"
    );
}

#[test]
fn a_wrong_body_is_a_sha256_mismatch_naming_the_url() {
    let srv = serve(vec![ok(b"not toml at all [[[")]);
    let url = srv.url("/c.toml", CONFIG);
    let e = fetch(&url, &fast(), |_| {}).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, FetchError::Mismatch { .. }), "{text}");
    assert!(
        text.contains(&format!("http://{}/c.toml", srv.addr)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "sha256 mismatch (expected {}, got {})",
            sha(CONFIG),
            sha(b"not toml at all [[[")
        )),
        "{text}"
    );
}

#[test]
fn a_404_is_final() {
    let srv = serve(vec![status(404, "")]);
    let e = fetch(&srv.url("/missing", CONFIG), &fast(), |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 404, .. }), "{e}");
    assert_eq!(srv.requests().len(), 1, "a 4xx was retried");
}

#[test]
fn a_503_is_retried_with_backoff_then_the_200_wins() {
    let srv = serve(vec![status(503, ""), status(503, ""), ok(CONFIG)]);
    let mut notes = Vec::new();
    let got = fetch(&srv.url("/c", CONFIG), &fast(), |n| {
        notes.push(n.to_string())
    })
    .unwrap();
    assert_eq!(got, CONFIG);
    assert_eq!(srv.requests().len(), 3);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].contains("try 1 of 4") && notes[0].contains("503"),
        "{notes:?}"
    );
    assert!(notes[1].contains("again in 20 ms"), "{notes:?}");
}

#[test]
fn a_server_that_keeps_failing_is_unreachable_after_the_bounded_tries() {
    let srv = serve(vec![status(502, "")]);
    let e = fetch(&srv.url("/c", CONFIG), &fast(), |_| {}).unwrap_err();
    let text = crate::error::chain(&e);
    assert!(
        matches!(e, FetchError::Unreachable { tries: 4, .. }),
        "{text}"
    );
    assert!(text.contains("after 4 tries: HTTP status 502"), "{text}");
    assert_eq!(srv.requests().len(), 4);
}

#[test]
fn nothing_listening_is_unreachable_naming_the_last_cause() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again: nothing listens there now
    let url =
        ConfigUrl::parse(&format!("http://127.0.0.1:{port}/c#sha256={}", sha(CONFIG))).unwrap();
    let policy = Policy { tries: 2, ..fast() };
    let e = fetch(&url, &policy, |_| {}).unwrap_err();
    let text = crate::error::chain(&e);
    assert!(
        text.starts_with(&format!(
            "http://127.0.0.1:{port}/c: unreachable after 2 tries: connecting to 127.0.0.1:{port}"
        )),
        "{text}"
    );
}

#[test]
fn a_silent_server_times_out_and_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            keep.lock().unwrap().push(tcp); // accepted, never answered
        }
    });
    let url = ConfigUrl::parse(&format!("http://{addr}/c#sha256={}", sha(CONFIG))).unwrap();
    let policy = Policy {
        tries: 2,
        io_timeout: Duration::from_millis(200),
        ..fast()
    };
    let e = fetch(&url, &policy, |_| {}).unwrap_err();
    let text = crate::error::chain(&e);
    assert!(
        text.contains("unreachable after 2 tries: reading the response head timed out"),
        "{text}"
    );
    assert_eq!(held.lock().unwrap().len(), 2);
}

#[test]
fn a_body_over_the_cap_is_refused_announced_or_chunked() {
    let big = vec![b'x'; 5000];
    let srv = serve(vec![ok(&big)]);
    let e = fetch(&srv.url("/big", &big), &fast(), |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::TooLarge { max: 4096, .. }), "{e}");
    assert_eq!(srv.requests().len(), 1, "too large is final");

    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(b"3e8\r\n");
        chunked.extend_from_slice(&[b'y'; 1000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let srv = serve(vec![chunked]);
    let e = fetch(&srv.url("/big", &[b'y'; 5000]), &fast(), |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::TooLarge { .. }), "{e}");

    // an unannounced length, read to the end of the stream
    let mut open_ended = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    open_ended.extend_from_slice(&big);
    let srv = serve(vec![open_ended]);
    let e = fetch(&srv.url("/big", &big), &fast(), |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::TooLarge { .. }), "{e}");
}

#[test]
fn chunked_and_unannounced_bodies_under_the_cap_are_read_whole() {
    let mut chunked =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nschem\r\n".to_vec();
    let rest = &CONFIG[5..];
    chunked.extend_from_slice(format!("{:x}\r\n", rest.len()).as_bytes());
    chunked.extend_from_slice(rest);
    chunked.extend_from_slice(b"\r\n0\r\nX-Trailer: 1\r\n\r\n");
    let srv = serve(vec![chunked]);
    assert_eq!(
        fetch(&srv.url("/c", CONFIG), &fast(), |_| {}).unwrap(),
        CONFIG
    );

    let mut open_ended = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    open_ended.extend_from_slice(CONFIG);
    let srv = serve(vec![open_ended]);
    assert_eq!(
        fetch(&srv.url("/c", CONFIG), &fast(), |_| {}).unwrap(),
        CONFIG
    );
}

#[test]
fn redirects_are_followed_a_few_times_and_keep_the_pin() {
    let srv = serve(vec![
        status(302, "Location: /real/c.toml\r\n"),
        status(301, "Location: next.toml\r\n"),
        ok(CONFIG),
    ]);
    let got = fetch(&srv.url("/c", CONFIG), &fast(), |_| {}).unwrap();
    assert_eq!(got, CONFIG);
    let lines: Vec<String> = srv
        .requests()
        .iter()
        .map(|r| r.lines().next().unwrap().to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "GET /c HTTP/1.1",
            "GET /real/c.toml HTTP/1.1",
            "GET /real/next.toml HTTP/1.1"
        ]
    );

    // the pin still applies after a redirect
    let srv = serve(vec![status(302, "Location: /other\r\n"), ok(b"other")]);
    let e = fetch(&srv.url("/c", CONFIG), &fast(), |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::Mismatch { .. }), "{e}");

    let srv = serve(vec![status(302, "Location: /again\r\n")]);
    let e = fetch(&srv.url("/c", CONFIG), &fast(), |_| {}).unwrap_err();
    assert!(e.to_string().contains("more than 3 redirects"), "{e}");
    assert_eq!(srv.requests().len(), 4, "the first request and 3 redirects");

    let srv = serve(vec![status(302, "Location: ftp://x/c\r\n")]);
    let e = fetch(&srv.url("/c", CONFIG), &fast(), |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::Redirect { .. }), "{e}");
}

/// A CA and a server certificate for 127.0.0.1 it issued, as PEM.
fn pki() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let der_key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der_key)
        .unwrap();
    (ca_cert.pem(), Arc::new(server))
}

fn serve_tls(answers: Vec<Vec<u8>>, config: Arc<rustls::ServerConfig>) -> Server {
    serve_with(answers, move |tcp| {
        let conn = rustls::ServerConnection::new(config.clone()).unwrap();
        Box::new(rustls::StreamOwned::new(conn, tcp))
    })
}

#[test]
fn https_is_checked_against_the_given_bundle_only() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, server) = pki();
    let bundle = dir.path().join("ca.crt");
    std::fs::write(&bundle, &ca_pem).unwrap();
    let srv = serve_tls(vec![ok(CONFIG)], server.clone());
    let url = ConfigUrl::parse(&format!("https://{}/c#sha256={}", srv.addr, sha(CONFIG))).unwrap();
    let policy = Policy {
        ca_bundle: bundle.clone(),
        ..fast()
    };
    assert_eq!(fetch(&url, &policy, |_| {}).unwrap(), CONFIG);

    // another CA's bundle: the server is refused at once, not retried
    let (other_ca, _) = pki();
    std::fs::write(&bundle, other_ca).unwrap();
    let srv = serve_tls(vec![ok(CONFIG)], server.clone());
    let url = ConfigUrl::parse(&format!("https://{}/c#sha256={}", srv.addr, sha(CONFIG))).unwrap();
    let mut retried = false;
    let e = fetch(&url, &policy, |_| retried = true).unwrap_err();
    let text = crate::error::chain(&e);
    assert!(matches!(e, FetchError::Failed { .. }), "{text}");
    assert!(text.contains("TLS with 127.0.0.1"), "{text}");
    assert!(!retried);

    // no bundle: refused before any connection
    let srv = serve_tls(vec![ok(CONFIG)], server.clone());
    let url = ConfigUrl::parse(&format!("https://{}/c#sha256={}", srv.addr, sha(CONFIG))).unwrap();
    let e = fetch(&url, &fast(), |_| {}).unwrap_err();
    assert!(matches!(e, FetchError::NoCaBundle { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("/nonexistent/ca.crt, which is missing"),
        "{e}"
    );
    assert!(srv.requests().is_empty());

    // an https URL is never redirected to http
    std::fs::write(&bundle, &ca_pem).unwrap();
    let plain = serve(vec![ok(CONFIG)]);
    let to_plain = format!("Location: http://{}/c\r\n", plain.addr);
    let srv = serve_tls(vec![status(302, &to_plain)], server);
    let url = ConfigUrl::parse(&format!("https://{}/c#sha256={}", srv.addr, sha(CONFIG))).unwrap();
    let e = fetch(&url, &policy, |_| {}).unwrap_err();
    assert!(e.to_string().contains("https redirected to http"), "{e}");
    assert!(plain.requests().is_empty());
}

#[test]
fn backoff_doubles_and_is_capped() {
    let p = Policy::default();
    let waits: Vec<u128> = (1..=7).map(|n| p.backoff(n).as_millis()).collect();
    assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
    assert_eq!(p.backoff(40).as_millis(), 8000);
}

#[test]
fn a_config_naming_other_interfaces_than_dhcp_everywhere_is_said() {
    use contract::report::{AddressReport, Obtained};
    let net = NetReport {
        interfaces: vec![InterfaceReport {
            name: "eth0".into(),
            mac: Some("52:54:00:12:34:56".into()),
            addresses: vec![AddressReport {
                address: "10.0.2.15/24".into(),
                source: Obtained::Dhcp,
            }],
            gateway: None,
            dns: Vec::new(),
            lease_secs: Some(86400),
            error: None,
            ntp: Vec::new(),
        }],
        ..NetReport::default()
    };
    let cfg = |net: &str| {
        let api = format!(
            "[api]\nclient_ca = '''\n{}'''\ncertificate = '''\n{}'''\nkey = '''\n{}'''\n",
            include_str!("../../../contract/testdata/ca.crt"),
            include_str!("../../../contract/testdata/node.crt"),
            include_str!("../../../contract/testdata/node.key"),
        );
        let text = format!(
            "schema = 1\nhostname = \"w\"\nrole = \"worker\"\n[cluster]\nname = \"lab\"\n{net}\n{api}"
        );
        MachineConfig::from_toml(&text, "t").unwrap()
    };
    assert_eq!(network_mismatch(&cfg(""), &net), None);
    let dhcp_by_mac = "[[network.interfaces]]\nmac = \"52:54:00:12:34:56\"\ndhcp = true\n";
    assert_eq!(network_mismatch(&cfg(dhcp_by_mac), &net), None);
    let dhcp_by_name = "[[network.interfaces]]\nname = \"eth0\"\ndhcp = true\n";
    assert_eq!(network_mismatch(&cfg(dhcp_by_name), &net), None);
    let fixed = "[[network.interfaces]]\nname = \"eth0\"\naddresses = [\"10.0.2.20/24\"]\n";
    let w = network_mismatch(&cfg(fixed), &net).unwrap();
    assert!(w.contains("name eth0 static"), "{w}");
    let other = "[[network.interfaces]]\nname = \"eth1\"\ndhcp = true\n";
    assert!(network_mismatch(&cfg(other), &net).is_some());
}
