//! Property tests for the `.deb` reader (ar, compressed tar, control file,
//! path rules): any bytes are a package or an error naming it, never a
//! panic; a good package cut short or with bytes changed is the same; and
//! whatever a data archive's paths and link targets say, every path in the
//! tree stays a clean path under the image root. Bounded; failures are not
//! persisted into the source tree.

use super::tests::{ar_bytes, compress, deb, tar_bytes, unpack, T};
use super::*;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A refusal names the package (the tests' packages are all `hello`).
fn names_the_package(e: &DebError) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(shown.starts_with("package hello: "), "{}", shown);
    Ok(())
}

/// Every tree path is relative, with no empty, `.` or `..` component, and
/// every relative symlink, taken from its own directory, stays inside.
fn stays_in_root(tree: &Tree) -> Result<(), TestCaseError> {
    for (path, entry) in tree.iter() {
        if path.is_empty() {
            continue;
        }
        let clean = path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
        prop_assert!(clean, "tree path {:?}", path);
        if let Kind::Symlink(target) = &entry.kind {
            prop_assert!(
                stays_inside(&parent_of(path), target),
                "{} -> {} climbs out",
                path,
                target
            );
        }
    }
    Ok(())
}

/// Unpacks `bytes` as package `hello`: a good result stays in the root, a
/// refusal names the package; `to_plain` never panics either.
fn judge(bytes: &[u8]) -> Result<(), TestCaseError> {
    match unpack(bytes) {
        Ok((tree, _)) => stays_in_root(&tree)?,
        Err(e) => names_the_package(&e)?,
    }
    if let Err(e) = to_plain("hello", bytes) {
        names_the_package(&e)?;
    }
    Ok(())
}

/// A small good package: a directory, a file, a symlink and a hard link.
fn good_deb(suffix: &str) -> Vec<u8> {
    deb(
        suffix,
        &[
            T::Dir("./", 0o755),
            T::Dir("./usr/bin/", 0o755),
            T::File("./usr/bin/hello", b"\x7fELF hello", 0o755),
            T::Symlink("./usr/bin/hi", "hello"),
            T::HardLink("./usr/bin/hey", "./usr/bin/hello"),
            T::File("./etc/hello.conf", b"x=1\n", 0o644),
            T::Fifo("./run/hello.fifo"),
        ],
    )
}

fn suffix() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", ".gz", ".zst", ".xz"])
}

/// A path from components that matter to the path rules.
fn path() -> impl Strategy<Value = String> {
    let comp = prop::sample::select(vec![
        "usr", "etc", "bin", "lib", "lnk", "a", "..", ".", "", "x y",
    ]);
    (
        prop::sample::select(vec!["", "./", "/"]),
        prop::collection::vec(comp, 1..5),
    )
        .prop_map(|(lead, comps)| format!("{lead}{}", comps.join("/")))
}

#[derive(Debug, Clone)]
enum Gen {
    Dir(String),
    File(String),
    Symlink(String, String),
    HardLink(String, String),
    Fifo(String),
}

fn gen_entry() -> impl Strategy<Value = Gen> {
    prop_oneof![
        path().prop_map(Gen::Dir),
        path().prop_map(Gen::File),
        (path(), path()).prop_map(|(p, t)| Gen::Symlink(p, t)),
        (path(), path()).prop_map(|(p, t)| Gen::HardLink(p, t)),
        path().prop_map(Gen::Fifo),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Any bytes, bare or behind an ar magic: a typed error, never a panic.
    #[test]
    fn any_bytes_are_refused_or_read(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        ar_magic in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if ar_magic {
            bytes.splice(0..0, b"!<arch>\n".iter().copied());
        }
        judge(&bytes)?;
    }

    /// Arbitrary members in a well-formed ar: the member rules and the
    /// decompressors see garbage.
    #[test]
    fn any_members_are_refused_or_read(
        members in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "debian-binary", "control.tar", "control.tar.xz", "data.tar",
                    "data.tar.gz", "data.tar.zst", "_extra", "other",
                ]),
                prop::collection::vec(any::<u8>(), 0..256),
            ),
            0..5,
        )
    ) {
        let members: Vec<(&str, &[u8])> =
            members.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        judge(&ar_bytes(&members))?;
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// A good package cut at any length: an error naming the package (or,
    /// cut after the last member, the package).
    #[test]
    fn truncated_deb(suffix in suffix(), at in any::<prop::sample::Index>()) {
        let bytes = good_deb(suffix);
        let at = at.index(bytes.len() + 1);
        judge(&bytes[..at])?;
    }

    /// A good package with up to three bytes changed anywhere.
    #[test]
    fn changed_deb(
        suffix in suffix(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..4),
    ) {
        let mut bytes = good_deb(suffix);
        for (at, xor) in &flips {
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
        }
        judge(&bytes)?;
    }

    /// Data archives whose paths and link targets hold `..`, `.`, empty
    /// components, absolute names, merged-/usr names and symlinks through
    /// each other: unpacked or refused, and never a path out of the root.
    #[test]
    fn archive_paths_stay_in_the_root(
        entries in prop::collection::vec(gen_entry(), 1..10),
        suffix in prop::sample::select(vec!["", ".gz"]),
    ) {
        let built: Vec<T> = entries
            .iter()
            .map(|e| match e {
                Gen::Dir(p) => T::Dir(p, 0o755),
                Gen::File(p) => T::File(p, b"data", 0o644),
                Gen::Symlink(p, t) => T::Symlink(p, t),
                Gen::HardLink(p, t) => T::HardLink(p, t),
                Gen::Fifo(p) => T::Fifo(p),
            })
            .collect();
        judge(&deb(suffix, &built))?;
    }

    /// A data archive of random bytes behind a good control member.
    #[test]
    fn garbage_data_member(
        data in prop::collection::vec(any::<u8>(), 0..1024),
        suffix in suffix(),
        wrap in any::<bool>(),
    ) {
        let control = compress(".xz", &super::tests::control_tar());
        // wrapped: garbage inside a valid compressed stream, so tar sees it
        let data = if wrap { compress(suffix, &data) } else { data };
        let bytes = ar_bytes(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &control),
            (&format!("data.tar{suffix}"), &data),
        ]);
        judge(&bytes)?;
    }
}

/// The data tar itself, garbage after a valid header: not reachable
/// through [`tar_bytes`] alone.
#[test]
fn tar_with_garbage_tail_is_refused_or_read() {
    let mut tar = tar_bytes(&[T::File("./usr/x", b"abc", 0o644)]);
    tar.truncate(512 + 3);
    tar.extend_from_slice(&[0xff; 700]);
    let control = compress(".xz", &super::tests::control_tar());
    let bytes = ar_bytes(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &control),
        ("data.tar", &tar),
    ]);
    if let Err(e) = unpack(&bytes) {
        assert!(e.to_string().starts_with("package hello: "), "{e}");
    }
}
