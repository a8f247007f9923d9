//! Each format is judged by an independent reader: our footer parser, and
//! then `qemu-img info/check/compare` and GNU `tar`. A missing tool fails
//! the test with an install hint; nothing is skipped. The VMDK writer's own
//! tests are in `vmdk_tests.rs`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::util::hash::sha256;

/// 3 MiB + 512 bytes: not a whole MiB, so the VHD must pad.
const RAW_LEN: usize = 3 * (1 << 20) + 512;
const SDE: u64 = 1_700_000_000;

fn raw_fixture(dir: &Path) -> PathBuf {
    let data: Vec<u8> = (0..RAW_LEN)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8 | 1)
        .collect();
    let p = dir.join("disk.img");
    fs::write(&p, data).unwrap();
    p
}

/// Runs a reference tool; a missing tool fails with how to install it.
fn tool(name: &str, args: &[&str]) -> std::process::Output {
    match Command::new(name).args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pkg = if name == "qemu-img" {
                "qemu-utils"
            } else {
                name
            };
            panic!("`{name}` is required by this test: apt-get install {pkg}")
        }
        Err(e) => panic!("cannot run {name}: {e}"),
    }
}

/// Runs a tool and returns stdout; fails the test on a non-zero exit.
fn tool_ok(name: &str, args: &[&str]) -> String {
    let o = tool(name, args);
    assert!(
        o.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qemu-img info`; `format` None lets qemu probe the format.
fn info(path: &Path, format: Option<&str>) -> serde_json::Value {
    let mut args = vec!["info", "--output=json"];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    args.push(s(path));
    serde_json::from_str(&tool_ok("qemu-img", &args)).unwrap()
}

fn opts() -> ConvertOptions {
    ConvertOptions {
        gce_round_to_gib: false,
        ..ConvertOptions::new(SDE)
    }
}

fn check_output(out: &Output) {
    let bytes = fs::read(&out.path).unwrap();
    assert_eq!(out.size, bytes.len() as u64);
    assert_eq!(out.sha256, sha256(&bytes));
}

#[test]
fn chs_follows_the_spec_algorithm() {
    // Worked by hand through the spec's appendix.
    let chs = |c, h, s| Chs {
        cylinders: c,
        heads: h,
        sectors_per_track: s,
    };
    assert_eq!(Chs::for_sectors(8192), chs(120, 4, 17)); // 4 MiB
    assert_eq!(Chs::for_sectors(2_097_152), chs(2080, 16, 63)); // 1 GiB
    assert_eq!(Chs::for_sectors(83_886_080), chs(20560, 16, 255)); // 40 GiB
    assert_eq!(Chs::for_sectors(1 << 33), chs(65535, 16, 255)); // 4 TiB: capped
}

#[test]
fn chs_matches_qemu_img_footers() {
    // qemu-img (without force_size) grows the size until its geometry,
    // computed by the same appendix, covers it, and stores C*H*S*512 as the
    // size: so our geometry of that size must equal qemu's. Files are sparse;
    // 130G is past the CHS cap.
    use std::io::{Seek, SeekFrom};
    let d = tempfile::tempdir().unwrap();
    for size in ["4M", "1G", "40G", "130G"] {
        let p = d.path().join(format!("{size}.vhd"));
        tool_ok(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "vpc",
                "-o",
                "subformat=fixed",
                s(&p),
                size,
            ],
        );
        let mut f = File::open(&p).unwrap();
        f.seek(SeekFrom::End(-512)).unwrap();
        let mut b = [0u8; 512];
        f.read_exact(&mut b).unwrap();
        let footer = VhdFooter::parse(&b).expect("qemu's footer parses");
        assert_eq!(footer.creator_app, *b"qemu");
        assert_eq!(
            footer.geometry,
            Chs::for_sectors(footer.current_size / SECTOR),
            "{size}"
        );
    }
}

#[test]
fn vhd_is_fixed_whole_mib_and_identical_to_padded_raw() {
    let d = tempfile::tempdir().unwrap();
    let raw = raw_fixture(d.path());
    let vhd = d.path().join("disk.vhd");
    let out = convert(&raw, Format::Vhd, &vhd, &opts()).unwrap();
    check_output(&out);
    let size = 4 * MIB;
    assert_eq!(out.size, size + 512);

    // qemu probes VHDs only by a cookie at offset 0, so a fixed VHD (footer
    // at the end) probes as raw, whoever wrote it: name the format. qemu then
    // reads and checks our footer, and takes the size from it.
    let i = info(&vhd, Some("vpc"));
    assert_eq!(i["format"], "vpc");
    assert_eq!(i["virtual-size"], size);

    let mut padded = fs::read(&raw).unwrap();
    padded.resize(size as usize, 0);
    let padded_path = d.path().join("padded.raw");
    fs::write(&padded_path, &padded).unwrap();
    tool_ok(
        "qemu-img",
        &[
            "compare",
            "-q",
            "-f",
            "raw",
            "-F",
            "vpc",
            s(&padded_path),
            s(&vhd),
        ],
    );

    // The footer, read by hand: every field and the checksum recomputed here.
    let bytes = fs::read(&vhd).unwrap();
    assert_eq!(&bytes[..size as usize], &padded[..]);
    let f: &[u8] = &bytes[size as usize..];
    let be32 = |at: usize| u32::from_be_bytes(f[at..at + 4].try_into().unwrap());
    let be64 = |at: usize| u64::from_be_bytes(f[at..at + 8].try_into().unwrap());
    assert_eq!(&f[0..8], b"conectix");
    assert_eq!(be32(8), 2);
    assert_eq!(be32(12), 0x0001_0000);
    assert_eq!(be64(16), u64::MAX);
    assert_eq!(u64::from(be32(24)), SDE - 946_684_800);
    assert_eq!(&f[28..32], b"win ");
    assert_eq!(&f[36..40], b"Wi2k");
    assert_eq!((be64(40), be64(48)), (size, size));
    assert_eq!(&f[56..60], &[0, 120, 4, 17]);
    assert_eq!(be32(60), 2);
    let sum: u32 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .map(|(_, b)| u32::from(*b))
        .sum();
    assert_eq!(be32(64), !sum);
    assert_eq!(f[68..84], uuid_from_digest(&sha256(&padded)));
    assert_eq!(f[84], 0);
    assert!(f[85..].iter().all(|b| *b == 0));
    // And our own reader agrees.
    let parsed = VhdFooter::parse(f.try_into().unwrap()).unwrap();
    assert_eq!(parsed.current_size, size);
    let uuid = parsed.unique_id;
    assert_eq!((uuid[6] >> 4, uuid[8] >> 6), (8, 0b10));
}

#[test]
fn vhd_footer_rejects_bad_checksum_and_cookie() {
    let good = VhdFooter::fixed(4 * MIB, 7, [9; 16]).to_bytes();
    assert_eq!(VhdFooter::parse(&good).unwrap().timestamp, 7);
    let mut flipped = good;
    flipped[100] ^= 1;
    assert!(VhdFooter::parse(&flipped).is_none());
    let mut cookie = good;
    cookie[0] = b'C';
    assert!(VhdFooter::parse(&cookie).is_none());
}

#[test]
fn vhd_timestamp_counts_from_2000() {
    assert_eq!(vhd_timestamp(946_684_800 + 5).unwrap(), 5);
    assert_eq!(vhd_timestamp(0).unwrap(), 0);
    let err = vhd_timestamp(946_684_800 + (1 << 32)).unwrap_err();
    assert!(matches!(err, FormatError::VhdTimestamp { .. }));
}

#[test]
fn gce_archive_holds_only_disk_raw_byte_identical() {
    let d = tempfile::tempdir().unwrap();
    let raw = raw_fixture(d.path());
    let gz = d.path().join("image.tar.gz");
    let out = convert(&raw, Format::Gce, &gz, &opts()).unwrap();
    check_output(&out);

    let bytes = fs::read(&gz).unwrap();
    assert_eq!(&bytes[..4], &[0x1f, 0x8b, 8, 0], "gzip, no name flag");
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "gzip mtime 0");
    let mut header = [0u8; 512];
    flate2::read::GzDecoder::new(&bytes[..])
        .read_exact(&mut header)
        .unwrap();
    assert_eq!(&header[257..265], b"ustar  \0", "old GNU magic");

    let listing = tool_ok("tar", &["--numeric-owner", "-tzvf", s(&gz)]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 1, "{listing}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(fields[0], "-rw-r--r--");
    assert_eq!(fields[1], "0/0");
    assert_eq!(fields[2], RAW_LEN.to_string());
    assert_eq!(fields[5], "disk.raw");

    let x = d.path().join("x");
    fs::create_dir(&x).unwrap();
    tool_ok("tar", &["-xzf", s(&gz), "-C", s(&x)]);
    assert_eq!(
        fs::read(x.join("disk.raw")).unwrap(),
        fs::read(&raw).unwrap()
    );
    let mtime = fs::metadata(x.join("disk.raw"))
        .unwrap()
        .modified()
        .unwrap();
    let secs = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(secs, SDE);
}

#[test]
fn gce_pads_disk_raw_to_whole_gib_by_default() {
    let d = tempfile::tempdir().unwrap();
    let raw = raw_fixture(d.path());
    let gz = d.path().join("image.tar.gz");
    let out = convert(&raw, Format::Gce, &gz, &ConvertOptions::new(SDE)).unwrap();
    assert!(out.size < 8 * MIB, "zeros compress: {}", out.size);
    let listing = tool_ok("tar", &["-tzvf", s(&gz)]);
    let fields: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(fields[2], GIB.to_string());
    assert_eq!(fields[5], "disk.raw");
}

#[test]
fn qcow2_passes_check_and_equals_raw() {
    let d = tempfile::tempdir().unwrap();
    let raw = raw_fixture(d.path());
    let q = d.path().join("disk.qcow2");
    let out = convert(&raw, Format::DiskQcow2, &q, &opts()).unwrap();
    check_output(&out);
    assert_eq!(info(&q, None)["format"], "qcow2");
    tool_ok("qemu-img", &["check", "-q", "-f", "qcow2", s(&q)]);
    tool_ok(
        "qemu-img",
        &["compare", "-q", "-f", "raw", "-F", "qcow2", s(&raw), s(&q)],
    );
}

#[test]
fn two_conversions_are_byte_identical() {
    // Under different directories and file names: no format records either.
    let d = tempfile::tempdir().unwrap();
    let raw = raw_fixture(d.path());
    for f in Format::ALL {
        let outs: Vec<Output> = [("a", "disk"), ("b", "renamed")]
            .iter()
            .map(|(sub, name)| {
                let dir = d.path().join(sub);
                fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("{name}{}", f.extension()));
                convert(&raw, f, &path, &opts()).unwrap()
            })
            .collect();
        assert_eq!(outs[0].sha256, outs[1].sha256, "{f}");
        assert_eq!(
            fs::read(&outs[0].path).unwrap(),
            fs::read(&outs[1].path).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn missing_or_empty_raw_is_named_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let missing = d.path().join("nope.img");
    for f in Format::ALL {
        let err = convert(&missing, f, &out_dir.join("x"), &opts()).unwrap_err();
        assert!(matches!(err, FormatError::ReadRaw { ref path, .. } if *path == missing));
    }
    let empty = d.path().join("empty.img");
    fs::write(&empty, b"").unwrap();
    let err = convert(&empty, Format::Vhd, &out_dir.join("x"), &opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("raw disk {} is empty", empty.display())
    );
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0);
}

#[test]
fn qemu_img_failure_names_the_command_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    // A directory is not a disk: qemu-img refuses it.
    let not_a_disk = d.path().join("dir.img");
    fs::create_dir(&not_a_disk).unwrap();
    let err = convert(
        &not_a_disk,
        Format::DiskQcow2,
        &out_dir.join("d.qcow2"),
        &opts(),
    )
    .unwrap_err();
    match &err {
        FormatError::ToolFailed { tool, args, .. } => {
            assert_eq!(*tool, "qemu-img");
            assert!(args.starts_with("convert -f raw -O qcow2 "), "{args}");
        }
        other => panic!("expected ToolFailed, got {other:?}"),
    }
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0, "stage removed");

    let raw = raw_fixture(d.path());
    let nowhere = d.path().join("no-such-dir").join("disk.qcow2");
    let err = convert(&raw, Format::DiskQcow2, &nowhere, &opts()).unwrap_err();
    assert!(matches!(err, FormatError::Write { ref path, .. } if *path == nowhere));
}

// The VMDK through `convert`: its tests' fixtures and reader live with the
// writer (output::vmdk's tests), these judge what `convert` adds.
use crate::output::vmdk::tests as vt;

#[test]
fn qemu_img_checks_it_and_reads_the_raw_disk() {
    let d = tempfile::tempdir().unwrap();
    let raw = vt::raw_bytes();
    let raw_path = vt::raw_file(d.path(), &raw);
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let v = out_dir.join("worker.vmdk");
    let out = convert(&raw_path, Format::Vmdk, &v, &ConvertOptions::new(0)).unwrap();
    let bytes = fs::read(&v).unwrap();
    assert_eq!((out.size, out.sha256), (bytes.len() as u64, sha256(&bytes)));
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 1, "no temp left");

    let check = vt::qemu_img(&["check", "-f", "vmdk", vt::s(&v)]);
    assert!(check.contains("No errors were found"), "{check}");
    vt::qemu_img(&[
        "compare",
        "-q",
        "-f",
        "raw",
        "-F",
        "vmdk",
        vt::s(&raw_path),
        vt::s(&v),
    ]);
    // Probed, not named: the file must identify itself as a VMDK.
    let info: serde_json::Value =
        serde_json::from_str(&vt::qemu_img(&["info", "--output=json", vt::s(&v)])).unwrap();
    assert_eq!(info["format"], "vmdk");
    assert_eq!(info["virtual-size"], raw.len() as u64);
    let data = &info["format-specific"]["data"];
    assert_eq!(data["create-type"], "streamOptimized");
    assert_eq!(data["cid"], u64::from(vt::expected_cid(&raw)));
    assert_eq!(data["parent-cid"], 0xffff_ffffu64);
    assert_eq!(data["extents"][0]["compressed"], true);
    assert_eq!(data["extents"][0]["cluster-size"], vt::GRAIN as u64);
}

#[test]
fn bytes_depend_on_neither_the_file_name_nor_the_worker_count() {
    let d = tempfile::tempdir().unwrap();
    let raw = vt::raw_bytes();
    let raw_path = vt::raw_file(d.path(), &raw);
    let opts = ConvertOptions::new(0);
    let a = convert(&raw_path, Format::Vmdk, &d.path().join("disk.vmdk"), &opts).unwrap();
    let b = convert(&raw_path, Format::Vmdk, &d.path().join("b.vmdk"), &opts).unwrap();
    assert_eq!(a.sha256, b.sha256);
    let bytes = fs::read(&a.path).unwrap();
    assert_eq!(bytes, fs::read(&b.path).unwrap());
    for workers in [1, 3, 8] {
        assert!(vt::write_vec(&raw, workers).0 == bytes, "{workers} workers");
    }
}

#[test]
fn convert_names_the_raw_disk_and_leaves_nothing_on_error() {
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let empty = d.path().join("empty.raw");
    fs::write(&empty, b"").unwrap();
    let err = convert(
        &empty,
        Format::Vmdk,
        &out_dir.join("disk.vmdk"),
        &ConvertOptions::new(0),
    )
    .unwrap_err();
    assert!(matches!(err, FormatError::EmptyRaw { ref path } if *path == empty));
    // A directory opens but does not read.
    let dir = d.path().join("dir.raw");
    fs::create_dir(&dir).unwrap();
    let err = convert(
        &dir,
        Format::Vmdk,
        &out_dir.join("disk.vmdk"),
        &ConvertOptions::new(0),
    )
    .unwrap_err();
    assert!(
        matches!(err, FormatError::ReadRaw { ref path, .. } | FormatError::EmptyRaw { ref path } if *path == dir),
        "{err:?}"
    );
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0);
}
