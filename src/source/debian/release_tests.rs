#![allow(clippy::unwrap_used)]

use pgp::composed::{
    ArmorOptions, EncryptionCaps, KeyType, SecretKeyParamsBuilder, SignedSecretKey,
    SubkeyParamsBuilder,
};
use pgp::packet::{SignatureConfig, Subpacket, SubpacketData};
use pgp::ser::Serialize;
use pgp::types::{Duration, KeyDetails, Password, SigningKey, Timestamp};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

const BODY: &str = "Origin: Debian\n\
Label: Debian\n\
Suite: stable\n\
Codename: trixie\n\
Date: Sat, 21 Nov 2026 09:15:44 UTC\n\
Acquire-By-Hash: yes\n\
Architectures: all amd64 arm64\n\
Components: main contrib\n\
Description: test\n\
MD5Sum:\n 3e498904a30e240573dac8ddac594e6f  1961125 contrib/Contents-all\n\
SHA256:\n \
0000000000000000000000000000000000000000000000000000000000000001  1234 main/binary-amd64/Packages.xz\n \
00000000000000000000000000000000000000000000000000000000000000ff   99 main/binary-amd64/Release\n";

/// A key whose primary only certifies and whose first subkey signs, as
/// Debian's archive keys.
fn key_with_signing_subkey(seed: u64) -> SignedSecretKey {
    let mut rng = StdRng::seed_from_u64(seed);
    let sub = SubkeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .build()
        .unwrap();
    SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(false)
        .primary_user_id(format!("Test Archive Key {seed} <archive@example.org>"))
        .subkeys(vec![sub])
        .build()
        .unwrap()
        .generate(&mut rng)
        .unwrap()
}

fn public_keyring(keys: &[&SignedSecretKey]) -> Vec<u8> {
    let mut out = Vec::new();
    for key in keys {
        SignedPublicKey::from((*key).clone())
            .to_writer(&mut out)
            .unwrap();
    }
    out
}

fn sign_with(
    key: &impl SigningKey,
    text: &str,
    extra: Vec<Subpacket>,
    created: Timestamp,
) -> Vec<u8> {
    let mut config =
        SignatureConfig::from_key(StdRng::seed_from_u64(7), key, SignatureType::Text).unwrap();
    config.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::SignatureCreationTime(created)).unwrap(),
        Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint())).unwrap(),
    ];
    config.hashed_subpackets.extend(extra);
    let msg = CleartextSignedMessage::new(text, config, key, &Password::empty()).unwrap();
    msg.to_armored_bytes(ArmorOptions::default()).unwrap()
}

fn sign(key: &impl SigningKey, text: &str) -> Vec<u8> {
    sign_with(key, text, vec![], Timestamp::now())
}

#[test]
fn verifies_a_signature_by_a_signing_subkey() {
    let key = key_with_signing_subkey(1);
    let other = key_with_signing_subkey(2);
    let keyring = public_keyring(&[&other, &key]);
    let signed = sign(&key.secret_subkeys[0].key, BODY);

    let release = verify_inrelease(&signed, &keyring).unwrap();
    assert_eq!(release.origin, "Debian");
    assert_eq!(release.suite, "stable");
    assert_eq!(release.codename, "trixie");
    assert_eq!(release.date, "Sat, 21 Nov 2026 09:15:44 UTC");
    assert_eq!(release.valid_until, None);
    assert!(release.acquire_by_hash);
    assert_eq!(release.architectures, ["all", "amd64", "arm64"]);
    assert_eq!(release.components, ["main", "contrib"]);
    assert_eq!(release.sha256.len(), 2);
    let (size, digest) = release
        .index_entry("main/binary-amd64/Packages.xz")
        .unwrap();
    assert_eq!(size, 1234);
    assert_eq!(digest[31], 1);
    assert_eq!(digest[..31], [0u8; 31]);
}

#[test]
fn accepts_an_armored_keyring() {
    let key = key_with_signing_subkey(1);
    let armored = SignedPublicKey::from(key.clone())
        .to_armored_bytes(ArmorOptions::default())
        .unwrap();
    let signed = sign(&key.secret_subkeys[0].key, BODY);
    assert!(verify_inrelease(&signed, &armored).is_ok());
}

#[test]
fn rejects_a_tampered_body() {
    let key = key_with_signing_subkey(1);
    let keyring = public_keyring(&[&key]);
    let signed = String::from_utf8(sign(&key.secret_subkeys[0].key, BODY)).unwrap();
    let tampered = signed.replace("  1234 main/binary-amd64", "  1235 main/binary-amd64");
    assert_ne!(signed, tampered);
    let err = verify_inrelease(tampered.as_bytes(), &keyring).unwrap_err();
    assert!(matches!(err, ReleaseError::BadSignature { .. }), "{err:?}");
}

#[test]
fn rejects_a_signature_from_a_key_outside_the_keyring() {
    let key = key_with_signing_subkey(1);
    let stranger = key_with_signing_subkey(3);
    let keyring = public_keyring(&[&key]);
    let signed = sign(&stranger.secret_subkeys[0].key, BODY);
    let err = verify_inrelease(&signed, &keyring).unwrap_err();
    let ReleaseError::UnknownSigner { issuers } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(
        issuers,
        &format!("{:X}", stranger.secret_subkeys[0].key.fingerprint())
    );
}

#[test]
fn rejects_unsigned_text_and_text_outside_the_signature() {
    let key = key_with_signing_subkey(1);
    let keyring = public_keyring(&[&key]);
    let err = verify_inrelease(BODY.as_bytes(), &keyring).unwrap_err();
    assert!(matches!(err, ReleaseError::NotSigned(_)), "{err:?}");

    let signed = String::from_utf8(sign(&key.secret_subkeys[0].key, BODY)).unwrap();
    let leading = format!("Suite: evil\n{signed}");
    assert!(verify_inrelease(leading.as_bytes(), &keyring).is_err());
    let trailing = format!("{signed}\nSHA256:\n {} 1 main/evil\n", "00".repeat(32));
    assert!(verify_inrelease(trailing.as_bytes(), &keyring).is_err());
}

#[test]
fn a_subkey_grafted_onto_another_primary_does_not_count() {
    let key = key_with_signing_subkey(1);
    let victim = key_with_signing_subkey(2);
    // The attacker's subkey, attached to the victim's (trusted) primary key:
    // its binding signature is not from that primary.
    let mut forged = SignedPublicKey::from(victim.clone());
    forged.public_subkeys = SignedPublicKey::from(key.clone()).public_subkeys;
    let mut keyring = Vec::new();
    forged.to_writer(&mut keyring).unwrap();
    let signed = sign(&key.secret_subkeys[0].key, BODY);
    let err = verify_inrelease(&signed, &keyring).unwrap_err();
    let ReleaseError::NoValidSignature { reasons } = &err else {
        panic!("{err:?}");
    };
    assert!(reasons.contains("no valid binding"), "{reasons}");
}

#[test]
fn a_certify_only_primary_key_does_not_count() {
    let key = key_with_signing_subkey(1);
    let keyring = public_keyring(&[&key]);
    let signed = sign(&key.primary_key, BODY);
    let err = verify_inrelease(&signed, &keyring).unwrap_err();
    assert!(err.to_string().contains("is not a signing key"), "{err}");
}

#[test]
fn one_good_signature_among_unknown_ones_is_enough() {
    let key = key_with_signing_subkey(1);
    let stranger = key_with_signing_subkey(3);
    let keyring = public_keyring(&[&key]);
    let msg = CleartextSignedMessage::new_many(BODY, |text| {
        let mut sigs = Vec::new();
        for k in [&stranger.secret_subkeys[0].key, &key.secret_subkeys[0].key] {
            let mut config =
                SignatureConfig::from_key(StdRng::seed_from_u64(9), k, SignatureType::Text)?;
            config.hashed_subpackets = vec![
                Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now()))?,
                Subpacket::regular(SubpacketData::IssuerFingerprint(k.fingerprint()))?,
            ];
            sigs.push(config.sign(k, &Password::empty(), text.as_bytes())?);
        }
        Ok(sigs)
    })
    .unwrap();
    let signed = msg.to_armored_bytes(ArmorOptions::default()).unwrap();
    assert_eq!(
        verify_inrelease(&signed, &keyring).unwrap().codename,
        "trixie"
    );
}

#[test]
fn expired_signatures_and_signatures_older_than_the_key_do_not_count() {
    let key = key_with_signing_subkey(1);
    let keyring = public_keyring(&[&key]);
    let subkey = &key.secret_subkeys[0].key;
    let created = subkey.created_at();

    let one_minute = Duration::try_from(std::time::Duration::from_secs(60)).unwrap();
    let expiring = Subpacket::regular(SubpacketData::SignatureExpirationTime(one_minute)).unwrap();
    let signed = sign_with(subkey, BODY, vec![expiring], created);
    let now = u64::from(created.as_secs());
    assert!(verify_inrelease(&signed, &keyring).is_ok());
    assert!(verify_inrelease_at(&signed, &keyring, now + 30).is_ok());
    let err = verify_inrelease_at(&signed, &keyring, now + 3600).unwrap_err();
    assert!(
        err.to_string().contains("signature that has expired"),
        "{err}"
    );

    let backdated = Timestamp::from_secs(created.as_secs() - 86_400);
    let signed = sign_with(subkey, BODY, vec![], backdated);
    let err = verify_inrelease(&signed, &keyring).unwrap_err();
    assert!(err.to_string().contains("older than the key"), "{err}");
}

#[test]
fn an_expired_key_does_not_count() {
    let key = key_with_signing_subkey(1);
    let public = SignedPublicKey::from(key.clone());
    let sub = &public.public_subkeys[0];
    let signer = Signer {
        key: SignerKey::Sub(&sub.key),
        name: "test".into(),
        created: sub.key.created_at(),
        expires_after: Some(3600),
        revoked: false,
        invalid: None,
    };
    let at = |secs: u32| Timestamp::from_secs(sub.key.created_at().as_secs() + secs);
    let msg = |t| {
        let armored = sign_with(&key.secret_subkeys[0].key, BODY, vec![], t);
        CleartextSignedMessage::from_armor(&armored[..]).unwrap().0
    };
    let early = msg(at(60));
    assert_eq!(usable(&early.signatures()[0], &signer, None), Ok(()));
    let late = msg(at(7200));
    assert_eq!(
        usable(&late.signatures()[0], &signer, None),
        Err("is expired")
    );
    let revoked = Signer {
        revoked: true,
        ..signer
    };
    assert_eq!(
        usable(&early.signatures()[0], &revoked, None),
        Err("is revoked")
    );
}

#[test]
fn parse_errors_name_what_is_wrong() {
    let release = parse_release(BODY).unwrap();
    let err = release
        .index_entry("main/binary-arm64/Packages.xz")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Release of suite stable lists no SHA256 entry for main/binary-arm64/Packages.xz"
    );
    let err = parse_release("Origin: x\nSuite: s\nDate: d\nSHA256:\n").unwrap_err();
    assert_eq!(err.to_string(), "signed Release text lacks field Codename");
    let err = parse_release("Origin: x\nSuite: s\nCodename: c\nDate: d\nSHA256:\n abc 1 main/x\n")
        .unwrap_err();
    assert!(
        matches!(&err, ReleaseError::BadEntry { field: "SHA256", line: 6, entry } if entry == "abc 1 main/x"),
        "{err:?}"
    );
}

/// The real trixie InRelease fixture against the host's Debian keyring.
#[test]
fn verifies_real_trixie_inrelease_with_host_keyring() {
    const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/trixie-InRelease"
    );
    // scripts/setup.sh installs the keyring; a missing one fails, loudly.
    let keyring = std::fs::read(KEYRING).unwrap_or_else(|e| {
        panic!("{KEYRING}: {e}: install debian-archive-keyring (make test does)")
    });
    let inrelease = std::fs::read(fixture).unwrap();
    let release = verify_inrelease(&inrelease, &keyring).unwrap();
    assert_eq!(release.origin, "Debian");
    assert_eq!(release.codename, "trixie");
    assert!(release.components.iter().any(|c| c == "main"));
    assert!(release.architectures.iter().any(|a| a == "amd64"));
    let (size, _) = release
        .index_entry("main/binary-amd64/Packages.xz")
        .unwrap();
    assert!(size > 1_000_000, "{size}");

    // One flipped byte in the signed body breaks it.
    let mut tampered = inrelease.clone();
    let pos = tampered.windows(6).position(|w| w == b"Debian").unwrap();
    tampered[pos] = b'd';
    assert!(verify_inrelease(&tampered, &keyring).is_err());
}

#[test]
fn valid_until_reads_as_debian_writes_it() {
    let mut release = parse_release(BODY).unwrap();
    assert_eq!(release.valid_until_unix().unwrap(), None);
    for (text, unix) in [
        // the security archive's own spelling
        ("Sat, 13 Dec 2025 10:22:33 UTC", 1765621353),
        ("Sat, 13 Dec 2025 10:22:33 GMT", 1765621353),
        ("Sat, 13 Dec 2025 10:22:33 +0000", 1765621353),
        ("Sat, 13 Dec 2025 11:22:33 +0100", 1765621353),
    ] {
        release.valid_until = Some(text.into());
        assert_eq!(release.valid_until_unix().unwrap(), Some(unix), "{text}");
    }
    for bad in [
        "",
        "yesterday",
        "2025-12-13T10:22:33Z",
        "Sat, 13 Dec 2025 UTC",
    ] {
        release.valid_until = Some(bad.into());
        let err = release.valid_until_unix().unwrap_err();
        assert!(err.to_string().contains("Valid-Until"), "{err}");
    }
}
