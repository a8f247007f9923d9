use std::os::unix::fs::PermissionsExt;

use super::*;

/// Made by `cosign generate-key-pair` (Debian trixie's cosign 2.5.0) with
/// COSIGN_PASSWORD=nodeimg-test; a throwaway key for these tests only.
pub(crate) const COSIGN_KEY: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJMRTdERDl6cjRZSWxQOWp5YldTMzM1aERqaHBwQUNJ
ZEJncUR1VUo5RWd3PSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJjSDN3d1ZTQTZZbHVIdTRUa3l0NkJyTnlxSGlkM0I2aSJ9LCJj
aXBoZXJ0ZXh0IjoiaVBPYmIyVWp5TU4xRFlac05FOStRWXZnS2ptNjA0cXhibDhk
WkR3ZVZhY0xPY1JyTERqeGc3dUJnM0JGQTdTTW9RMWtpNjRHMHhzclozSnhKSDRm
aDFrdUxzMXBPbmxnZUZUU2VSbnVuVzJKeFNzNHQ3ZkkwVlQvOHRIVEk1MGEvN0Yy
bTFCZ2tMTGZ3U1lxcVMvRlduaGRrTmNNc2QvanVOeHZhZ0xzOTFPdmJHSWhybVo4
UU9UWHNLODNlamhNdi9RQVpFenpFclI5MEE9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
";
pub(crate) const COSIGN_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEXa2JBCAimeenQVUMsUIMuoS9i66g
Ud2vL5KYlXfjcpaZy6vHFaypsMemg2DQ48ucbozn7YgsEvEnBXgWWc42+g==
-----END PUBLIC KEY-----
";
pub(crate) const COSIGN_PASSWORD: &[u8] = b"nodeimg-test";

/// `cosign generate-key-pair` with an empty COSIGN_PASSWORD: still sealed.
const COSIGN_KEY_EMPTY_PASSWORD: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJLNmxBcm9mbXFockZrUlphUmk5MzhsMW13UUZ0UVYx
OU5zcHAwNlNTcDZVPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJ6QmpvNWk5WmhVcUN0ZDRQUFJ2a2pZUUx2cE5veTRuciJ9LCJj
aXBoZXJ0ZXh0IjoiSURlWHZucHUyWVpxS0tZSURqLzNqcE1FcUh3QVc4Z0IvRVFx
VzhlWDdzeEk2bWZCTkFORGZJaDZuWHVWODhFRjVhMXMwNEZIRXIvOC9ncGZ5Q2Zr
T3J3c0NUaUlhWWpCbHBYWmJuS3pXYzQvdU5iWHYyL2FlYnhOSEFLeXBoZnB4MVhX
Y25IbWVVRmpLa2dRK296VzVLUlF1VnZXR0xKWnRibkY0YTdtdjZPZm5uQURPMFor
VnhFYXhXQ1J3Yzh2LzFCYzMyWWlYVVZJQ2c9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
";

/// go-securesystemslib's `encrypted` test envelopes under "supersecret",
/// one per scrypt strength it accepts (legacy N=2^15, standard 2^16, OWASP
/// 2^17). They come from its `Marshal`, so the sealed bytes are the JSON
/// of `[]byte("reallyimportant")`: a base64 string in quotes.
const ENVELOPE_VECTORS: [&str; 3] = [
    r#"{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"WO3mVvyTwJ9vwT5/Tk5OW5WPIBUofMjcpEfrLnfY4uA="},"cipher":{"name":"nacl/secretbox","nonce":"tCy7HcTFr4uxv4Nrg/DWmncuZ148U1MX"},"ciphertext":"08n43p5G5yviPEZpO7tPPF4aZQkWiWjkv4taFdhDBA0tamKH4nw="}"#,
    r#"{"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"FhzPOt9/bJG4PTq6lQ6ecG6GzaOuOy/ynG5+yRiFlNs="},"cipher":{"name":"nacl/secretbox","nonce":"aw1ng1jHaDz/tQ7V2gR9O2+IGQ8xJEuE"},"ciphertext":"HycvuLZL4sYH0BrYTh4E/H20VtAW6u5zL5Pr+IBjYLYnCPzDkq8="}"#,
    r#"{"kdf":{"name":"scrypt","params":{"N":131072,"r":8,"p":1},"salt":"m38E3kouJTtiheLQN22NQ8DTito5hrjpUIskqcd375k="},"cipher":{"name":"nacl/secretbox","nonce":"Y6PM13yA+o44pE/W1ZBwczeGnTV/m9Zc"},"ciphertext":"6H8sqj1K6B6yDjtH5AQ6lbFigg/C2yDDJc4rYJ79w9aVPImFIPI="}"#,
];

#[test]
fn envelope_vectors_open() {
    for v in ENVELOPE_VECTORS {
        let plain = decrypt(v.as_bytes(), b"supersecret").unwrap();
        let inner: String = serde_json::from_slice(&plain).unwrap();
        assert_eq!(B64.decode(inner).unwrap(), b"reallyimportant");
        assert!(matches!(
            decrypt(v.as_bytes(), b"supersecreT"),
            Err(KeyFormatError::Decrypt)
        ));
    }
}

#[test]
fn envelope_refuses_unknown_scrypt_parameters() {
    // N=2^20 would make scrypt allocate 1 GiB: refused before any work.
    let v = ENVELOPE_VECTORS[0].replace("\"N\":32768", "\"N\":1048576");
    match decrypt(v.as_bytes(), b"supersecret") {
        Err(KeyFormatError::ScryptParams {
            n: 1048576,
            r: 8,
            p: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
    let v = ENVELOPE_VECTORS[0].replace("nacl/secretbox", "aes-gcm");
    assert!(matches!(
        decrypt(v.as_bytes(), b"supersecret"),
        Err(KeyFormatError::Algorithm { what: "cipher", .. })
    ));
}

#[test]
fn envelope_round_trip_and_tamper() {
    let sealed = encrypt(b"payload", b"pw");
    assert_eq!(decrypt(&sealed, b"pw").unwrap().as_slice(), b"payload");
    let mut env: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
    assert_eq!(env["kdf"]["params"]["N"], 65536);
    let mut ct = B64.decode(env["ciphertext"].as_str().unwrap()).unwrap();
    ct[20] ^= 1;
    env["ciphertext"] = B64.encode(ct).into();
    let tampered = serde_json::to_vec(&env).unwrap();
    assert!(matches!(
        decrypt(&tampered, b"pw"),
        Err(KeyFormatError::Decrypt)
    ));
}

#[test]
fn cosign_keys_load() {
    let key = SigningKey::from_pem(COSIGN_KEY.as_bytes(), COSIGN_PASSWORD).unwrap();
    let public = PublicKey::from_pem(COSIGN_PUB.as_bytes()).unwrap();
    assert_eq!(key.public_key(), public);
    // The hint cosign wrote into its bundle for this key.
    assert_eq!(
        public.hint(),
        "mkHtANjgNHh7ijzaY0Q53Ksskl/nNcOrxics/nKYvW0="
    );
    assert_eq!(public.to_pem(), COSIGN_PUB);
    assert!(matches!(
        SigningKey::from_pem(COSIGN_KEY.as_bytes(), b""),
        Err(KeyFormatError::Decrypt)
    ));
    SigningKey::from_pem(COSIGN_KEY_EMPTY_PASSWORD.as_bytes(), b"").unwrap();
}

#[test]
fn our_keys_round_trip_and_sign() {
    let key = SigningKey::generate();
    let pem = key.to_encrypted_pem(b"secret");
    assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
    let again = SigningKey::from_pem(pem.as_bytes(), b"secret").unwrap();
    assert_eq!(again.public_key(), key.public_key());
    let sig = key.sign(b"message");
    assert_eq!(sig, again.sign(b"message"), "RFC 6979: deterministic");
    assert!(key.public_key().verifies(b"message", &sig));
    assert!(!key.public_key().verifies(b"messagf", &sig));
    assert!(!SigningKey::generate()
        .public_key()
        .verifies(b"message", &sig));
    assert!(!key.public_key().verifies(b"message", b"not der"));
    assert!(!format!("{key:?}").contains(pem.as_str()));
}

#[test]
fn plain_pkcs8_and_labels() {
    let key = SigningKey::generate();
    let secret = p256::SecretKey::from(&key.inner);
    let pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
    let loaded = SigningKey::from_pem(pem.as_bytes(), b"").unwrap();
    assert_eq!(loaded.public_key(), key.public_key());
    match SigningKey::from_pem(key.public_key().to_pem().as_bytes(), b"") {
        Err(KeyFormatError::Label(l)) => assert_eq!(l, "PUBLIC KEY"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        PublicKey::from_pem(b"hello"),
        Err(KeyFormatError::Pem(_))
    ));
    match PublicKey::from_pem(key.to_encrypted_pem(b"").as_bytes()) {
        Err(KeyFormatError::NotPublic(l)) => assert_eq!(l, SIGSTORE_KEY_LABEL),
        other => panic!("{other:?}"),
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn signing_pair_files() {
    let d = tempfile::tempdir().unwrap();
    let [k, p] = generate_signing_pair(d.path(), b"pw", false).unwrap();
    assert_eq!(mode(&k), 0o600);
    let key = SigningKey::load(&k, b"pw").unwrap();
    assert_eq!(PublicKey::load(&p).unwrap(), key.public_key());
    // Never silently replaced.
    match generate_signing_pair(d.path(), b"pw", false) {
        Err(KeyError::Exists { path }) => assert_eq!(path, k),
        other => panic!("{other:?}"),
    }
    generate_signing_pair(d.path(), b"pw", true).unwrap();
    assert_ne!(PublicKey::load(&p).unwrap(), key.public_key());
    assert_eq!(mode(&k), 0o600);
    match SigningKey::load(&k, b"wrong") {
        Err(KeyError::Format {
            path,
            source: KeyFormatError::Decrypt,
        }) => assert_eq!(path, k),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fs::read_dir(d.path()).unwrap().count(),
        2,
        "no temp files left"
    );
}

#[test]
fn secret_is_0600_from_creation_even_over_a_stale_temp() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("x.key");
    let tmp = atomic::temp_path(&path);
    fs::write(&tmp, b"stale").unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    write_secret(&path, b"secret", false).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(fs::read(&path).unwrap(), b"secret");
    assert!(!tmp.exists());
    assert!(matches!(
        write_secret(&path, b"other", false),
        Err(KeyError::Exists { .. })
    ));
    assert_eq!(fs::read(&path).unwrap(), b"secret");
}

#[test]
fn secure_boot_set() {
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    let d = tempfile::tempdir().unwrap();
    let opts = SecureBootOptions {
        owner: "nodeimg test".into(),
        not_before: 1_767_225_600, // 2026-01-01
        valid_days: 3650,
    };
    let paths = generate_secure_boot(d.path(), &opts, false).unwrap();
    assert_eq!(paths.len(), 6);
    for name in ["pk", "kek", "db"] {
        let key = d.path().join(format!("{name}.key"));
        assert_eq!(mode(&key), 0o600, "{name}.key");
        let rsa_key =
            rsa::RsaPrivateKey::from_pkcs8_pem(&fs::read_to_string(&key).unwrap()).unwrap();
        assert_eq!(rsa_key.size(), 256, "{name}: RSA-2048");
        let crt = fs::read(d.path().join(format!("{name}.crt"))).unwrap();
        let (label, der) = pem::decode_vec(&crt).unwrap();
        assert_eq!(label, "CERTIFICATE");
        // The certificate carries this key's public modulus.
        let n = rsa_key.n().to_bytes_be();
        assert!(der.windows(n.len()).any(|w| w == n.as_slice()), "{name}");
    }
    assert!(matches!(
        generate_secure_boot(d.path(), &opts, false),
        Err(KeyError::Exists { .. })
    ));
}
