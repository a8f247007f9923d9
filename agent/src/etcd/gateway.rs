//! etcd's v3 JSON gateway over mTLS, through the agent's own HTTP/1.1
//! client (`config_fetch::http`) and rustls: a POST of a JSON body per
//! call, one connection each. A client library (etcd-client) would bring
//! tokio, tonic and protoc into PID 1 for the few calls used here.
//! 64-bit IDs come back as decimal strings; keys and values are base64.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::config_fetch::http::{self, Limits, Target};

use super::pki::NodeCerts;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("TLS client setup: {0}")]
    Setup(String),
    #[error("{what} at {host}")]
    Http {
        what: String,
        host: String,
        #[source]
        source: Box<http::HttpError>,
    },
    #[error("{what} at {host}: HTTP {status}: {message}")]
    Status {
        what: String,
        host: String,
        status: u16,
        message: String,
    },
    #[error("{what} at {host}: the answer is not JSON")]
    Json { what: String, host: String },
}

/// A client identity and the CA the member's certificate must chain to.
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    pub timeout: Duration,
}

impl Client {
    /// TLS 1.3 (what etcd is set to), the node's client certificate.
    pub fn new(certs: &NodeCerts, timeout: Duration) -> Result<Client, GatewayError> {
        let tls = http::mtls_config(&certs.ca, &certs.client.cert, &certs.client.key, true)
            .map_err(GatewayError::Setup)?;
        Ok(Client { tls, timeout })
    }

    /// POSTs `body` to `https://HOST:2379PATH` and returns the JSON answer.
    pub fn call(&self, host: &str, path: &str, body: &Value) -> Result<Value, GatewayError> {
        let authority = match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(_)) => format!("[{host}]:{}", contract::etcd::CLIENT_PORT),
            _ => format!("{host}:{}", contract::etcd::CLIENT_PORT),
        };
        let target = Target {
            tls: Some(self.tls.clone()),
            host,
            port: contract::etcd::CLIENT_PORT,
            authority: &authority,
            path,
        };
        let limits = Limits {
            connect: self.timeout,
            io: self.timeout,
            total: self.timeout * 2,
            max_body: 1 << 20,
        };
        let what = path.to_string();
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let r = http::post_json(&target, &limits, &bytes).map_err(|source| GatewayError::Http {
            what: what.clone(),
            host: host.to_string(),
            source: Box::new(source),
        })?;
        let value: Option<Value> = serde_json::from_slice(&r.body).ok();
        if r.status != 200 {
            let message = value
                .as_ref()
                .and_then(|v| v.get("message").or_else(|| v.get("error")))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Err(GatewayError::Status {
                what,
                host: host.to_string(),
                status: r.status,
                message,
            });
        }
        value.ok_or(GatewayError::Json {
            what,
            host: host.to_string(),
        })
    }

    /// `/v3/maintenance/status` of the member at `host`.
    pub fn status(&self, host: &str) -> Result<Status, GatewayError> {
        let v = self.call(host, "/v3/maintenance/status", &json!({}))?;
        let header = v.get("header");
        Ok(Status {
            member_id: header.and_then(|h| id(h.get("member_id"))),
            cluster_id: header.and_then(|h| id(h.get("cluster_id"))),
            leader: id(v.get("leader")).filter(|l| *l != 0),
            learner: v.get("isLearner").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// The member list as `host` sees it.
    pub fn members(&self, host: &str) -> Result<Vec<Member>, GatewayError> {
        let v = self.call(host, "/v3/cluster/member/list", &json!({}))?;
        Ok(member_list(&v))
    }

    /// Adds a member with `peer_url` through `host`; returns its ID and
    /// the member list after the add (the new one has no name yet).
    pub fn member_add(
        &self,
        host: &str,
        peer_url: &str,
        learner: bool,
    ) -> Result<(u64, Vec<Member>), GatewayError> {
        let body = json!({"peerURLs": [peer_url], "isLearner": learner});
        let v = self.call(host, "/v3/cluster/member/add", &body)?;
        let added = v.get("member").and_then(|m| id(m.get("ID")));
        let Some(added) = added else {
            return Err(GatewayError::Json {
                what: "/v3/cluster/member/add (no member ID)".into(),
                host: host.to_string(),
            });
        };
        Ok((added, member_list(&v)))
    }

    pub fn member_remove(&self, host: &str, member: u64) -> Result<(), GatewayError> {
        let body = json!({"ID": member.to_string()});
        self.call(host, "/v3/cluster/member/remove", &body)
            .map(|_| ())
    }

    /// Makes learner `member` a voter; etcd refuses until it is in sync.
    pub fn member_promote(&self, host: &str, member: u64) -> Result<(), GatewayError> {
        let body = json!({"ID": member.to_string()});
        self.call(host, "/v3/cluster/member/promote", &body)
            .map(|_| ())
    }

    /// A lease of `ttl` seconds; its ID.
    pub fn lease_grant(&self, host: &str, ttl: u64) -> Result<u64, GatewayError> {
        let v = self.call(host, "/v3/lease/grant", &json!({"TTL": ttl.to_string()}))?;
        id(v.get("ID")).ok_or_else(|| GatewayError::Json {
            what: "/v3/lease/grant (no ID)".into(),
            host: host.to_string(),
        })
    }

    /// One keep-alive of `lease`: the TTL it was renewed to, 0 when it is
    /// gone. (The gateway carries the stream as one request and one
    /// answer when the body holds one message.)
    pub fn lease_keepalive(&self, host: &str, lease: u64) -> Result<u64, GatewayError> {
        let v = self.call(
            host,
            "/v3/lease/keepalive",
            &json!({"ID": lease.to_string()}),
        )?;
        if v.get("error").is_some() {
            return Ok(0);
        }
        Ok(v.get("result").and_then(|r| id(r.get("TTL"))).unwrap_or(0))
    }

    pub fn lease_revoke(&self, host: &str, lease: u64) -> Result<(), GatewayError> {
        self.call(host, "/v3/lease/revoke", &json!({"ID": lease.to_string()}))
            .map(|_| ())
    }

    /// Puts `key` = `value` under `lease` only if `key` does not exist (a
    /// transaction on its create revision); `true` when it was put.
    /// Lease 0 is none: the key outlives every member.
    pub fn create_with_lease(
        &self,
        host: &str,
        key: &str,
        value: &str,
        lease: u64,
    ) -> Result<bool, GatewayError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let k = b64.encode(key);
        let body = json!({
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "createRevision": "0"}],
            "success": [{"requestPut": {"key": k, "value": b64.encode(value), "lease": lease.to_string()}}],
        });
        let v = self.call(host, "/v3/kv/txn", &body)?;
        Ok(v.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    pub fn put(&self, host: &str, key: &str, value: &str) -> Result<(), GatewayError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = json!({"key": b64.encode(key), "value": b64.encode(value)});
        self.call(host, "/v3/kv/put", &body).map(|_| ())
    }

    /// The value of `key`, `None` when it is not set.
    pub fn get(&self, host: &str, key: &str) -> Result<Option<String>, GatewayError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let v = self.call(host, "/v3/kv/range", &json!({"key": b64.encode(key)}))?;
        Ok(v.get("kvs")
            .and_then(Value::as_array)
            .and_then(|kvs| kvs.first())
            .and_then(|kv| kv.get("value"))
            .and_then(Value::as_str)
            .and_then(|s| b64.decode(s).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

/// One member as the cluster API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty for a member added but never started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub learner: bool,
}

fn member_list(v: &Value) -> Vec<Member> {
    let list = v.get("members").and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .map(|m| Member {
            id: id(m.get("ID")).unwrap_or(0),
            name: m
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            peer_urls: m
                .get("peerURLs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            learner: m.get("isLearner").and_then(Value::as_bool).unwrap_or(false),
        })
        .collect()
}

/// What `/v3/maintenance/status` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub member_id: Option<u64>,
    pub cluster_id: Option<u64>,
    pub leader: Option<u64>,
    pub learner: bool,
}

/// A gateway ID: a decimal string (or a number, from other encoders).
fn id(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_decimal_strings() {
        let v = json!({"a": "10276657743932975437", "b": 5, "c": "x"});
        assert_eq!(id(v.get("a")), Some(10_276_657_743_932_975_437));
        assert_eq!(id(v.get("b")), Some(5));
        assert_eq!(id(v.get("c")), None);
        assert_eq!(id(v.get("d")), None);
    }

    #[test]
    fn member_lists_keep_names_urls_and_learners() {
        // as etcd 3.5's gateway answers a member add: the new member has
        // no name, and `isLearner` is left out when false
        let v = json!({"members": [
            {"ID": "1", "name": "cp-1", "peerURLs": ["https://10.77.0.11:2380"]},
            {"ID": "2", "peerURLs": ["https://10.77.0.12:2380"], "isLearner": true}
        ]});
        assert_eq!(
            member_list(&v),
            [
                Member {
                    id: 1,
                    name: "cp-1".into(),
                    peer_urls: vec!["https://10.77.0.11:2380".into()],
                    learner: false
                },
                Member {
                    id: 2,
                    name: String::new(),
                    peer_urls: vec!["https://10.77.0.12:2380".into()],
                    learner: true
                }
            ]
        );
        assert!(member_list(&json!({})).is_empty());
    }
}
