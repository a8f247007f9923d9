use super::*;
use crate::sign::keys::tests::{COSIGN_KEY, COSIGN_PASSWORD, COSIGN_PUB};
use crate::sign::keys::PublicKey;

/// `cosign sign-blob --key cosign.key --bundle b.json --new-bundle-format
/// --tlog-upload=false` over [`COSIGN_MESSAGE`] (trixie's cosign 2.5.0,
/// the key in `keys_tests.rs`).
const COSIGN_BUNDLE: &str = r#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial":{"publicKey":{"hint":"mkHtANjgNHh7ijzaY0Q53Ksskl/nNcOrxics/nKYvW0="}}, "messageSignature":{"messageDigest":{"algorithm":"SHA2_256", "digest":"a4I/oSO5AKQTneIQEncnWvgynzo9NMAO879Pxr9gKH4="}, "signature":"MEYCIQDnX5d5F/m/fenpnUElJV/lx9Fw5JzL+Ezy9ubWgfMI1gIhAPEkaWbZJhwm7C+XOhzGyhBf0FKnXJEXzdsfdnqkMKRC"}}"#;
const COSIGN_MESSAGE: &[u8] = b"{\"schema\":1}\n";

fn here() -> &'static Path {
    Path::new("b.json")
}

#[test]
fn reads_cosign_bundle() {
    let signed = parse_bundle(COSIGN_BUNDLE.as_bytes(), here()).unwrap();
    let public = PublicKey::from_pem(COSIGN_PUB.as_bytes()).unwrap();
    assert_eq!(signed.digest, hash::sha256(COSIGN_MESSAGE));
    assert_eq!(signed.key_hint.as_deref(), Some(public.hint().as_str()));
    assert!(public.verifies(COSIGN_MESSAGE, &signed.signature));
    assert!(!public.verifies(b"{\"schema\":2}\n", &signed.signature));
}

#[test]
fn writes_what_cosign_writes() {
    let key = SigningKey::from_pem(COSIGN_KEY.as_bytes(), COSIGN_PASSWORD).unwrap();
    let json = sign_bytes(COSIGN_MESSAGE, &key);
    assert_eq!(json, sign_bytes(COSIGN_MESSAGE, &key), "deterministic");
    let ours: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(COSIGN_BUNDLE).unwrap();
    // Same document except the signature (cosign's ECDSA nonces are random).
    let strip = |mut v: serde_json::Value| {
        v["messageSignature"]
            .as_object_mut()
            .unwrap()
            .remove("signature");
        v
    };
    assert_eq!(strip(ours.clone()), strip(theirs));
    let signed = parse_bundle(&json, here()).unwrap();
    assert!(key.public_key().verifies(COSIGN_MESSAGE, &signed.signature));
    let mut keys: Vec<&String> = ours.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["mediaType", "messageSignature", "verificationMaterial"]
    );
}

#[test]
fn refuses_other_bundles() {
    let dsse = COSIGN_BUNDLE.replace(
        r#""messageSignature":{"messageDigest":{"algorithm":"SHA2_256", "digest":"a4I/oSO5AKQTneIQEncnWvgynzo9NMAO879Pxr9gKH4="}, "signature":"MEYCIQDnX5d5F/m/fenpnUElJV/lx9Fw5JzL+Ezy9ubWgfMI1gIhAPEkaWbZJhwm7C+XOhzGyhBf0FKnXJEXzdsfdnqkMKRC"}"#,
        r#""dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"AA==","keyid":""}]}"#,
    );
    assert!(matches!(
        parse_bundle(dsse.as_bytes(), here()),
        Err(BundleError::NotMessageSignature { .. })
    ));
    let media = COSIGN_BUNDLE.replace("bundle.v0.3+json", "bundle.v9+json");
    assert!(matches!(
        parse_bundle(media.as_bytes(), here()),
        Err(BundleError::MediaType { .. })
    ));
    let sha512 = COSIGN_BUNDLE.replace("SHA2_256", "SHA2_512");
    assert!(matches!(
        parse_bundle(sha512.as_bytes(), here()),
        Err(BundleError::DigestAlgorithm { .. })
    ));
    assert!(matches!(
        parse_bundle(b"{", here()),
        Err(BundleError::Json { .. })
    ));
    let d = tempfile::tempdir().unwrap();
    assert!(matches!(
        read_bundle(&d.path().join(BUNDLE_FILE)),
        Err(BundleError::Missing { .. })
    ));
}

#[test]
fn sign_manifest_writes_beside_it() {
    let d = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    fs::write(d.path().join(MANIFEST_FILE), b"not json").unwrap();
    assert!(matches!(
        sign_manifest(d.path(), &key),
        Err(BundleError::Manifest { .. })
    ));
    assert!(!d.path().join(BUNDLE_FILE).exists());
    let manifest = &crate::manifest::Manifest::sample(Vec::new())
        .to_json()
        .unwrap();
    fs::write(d.path().join(MANIFEST_FILE), manifest).unwrap();
    let out = sign_manifest(d.path(), &key).unwrap();
    assert_eq!(out, d.path().join(BUNDLE_FILE));
    let signed = read_bundle(&out).unwrap();
    assert_eq!(signed.digest, hash::sha256(manifest));
    assert!(key.public_key().verifies(manifest, &signed.signature));
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
}
