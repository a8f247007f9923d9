//! The UKI writer judged by our own reader, goblin, `objdump -h` (binutils)
//! and `osslsigncode` (checksum), on the host's systemd stub (bookworm's
//! 252: SectionAlignment = FileAlignment = 0x200) and on hand-built stubs
//! shaped like trixie's 257 (SectionAlignment 0x1000), signed ones and ones
//! with no header room.

use std::path::Path;
use std::process::Command;

use super::*;
use crate::testutil::{noise, run_ok, tool};

/// Header fields read by hand, not with the reader under test.
fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// systemd's x86-64 stub from Debian's `systemd-boot-efi`.
const HOST_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// The same stub as an ELF file (same package): not a PE file.
const HOST_ELF_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.elf.stub";

/// Reads a file of the `systemd-boot-efi` package, failing loudly without it:
/// these tests must not pass without their input.
fn stub_file(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}): install systemd-boot-efi (scripts/setup.sh)")
    })
}

struct Inputs {
    osrel: Vec<u8>,
    cmdline: Vec<u8>,
    uname: Vec<u8>,
    initrd: Vec<u8>,
    linux: Vec<u8>,
}

impl Inputs {
    /// Odd sizes, so that every section needs padding.
    fn small() -> Self {
        Inputs {
            osrel: b"ID=nodeimg\nVERSION_ID=1\nPRETTY_NAME=\"nodeimg test\"\n".to_vec(),
            cmdline: b"console=ttyS0 ro panic=0".to_vec(),
            uname: b"6.12.99+test-amd64".to_vec(),
            initrd: noise(70_001, 1),
            linux: noise(300_003, 2),
        }
    }

    fn sections(&self) -> UkiSections<'_> {
        UkiSections {
            osrel: &self.osrel,
            cmdline: &self.cmdline,
            uname: &self.uname,
            initrd: &self.initrd,
            linux: &self.linux,
        }
    }

    fn expected(&self) -> [(&'static str, &[u8]); 5] {
        [
            (".osrel", &self.osrel),
            (".cmdline", &self.cmdline),
            (".uname", &self.uname),
            (".initrd", &self.initrd),
            (".linux", &self.linux),
        ]
    }
}

/// The optional header's offset and the alignments, read by hand.
struct Hdr {
    optional: usize,
    section_alignment: u32,
    file_alignment: u32,
}

fn hdr(pe: &[u8]) -> Hdr {
    let optional = le32(pe, 0x3c) as usize + 24;
    Hdr {
        optional,
        section_alignment: le32(pe, optional + 32),
        file_alignment: le32(pe, optional + 36),
    }
}

/// The PE checksum written differently from [`pe_checksum`]: a copy with
/// the field zeroed, words folded as they are added.
fn checksum_by_copy(pe: &[u8]) -> u32 {
    let mut copy = pe.to_vec();
    let at = hdr(pe).optional + 64;
    copy[at..at + 4].fill(0);
    if copy.len() % 2 == 1 {
        copy.push(0);
    }
    let mut sum = 0u32;
    for w in copy.chunks_exact(2) {
        sum += u32::from(u16::from_le_bytes([w[0], w[1]]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum + pe.len() as u32
}

/// Checks what every UKI must satisfy, for any stub: the stub's sections
/// are unchanged and come first, ours follow in order with the right bytes,
/// RVAs aligned to SectionAlignment and increasing without overlap, raw
/// data aligned to FileAlignment, SizeOfImage covering them, the checksum
/// right, and goblin agreeing.
fn check_uki(stub: &[u8], uki: &[u8], inputs: &Inputs) {
    let before = read_sections(stub).unwrap();
    let after = read_sections(uki).unwrap();
    assert_eq!(after.len(), before.len() + 5);
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old, new, "the stub's section table changed");
        assert_eq!(stub[old.file_range.clone()], uki[new.file_range.clone()]);
    }
    let h = hdr(uki);
    let ours = &after[before.len()..];
    let mut prev_end = before
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size))
        .max()
        .unwrap();
    for (s, (name, data)) in ours.iter().zip(inputs.expected()) {
        assert_eq!(s.name, name);
        assert_eq!(&uki[s.file_range.clone()], data, "{name} bytes");
        assert_eq!(s.virtual_address % h.section_alignment, 0, "{name} rva");
        assert_eq!(
            s.file_range.start % h.file_alignment as usize,
            0,
            "{name} file offset"
        );
        assert!(u64::from(s.virtual_address) >= prev_end, "{name} overlaps");
        prev_end = u64::from(s.virtual_address) + u64::from(s.virtual_size);
        let want = if name == ".linux" {
            0x4000_0020
        } else {
            0x4000_0040
        };
        assert_eq!(s.characteristics, want, "{name} characteristics");
    }
    // Nothing after the last section's padded raw data.
    let last = ours.last().unwrap();
    let padded = last.file_range.start
        + last
            .file_range
            .len()
            .next_multiple_of(h.file_alignment as usize);
    assert_eq!(uki.len(), padded);
    let size_of_image = le32(uki, h.optional + 56);
    assert_eq!(
        u64::from(size_of_image),
        prev_end.next_multiple_of(h.section_alignment.into())
    );
    assert_eq!(
        le16(uki, le32(uki, 0x3c) as usize + 6) as usize,
        after.len()
    );
    assert_eq!(
        le32(uki, h.optional + 64),
        checksum_by_copy(uki),
        "checksum field"
    );

    let pe = goblin::pe::PE::parse(uki).expect("goblin parses the uki");
    let names: Vec<String> = pe
        .sections
        .iter()
        .map(|s| s.name().unwrap().to_string())
        .collect();
    let mine: Vec<String> = after.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, mine);
    let oh = pe.header.optional_header.unwrap();
    assert_eq!(oh.windows_fields.size_of_image, size_of_image);
    assert_eq!(oh.windows_fields.check_sum, checksum_by_copy(uki));
    assert!(oh
        .data_directories
        .get_certificate_table()
        .is_none_or(|d| d.size == 0));
}

/// One line of `objdump -h`: name, size, VMA, file offset.
#[derive(Debug)]
struct ObjdumpSection {
    name: String,
    size: u64,
    vma: u64,
    file_off: u64,
}

fn objdump_h(path: &Path) -> Vec<ObjdumpSection> {
    let out = run_ok(
        Command::new(tool("objdump", "binutils"))
            .arg("-h")
            .arg(path),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    text.lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (t.len() == 7 && t[0].parse::<u32>().is_ok()).then(|| ObjdumpSection {
                name: t[1].to_string(),
                size: hex(t[2]),
                vma: hex(t[3]),
                file_off: hex(t[5]),
            })
        })
        .collect()
}

/// `objdump -h` lists every section as our reader does; the VMAs are
/// aligned and do not overlap.
fn check_objdump(uki: &[u8], inputs: &Inputs) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uki.efi");
    std::fs::write(&path, uki).unwrap();
    let listed = objdump_h(&path);
    let ours = read_sections(uki).unwrap();
    let image_base = goblin::pe::PE::parse(uki).unwrap().image_base;
    assert_eq!(listed.len(), ours.len(), "objdump -h lists {listed:?}");
    for (o, s) in listed.iter().zip(&ours) {
        assert_eq!(o.name, s.name);
        assert_eq!(
            o.vma,
            image_base + u64::from(s.virtual_address),
            "{} vma",
            s.name
        );
        assert_eq!(
            o.file_off, s.file_range.start as u64,
            "{} file offset",
            s.name
        );
    }
    for (name, data) in inputs.expected() {
        let o = listed.iter().find(|o| o.name == name).unwrap();
        assert_eq!(o.size, data.len() as u64, "{name} size per objdump");
    }
    let sa = u64::from(hdr(uki).section_alignment);
    for pair in listed.windows(2) {
        assert!(
            pair[0].vma + pair[0].size <= pair[1].vma,
            "{pair:?} overlap"
        );
    }
    for o in &listed[listed.len() - 5..] {
        assert_eq!(o.vma % sa, 0, "{} vma not aligned to {sa:#x}", o.name);
    }
    let out = run_ok(
        Command::new(tool("objdump", "binutils"))
            .arg("-h")
            .arg(&path),
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn host_stub_uki_reads_back_and_objdump_agrees() {
    let stub = stub_file(HOST_STUB);
    let inputs = Inputs::small();
    let uki = build_uki(&stub, &inputs.sections()).unwrap();
    check_uki(&stub, &uki, &inputs);
    let listing = check_objdump(&uki, &inputs);
    eprintln!("{listing}");
    for (name, data) in inputs.expected() {
        assert_eq!(section_bytes(&uki, name).unwrap(), data);
    }
    // The stub's COFF symbol table was cut off with the tail; the header no
    // longer points at it.
    let coff = le32(&uki, 0x3c) as usize + 4;
    assert_eq!(le32(&uki, coff + 8), 0, "PointerToSymbolTable");
    assert_eq!(le32(&uki, coff + 12), 0, "NumberOfSymbols");
}

#[test]
fn checksum_agrees_with_binutils_and_osslsigncode() {
    // binutils wrote the stub's checksum: our function must reproduce it.
    let stub = stub_file(HOST_STUB);
    let field = le32(&stub, hdr(&stub).optional + 64);
    assert_ne!(field, 0);
    assert_eq!(pe_checksum(&stub, hdr(&stub).optional + 64), field);
    assert_eq!(checksum_by_copy(&stub), field);

    let uki = build_uki(&stub, &Inputs::small().sections()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uki.efi");
    std::fs::write(&path, &uki).unwrap();
    // `verify` fails (the UKI is unsigned) but judges the checksum: it prints
    // "PE checksum : X" when the field is right, and "Current PE checksum"
    // next to "Calculated PE checksum" when it is not.
    let out = Command::new(tool("osslsigncode", "osslsigncode"))
        .arg("verify")
        .arg("-in")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("Calculated PE checksum"), "{text}");
    let judged = text
        .lines()
        .find_map(|l| l.strip_prefix("PE checksum"))
        .map(|v| u32::from_str_radix(v.trim_start_matches([' ', ':']).trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("no PE checksum in osslsigncode output:\n{text}"));
    assert_eq!(le32(&uki, hdr(&uki).optional + 64), judged);
}

#[test]
fn same_inputs_same_bytes() {
    let stub = stub_file(HOST_STUB);
    let inputs = Inputs::small();
    let a = build_uki(&stub, &inputs.sections()).unwrap();
    let b = build_uki(&stub, &inputs.sections()).unwrap();
    assert!(a == b, "two builds differ");
    let mut other = Inputs::small();
    other.cmdline.push(b'x');
    assert!(build_uki(&stub, &other.sections()).unwrap() != a);
}

#[test]
fn refuses_non_pe_and_other_kinds_of_pe() {
    let inputs = Inputs::small();
    let s = inputs.sections();
    assert!(matches!(
        build_uki(b"not a pe file", &s),
        Err(UkiError::StubNotPe { .. })
    ));
    let elf = stub_file(HOST_ELF_STUB);
    assert!(matches!(
        build_uki(&elf, &s),
        Err(UkiError::StubNotPe { .. })
    ));
    let arm = fake_pe(&FakePe {
        machine: 0xaa64,
        ..FakePe::trixie_like()
    });
    assert!(matches!(
        build_uki(&arm, &s),
        Err(UkiError::StubWrongMachine { machine: 0xaa64 })
    ));
    let console = fake_pe(&FakePe {
        subsystem: 3,
        ..FakePe::trixie_like()
    });
    assert!(matches!(
        build_uki(&console, &s),
        Err(UkiError::StubNotEfiApplication { subsystem: 3 })
    ));
    let pe32 = fake_pe(&FakePe {
        magic: 0x10b,
        ..FakePe::trixie_like()
    });
    assert!(matches!(
        build_uki(&pe32, &s),
        Err(UkiError::StubNotPe32Plus { magic: 0x10b })
    ));
}

#[test]
fn refuses_a_stub_that_already_has_a_uki_section() {
    let stub = stub_file(HOST_STUB);
    let inputs = Inputs::small();
    let uki = build_uki(&stub, &inputs.sections()).unwrap();
    let err = build_uki(&uki, &inputs.sections()).unwrap_err();
    assert!(
        matches!(err, UkiError::StubHasSection { name: ".osrel" }),
        "{err}"
    );
    // Also when only .linux is there.
    let only_kernel = UkiSections {
        osrel: b"",
        cmdline: b"",
        uname: b"",
        initrd: b"",
        linux: &inputs.linux,
    };
    let uki = build_uki(&stub, &only_kernel).unwrap();
    let err = build_uki(&uki, &inputs.sections()).unwrap_err();
    assert!(
        matches!(err, UkiError::StubHasSection { name: ".linux" }),
        "{err}"
    );
    assert_eq!(err.to_string(), "the stub already has a .linux section");
}

#[test]
fn empty_sections_are_left_out_and_an_empty_kernel_refused() {
    let stub = stub_file(HOST_STUB);
    let inputs = Inputs::small();
    let s = UkiSections {
        cmdline: b"",
        uname: b"",
        ..inputs.sections()
    };
    let uki = build_uki(&stub, &s).unwrap();
    let names: Vec<String> = read_sections(&uki)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names[names.len() - 3..], [".osrel", ".initrd", ".linux"]);
    assert!(matches!(
        section_bytes(&uki, ".cmdline"),
        Err(UkiError::SectionMissing { .. })
    ));
    let no_kernel = UkiSections {
        linux: b"",
        ..inputs.sections()
    };
    assert!(matches!(
        build_uki(&stub, &no_kernel),
        Err(UkiError::EmptyKernel)
    ));
}

/// A hand-built PE32+ EFI application with `.text` and `.data`.
#[derive(Clone)]
struct FakePe {
    machine: u16,
    magic: u16,
    subsystem: u16,
    section_alignment: u32,
    file_alignment: u32,
    size_of_headers: u32,
    /// Bytes after the last section, recorded as a certificate table.
    signature: usize,
    /// Bytes after the last section (and the signature), recorded as a COFF symbol table.
    symbols: usize,
    /// Raised SizeOfImage (as a kernel's covers its decompression), if any.
    size_of_image: Option<u32>,
    image_base: u64,
}

impl FakePe {
    /// Shaped like trixie's systemd 257 stub: 4 KiB section alignment, a
    /// non-zero image base.
    fn trixie_like() -> Self {
        FakePe {
            machine: 0x8664,
            magic: 0x20b,
            subsystem: 10,
            section_alignment: 0x1000,
            file_alignment: 0x200,
            size_of_headers: 0x400,
            signature: 0,
            symbols: 0,
            size_of_image: None,
            // lld links the 257 stub at a high preferred base.
            image_base: 0x1_4df9_0000,
        }
    }
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

/// MZ, `PE\0\0` at 0x80, COFF header, optional header (PE32+ or PE32),
/// section table, `.text` and `.data` raw data, then the optional tail.
fn fake_pe(o: &FakePe) -> Vec<u8> {
    let (sa, fa) = (o.section_alignment, o.file_alignment);
    let text_raw = 0x600u32.next_multiple_of(fa);
    let data_raw = 0x200u32.next_multiple_of(fa);
    let text_va = o.size_of_headers.next_multiple_of(sa);
    let data_va = (text_va + 0x5f0).next_multiple_of(sa);
    let text_ptr = o.size_of_headers;
    let data_ptr = text_ptr + text_raw;
    let end = (data_ptr + data_raw) as usize;
    let mut b = vec![0u8; end];
    put(&mut b, 0, b"MZ");
    put(&mut b, 0x3c, &0x80u32.to_le_bytes());
    put(&mut b, 0x80, b"PE\0\0");
    let coff = 0x84;
    let pe32 = o.magic == 0x10b;
    let opt_size: u16 = if pe32 { 224 } else { 240 };
    put(&mut b, coff, &o.machine.to_le_bytes());
    put(&mut b, coff + 2, &2u16.to_le_bytes());
    put(&mut b, coff + 16, &opt_size.to_le_bytes());
    put(&mut b, coff + 18, &0x0206u16.to_le_bytes());
    let opt = coff + 20;
    put(&mut b, opt, &o.magic.to_le_bytes());
    put(&mut b, opt + 4, &text_raw.to_le_bytes()); // SizeOfCode
    put(&mut b, opt + 8, &data_raw.to_le_bytes()); // SizeOfInitializedData
    put(&mut b, opt + 16, &text_va.to_le_bytes()); // AddressOfEntryPoint
    put(&mut b, opt + 20, &text_va.to_le_bytes()); // BaseOfCode
    if !pe32 {
        put(&mut b, opt + 24, &o.image_base.to_le_bytes());
    }
    put(&mut b, opt + 32, &sa.to_le_bytes());
    put(&mut b, opt + 36, &fa.to_le_bytes());
    let image = o
        .size_of_image
        .unwrap_or((data_va + 0x100).next_multiple_of(sa));
    put(&mut b, opt + 56, &image.to_le_bytes());
    put(&mut b, opt + 60, &o.size_of_headers.to_le_bytes());
    put(&mut b, opt + 68, &o.subsystem.to_le_bytes());
    let (rva_count_at, dirs) = if pe32 { (92, 96) } else { (108, 112) };
    put(&mut b, opt + rva_count_at, &16u32.to_le_bytes());
    let table = opt + usize::from(opt_size);
    for (i, (name, vsize, va, raw, ptr, flags)) in [
        (
            b".text",
            0x5f0u32,
            text_va,
            text_raw,
            text_ptr,
            0x6000_0020u32,
        ),
        (b".data", 0x100, data_va, data_raw, data_ptr, 0xc000_0040),
    ]
    .into_iter()
    .enumerate()
    {
        let h = table + 40 * i;
        put(&mut b, h, name);
        put(&mut b, h + 8, &vsize.to_le_bytes());
        put(&mut b, h + 12, &va.to_le_bytes());
        put(&mut b, h + 16, &raw.to_le_bytes());
        put(&mut b, h + 20, &ptr.to_le_bytes());
        put(&mut b, h + 36, &flags.to_le_bytes());
    }
    put(&mut b, text_ptr as usize, &noise(0x5f0, 3));
    put(&mut b, data_ptr as usize, &noise(0x100, 4));
    if o.signature > 0 {
        let dir = opt + dirs + 8 * 4;
        let at = b.len() as u32;
        put(&mut b, dir, &at.to_le_bytes());
        put(&mut b, dir + 4, &(o.signature as u32).to_le_bytes());
        // WIN_CERTIFICATE: dwLength, wRevision 2.0, WIN_CERT_TYPE_PKCS_SIGNED_DATA.
        let mut cert = noise(o.signature, 5);
        put(&mut cert, 0, &(o.signature as u32).to_le_bytes());
        put(&mut cert, 4, &[0x00, 0x02, 0x02, 0x00]);
        b.extend(cert);
    }
    if o.symbols > 0 {
        let at = b.len() as u32;
        put(&mut b, coff + 8, &at.to_le_bytes());
        put(&mut b, coff + 12, &((o.symbols / 18) as u32).to_le_bytes());
        b.extend(noise(o.symbols, 6));
    }
    let at = opt + 64;
    let sum = checksum_by_copy(&b);
    put(&mut b, at, &sum.to_le_bytes());
    b
}

#[test]
fn trixie_like_stub_gets_page_aligned_sections_and_loses_its_signature() {
    let stub = fake_pe(&FakePe {
        signature: 0x318,
        symbols: 18 * 7,
        ..FakePe::trixie_like()
    });
    // goblin reads the hand-built stub and its signature.
    assert_eq!(goblin::pe::PE::parse(&stub).unwrap().certificates.len(), 1);
    let inputs = Inputs::small();
    let uki = build_uki(&stub, &inputs.sections()).unwrap();
    check_uki(&stub, &uki, &inputs);
    let listing = check_objdump(&uki, &inputs);
    eprintln!("{listing}");
    let ours = &read_sections(&uki).unwrap()[2..];
    for s in ours {
        assert_eq!(s.virtual_address % 0x1000, 0, "{s:?}");
    }
    // The data directory no longer names a certificate table; the stub's
    // signature bytes and symbols are gone (the .osrel data follows .data).
    let opt = hdr(&uki).optional;
    assert_eq!(&uki[opt + 112 + 32..opt + 112 + 40], &[0u8; 8]);
    assert_eq!(ours[0].file_range.start, 0x400 + 0x600 + 0x200);
    let coff = 0x84;
    assert_eq!(le32(&uki, coff + 8), 0, "PointerToSymbolTable");
    assert_eq!(le32(&uki, coff + 12), 0, "NumberOfSymbols");
}

#[test]
fn refuses_a_stub_without_header_room_or_with_data_in_the_slack() {
    // Section table at 0x188..0x1d8, first raw data at 0x200: room for 1 header.
    let tight = fake_pe(&FakePe {
        size_of_headers: 0x200,
        ..FakePe::trixie_like()
    });
    let inputs = Inputs::small();
    let err = build_uki(&tight, &inputs.sections()).unwrap_err();
    assert!(
        matches!(
            err,
            UkiError::NoHeaderRoom {
                count: 5,
                needed: 0x2a0,
                limit: 0x200
            }
        ),
        "{err}"
    );
    let kernel_only = UkiSections {
        osrel: b"",
        cmdline: b"",
        uname: b"",
        initrd: b"",
        linux: &inputs.linux,
    };
    let uki = build_uki(&tight, &kernel_only).unwrap();
    assert_eq!(section_bytes(&uki, ".linux").unwrap(), inputs.linux);
    let with_initrd = UkiSections {
        initrd: &inputs.initrd,
        ..kernel_only
    };
    let err = build_uki(&tight, &with_initrd).unwrap_err();
    assert!(
        matches!(
            err,
            UkiError::NoHeaderRoom {
                count: 2,
                needed: 0x228,
                ..
            }
        ),
        "{err}"
    );

    let mut busy = fake_pe(&FakePe::trixie_like());
    busy[0x1d8 + 3 * 40] = 1;
    let err = build_uki(&busy, &inputs.sections()).unwrap_err();
    assert!(
        matches!(
            err,
            UkiError::HeaderSlackInUse {
                start: 0x1d8,
                end: 0x2a0
            }
        ),
        "{err}"
    );
}

#[test]
fn linux_section_is_sized_to_the_kernels_size_of_image() {
    // A PE32+ "kernel" that needs 16 MiB once loaded.
    let kernel = fake_pe(&FakePe {
        size_of_image: Some(16 << 20),
        ..FakePe::trixie_like()
    });
    let stub = stub_file(HOST_STUB);
    let inputs = Inputs {
        linux: kernel.clone(),
        ..Inputs::small()
    };
    let uki = build_uki(&stub, &inputs.sections()).unwrap();
    let linux = read_sections(&uki).unwrap().pop().unwrap();
    assert_eq!(linux.name, ".linux");
    assert_eq!(linux.virtual_size, 16 << 20);
    // The raw data is the kernel as given (its length is file-aligned here).
    assert_eq!(section_bytes(&uki, ".linux").unwrap(), kernel);
    let size_of_image = le32(&uki, hdr(&uki).optional + 56);
    assert_eq!(
        size_of_image,
        (linux.virtual_address + (16 << 20)).next_multiple_of(0x200)
    );
}

#[test]
fn reader_refuses_damaged_files_without_panicking() {
    let stub = stub_file(HOST_STUB);
    let uki = build_uki(&stub, &Inputs::small().sections()).unwrap();
    let table_end = 0x188 + 13 * 40;
    for len in 0..table_end {
        assert!(read_sections(&uki[..len]).is_err(), "prefix of {len} bytes");
    }
    // Cut inside .linux: the section points past the end.
    let cut = &uki[..uki.len() - 0x1000];
    assert!(matches!(
        read_sections(cut),
        Err(UkiError::Section(crate::pe::SectionOutOfRange { ref name, .. })) if name == ".linux"
    ));
    let mut no_pe = uki.clone();
    no_pe[0x80] = b'X';
    assert!(matches!(
        read_sections(&no_pe),
        Err(UkiError::Pe(crate::pe::PeError::NotPe { .. }))
    ));
    // A repeated name is refused by section_bytes.
    let mut twice = uki.clone();
    let sections = read_sections(&uki).unwrap();
    let cmdline_header = 0x188 + 40 * (sections.len() - 4);
    put(&mut twice, cmdline_header, b".osrel\0\0");
    assert!(matches!(
        section_bytes(&twice, ".osrel"),
        Err(UkiError::SectionRepeated { count: 2, .. })
    ));
}
