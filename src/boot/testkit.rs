//! Hand-built boot inputs for hermetic tests outside `boot`: a module ELF,
//! a bzImage shaped like Debian's (MZ + PE32+ headers + setup header + a
//! zstd payload) and a plain kernel `.deb` holding them.

use std::io::Write;

/// ELF64 little-endian ET_REL for x86-64 with a `.modinfo` section.
pub(crate) fn minimal_module_elf(modinfo: &[u8]) -> Vec<u8> {
    let shstrtab = b"\0.modinfo\0.shstrtab\0";
    let modinfo_off = 64usize;
    let shstr_off = modinfo_off + modinfo.len();
    let sh_off = (shstr_off + shstrtab.len()).next_multiple_of(8);
    let mut b = vec![0u8; sh_off + 3 * 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // ELFCLASS64
    b[5] = 1; // little-endian
    b[6] = 1; // EV_CURRENT
    b[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    b[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[40..48].copy_from_slice(&(sh_off as u64).to_le_bytes()); // e_shoff
    b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    b[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    b[60..62].copy_from_slice(&3u16.to_le_bytes()); // e_shnum
    b[62..64].copy_from_slice(&2u16.to_le_bytes()); // e_shstrndx
    b[modinfo_off..shstr_off].copy_from_slice(modinfo);
    b[shstr_off..shstr_off + shstrtab.len()].copy_from_slice(shstrtab);
    let mut section = |i: usize, name: u32, kind: u32, off: usize, size: usize| {
        let s = sh_off + i * 64;
        b[s..s + 4].copy_from_slice(&name.to_le_bytes());
        b[s + 4..s + 8].copy_from_slice(&kind.to_le_bytes());
        b[s + 24..s + 32].copy_from_slice(&(off as u64).to_le_bytes());
        b[s + 32..s + 40].copy_from_slice(&(size as u64).to_le_bytes());
        b[s + 48..s + 56].copy_from_slice(&1u64.to_le_bytes()); // sh_addralign
    };
    section(1, 1, 1, modinfo_off, modinfo.len()); // .modinfo, SHT_PROGBITS
    section(2, 10, 3, shstr_off, shstrtab.len()); // .shstrtab, SHT_STRTAB
    b
}

/// A `.ko.xz` whose `.modinfo` holds `fields` (`key=value`).
pub(crate) fn module_xz(fields: &[&str]) -> Vec<u8> {
    let mut modinfo = Vec::new();
    for f in fields {
        modinfo.extend_from_slice(f.as_bytes());
        modinfo.push(0);
    }
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
    enc.write_all(&minimal_module_elf(&modinfo))
        .expect("xz write");
    enc.finish().expect("xz finish")
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// An x86-64 bzImage of kernel `release` that [`super::inspect`] reads:
/// three setup sectors, one PE section, the version string at 0x300 and
/// a zstd payload of `vmlinux` with its size trailer. Offsets are the
/// boot protocol's (Documentation/arch/x86/boot.rst).
pub(crate) fn bzimage(release: &str, vmlinux: &[u8]) -> Vec<u8> {
    bzimage_for(crate::pe::MACHINE_X86_64, release, vmlinux)
}

/// [`bzimage`] with its PE header naming `machine` (the inspector's
/// refusal of other machines is tested with it).
pub(crate) fn bzimage_for(machine: u16, release: &str, vmlinux: &[u8]) -> Vec<u8> {
    let setup_sects = 3u8;
    let pm_start = (setup_sects as usize + 1) * 512;
    let mut payload = zstd::bulk::compress(vmlinux, 3).expect("zstd");
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
    b[0x1F1] = setup_sects; // setup_sects
    put16(&mut b, 0x1FE, 0xAA55); // boot_flag
    b[0x202..0x206].copy_from_slice(b"HdrS"); // header
    put16(&mut b, 0x206, 0x020f); // version: boot protocol 2.15
    put16(&mut b, 0x20E, 0x100); // kernel_version: 0x300 - 0x200
    let v = format!("{release} (test@example) #1 SMP PREEMPT_DYNAMIC Debian\0");
    b[0x300..0x300 + v.len()].copy_from_slice(v.as_bytes());
    put32(&mut b, 0x248, 0x20); // payload_offset
    put32(&mut b, 0x24C, payload.len() as u32); // payload_length
    b[pm_start + 0x20..].copy_from_slice(&payload);
    b
}

/// A plain `.deb` (members not compressed, as the build caches them) of
/// `package` `version` holding `files` (`(path, bytes)`, mode 0644).
pub(crate) fn plain_deb(package: &str, version: &str, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let control =
        format!("Package: {package}\nVersion: {version}\nArchitecture: amd64\nDescription: test\n");
    let control_tar = tar_of(&[("./control".to_string(), control.into_bytes())]);
    let data_tar = tar_of(files);
    let mut ar = ar::Builder::new(Vec::new());
    for (name, data) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar", &control_tar),
        ("data.tar", &data_tar),
    ] {
        let header = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
        ar.append(&header, data).expect("ar append");
    }
    ar.into_inner().expect("ar finish")
}

fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).expect("tar path");
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        builder.append(&h, &data[..]).expect("tar append");
    }
    builder.into_inner().expect("tar finish")
}
