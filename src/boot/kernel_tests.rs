//! Hermetic tests: a hand-built bzImage (MZ + PE32+ headers + setup header +
//! zstd payload with its size trailer), shaped like Debian's vmlinuz.

use super::*;
use crate::rootfs::Entry;

const RELEASE: &str = "6.12.99+test-amd64";

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// A fake vmlinux: ELF magic and some compressible bytes.
fn fake_vmlinux() -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01".to_vec();
    v.extend((0..50_000u32).map(|i| (i % 251) as u8));
    v
}

/// MZ at 0, PE header at 0x40, one section, setup header at 0x1F1..0x250,
/// version string at 0x300, payload after `(setup_sects + 1) * 512`.
fn fake_bzimage(machine: u16, vmlinux: &[u8]) -> Vec<u8> {
    let setup_sects = 3u8;
    let pm_start = (setup_sects as usize + 1) * 512;
    let mut payload = zstd::bulk::compress(vmlinux, 3).unwrap();
    payload.extend((vmlinux.len() as u32).to_le_bytes());
    let mut b = vec![0u8; pm_start + 0x20 + payload.len()];
    let total = b.len() as u32;
    b[0..2].copy_from_slice(b"MZ");
    put32(&mut b, 0x3c, 0x40);
    b[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    put16(&mut b, coff, machine);
    put16(&mut b, coff + 2, 1); // NumberOfSections
    put16(&mut b, coff + 16, 240); // SizeOfOptionalHeader (PE32+)
    put16(&mut b, coff + 18, 0x0206); // executable, debug stripped
    let oh = coff + 20;
    put16(&mut b, oh, 0x20b); // PE32+
    put32(&mut b, oh + 4, total - pm_start as u32); // SizeOfCode
    put32(&mut b, oh + 16, pm_start as u32); // AddressOfEntryPoint
    put32(&mut b, oh + 20, pm_start as u32); // BaseOfCode
    put32(&mut b, oh + 32, 0x200); // SectionAlignment
    put32(&mut b, oh + 36, 0x200); // FileAlignment
    put32(&mut b, oh + 56, total.next_multiple_of(0x200)); // SizeOfImage
    put32(&mut b, oh + 60, 0x200); // SizeOfHeaders
    put16(&mut b, oh + 68, 10); // Subsystem: EFI application
    put32(&mut b, oh + 108, 16); // NumberOfRvaAndSizes
    let sh = oh + 240;
    b[sh..sh + 5].copy_from_slice(b".text");
    put32(&mut b, sh + 8, total - pm_start as u32); // VirtualSize
    put32(&mut b, sh + 12, pm_start as u32); // VirtualAddress
    put32(&mut b, sh + 16, total - pm_start as u32); // SizeOfRawData
    put32(&mut b, sh + 20, pm_start as u32); // PointerToRawData
    put32(&mut b, sh + 36, 0x6000_0020); // code, execute, read
    assert!(sh + 40 <= 0x1F1, "PE headers overlap the setup header");
    // Setup header.
    b[SETUP_SECTS_OFFSET] = setup_sects;
    put16(&mut b, BOOT_FLAG_OFFSET, BOOT_FLAG);
    b[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(HDRS_MAGIC);
    put16(&mut b, PROTOCOL_OFFSET, 0x020f);
    put16(&mut b, KERNEL_VERSION_OFFSET, 0x100);
    let v = format!("{RELEASE} (test@example) #1 SMP PREEMPT_DYNAMIC Debian\0");
    b[0x300..0x300 + v.len()].copy_from_slice(v.as_bytes());
    put32(&mut b, PAYLOAD_OFFSET_OFFSET, 0x20);
    put32(&mut b, PAYLOAD_LENGTH_OFFSET, payload.len() as u32);
    b[pm_start + 0x20..].copy_from_slice(&payload);
    b
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
