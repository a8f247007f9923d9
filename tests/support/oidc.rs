//! A real OpenID Provider for the Kubernetes lab: tests/fixtures/oidc-issuer
//! (upstream's zitadel/oidc at a pinned release, with users that carry
//! groups), built once into the user's cache, keyed by its sources and the
//! Go version, and run on this machine's loopback; `lab up --host-forward`
//! offers it to the nodes on the lab host's address. A user's ID token is
//! taken the way a browser would: the authorization code flow, through the
//! provider's own login form.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use base64::Engine;

/// The client the cluster's API server accepts tokens for (their `aud`).
pub const CLIENT: &str = "kubernetes";
const SECRET: &str = "lab-secret";
const REDIRECT: &str = "http://127.0.0.1/callback";

/// The issuer binary, built when its sources or Go changed.
fn binary() -> PathBuf {
    super::go_tool("oidc-issuer", &["go.mod", "go.sum", "main.go"], ".")
}

/// A running provider; stopped when dropped.
pub struct Issuer {
    child: Child,
    /// Where this machine reaches it: `127.0.0.1:PORT`.
    pub port: u16,
    /// `https://HOST:PORT`: the tokens' `iss`.
    pub url: String,
    /// PEM of the CA of its serving certificate.
    pub ca: String,
    _tls: tempfile::TempDir,
}

impl Issuer {
    /// Starts a provider for `url` with `users` (`NAME:PASSWORD:GROUP,…`)
    /// whose ID tokens live `lifetime_s`.
    pub fn start(url: &str, users: &[&str], lifetime_s: u32) -> Issuer {
        let tls = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(binary());
        cmd.args(["-issuer", url, "-listen", "127.0.0.1:0", "-tls-dir"])
            .arg(tls.path())
            .args(["-client", CLIENT, "-secret", SECRET, "-redirect", REDIRECT])
            .arg(format!("-id-token-lifetime={lifetime_s}s"));
        for u in users {
            cmd.args(["-user", u]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the OIDC issuer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening 127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the OIDC issuer said {line:?}"));
        let ca = std::fs::read_to_string(tls.path().join("ca.crt")).unwrap();
        Issuer {
            child,
            port,
            url: url.to_string(),
            ca,
            _tls: tls,
        }
    }

    fn agent(&self) -> ureq::Agent {
        let ca = ureq::tls::Certificate::from_pem(self.ca.as_bytes()).unwrap();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .http_status_as_error(false)
            .build()
            .new_agent()
    }

    /// `path` on this machine's side of the provider.
    fn here(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// An ID token for `user`: the authorization code flow, logging in on
    /// the provider's own form, then the code redeemed by the client.
    pub fn id_token(&self, user: &str, password: &str) -> String {
        let agent = self.agent();
        let location = |r: &ureq::http::Response<ureq::Body>, step: &str| -> String {
            assert_eq!(r.status().as_u16(), 302, "OIDC {step}: {:?}", r.status());
            r.headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .unwrap_or_else(|| panic!("OIDC {step}: no Location"))
                .to_string()
        };
        let auth = agent
            .get(&self.here("/auth"))
            .query("client_id", CLIENT)
            .query("response_type", "code")
            .query("scope", "openid")
            .query("redirect_uri", REDIRECT)
            .query("state", "lab")
            .query("nonce", "lab-nonce")
            .call()
            .unwrap();
        let login = location(&auth, "authorize");
        let id = login
            .split_once("authRequestID=")
            .map(|(_, id)| id.to_string())
            .unwrap_or_else(|| panic!("OIDC authorize sent to {login}"));
        let form = agent
            .post(&self.here("/login/username"))
            .send_form([("username", user), ("password", password), ("id", &id)])
            .unwrap();
        // the provider names its callback by the issuer's address
        let callback = location(&form, "login").replace(&self.url, &self.here(""));
        let back = agent.get(&callback).call().unwrap();
        let redirect = location(&back, "callback");
        let code = redirect
            .split_once("code=")
            .and_then(|(_, rest)| rest.split('&').next())
            .unwrap_or_else(|| panic!("OIDC callback sent to {redirect}"))
            .to_string();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:{SECRET}"));
        let mut token = agent
            .post(&self.here("/oauth/token"))
            .header("Authorization", &format!("Basic {basic}"))
            .send_form([
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ])
            .unwrap();
        let body = token.body_mut().read_to_string().unwrap();
        let v: serde_json::Value = super::json(&body);
        v["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("OIDC token response: {body}"))
            .to_string()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JWT's claims, decoded (not verified: the API server verifies).
pub fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// Where the nodes reach the lab's provider: the lab host's address.
pub const LAB_URL: &str = "https://10.77.0.1:8443";
const LAB_PORT: u16 = 8443;
/// The lab's ID tokens live this long, so one is seen refused once expired
/// while the other checks run.
const LIFETIME_S: u32 = 90;

/// The lab's provider, and two that must not be trusted: one at another
/// address, and an impostor that claims the lab's address but signs with
/// its own key.
pub struct OidcLab {
    pub issuer: Issuer,
    pub other: Issuer,
    pub impostor: Issuer,
}

impl OidcLab {
    pub fn start() -> OidcLab {
        let users = ["alice:alice-pw:auditors", "bob:bob-pw:"];
        OidcLab {
            issuer: Issuer::start(LAB_URL, &users, LIFETIME_S),
            other: Issuer::start("https://10.77.0.1:8444", &users, 3600),
            impostor: Issuer::start(LAB_URL, &users, 3600),
        }
    }

    /// `lab up` offers the lab's provider to the nodes.
    pub fn host_forward(&self) -> String {
        format!("{LAB_PORT}=127.0.0.1:{}", self.issuer.port)
    }

    /// cluster.toml with the provider trusted, its users' groups mapped
    /// under `oidc:`, and its `auditors` group the stack's auditor group.
    pub fn tune(&self, cluster_toml: String) -> String {
        let table = format!(
            "[oidc]\nissuer_url = {LAB_URL:?}\nclient_id = {CLIENT:?}\nusername_claim = \"sub\"\n\
             username_prefix = \"oidc:\"\ngroups_claim = \"groups\"\ngroups_prefix = \"oidc:\"\n\
             ca = \"\"\"\n{}\"\"\"\n\n",
            self.issuer.ca
        );
        assert!(cluster_toml.contains("[oidc]\n\n"), "{cluster_toml}");
        assert!(cluster_toml.contains("auditor_group = \"nodeimg:auditors\""));
        cluster_toml.replacen("[oidc]\n\n", &table, 1).replace(
            "auditor_group = \"nodeimg:auditors\"",
            &format!("auditor_group = \"{AUDITORS}\""),
        )
    }
}

/// The issuer's `auditors` group as the cluster names it.
pub const AUDITORS: &str = "oidc:auditors";
