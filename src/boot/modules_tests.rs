//! Hermetic tests: modules are minimal ELF64 relocatable objects built by
//! hand (header, `.modinfo`, `.shstrtab`), xz-compressed like trixie's.

use std::io::Write;

use super::*;
use crate::boot::testkit::minimal_module_elf;
use crate::rootfs::Entry;

const KVER: &str = "6.12.99+test-amd64";

fn xz(data: &[u8]) -> Vec<u8> {
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn add_module(tree: &mut Tree, rel: &str, fields: &[&str]) {
    let mut modinfo = Vec::new();
    for f in fields {
        modinfo.extend_from_slice(f.as_bytes());
        modinfo.push(0);
    }
    let path = format!("usr/lib/modules/{KVER}/kernel/{rel}");
    tree.insert(&path, Entry::file(xz(&minimal_module_elf(&modinfo)), 0o644));
}

/// Shaped like trixie's: dm-verity's and ext4's real `depends=`/`softdep=`.
fn kernel_tree() -> Tree {
    let mut t = Tree::new();
    add_module(
        &mut t,
        "drivers/md/dm-verity.ko.xz",
        &["depends=dm-mod,dm-bufio,reed_solomon", "name=dm_verity"],
    );
    add_module(
        &mut t,
        "drivers/md/dm-bufio.ko.xz",
        &["depends=dm-mod", "name=dm_bufio"],
    );
    add_module(
        &mut t,
        "drivers/md/dm-mod.ko.xz",
        &["alias=devname:mapper/control", "depends=", "name=dm_mod"],
    );
    add_module(
        &mut t,
        "lib/reed_solomon/reed_solomon.ko.xz",
        &["depends=", "name=reed_solomon"],
    );
    add_module(
        &mut t,
        "fs/ext4/ext4.ko.xz",
        &[
            "softdep=pre: crypto-crc32c",
            "alias=fs-ext4",
            "depends=jbd2,crc16,mbcache",
            "name=ext4",
        ],
    );
    add_module(
        &mut t,
        "fs/jbd2/jbd2.ko.xz",
        &["softdep=pre: crypto-crc32c", "depends=", "name=jbd2"],
    );
    add_module(&mut t, "fs/mbcache.ko.xz", &["depends=", "name=mbcache"]);
    add_module(&mut t, "lib/crc16.ko.xz", &["depends=", "name=crc16"]);
    add_module(
        &mut t,
        "crypto/crc32c_generic.ko.xz",
        &[
            "alias=crypto-crc32c",
            "alias=crc32c",
            "depends=",
            "name=crc32c_generic",
        ],
    );
    add_module(
        &mut t,
        "arch/x86/crypto/crc32c-intel.ko.xz",
        &["alias=crypto-crc32c", "depends=", "name=crc32c_intel"],
    );
    add_module(
        &mut t,
        "drivers/block/virtio_blk.ko.xz",
        &[
            "depends=",
            "softdep=pre: no_such_helper post: crc16",
            "name=virtio_blk",
        ],
    );
    let root = format!("usr/lib/modules/{KVER}");
    t.insert(
        &format!("{root}/modules.builtin"),
        Entry::file(
            b"kernel/drivers/virtio/virtio_pci.ko\nkernel/lib/crc32.ko\n".to_vec(),
            0o644,
        ),
    );
    t.insert(
        &format!("{root}/modules.builtin.modinfo"),
        Entry::file(b"crc32.alias=crc32_le\0crc32.license=GPL\0".to_vec(), 0o644),
    );
    t
}

fn names(mods: &[Module]) -> Vec<&str> {
    mods.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn parse_modinfo_reads_depends_softdep_alias() {
    let blob = b"license=GPL\0softdep=pre: crc32c x-y post: after\0depends=dm-mod,dm_bufio\0alias=fs-ext4\0name=ext4\0\0vermagic=6.12\0";
    let info = parse_modinfo(blob);
    assert_eq!(info.name.as_deref(), Some("ext4"));
    assert_eq!(info.depends, ["dm_mod", "dm_bufio"]);
    assert_eq!(info.softdep_pre, ["crc32c", "x-y"]);
    assert_eq!(info.softdep_post, ["after"]);
    assert_eq!(info.aliases, ["fs-ext4"]);
    assert_eq!(parse_modinfo(b"depends=\0"), ModInfo::default());
}

#[test]
fn modinfo_is_read_from_the_elf_section() {
    let elf = minimal_module_elf(b"depends=a,b\0name=m\0");
    let info = modinfo_of_elf("m.ko", &elf).unwrap();
    assert_eq!((info.name.as_deref(), info.depends.len()), (Some("m"), 2));
    let compressed = xz(&elf);
    assert_eq!(decompress_module("m.ko.xz", &compressed).unwrap(), elf);
    assert!(matches!(
        modinfo_of_elf("x.ko", b"not an elf"),
        Err(ModuleError::NotElf { .. })
    ));
}

#[test]
fn closure_orders_dependencies_first_and_reports_builtins() {
    let tree = kernel_tree();
    let wanted: Vec<String> = ["virtio-blk", "dm_verity", "ext4", "virtio_pci"]
        .map(String::from)
        .to_vec();
    let mods = closure(&tree, KVER, &wanted).unwrap();
    assert_eq!(
        names(&mods),
        [
            "dm_mod",
            "dm_bufio",
            "reed_solomon",
            "dm_verity", // dm_verity (sorted first)
            "crc32c_generic",
            "crc32c_intel",
            "jbd2",
            "crc16",
            "mbcache",
            "ext4",
            "virtio_blk", // its post: crc16 is already there; pre: no_such_helper skipped
            "virtio_pci",
        ]
    );
    let pci = mods.iter().find(|m| m.name == "virtio_pci").unwrap();
    assert!(pci.builtin && pci.path_in_tree.is_empty());
    assert_eq!(
        mods[3].path_in_tree,
        format!("usr/lib/modules/{KVER}/kernel/drivers/md/dm-verity.ko.xz")
    );
    // The order of `wanted` does not matter; builtins by alias count too.
    let mut reversed = wanted.clone();
    reversed.reverse();
    assert_eq!(closure(&tree, KVER, &reversed).unwrap(), mods);
    let by_alias = closure(&tree, KVER, &["crc32_le".to_string()]).unwrap();
    assert_eq!(
        by_alias,
        [Module {
            name: "crc32".into(),
            path_in_tree: String::new(),
            builtin: true
        }]
    );

    let early = initramfs_payload(&tree, &mods).unwrap();
    assert_eq!(early.files.len(), 11);
    assert_eq!(early.order.lines().count(), 11);
    assert!(early.order.starts_with(&format!(
        "/usr/lib/modules/{KVER}/kernel/drivers/md/dm-mod.ko.xz\n"
    )));
}

#[test]
fn closure_errors_name_the_module() {
    let mut tree = kernel_tree();
    let err = closure(&tree, KVER, &["no_such_fs".to_string()]).unwrap_err();
    assert!(err.to_string().contains("no_such_fs"), "{err}");
    assert!(matches!(
        closure(&tree, "1.0", &[]),
        Err(ModuleError::NoModulesDir { .. })
    ));

    add_module(
        &mut tree,
        "a/loop_a.ko.xz",
        &["depends=loop_b", "name=loop_a"],
    );
    add_module(
        &mut tree,
        "a/loop_b.ko.xz",
        &["depends=loop_a", "name=loop_b"],
    );
    let err = closure(&tree, KVER, &["loop_a".to_string()]).unwrap_err();
    assert!(
        matches!(&err, ModuleError::Cycle { chain } if chain == &["loop_a", "loop_b", "loop_a"])
    );

    add_module(
        &mut tree,
        "a/needs_ghost.ko.xz",
        &["depends=ghost", "name=needs_ghost"],
    );
    let err = closure(&tree, KVER, &["needs_ghost".to_string()]).unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
}
