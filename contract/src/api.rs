//! The node API's wire protocol, shared by the agent's server (`agent/src/api/`)
//! and `nodeimg node` (the client).
//!
//! Transport: TLS 1.3 on TCP port [`PORT`], both sides authenticated by
//! certificates of the cluster's API CA (the machine config's `[api]`).
//! One exchange per connection: the client sends one [`Request`] as one
//! JSON line (at most [`MAX_REQUEST`] bytes, ending in `\n`), the node
//! answers one [`Response`] as one JSON document and closes the stream.
//!
//! ```text
//! > {"op":"logs","service":"containerd","tail":50}
//! < {"text":"...last 50 lines..."}
//! ```
//!
//! It does no I/O: parsing and the pure checks only.

use serde::{Deserialize, Serialize};

use crate::report::Report;

/// The TCP port the node API listens on (all addresses).
pub const PORT: u16 = 50000;
/// The longest request line the node reads: an `apply-config` carries a
/// whole machine config (at most [`MAX_CONFIG`]) JSON-escaped.
pub const MAX_REQUEST: usize = 3 * MAX_CONFIG;
/// The largest machine config the node takes, as the agent's boot sources.
pub const MAX_CONFIG: usize = 1 << 20;
/// A followed log sends an empty `text` this often when nothing was
/// appended, so a client can tell a quiet log from a dead node.
pub const FOLLOW_KEEPALIVE_SECS: u64 = 5;
/// Lines of a log the node sends when the request names no `tail`.
pub const DEFAULT_TAIL: usize = 200;
/// The most log lines one answer carries.
pub const MAX_TAIL: usize = 10_000;
/// The longest service name (services are named like files, briefly).
const MAX_SERVICE_NAME: usize = 64;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// The node's latest boot report (the `NODEIMG-REPORT` object).
    Status,
    /// The last `tail` lines (default [`DEFAULT_TAIL`]) of a service's log;
    /// with `follow`, then what is appended, as it comes: one `text`
    /// answer per line of the stream (an empty one every
    /// [`FOLLOW_KEEPALIVE_SECS`] when nothing came), until the client closes.
    Logs {
        service: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<usize>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        follow: bool,
    },
    /// The kernel's log buffer.
    Dmesg,
    /// The running machine config, secrets redacted.
    Config,
    /// A control-plane node's Kubernetes audit log: one `# NAME BYTES`
    /// line per file of its directory (the current log and its rotated
    /// ones, by name), then the last `tail` lines (default
    /// [`DEFAULT_TAIL`]) of the current log, one JSON event each.
    Audit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<usize>,
    },
    /// Stop the services and reboot.
    Reboot,
    /// Stop the services and power off.
    Shutdown,
    /// Check `config` (a whole machine config, TOML) against this node and
    /// its image; if it passes, store it as the node's config and apply
    /// what can change live. A config the node cannot serve is refused
    /// whole and changes nothing.
    #[serde(rename = "apply-config")]
    ApplyConfig { config: String },
    /// Pull an image into containerd's Kubernetes namespace through the
    /// node's registry settings (mirrors and logins of `[containerd]`).
    Pull { image: String },
    /// Start a new etcd cluster on this control-plane node, once: refused
    /// when its etcd holds data or a configured member already serves.
    Bootstrap,
    /// [`Request::Bootstrap`] from an etcd snapshot: the line is followed
    /// by the snapshot's `bytes` raw bytes, which must hash to `sha256`;
    /// the node restores it (`etcdutl snapshot restore`) as a cluster of
    /// one, which the other members then join.
    Restore(Blob),
    /// A snapshot of this member's etcd, now: answered with
    /// [`Response::Blob`] and the snapshot's bytes after it.
    #[serde(rename = "etcd-snapshot")]
    EtcdSnapshot,
    /// Import an OCI image archive into containerd's Kubernetes namespace
    /// (an add-on the image does not preload, a judge of the tests): the
    /// line is followed by the archive's `bytes` raw bytes, which must hash
    /// to `sha256`; answered with the image's name and digest.
    Import(Blob),
    /// A control-plane node leaves etcd (refused when the others could not
    /// keep a quorum without it), then reboots; its etcd data is wiped at
    /// the start of that boot and it joins again as a new member.
    Reset,
}

/// Raw bytes that follow a JSON line on the same stream (after its `\n`):
/// how many, and their sha256 (lower-case hex), checked by the receiver
/// before it uses any of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blob {
    pub bytes: u64,
    pub sha256: String,
}

/// The largest body carried: an etcd snapshot (etcd's own backend quota
/// tops out at 8 GiB) or an image archive.
pub const MAX_BLOB: u64 = 8 << 30;

impl Blob {
    /// Refuses a size over [`MAX_BLOB`] or a hash that is not 64
    /// lower-case hex digits.
    pub fn check(&self) -> Result<(), String> {
        if self.bytes == 0 || self.bytes > MAX_BLOB {
            return Err(format!(
                "a body of {} bytes: it must be 1 to {MAX_BLOB}",
                self.bytes
            ));
        }
        let hex = self.sha256.len() == 64
            && self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(format!("{:?} is not a sha256 in hex", self.sha256));
        }
        Ok(())
    }
}

/// What the node answers: exactly one of these keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// `status`.
    Report(Box<Report>),
    /// `logs` and `dmesg`: plain text.
    Text(String),
    /// `config`: the machine config as TOML, secrets redacted.
    Config(String),
    /// `reboot` and `shutdown`: handed to PID 1's main loop, which acts
    /// after this answer is sent.
    Accepted(String),
    /// `apply-config`: the config is stored; what was applied live and
    /// what waits for a reboot.
    Applied(Applied),
    /// `etcd-snapshot`: the snapshot's size and hash; its bytes follow
    /// this answer's line (a `\n` ends it).
    Blob(Blob),
    /// Anything refused or failed.
    Error(String),
}

/// What an accepted `apply-config` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The tables that changed, split into live and reboot.
    pub changes: crate::config::Changes,
    /// Live tables whose application failed, with why (the config is
    /// stored all the same: the next boot applies it whole).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// Why a request line is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request is longer than {MAX_REQUEST} bytes")]
    TooLong,
    #[error("request is not one JSON object of this protocol: {0}")]
    Json(String),
    #[error("`{0}` is not a service name (lower-case letters, digits, `-`, `_`, `.`; not starting with `.`)")]
    ServiceName(String),
    #[error("`{0}` is not an image reference (`[registry/]name[:tag][@sha256:hex]`)")]
    ImageReference(String),
}

impl Request {
    /// Parses one request line and checks its arguments.
    pub fn parse(line: &[u8]) -> Result<Request, RequestError> {
        if line.len() > MAX_REQUEST {
            return Err(RequestError::TooLong);
        }
        let json = |e: serde_json::Error| RequestError::Json(e.to_string());
        let value: serde_json::Value = serde_json::from_slice(line).map_err(json)?;
        let r: Request = serde_json::from_value(value.clone()).map_err(json)?;
        // serde ignores extra keys beside the tag of a unit variant
        // (`{"op":"status","x":1}`), even with deny_unknown_fields
        let allowed: &[&str] = match r {
            Request::Logs { .. } => &["op", "service", "tail", "follow"],
            Request::Audit { .. } => &["op", "tail"],
            Request::ApplyConfig { .. } => &["op", "config"],
            Request::Pull { .. } => &["op", "image"],
            Request::Restore(_) | Request::Import(_) => &["op", "bytes", "sha256"],
            _ => &["op"],
        };
        let extra = value
            .as_object()
            .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())));
        if let Some(k) = extra {
            return Err(RequestError::Json(format!("unknown field `{k}`")));
        }
        if let Request::Logs { service, .. } = &r {
            if !is_service_name(service) {
                return Err(RequestError::ServiceName(service.clone()));
            }
        }
        if let Request::Pull { image } = &r {
            if !is_image_reference(image) {
                return Err(RequestError::ImageReference(image.clone()));
            }
        }
        if let Request::Restore(blob) | Request::Import(blob) = &r {
            blob.check().map_err(RequestError::Json)?;
        }
        Ok(r)
    }

    /// The `op` name, for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Logs { .. } => "logs",
            Request::Dmesg => "dmesg",
            Request::Audit { .. } => "audit",
            Request::Config => "config",
            Request::Reboot => "reboot",
            Request::Shutdown => "shutdown",
            Request::ApplyConfig { .. } => "apply-config",
            Request::Pull { .. } => "pull",
            Request::Bootstrap => "bootstrap",
            Request::Restore(_) => "restore",
            Request::Import(_) => "import",
            Request::EtcdSnapshot => "etcd-snapshot",
            Request::Reset => "reset",
        }
    }

    /// The request as its wire line (`\n` included).
    pub fn line(&self) -> String {
        // A derived Serialize of plain strings and numbers cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// `true` for a plain service name, one that can only name a log in the
/// log directory: `[a-z0-9][a-z0-9._-]*`, at most 64 bytes. No `/`, no
/// leading `.` (so neither `..` nor a hidden file).
pub fn is_service_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    first_ok
        && name.len() <= MAX_SERVICE_NAME
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// `true` for what can be an image reference, `[host[:port]/]path[:tag]
/// [@algo:hex]`: at most 255 bytes of letters, digits and `._-/:@`, not
/// starting with `-` (it becomes an argument of `ctr`) or `/`, no `..`.
/// containerd checks the grammar itself; this only keeps anything else
/// from reaching a command line.
pub fn is_image_reference(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with(['-', '/', '.', ':', '@'])
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
}

/// The last `n` lines of `text` (a trailing newline ends the last line,
/// it does not start an empty one).
pub fn tail_lines(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    let start = body
        .rmatch_indices('\n')
        .nth(n - 1)
        .map_or(0, |(i, _)| i + 1);
    text.get(start..).unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_from_their_lines() {
        assert_eq!(Request::parse(br#"{"op":"status"}"#), Ok(Request::Status));
        assert_eq!(
            Request::parse(b"{\"op\":\"logs\",\"service\":\"containerd\",\"tail\":5}\n"),
            Ok(Request::Logs {
                service: "containerd".into(),
                tail: Some(5),
                follow: false,
            })
        );
        for r in [
            Request::Dmesg,
            Request::Config,
            Request::Reboot,
            Request::Shutdown,
            Request::Bootstrap,
            Request::Logs {
                service: "kubelet".into(),
                tail: None,
                follow: false,
            },
            Request::Logs {
                service: "etcd".into(),
                tail: Some(0),
                follow: true,
            },
            Request::ApplyConfig {
                config: "schema = 1\n\"quoted\" = 1\n".into(),
            },
            Request::Pull {
                image: "docker.io/library/pause:3.10@sha256:0123".into(),
            },
            Request::EtcdSnapshot,
            Request::Reset,
            Request::Audit { tail: None },
            Request::Audit { tail: Some(3) },
            Request::Restore(Blob {
                bytes: 20480,
                sha256: "ab".repeat(32),
            }),
            Request::Import(Blob {
                bytes: 4096,
                sha256: "cd".repeat(32),
            }),
        ] {
            assert_eq!(Request::parse(r.line().as_bytes()), Ok(r.clone()));
            assert!(
                r.line().contains(&format!("\"op\":\"{}\"", r.op())),
                "{r:?}"
            );
        }
    }

    #[test]
    fn unknown_ops_keys_and_garbage_are_refused() {
        for bad in [
            &br#"{"op":"format"}"#[..],
            br#"{"op":"status","extra":1}"#,
            br#"{"op":"logs"}"#,
            br#"{"op":"apply-config"}"#,
            br#"{"op":"apply-config","config":"x","force":true}"#,
            b"status",
            b"",
        ] {
            assert!(
                matches!(Request::parse(bad), Err(RequestError::Json(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b' '; MAX_REQUEST + 1];
        assert_eq!(Request::parse(&long), Err(RequestError::TooLong));
    }

    #[test]
    fn log_names_must_be_plain_service_names() {
        for good in ["containerd", "kubelet", "etcd", "kube-proxy", "a.b_c-1"] {
            assert!(is_service_name(good), "{good}");
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "../etc/shadow",
            "a/b",
            "Containerd",
            "-x",
            "a b",
            "a\0",
            &"x".repeat(65),
        ] {
            assert!(!is_service_name(bad), "{bad:?}");
        }
        let line = br#"{"op":"logs","service":"../../etc/shadow"}"#;
        assert_eq!(
            Request::parse(line),
            Err(RequestError::ServiceName("../../etc/shadow".into()))
        );
    }

    #[test]
    fn pulls_take_plain_image_references_only() {
        for good in ["pause", "10.0.2.100:5000/x/y:1.0", "a.io/b@sha256:ab12"] {
            assert!(is_image_reference(good), "{good}");
        }
        for bad in [
            "",
            "-rf",
            "/x",
            "a b",
            "a..b",
            "a;b",
            "a\nb",
            &"x".repeat(256),
        ] {
            assert!(!is_image_reference(bad), "{bad:?}");
        }
        assert_eq!(
            Request::parse(br#"{"op":"pull","image":"--all"}"#),
            Err(RequestError::ImageReference("--all".into()))
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_lines("a\nb\nc\n", 3), "a\nb\nc\n");
        assert_eq!(tail_lines("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(tail_lines("a\nb\nc\n", 0), "");
        assert_eq!(tail_lines("", 5), "");
        assert_eq!(tail_lines("one", 1), "one");
    }

    #[test]
    fn bodies_announce_a_sane_size_and_a_sha256() {
        let good = Blob {
            bytes: 1,
            sha256: "0f".repeat(32),
        };
        assert_eq!(good.check(), Ok(()));
        for (bytes, sha256) in [
            (0, "0f".repeat(32)),
            (MAX_BLOB + 1, "0f".repeat(32)),
            (1, "0F".repeat(32)),
            (1, "0f".repeat(31)),
        ] {
            assert!(Blob { bytes, sha256 }.check().is_err());
        }
        for op in ["restore", "import"] {
            let line = format!(r#"{{"op":"{op}","bytes":0,"sha256":"00"}}"#);
            assert!(Request::parse(line.as_bytes()).is_err(), "{op}");
        }
        let line = format!(
            r#"{{"op":"restore","bytes":5,"sha256":"{}","x":1}}"#,
            "a".repeat(64)
        );
        assert!(Request::parse(line.as_bytes()).is_err());
        let r: Response = serde_json::from_str(&format!(
            r#"{{"blob":{{"bytes":5,"sha256":"{}"}}}}"#,
            "a".repeat(64)
        ))
        .unwrap();
        assert!(matches!(r, Response::Blob(Blob { bytes: 5, .. })));
    }

    #[test]
    fn responses_are_one_keyed_object() {
        let r = Response::Error("no such service".into());
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"error":"no such service"}"#
        );
        let back: Response = serde_json::from_str(r#"{"text":"hi"}"#).unwrap();
        assert_eq!(back, Response::Text("hi".into()));
    }
}
