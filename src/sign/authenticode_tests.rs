//! The Authenticode signer judged by `sbverify` (sbsigntool: accepts with
//! the db certificate, refuses with another), `osslsigncode verify` (image
//! digest, PE checksum, signature) and `sbsign` itself (the same
//! `SpcIndirectDataContent` and the same padded image), on the host's
//! systemd-boot and on a UKI built from the host's stub.

use std::path::{Path, PathBuf};
use std::process::Command;

use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::SignedData;
use der::{Decode, Encode};

use super::*;
use crate::boot::uki::{build_uki, read_sections, UkiSections};
use crate::sign::keys::{generate_secure_boot, SecureBootOptions};
use crate::testutil::{noise, run_ok, tool};

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

const HOST_SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const HOST_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const HOST_ELF_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.elf.stub";

/// The `contentType` and `messageDigest` attribute OIDs (PKCS#9).
const CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";

fn host_file(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}): install systemd-boot-efi (scripts/setup.sh)")
    })
}

/// A fresh Secure Boot key set (PK, KEK, db) in a temporary directory.
fn keydir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let opts = SecureBootOptions {
        owner: "nodeimg test".into(),
        not_before: 1_700_000_000,
        valid_days: 3650,
    };
    generate_secure_boot(dir.path(), &opts, false).unwrap();
    dir
}

fn db(keys: &Path) -> PeSigner {
    PeSigner::from_keydir(keys).unwrap()
}

fn uki() -> Vec<u8> {
    let stub = host_file(HOST_STUB);
    build_uki(
        &stub,
        &UkiSections {
            osrel: b"ID=nodeimg\nVERSION_ID=1\n",
            cmdline: b"console=ttyS0 ro nodeimg.roothash=00ff",
            uname: b"6.12.99+test-amd64",
            initrd: &noise(70_001, 1),
            linux: &noise(300_003, 2),
        },
    )
    .unwrap()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// `sbverify --cert CERT FILE`: whether it accepts, and what it said.
fn sbverify(cert: &Path, file: &Path) -> (bool, String) {
    let out = Command::new(tool("sbverify", "sbsigntool"))
        .arg("--cert")
        .arg(cert)
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `osslsigncode verify -CAfile CERT`'s output (it must succeed).
fn osslsigncode_verify(cert: &Path, file: &Path) -> String {
    let out = run_ok(
        Command::new(tool("osslsigncode", "osslsigncode"))
            .args(["verify", "-in"])
            .arg(file)
            .arg("-CAfile")
            .arg(cert),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value after `label` on its line in osslsigncode's output.
fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim_start_matches([' ', ':']).trim())
}

fn signed_data(pkcs7: &[u8]) -> SignedData {
    let ci = ContentInfo::from_der(pkcs7).unwrap();
    assert_eq!(ci.content_type.to_string(), "1.2.840.113549.1.7.2");
    ci.content.decode_as::<SignedData>().unwrap()
}

/// Signs `unsigned`, checks every judge, returns the signed bytes.
fn sign_and_judge(unsigned: &[u8], keys: &Path, work: &Path) -> Vec<u8> {
    let signed = db(keys).sign(unsigned).unwrap();
    let file = write(work, "signed.efi", &signed);
    let (ok, said) = sbverify(&keys.join("db.crt"), &file);
    assert!(ok, "sbverify --cert db.crt refused: {said}");
    let (ok, said) = sbverify(&keys.join("kek.crt"), &file);
    assert!(!ok, "sbverify --cert kek.crt accepted: {said}");

    let report = osslsigncode_verify(&keys.join("db.crt"), &file);
    let ours = hex::encode_upper(image_digest(&signed).unwrap());
    assert_eq!(
        field(&report, "Calculated message digest"),
        Some(ours.as_str()),
        "{report}"
    );
    assert_eq!(
        field(&report, "Current message digest"),
        Some(ours.as_str()),
        "{report}"
    );
    assert!(
        !report.contains("Calculated PE checksum"),
        "PE checksum:\n{report}"
    );
    assert!(report.contains("Signature verification: ok"), "{report}");
    // Our own reading agrees: the digest inside the signature is the image's.
    let sd = signed_data(signature(&signed).unwrap().unwrap());
    let idc = sd
        .encap_content_info
        .econtent
        .as_ref()
        .unwrap()
        .decode_as::<SpcIndirectDataContent>()
        .unwrap();
    assert_eq!(
        idc.message_digest.digest.as_bytes(),
        image_digest(&signed).unwrap()
    );
    signed
}

#[test]
fn signed_systemd_boot_is_accepted_with_db_and_refused_with_kek() {
    let keys = keydir();
    let work = tempfile::tempdir().unwrap();
    let unsigned = host_file(HOST_SYSTEMD_BOOT);
    let signed = sign_and_judge(&unsigned, keys.path(), work.path());
    // Only the checksum, the directory entry, zero padding to 8 bytes and
    // the certificate table changed.
    let layout = PeLayout::parse(&signed).unwrap();
    let table = layout.cert_table.clone().unwrap().start;
    assert_eq!(table, unsigned.len().next_multiple_of(8));
    assert!(signed[unsigned.len()..table].iter().all(|&b| b == 0));
    let mask = |pe: &[u8]| {
        let mut v = pe[..unsigned.len()].to_vec();
        v[layout.checksum..layout.checksum + 4].fill(0);
        v[layout.cert_dir..layout.cert_dir + 8].fill(0);
        v
    };
    assert!(mask(&signed) == mask(&unsigned));
}

#[test]
fn signed_uki_is_accepted_and_one_changed_cmdline_byte_is_refused() {
    let keys = keydir();
    let work = tempfile::tempdir().unwrap();
    let signed = sign_and_judge(&uki(), keys.path(), work.path());

    let cmdline = read_sections(&signed)
        .unwrap()
        .into_iter()
        .find(|s| s.name == ".cmdline")
        .unwrap()
        .file_range;
    let mut tampered = signed.clone();
    tampered[cmdline.start + 8] ^= 0x01;
    assert_ne!(
        image_digest(&tampered).unwrap(),
        image_digest(&signed).unwrap()
    );
    let file = write(work.path(), "tampered.efi", &tampered);
    let (ok, said) = sbverify(&keys.path().join("db.crt"), &file);
    assert!(!ok, "sbverify accepted a changed .cmdline: {said}");
}

#[test]
fn indirect_data_and_padded_image_match_sbsign() {
    let keys = keydir();
    let work = tempfile::tempdir().unwrap();
    for (name, unsigned) in [
        ("systemd-boot", host_file(HOST_SYSTEMD_BOOT)),
        ("uki", uki()),
    ] {
        let input = write(work.path(), &format!("{name}.efi"), &unsigned);
        let by_sbsign = work.path().join(format!("{name}.sbsign.efi"));
        run_ok(
            Command::new(tool("sbsign", "sbsigntool"))
                .arg("--key")
                .arg(keys.path().join("db.key"))
                .arg("--cert")
                .arg(keys.path().join("db.crt"))
                .arg("--output")
                .arg(&by_sbsign)
                .arg(&input),
        );
        let theirs = std::fs::read(&by_sbsign).unwrap();
        let ours = db(keys.path()).sign(&unsigned).unwrap();
        assert_eq!(image_digest(&ours).unwrap(), image_digest(&theirs).unwrap());
        let econtent = |pe: &[u8]| {
            signed_data(signature(pe).unwrap().unwrap())
                .encap_content_info
                .econtent
                .unwrap()
                .to_der()
                .unwrap()
        };
        assert_eq!(econtent(&ours), econtent(&theirs), "{name}");
        // The same image before the table, apart from the checksum and the
        // directory entry's size (their signature has more attributes).
        let layout = PeLayout::parse(&ours).unwrap();
        let start = layout.cert_table.clone().unwrap().start;
        let their_layout = PeLayout::parse(&theirs).unwrap();
        assert_eq!(their_layout.cert_table.unwrap().start, start, "{name}");
        let mask = |pe: &[u8]| {
            let mut v = pe[..start].to_vec();
            v[layout.checksum..layout.checksum + 4].fill(0);
            v[layout.cert_dir + 4..layout.cert_dir + 8].fill(0);
            v
        };
        assert!(mask(&ours) == mask(&theirs), "{name}: images differ");
    }
}

#[test]
fn signed_data_is_version_1_with_only_content_type_and_message_digest() {
    let keys = keydir();
    let signed = db(keys.path()).sign(&uki()).unwrap();
    let sd = signed_data(signature(&signed).unwrap().unwrap());
    assert_eq!(sd.version, CmsVersion::V1);
    assert_eq!(sd.encap_content_info.econtent_type, SPC_INDIRECT_DATA_OBJID);
    assert_eq!(sd.signer_infos.0.len(), 1);
    let si = sd.signer_infos.0.get(0).unwrap();
    assert_eq!(si.version, CmsVersion::V1);
    let mut oids: Vec<String> = si
        .signed_attrs
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| a.oid.to_string())
        .collect();
    oids.sort();
    // No signing time: the signature is a function of its inputs.
    assert_eq!(oids, [CONTENT_TYPE, MESSAGE_DIGEST]);
    let certs = sd.certificates.unwrap();
    assert_eq!(certs.0.len(), 1);
    let pem = std::fs::read(keys.path().join("db.crt")).unwrap();
    let db_cert = parse_certificate(&pem).unwrap();
    assert_eq!(
        certs.0.get(0).unwrap(),
        &cms::cert::CertificateChoices::Certificate(db_cert)
    );
    // The WIN_CERTIFICATE header.
    let table = PeLayout::parse(&signed).unwrap().cert_table.unwrap();
    assert_eq!(table.start % 8, 0);
    assert_eq!(table.end, signed.len());
    assert_eq!(le16(&signed, table.start + 4), WIN_CERT_REVISION_2_0);
    assert_eq!(
        le16(&signed, table.start + 6),
        WIN_CERT_TYPE_PKCS_SIGNED_DATA
    );
}

#[test]
fn signing_is_deterministic_and_replaces_an_earlier_signature() {
    let keys = keydir();
    let signer = db(keys.path());
    let unsigned = host_file(HOST_SYSTEMD_BOOT);
    let once = signer.sign(&unsigned).unwrap();
    assert_eq!(signer.sign(&unsigned).unwrap(), once);
    assert_eq!(signer.sign(&once).unwrap(), once);
    // A signature by another key is replaced, not added to.
    let other = keydir();
    let by_other = db(other.path()).sign(&unsigned).unwrap();
    assert_eq!(signer.sign(&by_other).unwrap(), once);
    // The free function gives the same bytes.
    let pem = std::fs::read(keys.path().join("db.crt")).unwrap();
    let key_pem = std::fs::read_to_string(keys.path().join("db.key")).unwrap();
    let key = RsaPrivateKey::from_pkcs8_pem(&key_pem).unwrap();
    assert_eq!(sign_pe(&unsigned, &pem, &key).unwrap(), once);
    // A DER certificate works as well as PEM.
    let der = parse_certificate(&pem).unwrap().to_der().unwrap();
    assert_eq!(sign_pe(&unsigned, &der, &key).unwrap(), once);
}

#[test]
fn refuses_a_key_that_is_not_the_certificates() {
    let keys = keydir();
    let err =
        PeSigner::load(&keys.path().join("db.crt"), &keys.path().join("kek.key")).unwrap_err();
    assert!(
        matches!(
            err,
            SignerLoadError::Certificate {
                source: AuthenticodeError::KeyMismatch,
                ..
            }
        ),
        "{err:?}"
    );
    let err = PeSigner::from_keydir(&keys.path().join("missing")).unwrap_err();
    assert!(matches!(err, SignerLoadError::Read { .. }), "{err:?}");
}

#[test]
fn refuses_what_is_not_a_pe_image() {
    let keys = keydir();
    let signer = db(keys.path());
    let elf = host_file(HOST_ELF_STUB);
    assert!(matches!(
        signer.sign(&elf),
        Err(AuthenticodeError::Pe(crate::pe::PeError::NotPe { .. }))
    ));
    let pe = host_file(HOST_SYSTEMD_BOOT);
    assert!(matches!(
        signer.sign(&pe[..0x100]),
        Err(AuthenticodeError::Pe(crate::pe::PeError::Truncated { .. })
            | AuthenticodeError::Section(_))
    ));
    assert!(matches!(
        signer.sign(&pe[..pe.len() / 2]),
        Err(AuthenticodeError::Section(_))
    ));
    // A certificate table that does not end the file is not understood.
    let mut signed = signer.sign(&pe).unwrap();
    signed.extend_from_slice(&[0; 16]);
    assert!(matches!(
        signer.sign(&signed),
        Err(AuthenticodeError::CertificateTableMisplaced { .. })
    ));
}
