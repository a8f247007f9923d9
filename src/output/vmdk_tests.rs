//! The stream-optimised VMDK, judged twice: by our own reader below (which
//! walks the file both as a stream and through its grain directory), then
//! by the reference, `qemu-img check/compare/info`. A missing `qemu-img`
//! fails the test with an install hint; nothing is skipped.

use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::testutil::{noise, run_ok, tool};
use crate::util::hash::sha256;

pub(crate) const GRAIN: usize = GRAIN_BYTES;
const GT_SPAN: usize = GTES_PER_GT as usize;

/// 1025 grains and 3 sectors: grain table 0 holds data, zero and partly
/// zero grains, table 1 (grains 512..1024) only zeros, table 2 data and a
/// partial last grain (3 sectors of data, the rest of the grain missing).
pub(crate) fn raw_bytes() -> Vec<u8> {
    let len = 2 * GT_SPAN * GRAIN + GRAIN + 3 * 512;
    let mut raw = vec![0u8; len];
    let mut put = |at: usize, data: &[u8]| raw[at..at + data.len()].copy_from_slice(data);
    put(0, &noise(GRAIN, 1)); // grain 0: incompressible
    let text = b"nodeimg grain ".repeat(GRAIN / 14);
    put(2 * GRAIN, &text); // grain 2: compressible; grain 1 stays zero
    put(3 * GRAIN, &noise(GRAIN / 2, 3)); // grain 3: half data, half zeros
    put(5 * GRAIN - 1, &[0xa5]); // grain 4: one byte, at its end
    put(511 * GRAIN, &noise(512, 4)); // last grain of table 0
    put(2 * GT_SPAN * GRAIN, &noise(GRAIN, 5)); // grain 1024
    put(len - 3 * 512, &noise(3 * 512, 6)); // grain 1025: partial
    raw
}

/// The raw disk as a sparse file: its zero grains are holes.
pub(crate) fn raw_file(dir: &Path, raw: &[u8]) -> PathBuf {
    use std::io::{Seek, SeekFrom, Write};
    let p = dir.join("disk.raw");
    let mut f = fs::File::create(&p).unwrap();
    for (i, grain) in raw.chunks(GRAIN).enumerate() {
        if grain.iter().any(|&b| b != 0) {
            f.seek(SeekFrom::Start((i * GRAIN) as u64)).unwrap();
            f.write_all(grain).unwrap();
        }
    }
    f.set_len(raw.len() as u64).unwrap();
    p
}

pub(crate) fn write_vec(raw: &[u8], workers: usize) -> (Vec<u8>, u32) {
    let mut out = Cursor::new(Vec::new());
    let cid = write(&mut &raw[..], raw.len() as u64, &mut out, workers).unwrap();
    (out.into_inner(), cid)
}

/// The CID as its definition states it, computed here on its own: SHA-256
/// over the capacity and the CRC-32 of each zero-padded grain.
pub(crate) fn expected_cid(raw: &[u8]) -> u32 {
    let capacity = (raw.len() as u64).div_ceil(512);
    let mut padded = raw.to_vec();
    padded.resize(capacity.div_ceil(GRAIN_SECTORS) as usize * GRAIN, 0);
    let mut msg = capacity.to_le_bytes().to_vec();
    for g in padded.chunks(GRAIN) {
        let mut crc = flate2::Crc::new();
        crc.update(g);
        msg.extend_from_slice(&crc.sum().to_le_bytes());
    }
    let d = sha256(&msg);
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// What our reader found in a stream-optimised VMDK.
pub(crate) struct ReadBack {
    header: SparseHeader,
    descriptor: String,
    /// The virtual disk: capacity sectors.
    disk: Vec<u8>,
    /// Grain directory entries.
    gd: Vec<u32>,
    /// Grains the stream holds, in file order.
    stream_grains: Vec<u64>,
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

pub(crate) fn sector(v: &[u8], n: u64) -> &[u8; 512] {
    let at = n as usize * 512;
    v[at..at + 512].try_into().unwrap()
}

/// Reads `v` as VMware's spec describes it, checking every structure.
pub(crate) fn read_back(v: &[u8]) -> ReadBack {
    assert_eq!(v.len() % 512, 0, "whole sectors");
    let sectors = (v.len() / 512) as u64;
    let header = SparseHeader::parse(sector(v, 0)).expect("header");
    assert_eq!(header, SparseHeader::stream(header.capacity, GD_AT_END));
    assert_eq!(header.version, 3);
    assert_eq!(header.flags, 0x0003_0001);
    assert_eq!(header.compress_algorithm, 1);
    assert!(v[79..512].iter().all(|&b| b == 0), "header padding");

    // The last three sectors: footer marker, footer, end-of-stream marker.
    let fm = sector(v, sectors - 3);
    assert_eq!((le64(fm, 0), le32(fm, 8), le32(fm, 12)), (1, 0, 3));
    let footer = SparseHeader::parse(sector(v, sectors - 2)).expect("footer");
    assert_eq!(
        footer,
        SparseHeader::stream(header.capacity, footer.gd_offset)
    );
    assert!(sector(v, sectors - 1).iter().all(|&b| b == 0), "EOS");

    let desc = &v[512..(1 + DESCRIPTOR_SECTORS as usize) * 512];
    let text_len = desc.iter().position(|&b| b == 0).unwrap();
    assert!(desc[text_len..].iter().all(|&b| b == 0), "NUL padding");
    let descriptor = String::from_utf8(desc[..text_len].to_vec()).unwrap();
    assert!(
        v[(1 + DESCRIPTOR_SECTORS as usize) * 512..OVERHEAD_SECTORS as usize * 512]
            .iter()
            .all(|&b| b == 0),
        "gap before the first grain"
    );

    // The grain directory, behind its marker.
    let grains = header.capacity.div_ceil(GRAIN_SECTORS);
    let tables = grains.div_ceil(GTES_PER_GT) as usize;
    let gd_sectors = (tables as u64 * 4).div_ceil(512);
    let gdm = sector(v, footer.gd_offset - 1);
    assert_eq!(
        (le64(gdm, 0), le32(gdm, 8), le32(gdm, 12)),
        (gd_sectors, 0, 2)
    );
    let gd_at = footer.gd_offset as usize * 512;
    let gd: Vec<u32> = (0..tables).map(|t| le32(v, gd_at + 4 * t)).collect();

    // Through the directory: every grain a table points at.
    let mut disk = vec![0u8; header.capacity as usize * 512 + GRAIN];
    for (t, &gt_sector) in gd.iter().enumerate() {
        if gt_sector == 0 {
            continue;
        }
        let gtm = sector(v, u64::from(gt_sector) - 1);
        assert_eq!((le64(gtm, 0), le32(gtm, 8), le32(gtm, 12)), (4, 0, 1));
        for e in 0..GT_SPAN {
            let grain_sector = le32(v, gt_sector as usize * 512 + 4 * e);
            if grain_sector == 0 {
                continue;
            }
            let index = (t * GT_SPAN + e) as u64;
            let at = grain_sector as usize * 512;
            assert_eq!(le64(v, at), index * GRAIN_SECTORS, "grain LBA");
            let size = le32(v, at + 8) as usize;
            assert!(size > 0 && size <= 2 * GRAIN);
            let mut grain = Vec::new();
            flate2::read::ZlibDecoder::new(&v[at + 12..at + 12 + size])
                .read_to_end(&mut grain)
                .unwrap();
            assert_eq!(grain.len(), GRAIN, "a whole grain, the last one too");
            let start = index as usize * GRAIN;
            disk[start..start + GRAIN].copy_from_slice(&grain);
        }
    }
    disk.truncate(header.capacity as usize * 512);

    // As a stream: grain markers in disk order and metadata markers, each
    // on a sector, from the overhead to the end-of-stream marker.
    let mut stream_grains = Vec::new();
    let mut at = OVERHEAD_SECTORS;
    loop {
        let m = sector(v, at);
        let (val, size, kind) = (le64(m, 0), le32(m, 8), le32(m, 12));
        if size > 0 {
            assert!(stream_grains
                .last()
                .is_none_or(|&l| l < val / GRAIN_SECTORS));
            stream_grains.push(val / GRAIN_SECTORS);
            at += (12 + u64::from(size)).div_ceil(512);
            continue;
        }
        match kind {
            0 => break,
            1 | 2 => at += 1 + val,
            3 => at += 2,
            other => panic!("marker type {other} at sector {at}"),
        }
    }
    assert_eq!(at, sectors - 1, "the stream ends at the last sector");

    ReadBack {
        header,
        descriptor,
        disk,
        gd,
        stream_grains,
    }
}

pub(crate) fn qemu_img(args: &[&str]) -> String {
    let out = run_ok(Command::new(tool("qemu-img", "qemu-utils")).args(args));
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn our_reader_finds_every_grain_and_only_data_grains() {
    let raw = raw_bytes();
    let (v, cid) = write_vec(&raw, 2);
    let r = read_back(&v);
    assert_eq!(r.header.capacity, raw.len() as u64 / 512);
    assert_eq!(r.disk, raw);
    // Grains 1 and 5..511 are zeros: holes. Table 1 is all zeros: not written.
    assert_eq!(r.stream_grains, [0, 2, 3, 4, 511, 1024, 1025]);
    assert_eq!(r.gd.len(), 3);
    assert!(r.gd[0] != 0 && r.gd[1] == 0 && r.gd[2] != 0, "{:?}", r.gd);
    assert!(r
        .descriptor
        .contains(&format!("\nCID={cid:08x}\nparentCID=ffffffff\n")));
    assert!(r.descriptor.contains("\ncreateType=\"streamOptimized\"\n"));
    assert!(r
        .descriptor
        .contains(&format!("\nRW {} SPARSE \"disk.vmdk\"\n", raw.len() / 512)));
}

#[test]
fn cid_follows_the_content() {
    let raw = raw_bytes();
    let (_, cid) = write_vec(&raw, 1);
    assert_eq!(cid, expected_cid(&raw));
    let mut flipped = raw.clone();
    flipped[3 * GRAIN + 17] ^= 1;
    assert_ne!(write_vec(&flipped, 1).1, cid);
    // Trailing zeros count: the capacity is part of the content.
    let mut longer = raw.clone();
    longer.resize(raw.len() + 512, 0);
    assert_ne!(write_vec(&longer, 1).1, cid);
    // The CRC is the standard CRC-32 (check value of "123456789").
    assert_eq!(grain_crc(b"123456789"), 0xcbf4_3926);
}

#[test]
fn a_size_short_of_a_sector_is_padded_to_one() {
    let raw = noise(1000, 7);
    let (v, _) = write_vec(&raw, 2);
    let r = read_back(&v);
    assert_eq!(r.header.capacity, 2);
    assert_eq!(&r.disk[..1000], &raw[..]);
    assert!(r.disk[1000..].iter().all(|&b| b == 0));
    assert_eq!(r.stream_grains, [0]);
}

#[test]
fn a_disk_of_zeros_has_no_grain_and_no_table() {
    let raw = vec![0u8; 3 * GRAIN];
    let (v, _) = write_vec(&raw, 2);
    let r = read_back(&v);
    assert!(r.stream_grains.is_empty());
    assert_eq!(r.gd, [0]);
    assert_eq!(r.disk, raw);
    // Header, descriptor, gap; GD marker and GD; footer marker, footer, EOS.
    assert_eq!(v.len(), (OVERHEAD_SECTORS as usize + 5) * 512);
}

#[test]
fn a_short_or_empty_source_is_an_error() {
    let raw = noise(3 * GRAIN, 8);
    let mut out = Cursor::new(Vec::new());
    let err = write(&mut &raw[..], 4 * GRAIN as u64, &mut out, 2).unwrap_err();
    assert!(
        matches!(err, VmdkError::Short { read, expected }
            if read == 3 * GRAIN as u64 && expected == 4 * GRAIN as u64),
        "{err:?}"
    );
    let err = write(&mut &raw[..0], 0, &mut out, 2).unwrap_err();
    assert!(matches!(err, VmdkError::Empty), "{err:?}");
}

#[test]
fn header_round_trips_and_checks_its_magic() {
    let h = SparseHeader::stream(942_080, GD_AT_END);
    let b = h.to_bytes();
    assert_eq!(&b[0..4], b"KDMV");
    assert_eq!(&b[73..77], b"\n \r\n");
    assert_eq!(SparseHeader::parse(&b), Some(h));
    let mut bad = b;
    bad[0] = b'X';
    assert_eq!(SparseHeader::parse(&bad), None);
    let mut crlf = b;
    crlf[76] = b'\r';
    assert_eq!(SparseHeader::parse(&crlf), None);
}

#[test]
fn descriptor_fits_its_sectors_and_has_one_cid_line() {
    let d = descriptor(u32::MAX, u64::MAX);
    assert!(d.len() < (DESCRIPTOR_SECTORS * 512) as usize);
    // qemu finds the CID with strstr("CID"): it must come before parentCID.
    let d = descriptor(0x0012_abcd, 942_080);
    assert!(d.find("CID=0012abcd\n").unwrap() < d.find("parentCID").unwrap());
    assert!(d.contains("ddb.geometry.cylinders = \"934\"\n"), "{d}");
}
