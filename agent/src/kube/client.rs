//! The few Kubernetes API calls the agent makes (read a Node, list Nodes and
//! CSRs, server-side apply, approve a CSR), over mTLS through the agent's
//! own HTTP/1.1 client: a client library (kube-rs) would bring tokio and
//! hyper into PID 1 for a handful of requests.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config_fetch::http::{self, Limits, Target};

/// The field manager every apply of the agent names.
pub const FIELD_MANAGER: &str = "nodeimg-agent";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS client setup: {0}")]
    Setup(String),
    #[error("{method} {path}")]
    Http {
        method: &'static str,
        path: String,
        #[source]
        source: Box<http::HttpError>,
    },
    #[error("{method} {path}: HTTP {status}: {message}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{method} {path}: the answer is not JSON")]
    Json { method: &'static str, path: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    timeout: Duration,
}

impl Client {
    /// A client of the API at `host:port` that trusts `ca_pem` and shows
    /// `cert_pem` (with `key_pem`).
    pub fn new(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        host: &str,
        port: u16,
    ) -> Result<Client, ClientError> {
        let tls =
            http::mtls_config(ca_pem, cert_pem, key_pem, false).map_err(ClientError::Setup)?;
        Ok(Client {
            tls,
            host: host.to_string(),
            port,
            timeout: Duration::from_secs(10),
        })
    }

    /// The status and body of one request.
    fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<(&str, &Value)>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let authority = format!("{}:{}", self.host, self.port);
        let target = Target {
            tls: Some(self.tls.clone()),
            host: &self.host,
            port: self.port,
            authority: &authority,
            path,
        };
        let limits = Limits {
            connect: self.timeout,
            io: self.timeout,
            total: self.timeout * 2,
            max_body: 8 << 20,
        };
        let bytes = body.map(|(kind, v)| (kind, serde_json::to_vec(v).unwrap_or_default()));
        let r = http::send(
            &target,
            &limits,
            method,
            bytes.as_ref().map(|(k, b)| (*k, b.as_slice())),
        )
        .map_err(|source| ClientError::Http {
            method,
            path: path.to_string(),
            source: Box::new(source),
        })?;
        Ok((r.status, r.body))
    }

    fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<(&str, &Value)>,
    ) -> Result<Value, ClientError> {
        let (status, body) = self.send(method, path, body)?;
        let value: Option<Value> = serde_json::from_slice(&body).ok();
        if !(200..300).contains(&status) {
            let message = value
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Err(ClientError::Status {
                method,
                path: path.to_string(),
                status,
                message,
            });
        }
        value.ok_or(ClientError::Json {
            method,
            path: path.to_string(),
        })
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call("GET", path, None)
    }

    /// The API server's `/readyz`: Ok once every check passes (its RBAC
    /// roles bootstrapped, etcd answering), else the checks that fail.
    pub fn ready(&self) -> Result<(), ClientError> {
        let path = "/readyz?verbose";
        let (status, body) = self.send("GET", path, None)?;
        if status == 200 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&body);
        let failing: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("[-]")).collect();
        Err(ClientError::Status {
            method: "GET",
            path: path.to_string(),
            status,
            message: failing.join("; "),
        })
    }

    /// Server-side apply of `object` at `path` (its own URL), taking over
    /// fields another manager set.
    pub fn apply(&self, path: &str, object: &Value) -> Result<Value, ClientError> {
        let url = format!("{path}?fieldManager={FIELD_MANAGER}&force=true");
        // JSON is YAML: the apply patch type takes it as it is
        self.call(
            "PATCH",
            &url,
            Some(("application/apply-patch+yaml", object)),
        )
    }

    pub fn create(&self, path: &str, object: &Value) -> Result<Value, ClientError> {
        self.call("POST", path, Some(("application/json", object)))
    }

    /// Deletes the object at `path`; one already gone is no error.
    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        match self.call("DELETE", path, None) {
            Err(e) if e.status() == Some(404) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    pub fn put(&self, path: &str, object: &Value) -> Result<Value, ClientError> {
        self.call("PUT", path, Some(("application/json", object)))
    }
}
