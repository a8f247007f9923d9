//! InRelease: verify the OpenPGP cleartext signature against the archive
//! keyring, then parse the signed text into a [`Release`].
//!
//! Contract:
//! - The keyring is the host's `debian-archive-keyring.gpg` (concatenated
//!   binary public keys) or ASCII-armored keys.
//! - Debian signs with signing *subkeys*: each signature is checked with the
//!   primary key or subkey whose fingerprint / key id is the signature's
//!   issuer. A subkey counts only with a valid binding signature from its
//!   primary key, the sign flag, and a valid back-signature.
//! - Policy (as apt): a signature from a key not in the keyring is ignored; a
//!   cryptographically bad signature from a keyring key rejects the file;
//!   signatures from revoked, expired or non-signing keys, or over weak
//!   hashes (MD5, SHA-1, RIPEMD-160), do not count; at least one good
//!   signature is required.
//! - Key expiry is judged at the signature's creation time by
//!   [`verify_inrelease`] (no clock is read) and at a given instant by
//!   [`verify_inrelease_at`]. `Valid-Until` is returned
//!   ([`Release::valid_until_unix`]), not enforced here: that check needs
//!   the clock and belongs to the caller (`nodeimg lock`).
//! - Only the signed text is parsed: anything outside the signature (armor
//!   headers, text after the signature) is rejected by the armor parser or
//!   ignored, never trusted.

use std::collections::BTreeMap;
use std::io::BufReader;

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag, Timestamp};

use super::deb822::{self, Deb822Error};

/// Errors from verifying or reading an InRelease file.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot read the archive keyring")]
    Keyring(#[source] pgp::errors::Error),
    #[error("the archive keyring holds no public key")]
    EmptyKeyring,
    #[error("InRelease is not an OpenPGP cleartext-signed message")]
    NotSigned(#[source] pgp::errors::Error),
    #[error("InRelease carries no signature")]
    NoSignature,
    #[error("InRelease is signed only by keys not in the keyring (issuers: {issuers})")]
    UnknownSigner { issuers: String },
    #[error("InRelease has a bad signature from key {key}")]
    BadSignature {
        key: String,
        #[source]
        source: pgp::errors::Error,
    },
    #[error("InRelease has no usable signature: {reasons}")]
    NoValidSignature { reasons: String },
    #[error("signed Release text")]
    Syntax(#[source] Deb822Error),
    #[error("signed Release text has no paragraph")]
    Empty,
    #[error("signed Release text lacks field {field}")]
    MissingField { field: &'static str },
    #[error("signed Release text, line {line}: bad {field} entry {entry:?}")]
    BadEntry {
        field: &'static str,
        line: usize,
        entry: String,
    },
    #[error("Release of suite {suite} lists no SHA256 entry for {path}")]
    MissingIndex { suite: String, path: String },
    #[error("signed Release text: {field} {value:?} is not a date as Debian writes them (\"Sat, 06 Dec 2026 08:01:02 UTC\")")]
    BadDate { field: &'static str, value: String },
}

/// The signed fields of a Release file that the builder uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub origin: String,
    pub suite: String,
    pub codename: String,
    pub date: String,
    pub valid_until: Option<String>,
    /// `Acquire-By-Hash: yes`: indexes can be fetched under `by-hash/SHA256/<hex>`.
    pub acquire_by_hash: bool,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    /// Index path relative to the suite directory (e.g.
    /// `main/binary-amd64/Packages.xz`) -> (size, SHA-256).
    pub sha256: BTreeMap<String, (u64, [u8; 32])>,
}

impl Release {
    /// `Valid-Until` as seconds since the epoch; `None` when the archive
    /// sets none (Debian's main suites do not; its security suite does).
    pub fn valid_until_unix(&self) -> Result<Option<i64>, ReleaseError> {
        self.valid_until
            .as_deref()
            .map(|v| {
                parse_date(v).ok_or_else(|| ReleaseError::BadDate {
                    field: "Valid-Until",
                    value: v.to_string(),
                })
            })
            .transpose()
    }

    /// The size and SHA-256 of index file `path`, relative to the suite directory.
    pub fn index_entry(&self, path: &str) -> Result<(u64, [u8; 32]), ReleaseError> {
        self.sha256
            .get(path)
            .copied()
            .ok_or_else(|| ReleaseError::MissingIndex {
                suite: self.suite.clone(),
                path: path.to_string(),
            })
    }
}

/// Verifies `inrelease` against `keyring` and parses the signed text.
/// Key expiry is judged at each signature's creation time.
pub fn verify_inrelease(inrelease: &[u8], keyring: &[u8]) -> Result<Release, ReleaseError> {
    verify(inrelease, keyring, None)
}

/// As [`verify_inrelease`], but keys and signatures must also be unexpired at
/// `now_unix` (seconds since the epoch), as gpgv judges them.
pub fn verify_inrelease_at(
    inrelease: &[u8],
    keyring: &[u8],
    now_unix: u64,
) -> Result<Release, ReleaseError> {
    verify(inrelease, keyring, Some(now_unix))
}

fn verify(inrelease: &[u8], keyring: &[u8], now: Option<u64>) -> Result<Release, ReleaseError> {
    let keys = read_keyring(keyring)?;
    let (msg, _headers) =
        CleartextSignedMessage::from_armor(inrelease).map_err(ReleaseError::NotSigned)?;
    if msg.signatures().is_empty() {
        return Err(ReleaseError::NoSignature);
    }
    let signed = msg.signed_text();
    let mut good = 0usize;
    let mut unknown = Vec::new();
    let mut unusable = Vec::new();
    for sig in msg.signatures() {
        let Some(signer) = find_signer(&keys, sig) else {
            unknown.push(issuer_names(sig));
            continue;
        };
        // A bad signature from a key we trust means tampering: reject outright.
        signer
            .key
            .verify(sig, signed.as_bytes())
            .map_err(|source| ReleaseError::BadSignature {
                key: signer.name.clone(),
                source,
            })?;
        match usable(sig, &signer, now) {
            Ok(()) => {
                tracing::debug!(key = %signer.name, "good InRelease signature");
                good += 1;
            }
            Err(why) => {
                tracing::debug!(key = %signer.name, why, "InRelease signature does not count");
                unusable.push(format!("key {} {why}", signer.name));
            }
        }
    }
    if good == 0 {
        return Err(if unusable.is_empty() {
            ReleaseError::UnknownSigner {
                issuers: unknown.join(", "),
            }
        } else {
            ReleaseError::NoValidSignature {
                reasons: unusable.join("; "),
            }
        });
    }
    let text = signed.replace("\r\n", "\n");
    parse_release(&text)
}

/// Parses the keyring: binary (concatenated keys) or ASCII-armored. Keys
/// rpgp cannot parse (unsupported algorithms) are skipped with a warning.
fn read_keyring(keyring: &[u8]) -> Result<Vec<SignedPublicKey>, ReleaseError> {
    if keyring.is_empty() {
        return Err(ReleaseError::EmptyKeyring);
    }
    let (iter, _) = SignedPublicKey::from_reader_many(BufReader::new(keyring))
        .map_err(ReleaseError::Keyring)?;
    let mut keys = Vec::new();
    for key in iter {
        match key {
            Ok(key) => keys.push(key),
            Err(e) => tracing::warn!(error = %e, "skipping unreadable key in the archive keyring"),
        }
    }
    if keys.is_empty() {
        return Err(ReleaseError::EmptyKeyring);
    }
    Ok(keys)
}

/// The key (primary or subkey) that issued a signature, with the facts
/// needed to judge whether its signatures count.
struct Signer<'k> {
    key: SignerKey<'k>,
    name: String,
    created: Timestamp,
    /// Seconds after `created` at which the key expires.
    expires_after: Option<u64>,
    revoked: bool,
    /// Why a subkey is not a valid signing subkey, if it is not.
    invalid: Option<&'static str>,
}

/// Either a primary key or a subkey: both verify signatures.
enum SignerKey<'k> {
    Primary(&'k pgp::packet::PublicKey),
    Sub(&'k pgp::packet::PublicSubkey),
}

impl SignerKey<'_> {
    fn verify(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        match self {
            SignerKey::Primary(k) => sig.verify(*k, data),
            SignerKey::Sub(k) => sig.verify(*k, data),
        }
    }
}

/// Does `key` match the signature's issuer fingerprint or key id?
fn is_issuer(sig: &Signature, key: &impl KeyDetails) -> bool {
    let fps = sig.issuer_fingerprint();
    if !fps.is_empty() {
        return fps.iter().any(|fp| **fp == key.fingerprint());
    }
    let id = key.legacy_key_id();
    sig.issuer_key_id().iter().any(|k| **k == id)
}

fn issuer_names(sig: &Signature) -> String {
    let fps = sig.issuer_fingerprint();
    if let Some(fp) = fps.first() {
        return format!("{fp:X}");
    }
    match sig.issuer_key_id().first() {
        Some(id) => format!("{id}"),
        None => "unnamed".to_string(),
    }
}

fn find_signer<'k>(keys: &'k [SignedPublicKey], sig: &Signature) -> Option<Signer<'k>> {
    for key in keys {
        let primary = &key.primary_key;
        if is_issuer(sig, primary) {
            return Some(primary_signer(key));
        }
        for sub in &key.public_subkeys {
            if is_issuer(sig, &sub.key) {
                return Some(subkey_signer(key, sub));
            }
        }
    }
    None
}

fn newest<'s>(sigs: impl Iterator<Item = &'s Signature>) -> Option<&'s Signature> {
    sigs.max_by_key(|s| s.created().map(Timestamp::as_secs).unwrap_or(0))
}

fn expiry_secs(sig: Option<&Signature>) -> Option<u64> {
    sig.and_then(Signature::key_expiration_time)
        .map(|d| std::time::Duration::from(d).as_secs())
        .filter(|&s| s != 0)
}

/// Does the signature carry a key-flags subpacket? (Without one, a key may
/// be used for anything; rpgp's `key_flags()` cannot tell the two apart.)
fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

fn primary_signer(key: &SignedPublicKey) -> Signer<'_> {
    let primary = &key.primary_key;
    let revoked = key
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary).is_ok());
    // The newest valid self-signature (direct-key or user-id binding) carries the expiry.
    let self_sigs = key
        .details
        .direct_signatures
        .iter()
        .filter(|s| is_issuer(s, primary) && s.verify_key(primary).is_ok());
    let uid_sigs = key.details.users.iter().flat_map(|u| {
        u.signatures.iter().filter(move |s| {
            is_issuer(s, primary) && s.verify_certification(primary, Tag::UserId, &u.id).is_ok()
        })
    });
    let binding = newest(self_sigs.chain(uid_sigs));
    Signer {
        key: SignerKey::Primary(primary),
        name: format!("{:X}", primary.fingerprint()),
        created: primary.created_at(),
        expires_after: expiry_secs(binding),
        revoked,
        invalid: match binding {
            None => Some("has no valid self-signature"),
            Some(b) if has_key_flags(b) && !b.key_flags().sign() => Some("is not a signing key"),
            Some(_) => None,
        },
    }
}

fn subkey_signer<'k>(
    key: &'k SignedPublicKey,
    sub: &'k pgp::composed::SignedPublicSubKey,
) -> Signer<'k> {
    let primary = &key.primary_key;
    let valid = |s: &&Signature| s.verify_subkey_binding(primary, &sub.key).is_ok();
    let revoked = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
        .any(|s| valid(&s))
        || key
            .details
            .revocation_signatures
            .iter()
            .any(|s| s.verify_key(primary).is_ok());
    let binding = newest(
        sub.signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
            .filter(valid),
    );
    let invalid = match binding {
        None => Some("has no valid binding to its primary key"),
        Some(b) if !b.key_flags().sign() => Some("is not a signing subkey"),
        Some(b) => match b.embedded_signature() {
            Some(back) if back.verify_primary_key_binding(&sub.key, primary).is_ok() => None,
            _ => Some("lacks a valid back-signature"),
        },
    };
    Signer {
        key: SignerKey::Sub(&sub.key),
        name: format!("{:X}", sub.key.fingerprint()),
        created: sub.key.created_at(),
        expires_after: expiry_secs(binding),
        revoked,
        invalid,
    }
}

/// Does a cryptographically good signature count? `Err` says why not.
fn usable(sig: &Signature, signer: &Signer<'_>, now: Option<u64>) -> Result<(), &'static str> {
    if let Some(why) = signer.invalid {
        return Err(why);
    }
    if signer.revoked {
        return Err("is revoked");
    }
    match sig.typ() {
        Some(SignatureType::Text | SignatureType::Binary) => {}
        _ => return Err("made a signature of the wrong type"),
    }
    if matches!(
        sig.hash_alg(),
        Some(HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160) | None
    ) {
        return Err("signed with a weak hash");
    }
    let created = sig.created().map(|t| u64::from(t.as_secs())).unwrap_or(0);
    let key_created = u64::from(signer.created.as_secs());
    if created < key_created {
        return Err("made a signature older than the key");
    }
    let at = now.unwrap_or(created);
    if let Some(after) = signer.expires_after {
        if at >= key_created.saturating_add(after) {
            return Err("is expired");
        }
    }
    if let Some(now) = now {
        let sig_expiry = sig
            .signature_expiration_time()
            .map(|d| std::time::Duration::from(d).as_secs())
            .filter(|&s| s != 0);
        if let Some(after) = sig_expiry {
            if now >= created.saturating_add(after) {
                return Err("made a signature that has expired");
            }
        }
    }
    Ok(())
}

/// A Release date (`Sat, 06 Dec 2026 08:01:02 UTC`): RFC 2822 with the
/// zone spelled `UTC` as Debian's archive tools write it, which RFC 2822
/// itself calls obsolete; as seconds since the epoch.
fn parse_date(value: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc2822;
    let v = value.trim();
    let numeric = ["UTC", "GMT", "Z"]
        .iter()
        .find_map(|zone| v.strip_suffix(zone).map(|rest| format!("{}+0000", rest)))
        .unwrap_or_else(|| v.to_string());
    time::OffsetDateTime::parse(&numeric, &Rfc2822)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

/// Parses the (already verified) text of a Release file.
pub fn parse_release(text: &str) -> Result<Release, ReleaseError> {
    let para = deb822::paragraphs(text)
        .next()
        .ok_or(ReleaseError::Empty)?
        .map_err(ReleaseError::Syntax)?;
    let required = |field: &'static str| {
        para.get(field)
            .map(str::to_string)
            .ok_or(ReleaseError::MissingField { field })
    };
    let words = |field: &str| -> Vec<String> {
        para.get(field)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let sums = para
        .field("SHA256")
        .ok_or(ReleaseError::MissingField { field: "SHA256" })?;
    let mut sha256 = BTreeMap::new();
    for (i, entry) in sums.value.split('\n').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let bad = || ReleaseError::BadEntry {
            field: "SHA256",
            line: sums.line + i,
            entry: entry.to_string(),
        };
        let mut it = entry.split_whitespace();
        let (Some(hash), Some(size), Some(path), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad());
        };
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hash, &mut digest).map_err(|_| bad())?;
        let size: u64 = size.parse().map_err(|_| bad())?;
        sha256.insert(path.to_string(), (size, digest));
    }
    Ok(Release {
        origin: required("Origin")?,
        suite: required("Suite")?,
        codename: required("Codename")?,
        date: required("Date")?,
        valid_until: para.get("Valid-Until").map(str::to_string),
        acquire_by_hash: para
            .get("Acquire-By-Hash")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        architectures: words("Architectures"),
        components: words("Components"),
        sha256,
    })
}

#[cfg(test)]
#[path = "release_tests.rs"]
mod tests;
