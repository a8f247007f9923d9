//! Key files: the ECDSA P-256 pair that signs manifests, in cosign's
//! formats, and the RSA-2048 Secure Boot set (PK, KEK, db).
//!
//! The manifest key pair is `signing.key` (cosign's `ENCRYPTED SIGSTORE
//! PRIVATE KEY`: PKCS#8 sealed with NaCl secretbox under a scrypt-derived
//! key) and `signing.pub` (PKIX `PUBLIC KEY`), so keys made by
//! `cosign generate-key-pair` work here and ours work with cosign. Private
//! keys are created with mode 0600 (never chmod-ed afterwards), never
//! overwritten unless asked, and never printed: [`SigningKey`]'s `Debug`
//! shows no key material. The password is an argument; reading it from the
//! environment is the command line's job.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::pkcs8::der::pem::{self, LineEnding};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::util::{atomic, hash};

pub const SIGNING_KEY_FILE: &str = "signing.key";
pub const SIGNING_PUB_FILE: &str = "signing.pub";

/// PEM label cosign (2.x) writes for its encrypted private keys.
pub const SIGSTORE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label older cosign releases wrote; same content.
pub const COSIGN_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// scrypt N values go-securesystemslib accepts (legacy, standard, OWASP);
/// r = 8 and p = 1 always. Anything else is refused before any work is done,
/// so a crafted key file cannot make us allocate gigabytes.
const SCRYPT_N_ACCEPTED: [u64; 3] = [1 << 15, 1 << 16, 1 << 17];
/// What we write: cosign's current default.
const SCRYPT_LOG_N: u8 = 16;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing key file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("key file {path} already exists (not overwritten)")]
    Exists { path: PathBuf },
    #[error("key file {path}")]
    Format {
        path: PathBuf,
        #[source]
        source: KeyFormatError,
    },
    #[error("Secure Boot key {name}")]
    SecureBoot {
        name: String,
        #[source]
        source: CertError,
    },
}

/// What is wrong with a key's bytes (the file is named by [`KeyError`]).
#[derive(Debug, thiserror::Error)]
pub enum KeyFormatError {
    /// (pem-rfc7468's error is not a `std::error::Error` without its `std`
    /// feature, so it is shown in the message.)
    #[error("not a PEM file ({0})")]
    Pem(pem::Error),
    #[error("PEM block `{0}` is not a key this tool reads (PUBLIC KEY, PRIVATE KEY, EC PRIVATE KEY, {SIGSTORE_KEY_LABEL}, {COSIGN_KEY_LABEL})")]
    Label(String),
    #[error("PEM block `{0}` is not a public key (PUBLIC KEY)")]
    NotPublic(String),
    #[error("not an ECDSA P-256 private key")]
    Private(#[source] p256::pkcs8::Error),
    #[error("not an ECDSA P-256 private key")]
    Sec1(#[source] p256::elliptic_curve::Error),
    #[error("not an ECDSA P-256 public key")]
    Public(#[source] p256::pkcs8::spki::Error),
    #[error("the encrypted key's JSON envelope")]
    Envelope(#[source] serde_json::Error),
    #[error("the encrypted key's {field} is not base64")]
    Base64 {
        field: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("the encrypted key uses {what} `{name}` (only scrypt + nacl/secretbox are known)")]
    Algorithm { what: &'static str, name: String },
    #[error("the encrypted key has scrypt parameters N={n} r={r} p={p} (cosign's are N=32768, 65536 or 131072 with r=8, p=1)")]
    ScryptParams { n: u64, r: u32, p: u32 },
    #[error("the encrypted key's {field} is {len} bytes, expected {expected}")]
    Length {
        field: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("wrong password, or the encrypted key is corrupt")]
    Decrypt,
}

/// Creating or self-signing a Secure Boot certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating the RSA key")]
    Rsa(#[source] rsa::Error),
    #[error("encoding the RSA key as PKCS#8")]
    Pkcs8(#[source] rsa::pkcs8::Error),
    #[error("creating the X.509 certificate")]
    Cert(#[source] rcgen::Error),
    #[error("certificate validity starts at unix time {0}, which is out of range")]
    Time(i64),
}

/// The private half of a manifest signing key (ECDSA P-256, SHA-256).
/// Zeroized on drop.
#[derive(Clone)]
pub struct SigningKey {
    inner: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKey(ECDSA P-256, hint {})",
            self.public_key().hint()
        )
    }
}

/// The public half; what `nodeimg verify` and `cosign verify-blob` take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: p256::ecdsa::VerifyingKey,
}

impl SigningKey {
    pub fn generate() -> SigningKey {
        SigningKey {
            inner: p256::ecdsa::SigningKey::random(&mut OsRng),
        }
    }

    /// Reads a private key file: cosign's encrypted format (decrypted with
    /// `password`; cosign's own default is the empty password) or an
    /// unencrypted PKCS#8 `PRIVATE KEY` / SEC1 `EC PRIVATE KEY`.
    pub fn load(path: &Path, password: &[u8]) -> Result<SigningKey, KeyError> {
        let text = Zeroizing::new(fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?);
        SigningKey::from_pem(&text, password).map_err(|source| KeyError::Format {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn from_pem(text: &[u8], password: &[u8]) -> Result<SigningKey, KeyFormatError> {
        let (label, der) = pem::decode_vec(text).map_err(KeyFormatError::Pem)?;
        let der = Zeroizing::new(der);
        let secret = match label {
            SIGSTORE_KEY_LABEL | COSIGN_KEY_LABEL => {
                let pkcs8 = decrypt(&der, password)?;
                p256::SecretKey::from_pkcs8_der(&pkcs8).map_err(KeyFormatError::Private)?
            }
            "PRIVATE KEY" => {
                p256::SecretKey::from_pkcs8_der(&der).map_err(KeyFormatError::Private)?
            }
            "EC PRIVATE KEY" => {
                p256::SecretKey::from_sec1_der(&der).map_err(KeyFormatError::Sec1)?
            }
            other => return Err(KeyFormatError::Label(other.to_string())),
        };
        Ok(SigningKey {
            inner: secret.into(),
        })
    }

    /// cosign's `ENCRYPTED SIGSTORE PRIVATE KEY` PEM, sealed under `password`
    /// (fresh salt and nonce each call).
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Zeroizing<String> {
        let secret = p256::SecretKey::from(&self.inner);
        // PKCS#8 encoding of a valid in-memory key cannot fail.
        let pkcs8 = secret
            .to_pkcs8_der()
            .expect("PKCS#8 encoding of a P-256 key");
        let envelope = encrypt(pkcs8.as_bytes(), password);
        Zeroizing::new(
            pem::encode_string(SIGSTORE_KEY_LABEL, LineEnding::LF, &envelope)
                .expect("PEM encoding of a small buffer"),
        )
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            inner: *self.inner.verifying_key(),
        }
    }

    /// ASN.1 DER ECDSA signature over SHA-256(`message`). Deterministic
    /// (RFC 6979): the same key and message give the same bytes.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.inner.sign(message);
        sig.to_der().as_bytes().to_vec()
    }
}

impl PublicKey {
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        PublicKey::from_pem(&text).map_err(|source| KeyError::Format {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn from_pem(text: &[u8]) -> Result<PublicKey, KeyFormatError> {
        let (label, der) = pem::decode_vec(text).map_err(KeyFormatError::Pem)?;
        if label != "PUBLIC KEY" {
            return Err(KeyFormatError::NotPublic(label.to_string()));
        }
        let key = p256::PublicKey::from_public_key_der(&der).map_err(KeyFormatError::Public)?;
        Ok(PublicKey { inner: key.into() })
    }

    /// PKIX `PUBLIC KEY` PEM, as cosign writes it.
    pub fn to_pem(&self) -> String {
        p256::PublicKey::from(&self.inner)
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM encoding of a P-256 public key")
    }

    pub fn to_der(&self) -> Vec<u8> {
        p256::PublicKey::from(&self.inner)
            .to_public_key_der()
            .expect("DER encoding of a P-256 public key")
            .into_vec()
    }

    /// The bundle's `publicKey.hint`: base64 of SHA-256 over the PKIX DER,
    /// the value cosign writes.
    pub fn hint(&self) -> String {
        B64.encode(hash::sha256(&self.to_der()))
    }

    /// Whether `signature` (ASN.1 DER ECDSA) is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match p256::ecdsa::Signature::from_der(signature) {
            Ok(sig) => self.inner.verify(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

// --- cosign's encrypted envelope (go-securesystemslib `encrypted`) ---

#[derive(Serialize, Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn derive_key(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, KeyFormatError> {
    let invalid = || KeyFormatError::ScryptParams {
        n: 1u64 << log_n,
        r,
        p,
    };
    let params = scrypt::Params::new(log_n, r, p, 32).map_err(|_| invalid())?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, key.as_mut()).map_err(|_| invalid())?;
    Ok(key)
}

/// Seals `plaintext`: the JSON envelope cosign puts inside its PEM block.
pub(crate) fn encrypt(plaintext: &[u8], password: &[u8]) -> Vec<u8> {
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let key = derive_key(password, &salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
        .expect("constant scrypt parameters are valid");
    let sealed = XSalsa20Poly1305::new(key.as_ref().into())
        .encrypt(&nonce.into(), plaintext)
        .expect("secretbox sealing of a small buffer");
    let envelope = Envelope {
        kdf: Kdf {
            name: "scrypt".into(),
            params: ScryptParams {
                n: 1 << SCRYPT_LOG_N,
                r: SCRYPT_R,
                p: SCRYPT_P,
            },
            salt: B64.encode(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: B64.encode(nonce),
        },
        ciphertext: B64.encode(sealed),
    };
    serde_json::to_vec(&envelope).expect("serializing a plain struct")
}

/// Opens cosign's JSON envelope with `password`.
pub(crate) fn decrypt(
    envelope: &[u8],
    password: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyFormatError> {
    let env: Envelope = serde_json::from_slice(envelope).map_err(KeyFormatError::Envelope)?;
    if env.kdf.name != "scrypt" {
        return Err(KeyFormatError::Algorithm {
            what: "KDF",
            name: env.kdf.name,
        });
    }
    if env.cipher.name != "nacl/secretbox" {
        return Err(KeyFormatError::Algorithm {
            what: "cipher",
            name: env.cipher.name,
        });
    }
    let ScryptParams { n, r, p } = env.kdf.params;
    if !SCRYPT_N_ACCEPTED.contains(&n) || r != SCRYPT_R || p != SCRYPT_P {
        return Err(KeyFormatError::ScryptParams { n, r, p });
    }
    let b64 = |field: &'static str, s: &str| {
        B64.decode(s)
            .map_err(|source| KeyFormatError::Base64 { field, source })
    };
    let salt = b64("salt", &env.kdf.salt)?;
    let nonce = b64("nonce", &env.cipher.nonce)?;
    let sealed = b64("ciphertext", &env.ciphertext)?;
    if nonce.len() != NONCE_LEN {
        return Err(KeyFormatError::Length {
            field: "nonce",
            len: nonce.len(),
            expected: NONCE_LEN,
        });
    }
    let key = derive_key(password, &salt, n.trailing_zeros() as u8, r, p)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("length checked");
    XSalsa20Poly1305::new(key.as_ref().into())
        .decrypt(&nonce.into(), sealed.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| KeyFormatError::Decrypt)
}

// --- writing key files ---

/// Fails with [`KeyError::Exists`] for the first of `paths` that exists.
pub fn ensure_absent(paths: &[PathBuf]) -> Result<(), KeyError> {
    for path in paths {
        match fs::symlink_metadata(path) {
            Ok(_) => return Err(KeyError::Exists { path: path.clone() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeyError::Read {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Writes a secret: a fresh temp file created with mode 0600, filled,
/// synced, then moved into place (replacing `path` only when `overwrite`).
pub fn write_secret(path: &Path, data: &[u8], overwrite: bool) -> Result<(), KeyError> {
    write_key_file(path, data, overwrite, 0o600)
}

/// Writes a public key or certificate (mode 0644), like [`write_secret`].
pub fn write_public(path: &Path, data: &[u8], overwrite: bool) -> Result<(), KeyError> {
    write_key_file(path, data, overwrite, 0o644)
}

fn write_key_file(path: &Path, data: &[u8], overwrite: bool, mode: u32) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = atomic::temp_path(path);
    // A temp file left by a crash may have any mode: start from nothing so
    // the file we fill is the one created with `mode`.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        if overwrite {
            atomic::commit(&tmp, path)
        } else {
            // link(2) fails when `path` exists: no check-then-write race.
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
            sync_parent(path)
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => KeyError::Exists {
            path: path.to_path_buf(),
        },
        _ => err(e),
    })
}

/// Makes a new directory entry durable (what [`atomic::commit`] does after
/// its rename).
fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

/// Creates `signing.key` (encrypted under `password`) and `signing.pub` in
/// `dir`; returns their paths.
pub fn generate_signing_pair(
    dir: &Path,
    password: &[u8],
    overwrite: bool,
) -> Result<[PathBuf; 2], KeyError> {
    let key_path = dir.join(SIGNING_KEY_FILE);
    let pub_path = dir.join(SIGNING_PUB_FILE);
    if !overwrite {
        ensure_absent(&[key_path.clone(), pub_path.clone()])?;
    }
    let key = SigningKey::generate();
    write_secret(
        &key_path,
        key.to_encrypted_pem(password).as_bytes(),
        overwrite,
    )?;
    write_public(&pub_path, key.public_key().to_pem().as_bytes(), overwrite)?;
    Ok([key_path, pub_path])
}

// --- Secure Boot: PK, KEK, db ---

/// The three UEFI Secure Boot keys, in enrollment order.
pub const SECURE_BOOT_KEYS: [(&str, &str); 3] = [
    ("pk", "Platform Key"),
    ("kek", "Key Exchange Key"),
    ("db", "Signature Database Key"),
];

#[derive(Debug, Clone)]
pub struct SecureBootOptions {
    /// Goes into each subject: `CN=<owner> Platform Key`, `O=<owner>`.
    pub owner: String,
    /// Start of validity (unix seconds); the caller reads the clock.
    pub not_before: i64,
    pub valid_days: u32,
}

/// Creates `pk`, `kek` and `db` (`.key`: unencrypted PKCS#8 RSA-2048,
/// mode 0600, what sbsign reads; `.crt`: self-signed X.509 PEM,
/// SHA-256 with RSA, what OVMF enrolls). Returns the paths written.
pub fn generate_secure_boot(
    dir: &Path,
    opts: &SecureBootOptions,
    overwrite: bool,
) -> Result<Vec<PathBuf>, KeyError> {
    let paths: Vec<PathBuf> = SECURE_BOOT_KEYS
        .iter()
        .flat_map(|(n, _)| [dir.join(format!("{n}.key")), dir.join(format!("{n}.crt"))])
        .collect();
    if !overwrite {
        ensure_absent(&paths)?;
    }
    for (name, role) in SECURE_BOOT_KEYS {
        let (key_pem, cert_pem) =
            secure_boot_cert(opts, role).map_err(|source| KeyError::SecureBoot {
                name: name.to_string(),
                source,
            })?;
        write_secret(
            &dir.join(format!("{name}.key")),
            key_pem.as_bytes(),
            overwrite,
        )?;
        write_public(
            &dir.join(format!("{name}.crt")),
            cert_pem.as_bytes(),
            overwrite,
        )?;
    }
    Ok(paths)
}

/// One RSA-2048 key and its self-signed certificate, both PEM.
fn secure_boot_cert(
    opts: &SecureBootOptions,
    role: &str,
) -> Result<(Zeroizing<String>, String), CertError> {
    use rsa::pkcs8::EncodePrivateKey as _;
    let rsa_key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(CertError::Rsa)?;
    let key_pem = rsa_key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(CertError::Pkcs8)?;
    let key_pair = rcgen::KeyPair::from_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(CertError::Cert)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, format!("{} {role}", opts.owner));
    dn.push(rcgen::DnType::OrganizationName, opts.owner.clone());
    params.distinguished_name = dn;
    let start = time::OffsetDateTime::from_unix_timestamp(opts.not_before)
        .map_err(|_| CertError::Time(opts.not_before))?;
    params.not_before = start;
    params.not_after = start + time::Duration::days(i64::from(opts.valid_days));
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    serial[0] &= 0x7f; // a positive INTEGER
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    if role.starts_with("Signature Database") {
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    }
    let cert = params.self_signed(&key_pair).map_err(CertError::Cert)?;
    Ok((key_pem, cert.pem()))
}

#[cfg(test)]
#[path = "keys_tests.rs"]
pub(crate) mod tests;
