//! A registry for tests: serves one OCI image archive (as nodeimg's `oci`
//! module packs them) over the pull side of the OCI distribution API on
//! 127.0.0.1, behind HTTP Basic auth, and records what it was asked. Real
//! containerd clients pull from it; it stands in for a registry because
//! none can be reached from here, and it implements only what a pull uses
//! (`/v2/`, manifests by tag or digest, blobs by digest, GET and HEAD).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// One request the registry saw: method, path, whether its credentials
/// were right.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorized: bool,
}

pub struct Registry {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// `sha256:…` of the manifest it serves.
    pub manifest_digest: String,
}

/// Serves `archive` as `repo:tag` to clients that send
/// `Authorization: Basic base64(user:password)`.
pub fn serve(archive: &[u8], repo: &str, tag: &str, user: &str, password: &str) -> Registry {
    use base64::Engine;
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut index = None;
    let mut ar = tar::Archive::new(archive);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{hex}"), data);
        } else if path == "index.json" {
            index = Some(data);
        }
    }
    let index: Value = serde_json::from_slice(&index.expect("index.json")).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (log, digest) = (seen.clone(), manifest_digest.clone());
    let (repo, tag) = (repo.to_string(), tag.to_string());
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            // containerd adds `?ns=<registry>` when it asks a mirror
            let url = req.url().to_string();
            let path = url.split('?').next().unwrap_or_default().to_string();
            let method = req.method().as_str().to_string();
            let authorized = req
                .headers()
                .iter()
                .any(|h| h.field.equiv("Authorization") && h.value.as_str() == expected);
            log.lock().unwrap().push(Seen {
                method: method.clone(),
                path: path.clone(),
                authorized,
            });
            let header = |k: &str, v: &str| tiny_http::Header::from_bytes(k, v).unwrap();
            if !authorized {
                let r = tiny_http::Response::from_string("login first")
                    .with_status_code(401)
                    .with_header(header("WWW-Authenticate", "Basic realm=\"test\""));
                let _ = req.respond(r);
                continue;
            }
            let manifests = format!("/v2/{repo}/manifests/");
            let blob_prefix = format!("/v2/{repo}/blobs/");
            let (body, media) = if path == "/v2/" {
                (Some(b"{}".to_vec()), "application/json")
            } else if let Some(r) = path.strip_prefix(&manifests) {
                let found = (r == tag || r == digest).then(|| blobs.get(&digest).cloned());
                (
                    found.flatten(),
                    "application/vnd.oci.image.manifest.v1+json",
                )
            } else if let Some(d) = path.strip_prefix(&blob_prefix) {
                (blobs.get(d).cloned(), "application/octet-stream")
            } else {
                (None, "")
            };
            let Some(body) = body else {
                let _ =
                    req.respond(tiny_http::Response::from_string("unknown").with_status_code(404));
                continue;
            };
            // tiny_http answers HEAD with this body's length and no body
            let mut r = tiny_http::Response::from_data(body)
                .with_header(header("Content-Type", media))
                .with_header(header("Docker-Distribution-API-Version", "registry/2.0"));
            if path.starts_with(&manifests) {
                r = r.with_header(header("Docker-Content-Digest", &digest));
            }
            let _ = req.respond(r);
        }
    });
    Registry {
        port,
        seen,
        manifest_digest,
    }
}
