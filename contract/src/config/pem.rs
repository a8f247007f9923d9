//! Just enough PEM and DER to judge the `[api]` material without a crypto
//! library: block labels, base64 bodies, and from the DER a certificate's
//! public key and CA flag and a private key's public half (when the key
//! carries it). Comparing public keys is how a CA's private key given as
//! the node's `key` is caught.

/// One `-----BEGIN <label>-----` ... `-----END <label>-----` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("line {line}: text outside a PEM block")]
    Outside { line: usize },
    #[error("line {line}: BEGIN {label} has no matching END line")]
    Unterminated { line: usize, label: String },
    #[error("line {line}: END {found} closes BEGIN {label}")]
    Mismatch {
        line: usize,
        label: String,
        found: String,
    },
    #[error("line {line}: the body of {label} is not base64")]
    Base64 { line: usize, label: String },
}

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";
const DASHES: &str = "-----";

/// Every block of `text`, in order. Blank lines between blocks are fine;
/// other text is an error, since a key pasted with a stray line is likely
/// a wrong paste.
pub fn parse(text: &str) -> Result<Vec<PemBlock>, PemError> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        match &mut open {
            None if t.is_empty() => {}
            None => {
                let label = t
                    .strip_prefix(BEGIN)
                    .and_then(|r| r.strip_suffix(DASHES))
                    .ok_or(PemError::Outside { line })?;
                open = Some((line, label.to_string(), String::new()));
            }
            Some((start, label, body)) => {
                if let Some(found) = t.strip_prefix(END).and_then(|r| r.strip_suffix(DASHES)) {
                    if found != label {
                        return Err(PemError::Mismatch {
                            line,
                            label: label.clone(),
                            found: found.to_string(),
                        });
                    }
                    let der = base64(body).ok_or_else(|| PemError::Base64 {
                        line: *start,
                        label: label.clone(),
                    })?;
                    blocks.push(PemBlock {
                        label: label.clone(),
                        der,
                    });
                    open = None;
                } else if t.contains(':') {
                    // RFC 1421 headers (Proc-Type, DEK-Info): an encrypted
                    // legacy key; keep them out of the body
                    if !t.starts_with("Proc-Type:") && !t.starts_with("DEK-Info:") {
                        return Err(PemError::Base64 {
                            line,
                            label: label.clone(),
                        });
                    }
                    body.push('!');
                } else {
                    body.push_str(t);
                }
            }
        }
    }
    match open {
        Some((line, label, _)) => Err(PemError::Unterminated { line, label }),
        None => Ok(blocks),
    }
}

/// Standard base64 with padding; `None` on any other character.
fn base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// One DER element: tag byte and contents; `rest` follows it.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

/// Reads one element from the front of `b`.
fn tlv(b: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
    let short = || "truncated DER".to_string();
    let (&tag, rest) = b.split_first().ok_or_else(short)?;
    let (&len0, rest) = rest.split_first().ok_or_else(short)?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 {
            return Err("unsupported DER length".into());
        }
        let (bytes, rest) = rest.split_at_checked(n).ok_or_else(short)?;
        let len = bytes.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x));
        (len, rest)
    };
    let (body, rest) = rest.split_at_checked(len).ok_or_else(short)?;
    Ok((Tlv { tag, body }, rest))
}

/// The elements inside a constructed element's contents.
fn children(mut b: &[u8]) -> Result<Vec<Tlv<'_>>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (t, rest) = tlv(b)?;
        out.push(t);
        b = rest;
    }
    Ok(out)
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;

/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// basicConstraints, 2.5.29.19.
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

fn expect<'a>(t: Option<&'a Tlv<'a>>, tag: u8, what: &str) -> Result<&'a Tlv<'a>, String> {
    t.filter(|t| t.tag == tag)
        .ok_or_else(|| format!("no {what} where one belongs"))
}

/// An INTEGER's value without the sign-padding zero bytes.
fn unsigned(b: &[u8]) -> Vec<u8> {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or_default().to_vec()
}

/// A BIT STRING's bytes after its unused-bits count.
fn bits(b: &[u8]) -> &[u8] {
    b.get(1..).unwrap_or_default()
}

/// The comparable public key of an SPKI: the RSA modulus, or the raw key
/// bits of any other algorithm (an EC point, an Ed25519 key).
fn spki_public(spki: &[u8]) -> Result<Vec<u8>, String> {
    let kids = children(spki)?;
    let alg = expect(kids.first(), SEQUENCE, "algorithm")?;
    let key = bits(expect(kids.get(1), BIT_STRING, "public key")?.body);
    let alg_kids = children(alg.body)?;
    let oid = expect(alg_kids.first(), OID, "algorithm OID")?.body;
    if oid == OID_RSA {
        let (seq, _) = tlv(key)?;
        let parts = children(seq.body)?;
        return Ok(unsigned(
            expect(parts.first(), INTEGER, "RSA modulus")?.body,
        ));
    }
    Ok(key.to_vec())
}

/// What the checks need from one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CertFacts {
    pub public_key: Option<Vec<u8>>,
    /// basicConstraints cA; `None` without the extension.
    pub is_ca: Option<bool>,
}

pub(super) fn certificate(der: &[u8]) -> Result<CertFacts, String> {
    let (cert, _) = tlv(der)?;
    let cert_kids = children(cert.body)?;
    let tbs = expect(cert_kids.first(), SEQUENCE, "tbsCertificate")?;
    let fields = children(tbs.body)?;
    // [0] version is optional: the serial number is the first INTEGER
    let skip = usize::from(fields.first().is_some_and(|f| f.tag == 0xa0));
    // serial, signature, issuer, validity, subject, then the SPKI
    let spki = expect(fields.get(skip + 5), SEQUENCE, "subjectPublicKeyInfo")?;
    let mut is_ca = None;
    if let Some(ext) = fields.iter().find(|f| f.tag == 0xa3) {
        let (list, _) = tlv(ext.body)?;
        for e in children(list.body)? {
            let parts = children(e.body)?;
            if expect(parts.first(), OID, "extension OID")?.body != OID_BASIC_CONSTRAINTS {
                continue;
            }
            let value = parts
                .iter()
                .find(|p| p.tag == OCTET_STRING)
                .ok_or("basicConstraints without a value")?;
            let (bc, _) = tlv(value.body)?;
            let flag = children(bc.body)?
                .first()
                .filter(|t| t.tag == BOOLEAN)
                .map(|t| t.body.first().is_some_and(|&b| b != 0));
            is_ca = Some(flag.unwrap_or(false));
        }
    }
    Ok(CertFacts {
        public_key: Some(spki_public(spki.body)?),
        is_ca,
    })
}

/// The comparable public key of a `PUBLIC KEY` block (SubjectPublicKeyInfo).
pub(super) fn public_key(der: &[u8]) -> Result<Vec<u8>, String> {
    let (spki, _) = tlv(der)?;
    if spki.tag != SEQUENCE {
        return Err("no SubjectPublicKeyInfo".into());
    }
    spki_public(spki.body)
}

/// What the checks need from a private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyFacts {
    /// Comparable with [`CertFacts::public_key`]; `None` when the key does
    /// not carry its public half.
    pub public_key: Option<Vec<u8>>,
}

/// Checks a private key block's label and reads its public half when it
/// carries one.
pub(super) fn private_key(b: &PemBlock) -> Result<KeyFacts, String> {
    let public_key = match b.label.as_str() {
        "PRIVATE KEY" => pkcs8(&b.der),
        "RSA PRIVATE KEY" => rsa_modulus(&b.der).map(Some),
        "EC PRIVATE KEY" => sec1_point(&b.der),
        "ENCRYPTED PRIVATE KEY" => {
            return Err(
                "is an encrypted private key; the node has no passphrase: give it unencrypted"
                    .into(),
            )
        }
        other => return Err(format!("is a {other:?} PEM block, expected a PRIVATE KEY")),
    };
    let public_key =
        public_key.map_err(|why| format!("{} is not a readable key: {why}", b.label))?;
    Ok(KeyFacts { public_key })
}

/// PKCS#8 PrivateKeyInfo: `SEQUENCE { version, algorithm, OCTET STRING key,
/// [0] attributes?, [1] publicKey? }`.
fn pkcs8(der: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let (info, _) = tlv(der)?;
    let kids = children(info.body)?;
    let alg = children(expect(kids.get(1), SEQUENCE, "algorithm")?.body)?;
    let oid = expect(alg.first(), OID, "algorithm OID")?.body;
    let inner = expect(kids.get(2), OCTET_STRING, "private key")?.body;
    if oid == OID_RSA {
        return rsa_modulus(inner).map(Some);
    }
    if oid == OID_EC {
        return sec1_point(inner);
    }
    // other algorithms (Ed25519): the v2 publicKey field, when present
    Ok(kids
        .iter()
        .find(|k| k.tag == 0x81)
        .map(|k| bits(k.body).to_vec()))
}

/// RSAPrivateKey: `SEQUENCE { version, modulus, ... }`.
fn rsa_modulus(der: &[u8]) -> Result<Vec<u8>, String> {
    let (seq, _) = tlv(der)?;
    let kids = children(seq.body)?;
    Ok(unsigned(expect(kids.get(1), INTEGER, "RSA modulus")?.body))
}

/// ECPrivateKey: `SEQUENCE { version, OCTET STRING, [0] params?, [1] publicKey? }`.
fn sec1_point(der: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let (seq, _) = tlv(der)?;
    let kids = children(seq.body)?;
    expect(kids.get(1), OCTET_STRING, "EC private key")?;
    match kids.iter().find(|k| k.tag == 0xa1) {
        Some(k) => {
            let (bs, _) = tlv(k.body)?;
            Ok(Some(bits(bs.body).to_vec()))
        }
        None => Ok(None),
    }
}
