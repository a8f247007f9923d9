use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::boot::initramfs::{decompress, read_cpio};
use crate::testutil::{noise, run_ok, tool};
use crate::util::hash::sha256_hex;

const CMDLINE: &str = "console=ttyS0,115200 panic=10 \
     nodeimg.roothash=4f1c6bd9a1e2e3b2c1d0f9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8 nodeimg.data_blocks=3";

struct Inputs {
    dir: tempfile::TempDir,
    kernel: Vec<u8>,
    initramfs: Vec<u8>,
    root: Vec<u8>,
    verity: Vec<u8>,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    // a real zstd initramfs; its length is whatever zstd makes (the
    // alignment test below pads it to every remainder)
    let initramfs = initramfs::build(b"\x7fELF agent", &[], "", 1_700_000_000).unwrap();
    let root = noise(3 * 4096, 1);
    let verity = noise(4096 + 7, 2);
    std::fs::write(dir.path().join("root.img"), &root).unwrap();
    std::fs::write(dir.path().join("root.verity"), &verity).unwrap();
    Inputs {
        dir,
        kernel: noise(5000, 3),
        initramfs,
        root,
        verity,
    }
}

fn write(i: &Inputs, out: &Path) -> PxeBundle {
    let root = i.dir.path().join("root.img");
    let verity = i.dir.path().join("root.verity");
    write_pxe_bundle(
        out,
        &PxeParts {
            kernel: &i.kernel,
            initramfs: &i.initramfs,
            root: &root,
            verity: &verity,
            cmdline: CMDLINE,
            source_date_epoch: 1_700_000_000,
        },
    )
    .unwrap()
}

#[test]
fn script_boots_relative_paths_with_the_root_as_files() {
    let s = script(&pxe_cmdline(CMDLINE).unwrap()).unwrap();
    assert_eq!(
        s,
        "#!ipxe\n\
         kernel vmlinuz initrd=initrd.img console=ttyS0,115200 panic=10 \
         nodeimg.roothash=4f1c6bd9a1e2e3b2c1d0f9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8 \
         nodeimg.data_blocks=3 nodeimg.root=file:/nodeimg/root.img \
         nodeimg.hash=file:/nodeimg/root.verity\n\
         initrd initrd.img\n\
         boot\n"
    );
    assert!(matches!(
        script("a=${net0/ip}"),
        Err(PxeError::ScriptUnsafe { found: '$' })
    ));
    assert!(matches!(
        pxe_cmdline("ro nodeimg.root=/dev/vda"),
        Err(PxeError::DeviceGiven {
            key: "nodeimg.root"
        })
    ));
    // a line the agent would refuse is refused here
    assert!(matches!(
        pxe_cmdline("ro nodeimg.roothash=ab"),
        Err(PxeError::Cmdline(_))
    ));
}

#[test]
fn bundle_files_match_their_records_and_the_initrd_carries_the_root() {
    let i = inputs();
    let out = i.dir.path().join("pxe");
    let b = write(&i, &out);
    let names: Vec<_> = b.files.iter().map(|f| (f.kind, f.name)).collect();
    assert_eq!(
        names,
        [
            ("pxe-kernel", "vmlinuz"),
            ("pxe-initrd", "initrd.img"),
            ("pxe-script", "boot.ipxe")
        ]
    );
    for f in &b.files {
        let data = std::fs::read(out.join(f.name)).unwrap();
        assert_eq!(f.sha256, sha256_hex(&data), "{}", f.name);
        assert_eq!(f.size, data.len() as u64, "{}", f.name);
    }
    // nothing but the three files: no temporary names left behind
    let mut listed: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, ["boot.ipxe", "initrd.img", "vmlinuz"]);
    assert_eq!(std::fs::read(out.join("vmlinuz")).unwrap(), i.kernel);

    let initrd = std::fs::read(out.join("initrd.img")).unwrap();
    assert!(initrd.starts_with(&i.initramfs));
    let at = i.initramfs.len().div_ceil(4) * 4;
    assert!(initrd[i.initramfs.len()..at].iter().all(|&b| b == 0));
    // the first archive is still the image's initramfs
    let first = read_cpio(&decompress(&i.initramfs).unwrap()).unwrap();
    assert!(first.iter().any(|e| e.name == "init"));
    // our reader: the second, plain archive
    let second = read_cpio(&initrd[at..]).unwrap();
    let got: Vec<_> = second
        .iter()
        .map(|e| (e.name.as_str(), e.mode, e.mtime))
        .collect();
    assert_eq!(
        got,
        [
            ("nodeimg", 0o040_755, 1_700_000_000),
            ("nodeimg/root.img", 0o100_644, 1_700_000_000),
            ("nodeimg/root.verity", 0o100_644, 1_700_000_000),
        ]
    );
    assert_eq!(second[1].data, i.root);
    assert_eq!(second[2].data, i.verity);
    assert_eq!(b.files[1].name, "initrd.img");
    assert_eq!(b.files[1].kind, "pxe-initrd");
}

#[test]
fn gnu_cpio_reads_the_root_archive() {
    let i = inputs();
    let out = i.dir.path().join("pxe");
    write(&i, &out);
    let initrd = std::fs::read(out.join("initrd.img")).unwrap();
    let tail = &initrd[i.initramfs.len().div_ceil(4) * 4..];
    let archive = i.dir.path().join("tail.cpio");
    std::fs::write(&archive, tail).unwrap();
    let x = i.dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run_ok(
        Command::new(tool("cpio", "cpio"))
            .current_dir(&x)
            .args(["-i", "-d", "--quiet", "-F"])
            .arg(&archive),
    );
    assert_eq!(std::fs::read(x.join("nodeimg/root.img")).unwrap(), i.root);
    assert_eq!(
        std::fs::read(x.join("nodeimg/root.verity")).unwrap(),
        i.verity
    );
}

#[test]
fn same_inputs_same_bytes_and_any_alignment_pads_to_four() {
    for extra in 0..4 {
        let mut i = inputs();
        i.initramfs.extend(std::iter::repeat_n(0u8, extra));
        let a = write(&i, &i.dir.path().join("a"));
        let b = write(&i, &i.dir.path().join("b"));
        assert_eq!(a.files, b.files, "rewrite differs");
        let initrd = std::fs::read(i.dir.path().join("a/initrd.img")).unwrap();
        let at = i.initramfs.len().div_ceil(4) * 4;
        assert_eq!(&initrd[at..at + 6], b"070701", "extra {extra}");
    }
}

#[test]
fn write_initrd_is_a_pure_function_of_its_inputs() {
    let root: Arc<[u8]> = Arc::from(&b"root"[..]);
    let verity: Arc<[u8]> = Arc::from(&b"tree"[..]);
    let a = write_initrd(b"abcde", root.clone(), verity.clone(), 7, Vec::new()).unwrap();
    let b = write_initrd(b"abcde", root, verity, 7, Vec::new()).unwrap();
    assert_eq!(a, b);
    assert_eq!(&a[..8], b"abcde\0\0\0");
}

#[test]
fn missing_root_names_the_file() {
    let i = inputs();
    let err = write_pxe_bundle(
        &i.dir.path().join("pxe"),
        &PxeParts {
            kernel: &i.kernel,
            initramfs: &i.initramfs,
            root: Path::new("/nonexistent/root.img"),
            verity: Path::new("/nonexistent/root.verity"),
            cmdline: CMDLINE,
            source_date_epoch: 0,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/root.img"), "{err}");
}
