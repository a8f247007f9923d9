//! `nodeimg cluster bootstrap --from-store` against a real S3 server
//! (Versity's gateway, tests/support/s3.rs) on this machine, for what must
//! never reach a node: an object whose bytes no longer hash to the sha256
//! stored with it, an object nodeimg did not upload, wrong keys, an empty
//! prefix. Each is refused before any node is called, naming the object
//! or the store. The upload itself, by the
//! backup holder, and the restore that works are tests/ha.rs's.
//!
//! Also what the agent's uploads rely on: the store refuses a body whose
//! sha256 is not the `x-amz-checksum-sha256` it was sent with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action as _, UrlStyle};
use support::s3::{ObjectStore, ACCESS_KEY, BUCKET, SECRET_KEY};
use support::{nodeimg, ok, s, sha256_hex, text};

const PREFIX: &str = "lab/";

/// PUTs `body` as `key` the way the agent does, with `checksum` (base64
/// sha256) and, when given, `meta` as the stored sha256; the status.
fn put(store: &ObjectStore, key: &str, body: &[u8], checksum: &str, meta: Option<&str>) -> u16 {
    let endpoint = store.endpoint().parse().unwrap();
    let bucket = Bucket::new(endpoint, UrlStyle::Path, BUCKET, "us-east-1").unwrap();
    let credentials = Credentials::new(ACCESS_KEY, SECRET_KEY);
    let mut action = bucket.put_object(Some(&credentials), key);
    action
        .headers_mut()
        .insert("x-amz-checksum-sha256", checksum.to_string());
    if let Some(m) = meta {
        action
            .headers_mut()
            .insert("x-amz-meta-sha256", m.to_string());
    }
    let url = action.sign(Duration::from_secs(60));
    let mut req = store
        .agent()
        .put(url.as_str())
        .header("x-amz-checksum-sha256", checksum);
    if let Some(m) = meta {
        req = req.header("x-amz-meta-sha256", m);
    }
    req.send(body).unwrap().status().as_u16()
}

fn b64_sha256(body: &[u8]) -> String {
    use base64::Engine;
    let digest = hex::decode(sha256_hex(body)).unwrap();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

#[test]
fn a_restore_from_the_store_refuses_what_it_cannot_trust() {
    let store = ObjectStore::start();
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    ok(&[
        "cluster",
        "init",
        "--name",
        "lab",
        "--control-plane-endpoint",
        "10.0.0.10:6443",
        "--member",
        "cp-1=10.0.0.10",
        "--out",
        s(&cluster),
    ]);
    store.configure(&cluster, PREFIX, 2);
    let endpoint = store.endpoint();
    // nothing listens at the node's address: every case must end before it
    let node = format!("127.0.0.1:{}", support::free_port());
    let admin = cluster.join("admin.nodeconfig");
    let restore = |object: Option<&str>| {
        let mut args = vec![
            "cluster",
            "bootstrap",
            "--node",
            node.as_str(),
            "--nodeconfig",
            s(&admin),
            "--from-store",
            s(&cluster),
            "--store-endpoint",
            endpoint.as_str(),
        ];
        if let Some(o) = object {
            args.extend(["--object", o]);
        }
        let out = nodeimg(&args);
        assert!(!out.status.success(), "{}", text(&out));
        text(&out)
    };

    // an empty prefix
    let said = restore(None);
    assert!(said.contains("holds no snapshot"), "{said}");

    // the store checks the checksum a body is sent with
    let body = b"not really an etcd snapshot".repeat(100);
    let sha = sha256_hex(&body);
    let wrong = b64_sha256(b"something else");
    let status = put(&store, "lab/etcd-100.db", &body, &wrong, Some(&sha));
    assert_eq!(status, 400, "a body under another sha256 was stored");
    assert!(store.snapshots(PREFIX).is_empty());

    // a snapshot whose bytes changed in the store after the upload
    assert_eq!(
        put(
            &store,
            "lab/etcd-200.db",
            &body,
            &b64_sha256(&body),
            Some(&sha)
        ),
        200
    );
    let (_, file) = store.snapshots(PREFIX).pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let said = restore(None);
    assert!(
        said.contains("lab/etcd-200.db") && said.contains(&format!("not the {sha} stored with it")),
        "{said}"
    );

    // an object nodeimg did not upload (no stored sha256), asked for by name
    assert_eq!(
        put(&store, "lab/etcd-300.db", &body, &b64_sha256(&body), None),
        200
    );
    let said = restore(Some("lab/etcd-300.db"));
    assert!(said.contains("carries no x-amz-meta-sha256"), "{said}");

    // wrong keys: the store's own refusal, named
    let creds = cluster.join("s3-credentials.toml");
    std::fs::write(
        &creds,
        format!("access_key_id = {ACCESS_KEY:?}\nsecret_access_key = \"not-the-key\"\n"),
    )
    .unwrap();
    let said = restore(None);
    assert!(
        said.contains("listing the snapshots") && said.contains("HTTP 403"),
        "{said}"
    );
}
