//! Authenticode signatures for EFI binaries (systemd-boot, the UKI), made
//! natively so the build stays hermetic: no `sbsign`, no OpenSSL.
//!
//! Contract: [`sign_pe`] takes a PE image, an X.509 certificate and its
//! RSA key and returns the image with one Authenticode signature: a
//! PKCS#7 SignedData over the image's Authenticode SHA-256 digest, in a
//! `WIN_CERTIFICATE` appended after the image and named by the certificate
//! table data directory, with the PE checksum updated. It never changes a
//! byte the digest covers except the zero padding that aligns the
//! certificate table to 8 bytes (as `sbsign` does), never reads the clock
//! (no signing-time attribute) and, since RSA PKCS#1 v1.5 is deterministic,
//! the same inputs give the same bytes. A signature already on the image is
//! replaced, not added to.
//!
//! What UEFI firmware and `sbverify` check (Microsoft, "Windows
//! Authenticode Portable Executable Signature Format"; sbsigntool's
//! `image.c` and `idc.c` for what Linux tools accept):
//! - the digest: the headers up to `SizeOfHeaders` without the `CheckSum`
//!   field and the certificate table's directory entry, then every section's
//!   raw data in file order, then whatever follows the sections up to the
//!   certificate table;
//! - `SpcIndirectDataContent` carrying that digest, as the SignedData's
//!   encapsulated content (content type `SPC_INDIRECT_DATA_OBJID`), with
//!   `SpcPeImageData` in the "<<<Obsolete>>>" file-link form;
//! - one signer, named by issuer and serial number, SHA-256 with RSA
//!   PKCS#1 v1.5 over the signed attributes `contentType` and
//!   `messageDigest` (the SHA-256 of the `SpcIndirectDataContent` value
//!   without its tag and length), and the signer's certificate included.

use std::ops::Range;
use std::path::{Path, PathBuf};

use cms::builder::SignerInfoBuilder;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfos,
};
use der::asn1::{BitString, BmpString, ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Choice, Decode, DecodePem, Encode, Sequence};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::{RsaPrivateKey, RsaPublicKey};
use x509_cert::builder::Builder;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::pe::{pe_checksum, u32_at, PeError, PeHeaders, SectionOutOfRange, DATA_DIRECTORY_SIZE};

/// `SPC_INDIRECT_DATA_OBJID`: the content type of an Authenticode SignedData.
pub const SPC_INDIRECT_DATA_OBJID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
/// `SPC_PE_IMAGE_DATAOBJ`: the indirect data is a PE image's digest.
pub const SPC_PE_IMAGE_DATAOBJ: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");
/// id-sha256 (NIST).
const ID_SHA_256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// id-signedData (PKCS#7).
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// The file name Authenticode's `SpcPeImageData` carries since it stopped
/// meaning anything; Windows' signtool and sbsign write exactly this.
const OBSOLETE: &str = "<<<Obsolete>>>";

/// `WIN_CERTIFICATE.wRevision`: `WIN_CERT_REVISION_2_0`.
pub const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERTIFICATE.wCertificateType`: `WIN_CERT_TYPE_PKCS_SIGNED_DATA`.
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;
/// `dwLength`, `wRevision`, `wCertificateType`.
const WIN_CERTIFICATE_HEADER: usize = 8;
/// The certificate table and each entry in it start 8-byte aligned.
const CERT_ALIGN: usize = 8;

/// The Secure Boot signature database key made by `nodeimg keys gen`.
pub const DB_KEY_FILE: &str = "db.key";
pub const DB_CERT_FILE: &str = "db.crt";

#[derive(Debug, thiserror::Error)]
pub enum AuthenticodeError {
    #[error(transparent)]
    Pe(#[from] PeError),
    #[error("the pe file has {count} data directories: none for a certificate table")]
    NoCertificateDirectory { count: u32 },
    #[error(transparent)]
    Section(#[from] SectionOutOfRange),
    #[error(
        "the certificate table at {offset:#x} ({size} bytes) is not at the end of the \
         {len}-byte file, after the sections"
    )]
    CertificateTableMisplaced {
        offset: usize,
        size: usize,
        len: usize,
    },
    #[error(
        "the pe file's SizeOfHeaders is {size_of_headers:#x}, short of the headers and \
         section table that end at {headers_end:#x}"
    )]
    HeadersTooSmall {
        size_of_headers: usize,
        headers_end: usize,
    },
    #[error("the signed image would be {len} bytes: more than a pe file's 32-bit offsets")]
    TooLarge { len: usize },
    #[error("the signing certificate is not an X.509 certificate (PEM or DER)")]
    Certificate(#[source] der::Error),
    #[error("the signing certificate's public key is not RSA")]
    CertificateKey(#[source] rsa::pkcs8::spki::Error),
    #[error("the private key does not belong to the signing certificate")]
    KeyMismatch,
    #[error("encoding the signature")]
    Encode(#[source] der::Error),
    /// (cms' builder error is not a `std::error::Error`: shown in the message.)
    #[error("building the signer info: {0}")]
    SignerInfo(String),
    #[error("signing the signed attributes")]
    Sign(#[source] x509_cert::builder::Error),
}

/// Reading the signing key and certificate from files.
#[derive(Debug, thiserror::Error)]
pub enum SignerLoadError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not an RSA private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY` PEM)"
    )]
    Key {
        path: PathBuf,
        #[source]
        source: rsa::pkcs8::Error,
    },
    #[error("{path}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: AuthenticodeError,
    },
}

/// A certificate and the RSA key that signs with it: db's, for Secure Boot.
pub struct PeSigner {
    certificate: Certificate,
    key: RsaPrivateKey,
}

impl std::fmt::Debug for PeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PeSigner(subject {})",
            self.certificate.tbs_certificate.subject
        )
    }
}

impl PeSigner {
    /// Checks that `key` belongs to the certificate (PEM or DER).
    pub fn new(cert_pem_or_der: &[u8], key: RsaPrivateKey) -> Result<PeSigner, AuthenticodeError> {
        let certificate = parse_certificate(cert_pem_or_der)?;
        let spki = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(AuthenticodeError::Encode)?;
        let public =
            RsaPublicKey::from_public_key_der(&spki).map_err(AuthenticodeError::CertificateKey)?;
        if public != key.to_public_key() {
            return Err(AuthenticodeError::KeyMismatch);
        }
        Ok(PeSigner { certificate, key })
    }

    /// Reads a certificate file (PEM or DER) and its key (PKCS#8 or PKCS#1 PEM).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<PeSigner, SignerLoadError> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map(Zeroizing::new)
                .map_err(|source| SignerLoadError::Read {
                    path: path.to_path_buf(),
                    source,
                })
        };
        let key_pem = read(key_path)?;
        let key = parse_key(&key_pem).map_err(|source| SignerLoadError::Key {
            path: key_path.to_path_buf(),
            source,
        })?;
        let cert = read(cert_path)?;
        PeSigner::new(&cert, key).map_err(|source| SignerLoadError::Certificate {
            path: cert_path.to_path_buf(),
            source,
        })
    }

    /// The db key of a key directory (`db.crt`, `db.key`).
    pub fn from_keydir(dir: &Path) -> Result<PeSigner, SignerLoadError> {
        PeSigner::load(&dir.join(DB_CERT_FILE), &dir.join(DB_KEY_FILE))
    }

    /// [`sign_pe`] with this certificate and key.
    pub fn sign(&self, pe: &[u8]) -> Result<Vec<u8>, AuthenticodeError> {
        let layout = PeLayout::parse(pe)?;
        let mut out = pe[..layout.image_end].to_vec();
        out.resize(out.len().next_multiple_of(CERT_ALIGN), 0);
        // The directory entry is outside the digest; clear it so a dropped
        // signature leaves no trace.
        out[layout.cert_dir..layout.cert_dir + DATA_DIRECTORY_SIZE].fill(0);
        let digest = layout.digest(&out);
        let pkcs7 = self.signed_data(&digest)?;
        append_certificate(&mut out, &layout, &pkcs7)?;
        Ok(out)
    }

    /// The PKCS#7 `ContentInfo` (SignedData) over an image digest, DER.
    fn signed_data(&self, digest: &[u8; 32]) -> Result<Vec<u8>, AuthenticodeError> {
        let enc = AuthenticodeError::Encode;
        let sha256 = AlgorithmIdentifierOwned {
            oid: ID_SHA_256,
            parameters: Some(Any::null()),
        };
        let idc = SpcIndirectDataContent::for_digest(digest).map_err(enc)?;
        let encap = EncapsulatedContentInfo {
            econtent_type: SPC_INDIRECT_DATA_OBJID,
            econtent: Some(Any::encode_from(&idc).map_err(enc)?),
        };
        let tbs = &self.certificate.tbs_certificate;
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        });
        let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(self.key.clone());
        // The builder hashes the eContent's value (the SEQUENCE without its
        // tag and length, as Authenticode wants) into messageDigest, adds
        // contentType, and signs their DER SET.
        let builder = SignerInfoBuilder::new(&signer, sid, sha256.clone(), &encap, None)
            .map_err(|e| AuthenticodeError::SignerInfo(e.to_string()))?;
        let signer_info = builder
            .build::<rsa::pkcs1v15::Signature>()
            .map_err(AuthenticodeError::Sign)?;
        let certificates = SetOfVec::try_from(vec![CertificateChoices::Certificate(
            self.certificate.clone(),
        )])
        .map_err(enc)?;
        // Authenticode wants version 1, whatever RFC 5652 says for a
        // content type other than id-data (cms' own builder would write 3).
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![sha256]).map_err(enc)?,
            encap_content_info: encap,
            certificates: Some(CertificateSet(certificates)),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info]).map_err(enc)?),
        };
        ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&signed).map_err(enc)?,
        }
        .to_der()
        .map_err(enc)
    }
}

/// Signs `pe` with `key` and its certificate `cert_pem_or_der` (the db
/// key for Secure Boot); see the module docs. Refuses a key that does not
/// belong to the certificate.
pub fn sign_pe(
    pe: &[u8],
    cert_pem_or_der: &[u8],
    key: &RsaPrivateKey,
) -> Result<Vec<u8>, AuthenticodeError> {
    PeSigner::new(cert_pem_or_der, key.clone())?.sign(pe)
}

/// The Authenticode SHA-256 of `pe` as it is (a signed image's digest is
/// the one its signature covers).
pub fn image_digest(pe: &[u8]) -> Result<[u8; 32], AuthenticodeError> {
    let layout = PeLayout::parse(pe)?;
    Ok(layout.digest(&pe[..layout.image_end]))
}

/// The DER PKCS#7 blob of the first `WIN_CERTIFICATE` of `pe`, if it has one.
pub fn signature(pe: &[u8]) -> Result<Option<&[u8]>, AuthenticodeError> {
    let layout = PeLayout::parse(pe)?;
    let Some(table) = layout.cert_table else {
        return Ok(None);
    };
    let header = table.start..table.start + WIN_CERTIFICATE_HEADER;
    if header.end > table.end {
        return Err(AuthenticodeError::Pe(PeError::Truncated {
            what: "WIN_CERTIFICATE",
            offset: table.start,
            need: WIN_CERTIFICATE_HEADER,
            len: pe.len(),
        }));
    }
    // Inside the table: checked above. A length under 8 is refused below.
    let length = u32_at(pe, table.start).map_or(0, |v| v as usize);
    let end = table.start.saturating_add(length);
    if length < WIN_CERTIFICATE_HEADER || end > table.end {
        return Err(AuthenticodeError::Pe(PeError::Truncated {
            what: "WIN_CERTIFICATE",
            offset: table.start,
            need: length,
            len: pe.len(),
        }));
    }
    Ok(Some(&pe[header.end..end]))
}

fn parse_certificate(pem_or_der: &[u8]) -> Result<Certificate, AuthenticodeError> {
    let text = pem_or_der.trim_ascii_start();
    if text.starts_with(b"-----BEGIN") {
        Certificate::from_pem(text)
    } else {
        Certificate::from_der(pem_or_der)
    }
    .map_err(AuthenticodeError::Certificate)
}

fn parse_key(pem: &[u8]) -> Result<RsaPrivateKey, rsa::pkcs8::Error> {
    let text = String::from_utf8_lossy(pem);
    RsaPrivateKey::from_pkcs8_pem(&text)
        .or_else(|e| RsaPrivateKey::from_pkcs1_pem(&text).map_err(|_| e))
}

/// Writes the `WIN_CERTIFICATE` after `out` (already 8-byte aligned), points
/// the certificate directory at it and updates the checksum.
fn append_certificate(
    out: &mut Vec<u8>,
    layout: &PeLayout,
    pkcs7: &[u8],
) -> Result<(), AuthenticodeError> {
    let offset = out.len();
    let length = WIN_CERTIFICATE_HEADER + pkcs7.len();
    let padded = length.next_multiple_of(CERT_ALIGN);
    let too_large = || AuthenticodeError::TooLarge {
        len: offset + padded,
    };
    let u32_of = |v: usize| u32::try_from(v).map_err(|_| too_large());
    u32_of(offset + padded)?;
    out.extend_from_slice(&u32_of(length)?.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    out.extend_from_slice(pkcs7);
    out.resize(offset + padded, 0);
    let dir = layout.cert_dir;
    out[dir..dir + 4].copy_from_slice(&u32_of(offset)?.to_le_bytes());
    out[dir + 4..dir + DATA_DIRECTORY_SIZE].copy_from_slice(&u32_of(padded)?.to_le_bytes());
    let checksum = pe_checksum(out, layout.checksum);
    out[layout.checksum..layout.checksum + 4].copy_from_slice(&checksum.to_le_bytes());
    Ok(())
}

// --- the PE layout the digest needs ---

/// Where the digest's pieces are; all file offsets, checked against the file.
#[derive(Debug)]
struct PeLayout {
    /// The 4-byte `CheckSum` field.
    checksum: usize,
    /// The certificate table's 8-byte directory entry.
    cert_dir: usize,
    /// `SizeOfHeaders` (capped at the file's length).
    size_of_headers: usize,
    /// Sections with raw data, in file order.
    sections: Vec<Range<usize>>,
    /// The current certificate table, if any.
    cert_table: Option<Range<usize>>,
    /// Where the image ends: the certificate table's start, else the file's end.
    image_end: usize,
}

impl PeLayout {
    /// The headers as [`PeHeaders`] reads them put `checksum` before
    /// `cert_dir`, and `cert_dir` before the section table's end; the
    /// checks here put that end within `size_of_headers`, every section
    /// inside the file, and the certificate table at its end.
    fn parse(pe: &[u8]) -> Result<PeLayout, AuthenticodeError> {
        let headers = PeHeaders::parse(pe)?;
        let Some(cert_dir) = headers.certificate_table() else {
            return Err(AuthenticodeError::NoCertificateDirectory {
                count: headers.number_of_rva_and_sizes,
            });
        };
        let mut sections = Vec::new();
        for s in headers.sections.iter().filter(|s| s.size_of_raw_data > 0) {
            sections.push(s.raw_range(pe.len())?);
        }
        sections.sort_by_key(|r| r.start);
        let size_of_headers = (headers.size_of_headers as usize).min(pe.len());
        // The digest hashes the headers up to SizeOfHeaders around the
        // checksum and certificate entry: headers that end before the
        // section table would leave it unsigned (and the ranges upside down).
        let headers_end = headers.section_table_end;
        if size_of_headers < headers_end {
            return Err(AuthenticodeError::HeadersTooSmall {
                size_of_headers,
                headers_end,
            });
        }
        let offset = cert_dir.address as usize;
        let size = cert_dir.size as usize;
        let (cert_table, image_end) = if size == 0 {
            (None, pe.len())
        } else {
            let data_end = sections
                .iter()
                .map(|r| r.end)
                .max()
                .unwrap_or(0)
                .max(size_of_headers);
            // Anything after the table would not be covered by the digest
            // either way: only a table that ends the file is understood.
            if offset < data_end || offset.checked_add(size) != Some(pe.len()) {
                return Err(AuthenticodeError::CertificateTableMisplaced {
                    offset,
                    size,
                    len: pe.len(),
                });
            }
            (Some(offset..pe.len()), offset)
        };
        Ok(PeLayout {
            checksum: headers.checksum_field,
            cert_dir: cert_dir.entry,
            size_of_headers,
            sections,
            cert_table,
            image_end,
        })
    }

    /// The Authenticode SHA-256 of `image` (the file up to its certificate
    /// table), laid out as `self` says.
    fn digest(&self, image: &[u8]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let headers = self.size_of_headers.min(image.len());
        ctx.update(&image[..self.checksum]);
        ctx.update(&image[self.checksum + 4..self.cert_dir]);
        ctx.update(&image[self.cert_dir + 8..headers]);
        let mut hashed = headers;
        for s in &self.sections {
            ctx.update(&image[s.clone()]);
            hashed += s.len();
        }
        // What follows the sections (COFF symbols, sbsign's alignment
        // padding), counted as the specification does: by the bytes hashed
        // so far, not by where the last section ends.
        if hashed < image.len() {
            ctx.update(&image[hashed..]);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

// --- Authenticode's ASN.1 (the structures sbsign's idc.c also writes) ---

/// `SpcIndirectDataContent`: what the signature is about.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SpcIndirectDataContent {
    pub data: SpcAttributeTypeAndOptionalValue,
    pub message_digest: DigestInfo,
}

/// `SpcAttributeTypeAndOptionalValue`, for PE images: type
/// [`SPC_PE_IMAGE_DATAOBJ`] and an [`SpcPeImageData`] (untagged, as every
/// signer writes it, whatever the specification's `[0]` says).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SpcAttributeTypeAndOptionalValue {
    pub value_type: ObjectIdentifier,
    pub value: SpcPeImageData,
}

/// `SpcPeImageData`: no flags, and the obsolete file link.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SpcPeImageData {
    pub flags: BitString,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    pub file: SpcLink,
}

/// `SpcLink ::= CHOICE { url [0], moniker [1], file [2] EXPLICIT SpcString }`;
/// only `file` is written.
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub enum SpcLink {
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    File(SpcString),
}

/// `SpcString ::= CHOICE { unicode [0] IMPLICIT BMPString, ascii [1] IMPLICIT IA5String }`.
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub enum SpcString {
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Unicode(BmpString),
}

/// PKCS#1 `DigestInfo`: algorithm and digest.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct DigestInfo {
    pub digest_algorithm: AlgorithmIdentifierOwned,
    pub digest: OctetString,
}

impl SpcIndirectDataContent {
    /// The content for a PE image whose Authenticode SHA-256 is `digest`.
    pub fn for_digest(digest: &[u8; 32]) -> der::Result<SpcIndirectDataContent> {
        Ok(SpcIndirectDataContent {
            data: SpcAttributeTypeAndOptionalValue {
                value_type: SPC_PE_IMAGE_DATAOBJ,
                value: SpcPeImageData {
                    flags: BitString::new(0, Vec::new())?,
                    file: SpcLink::File(SpcString::Unicode(BmpString::from_utf8(OBSOLETE)?)),
                },
            },
            message_digest: DigestInfo {
                digest_algorithm: AlgorithmIdentifierOwned {
                    oid: ID_SHA_256,
                    parameters: Some(Any::null()),
                },
                digest: OctetString::new(digest.as_slice())?,
            },
        })
    }
}

#[cfg(test)]
#[path = "authenticode_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "authenticode_props.rs"]
mod props;
