//! Hermetic tests: a hand-built kernel package (bzImage + xz modules, see
//! `boot::testkit`) goes through the real boot stage, with the cache in a
//! temporary directory.

use std::fs;

use super::*;
use crate::boot::testkit::{bzimage, module_xz, plain_deb};
use crate::pipeline::boot_files::{self, add_root_files};
use crate::rootfs::Tree;
use crate::spec::load_plan;

const KVER: &str = "6.12.99+test-amd64";
const PACKAGE: &str = "linux-image-test";
const VERSION: &str = "6.12.99-1";
const MTIME: u32 = 1_700_000_000;
const BUILDER: Sha256 = [7; 32];

/// A plan whose `kernel` table lists `modules` (TOML arrays) by group.
fn plan_with(initramfs: &str, root: &str, uefi: &str, deferred: &str) -> Plan {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("images")).unwrap();
    fs::create_dir_all(d.path().join("layers/boot")).unwrap();
    let layer = format!(
        "schema = 1\n[kernel]\npackage = \"{PACKAGE}\"\n\
         initramfs_modules = {initramfs}\nmodules = {root}\n\
         uefi_modules = {uefi}\ndeferred_modules = {deferred}\n"
    );
    fs::write(d.path().join("layers/boot/layer.toml"), layer).unwrap();
    let img = d.path().join("images/t.toml");
    let image = "schema = 1\nname = \"t\"\nversion = \"1\"\nlayers = [\"boot\"]\n";
    fs::write(&img, image).unwrap();
    load_plan(&img).unwrap()
}

fn plan() -> Plan {
    plan_with(
        r#"["dm_verity"]"#,
        r#"["ext4"]"#,
        r#"["vfat"]"#,
        r#"["veth"]"#,
    )
}

fn locked(sha: &str) -> LockedPackage {
    LockedPackage {
        name: PACKAGE.into(),
        version: VERSION.into(),
        suite: "trixie".into(),
        architecture: "amd64".into(),
        filename: "pool/l/linux-image-test.deb".into(),
        size: 1,
        sha256: sha.into(),
        source: None,
        maintainer: None,
    }
}

/// The kernel package: a bzImage and modules with dependencies, one per group.
fn kernel_deb() -> Vec<u8> {
    let dir = format!("usr/lib/modules/{KVER}/kernel");
    let module = |rel: &str, fields: &[&str]| (format!("./{dir}/{rel}"), module_xz(fields));
    let vmlinux: Vec<u8> = b"\x7fELF"
        .iter()
        .copied()
        .chain((0..4096u32).map(|i| i as u8))
        .collect();
    plain_deb(
        PACKAGE,
        VERSION,
        &[
            (format!("./boot/vmlinuz-{KVER}"), bzimage(KVER, &vmlinux)),
            module(
                "drivers/md/dm-verity.ko.xz",
                &["depends=dm-mod", "name=dm_verity"],
            ),
            module("drivers/md/dm-mod.ko.xz", &["depends=", "name=dm_mod"]),
            module("fs/ext4/ext4.ko.xz", &["depends=mbcache", "name=ext4"]),
            module("fs/mbcache.ko.xz", &["depends=", "name=mbcache"]),
            module("fs/fat/vfat.ko.xz", &["depends=", "name=vfat"]),
            module("drivers/net/veth.ko.xz", &["depends=dm-mod", "name=veth"]),
        ],
    )
}

/// The boot stage as the build runs it: the cache's parts on a hit, else
/// the stage's, stored. Returns the parts and whether they came from the cache.
fn stage(cache: &Cache, plan: &Plan, deb: &[u8], agent: &[u8]) -> (BootParts, bool) {
    let pkg = locked(&"ab".repeat(32));
    let found = lookup(cache, Some(&BUILDER), plan, &[&pkg], Some(agent), MTIME);
    if let Some(parts) = found.parts {
        return (parts, true);
    }
    let parts = boot_files::prepare(plan, &[&pkg], &[deb.to_vec()], Some(agent), MTIME).unwrap();
    store(cache, &found.key.unwrap(), &parts);
    (parts, false)
}

fn the_entry(cache: &Cache, key: &BootKey) -> std::path::PathBuf {
    let link = cache
        .root()
        .join("derived")
        .join(format!("{KIND}-{}", hex::encode(key.0)));
    let sha = hash::parse_sha256(fs::read_to_string(link).unwrap().trim()).unwrap();
    cache.path_for(&sha)
}

fn key_of(plan: &Plan, agent: &[u8]) -> BootKey {
    key(&BUILDER, plan, &[&locked(&"ab".repeat(32))], agent, MTIME)
}

#[test]
fn a_warm_stage_gives_what_a_cold_one_built() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path());
    let (plan, deb) = (plan(), kernel_deb());
    let (cold, hit) = stage(&cache, &plan, &deb, b"agent");
    assert!(!hit, "an empty cache cannot hit");
    assert_eq!(cold.initramfs_modules, ["dm_mod", "dm_verity"]);
    assert_eq!(cold.root_modules, ["mbcache", "ext4"]);
    assert_eq!(
        (cold.uefi_modules.len(), cold.deferred_modules.len()),
        (1, 1)
    );
    assert_eq!(cold.root_files.len(), 4 + 3, "four modules, three orders");

    let (warm, hit) = stage(&cache, &plan, &deb, b"agent");
    assert!(hit);
    assert_eq!(warm, cold);
    // What the later stages see is the same: the same root tree, the same
    // entry bytes.
    let (mut a, mut b) = (Tree::new(), Tree::new());
    add_root_files(&mut a, &cold);
    add_root_files(&mut b, &warm);
    assert!(a.iter().eq(b.iter()));
    let k = key_of(&plan, b"agent");
    assert_eq!(encode(&k, &warm), encode(&k, &cold));
}

#[test]
fn a_corrupt_entry_is_rebuilt_not_used() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path());
    let (plan, deb) = (plan(), kernel_deb());
    let (cold, _) = stage(&cache, &plan, &deb, b"agent");
    let entry = the_entry(&cache, &key_of(&plan, b"agent"));
    let mut bytes = fs::read(&entry).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // inside the last root file
    fs::write(&entry, &bytes).unwrap();

    let (again, hit) = stage(&cache, &plan, &deb, b"agent");
    assert!(!hit, "a corrupt entry must not be used");
    assert_eq!(again, cold);
    assert_eq!(
        fs::read(&entry).unwrap(),
        encode(&key_of(&plan, b"agent"), &cold)
    );
    assert!(
        stage(&cache, &plan, &deb, b"agent").1,
        "the rebuilt entry is used"
    );
}

#[test]
fn a_changed_input_misses() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path());
    let (plan, deb) = (plan(), kernel_deb());
    let (first, _) = stage(&cache, &plan, &deb, b"agent");
    let (other, hit) = stage(&cache, &plan, &deb, b"agent, rebuilt");
    assert!(!hit, "other agent bytes must miss");
    assert_ne!(other.initramfs, first.initramfs);
    assert!(
        stage(&cache, &plan, &deb, b"agent").1,
        "both entries are kept"
    );
}

#[test]
fn the_key_covers_every_input_of_the_stage() {
    let p = plan();
    let pkg = locked(&"ab".repeat(32));
    let base = key(&BUILDER, &p, &[&pkg], b"agent", MTIME);
    let mut changed = vec![
        key(&[8; 32], &p, &[&pkg], b"agent", MTIME),
        key(&BUILDER, &p, &[&pkg], b"agent2", MTIME),
        key(&BUILDER, &p, &[&pkg], b"agent", MTIME + 1),
        key(&BUILDER, &p, &[&locked(&"cd".repeat(32))], b"agent", MTIME),
        key(&BUILDER, &p, &[&pkg, &pkg], b"agent", MTIME),
        key(&BUILDER, &p, &[], b"agent", MTIME),
    ];
    let newer = LockedPackage {
        version: "6.12.99-2".into(),
        ..pkg.clone()
    };
    changed.push(key(&BUILDER, &p, &[&newer], b"agent", MTIME));
    for other in [
        plan_with(r#"["dm_mod"]"#, r#"["ext4"]"#, r#"["vfat"]"#, r#"["veth"]"#),
        plan_with(r#"["dm_verity"]"#, r#"[]"#, r#"["vfat"]"#, r#"["veth"]"#),
        plan_with(r#"["dm_verity"]"#, r#"["ext4"]"#, r#"[]"#, r#"["veth"]"#),
        plan_with(r#"["dm_verity"]"#, r#"["ext4"]"#, r#"["vfat"]"#, r#"[]"#),
        // A module moved from one group to the next loads at another time.
        plan_with(
            r#"["dm_verity"]"#,
            r#"["ext4", "vfat"]"#,
            r#"[]"#,
            r#"["veth"]"#,
        ),
    ] {
        changed.push(key(&BUILDER, &other, &[&pkg], b"agent", MTIME));
    }
    for (i, k) in changed.iter().enumerate() {
        assert_ne!(*k, base, "change #{i} kept the key");
    }
    // What the stage does not read does not split the cache.
    let mut renamed = plan();
    renamed.name = "other".into();
    renamed.packages.insert("curl".into());
    assert_eq!(key(&BUILDER, &renamed, &[&pkg], b"agent", MTIME), base);
}

#[test]
fn entries_that_do_not_belong_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path());
    let (plan, deb) = (plan(), kernel_deb());
    let (parts, _) = stage(&cache, &plan, &deb, b"agent");
    let k = key_of(&plan, b"agent");
    let blob = encode(&k, &parts);
    assert_eq!(decode(&k, &blob).unwrap(), parts);

    let other = BootKey([1; 32]);
    assert!(matches!(decode(&other, &blob), Err(EntryError::WrongKey)));
    assert!(matches!(decode(&k, &blob[1..]), Err(EntryError::Magic)));
    assert!(matches!(
        decode(&k, &blob[..blob.len() - 1]),
        Err(EntryError::Truncated { .. })
    ));
    let mut longer = blob.clone();
    longer.push(0);
    assert!(matches!(
        decode(&k, &longer),
        Err(EntryError::Trailing { extra: 1 })
    ));
    let mut escaping = parts.clone();
    escaping.root_files[0].0 = "usr/../../etc/shadow".into();
    assert!(matches!(
        decode(&k, &encode(&k, &escaping)),
        Err(EntryError::BadPath { .. })
    ));

    // An intact entry stored under another key (a link naming the wrong
    // bytes) is not used.
    cache.put_derived(KIND, &other.0, &blob).unwrap();
    assert!(load(&cache, &other).is_none());
}
