//! Hermetic tests: a hand-built bzImage (MZ + PE32+ headers + setup header +
//! zstd payload with its size trailer), shaped like Debian's vmlinuz.

use super::*;
use crate::rootfs::Entry;

const RELEASE: &str = "6.12.99+test-amd64";

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// A fake vmlinux: ELF magic and some compressible bytes.
fn fake_vmlinux() -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01".to_vec();
    v.extend((0..50_000u32).map(|i| (i % 251) as u8));
    v
}

/// The test kit's bzImage of [`RELEASE`] for `machine`.
fn fake_bzimage(machine: u16, vmlinux: &[u8]) -> Vec<u8> {
    super::super::testkit::bzimage_for(machine, RELEASE, vmlinux)
}

#[test]
fn inspect_reads_release_and_refuses_other_machines() {
    let img = fake_bzimage(MACHINE_X86_64, &fake_vmlinux());
    let info = inspect(&img).unwrap();
    assert_eq!(info.release, RELEASE);
    assert!(info.version.contains("PREEMPT_DYNAMIC"));
    assert_eq!(info.boot_protocol, (2, 15));
    assert_eq!(info.payload_compression, PayloadCompression::Zstd);
    assert!(!info.signed);

    let i386 = fake_bzimage(0x14c, &fake_vmlinux());
    assert!(matches!(
        inspect(&i386),
        Err(KernelError::WrongMachine { machine: 0x14c })
    ));

    let mut no_stub = img.clone();
    no_stub[0..2].copy_from_slice(b"\0\0");
    assert!(matches!(inspect(&no_stub), Err(KernelError::NotPe { .. })));

    let mut no_hdrs = img.clone();
    no_hdrs[HDRS_OFFSET] = b'X';
    assert!(matches!(
        inspect(&no_hdrs),
        Err(KernelError::NoSetupHeader { .. })
    ));
    assert!(matches!(
        inspect(&img[..100]),
        Err(KernelError::TooShort { len: 100 })
    ));
}

#[test]
fn extract_vmlinux_checks_trailer_and_elf_magic() {
    let vmlinux = fake_vmlinux();
    let img = fake_bzimage(MACHINE_X86_64, &vmlinux);
    assert_eq!(extract_vmlinux(&img).unwrap(), vmlinux);

    // A wrong size trailer is caught.
    let mut bad = img.clone();
    let end = bad.len();
    put32(&mut bad, end - 4, vmlinux.len() as u32 + 1);
    assert!(extract_vmlinux(&bad).is_err());

    // A payload that is not an ELF is refused.
    let not_elf = fake_bzimage(MACHINE_X86_64, &[0u8; 4096]);
    assert!(matches!(
        extract_vmlinux(&not_elf),
        Err(KernelError::NotElf)
    ));

    // A payload length past the end is refused, not sliced.
    let mut oob = img.clone();
    put32(&mut oob, PAYLOAD_LENGTH_OFFSET, u32::MAX);
    assert!(matches!(
        extract_vmlinux(&oob),
        Err(KernelError::PayloadOutOfRange { .. })
    ));
}

#[test]
fn find_kernel_checks_release_against_file_name() {
    let img = fake_bzimage(MACHINE_X86_64, &fake_vmlinux());
    let mut tree = Tree::new();
    assert!(matches!(find_kernel(&tree), Err(KernelError::NoKernel)));
    tree.insert(
        &format!("boot/vmlinuz-{RELEASE}"),
        Entry::file(img.clone(), 0o644),
    );
    tree.insert("boot/config-x", Entry::file(b"CONFIG_X=y".to_vec(), 0o644));
    let (kver, bytes) = find_kernel(&tree).unwrap();
    assert_eq!(kver, RELEASE);
    assert_eq!(&bytes[..], &img[..]);

    let mut wrong = Tree::new();
    wrong.insert(
        "boot/vmlinuz-6.1.0-99-amd64",
        Entry::file(img.clone(), 0o644),
    );
    let err = find_kernel(&wrong).unwrap_err();
    assert!(matches!(err, KernelError::VersionMismatch { .. }), "{err}");

    tree.insert("boot/vmlinuz-6.1.0-99-amd64", Entry::file(img, 0o644));
    assert!(matches!(
        find_kernel(&tree),
        Err(KernelError::SeveralKernels { .. })
    ));
}
