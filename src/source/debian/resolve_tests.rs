#![allow(clippy::unwrap_used)]

use super::*;
use crate::source::debian::packages::parse_packages;

/// A Packages text from `(name, version, extra fields)`.
fn packages(entries: &[(&str, &str, &str)]) -> Vec<Package> {
    let mut text = String::new();
    for (name, version, extra) in entries {
        let extra: String = extra
            .split(';')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(&format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\n{extra}\
             Filename: pool/main/{name}_{version}.deb\nSize: 1\nSHA256: {}\n\n",
            "ab".repeat(32)
        ));
    }
    parse_packages(&text).unwrap()
}

fn index(entries: &[(&str, &str, &str)]) -> Index {
    Index::new([packages(entries)])
}

fn roots(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn run(index: &Index, r: &[&str], excludes: &[&str]) -> Result<Resolution, ResolveError> {
    let excludes = excludes.iter().map(|s| s.to_string()).collect();
    resolve(index, &roots(r), &excludes)
}

/// `name=version` of each selected package.
fn selected(res: &Resolution) -> Vec<String> {
    res.packages
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect()
}

#[test]
fn first_satisfiable_alternative_wins() {
    let idx = index(&[("r", "1", "Depends: a | b"), ("a", "1", ""), ("b", "1", "")]);
    let res = run(&idx, &["r"], &[]).unwrap();
    assert_eq!(selected(&res), ["a=1", "r=1"]);
    assert_eq!(res.reasons["r"], "root");
    assert_eq!(res.reasons["a"], "r");
}

#[test]
fn an_already_selected_later_alternative_wins() {
    let idx = index(&[("r", "1", "Depends: a | b"), ("a", "1", ""), ("b", "1", "")]);
    let res = run(&idx, &["b", "r"], &[]).unwrap();
    assert_eq!(selected(&res), ["b=1", "r=1"]);

    // Being selected counts too: s pulls b before r's group is looked at.
    let idx = index(&[
        ("top", "1", "Depends: s, r"),
        ("s", "1", "Depends: b"),
        ("r", "1", "Depends: a | b"),
        ("a", "1", ""),
        ("b", "1", ""),
    ]);
    let res = run(&idx, &["top"], &[]).unwrap();
    assert_eq!(selected(&res), ["b=1", "r=1", "s=1", "top=1"]);
}

#[test]
fn a_too_old_candidate_is_skipped_and_none_is_an_error_naming_the_chain() {
    let idx = index(&[
        ("r", "1", "Depends: a (>= 2) | b"),
        ("a", "1.5", ""),
        ("b", "1", ""),
        ("top", "1", "Depends: mid"),
        ("mid", "1", "Depends: a (>= 2)"),
    ]);
    assert_eq!(selected(&run(&idx, &["r"], &[]).unwrap()), ["b=1", "r=1"]);

    let err = run(&idx, &["top"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "top -> mid -> a (>= 2): no candidate satisfies (a: available 1.5)"
    );
}

#[test]
fn highest_version_wins_and_constraints_pick_older_ones() {
    let main = packages(&[("a", "1.0", ""), ("lib", "1.0", "")]);
    let updates = packages(&[("a", "2.0", "Depends: lib (<< 2)"), ("lib", "2.0", "")]);
    let idx = Index::new([main, updates]);
    assert_eq!(idx.versions("a").len(), 2);
    let res = run(&idx, &["a"], &[]).unwrap();
    assert_eq!(selected(&res), ["a=2.0", "lib=1.0"]);
    let res = run(&idx, &["a=1.0"], &[]).unwrap();
    assert_eq!(selected(&res), ["a=1.0"]);
    let res = run(&idx, &["a (<< 2)", "lib"], &[]).unwrap();
    assert_eq!(selected(&res), ["a=1.0", "lib=2.0"]);
    let err = run(&idx, &["a (>= 3)"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "root a (>= 3): no candidate satisfies (a: available 2.0, 1.0)"
    );
}

/// `packages(entries)`, each marked as listed by `suite`.
fn in_suite(suite: &str, entries: &[(&str, &str, &str)]) -> Vec<Package> {
    let mut pkgs = packages(entries);
    for p in &mut pkgs {
        p.suite = suite.into();
    }
    pkgs
}

#[test]
fn across_suites_the_highest_debian_version_wins_and_ties_go_to_the_base_suite() {
    // Debian order, not string order: a security upload's `+deb13u1`
    // sorts above the release, `~` below it, an epoch above everything;
    // `10` is above `9`.
    let base = in_suite(
        "trixie",
        &[
            ("libc6", "2.41-12", ""),
            ("openssl", "3.5.1-1", ""),
            ("tzdata", "2025b-4", ""),
            ("big", "9.0-1", ""),
            ("epoch", "2.0-1", ""),
            ("same", "1.0-1", ""),
        ],
    );
    let updates = in_suite(
        "trixie-updates",
        &[
            ("tzdata", "2025b-4+deb13u1", ""),
            ("openssl", "3.5.1-1+deb13u1~pre1", ""),
            ("same", "1.0-1", ""),
        ],
    );
    let security = in_suite(
        "trixie-security",
        &[
            ("libc6", "2.41-12+deb13u1", ""),
            ("openssl", "3.5.1-1+deb13u1", ""),
            ("big", "10.0-1", ""),
            ("epoch", "1:1.0-1", ""),
            ("same", "1.0-1", ""),
        ],
    );
    let idx = Index::new([base, updates, security]);
    let res = run(
        &idx,
        &["libc6", "openssl", "tzdata", "big", "epoch", "same"],
        &[],
    )
    .unwrap();
    let got: Vec<String> = res
        .packages
        .iter()
        .map(|p| format!("{}={} {}", p.name, p.version, p.suite))
        .collect();
    assert_eq!(
        got,
        [
            "big=10.0-1 trixie-security",
            "epoch=1:1.0-1 trixie-security",
            "libc6=2.41-12+deb13u1 trixie-security",
            "openssl=3.5.1-1+deb13u1 trixie-security",
            "same=1.0-1 trixie",
            "tzdata=2025b-4+deb13u1 trixie-updates",
        ]
    );
    // one entry per version: the tie kept the base suite's only
    assert_eq!(idx.versions("same").len(), 1);
    assert_eq!(idx.versions("openssl").len(), 3);
}

#[test]
fn a_name_keeps_one_version() {
    // r selects lib 2.0 first; s needs lib (<< 2): conflict is an error.
    let idx = index(&[
        ("top", "1", "Depends: r, s"),
        ("r", "1", "Depends: lib"),
        ("s", "1", "Depends: lib (<< 2)"),
        ("lib", "1.0", ""),
        ("lib", "2.0", ""),
    ]);
    let err = run(&idx, &["top"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "top -> s -> lib (<< 2): no candidate satisfies (lib: 2.0 already selected)"
    );
}

#[test]
fn virtual_packages_via_provides() {
    let idx = index(&[
        ("r", "1", "Depends: mta"),
        ("zmta", "1", "Provides: mta"),
        ("amta", "1", "Provides: mta"),
    ]);
    let res = run(&idx, &["r"], &[]).unwrap();
    assert_eq!(selected(&res), ["amta=1", "r=1"], "first provider by name");
    let res = run(&idx, &["zmta", "r"], &[]).unwrap();
    assert_eq!(
        selected(&res),
        ["r=1", "zmta=1"],
        "an already selected provider"
    );
    let res = run(&idx, &["mta"], &[]).unwrap();
    assert_eq!(selected(&res), ["amta=1"], "a virtual root");
}

#[test]
fn versioned_provides_are_honoured() {
    let idx = index(&[
        ("r", "1", "Depends: v (>= 2)"),
        ("p1", "1", "Provides: v (= 1)"),
        ("p2", "1", "Provides: v (= 3)"),
        ("p0", "1", "Provides: v"),
        ("q", "1", "Depends: v"),
    ]);
    assert_eq!(selected(&run(&idx, &["r"], &[]).unwrap()), ["p2=1", "r=1"]);
    assert_eq!(selected(&run(&idx, &["q"], &[]).unwrap()), ["p0=1", "q=1"]);
    // An unversioned Provides never meets a versioned dependency.
    let idx = index(&[("r", "1", "Depends: v (>= 2)"), ("p0", "1", "Provides: v")]);
    let err = run(&idx, &["r"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "r -> v (>= 2): no candidate satisfies (v: provided by p0)"
    );
}

#[test]
fn cycles_terminate() {
    let idx = index(&[
        ("libc6", "2.41-12", "Depends: libgcc-s1"),
        (
            "libgcc-s1",
            "14.2.0-19",
            "Depends: gcc-14-base (= 14.2.0-19), libc6 (>= 2.35)",
        ),
        ("gcc-14-base", "14.2.0-19", ""),
    ]);
    let res = run(&idx, &["libc6"], &[]).unwrap();
    assert_eq!(
        selected(&res),
        [
            "gcc-14-base=14.2.0-19",
            "libc6=2.41-12",
            "libgcc-s1=14.2.0-19"
        ]
    );
    assert_eq!(res.reasons["gcc-14-base"], "libgcc-s1");
}

#[test]
fn excludes_skip_alternatives_and_drop_dependencies() {
    let idx = index(&[
        ("r", "1", "Depends: a | b, x, v, y (>= 1) | x"),
        ("a", "1", ""),
        ("b", "1", ""),
        ("x", "1", ""),
        ("y", "1", ""),
        ("p", "1", "Provides: v"),
    ]);
    let res = run(&idx, &["r"], &["a", "x", "p"]).unwrap();
    assert_eq!(selected(&res), ["b=1", "r=1", "y=1"]);
    assert_eq!(
        res.dropped,
        [("r".to_string(), "x".to_string()), ("r".into(), "v".into())]
    );
    let err = run(&idx, &["a"], &["a"]).unwrap_err();
    assert_eq!(err.to_string(), "root package a is excluded");
    // Naming an excluded package is enough to drop the group: the author
    // does not want that package, whatever version the index has.
    let idx = index(&[("r", "1", "Depends: x (>= 2) | gone"), ("x", "1", "")]);
    let res = run(&idx, &["r"], &["x"]).unwrap();
    assert_eq!(
        res.dropped,
        [("r".to_string(), "x (>= 2) | gone".to_string())]
    );
    let err = run(&idx, &["r"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "r -> x (>= 2) | gone: no candidate satisfies (x: available 1; gone: not in the index)"
    );
}

#[test]
fn unknown_and_malformed_roots() {
    let idx = index(&[("containerd", "1", ""), ("runc", "1", "")]);
    let err = run(&idx, &["containred"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown root package containred (did you mean containerd?)"
    );
    let err = run(&idx, &["kubelet"], &[]).unwrap_err();
    assert_eq!(err.to_string(), "unknown root package kubelet");
    assert!(matches!(
        run(&idx, &["a | b"], &[]).unwrap_err(),
        ResolveError::BadRoot { .. }
    ));
    assert!(matches!(
        run(&idx, &["runc (>= "], &[]).unwrap_err(),
        ResolveError::BadRoot { .. }
    ));
}

#[test]
fn pre_depends_and_arch_qualifiers() {
    let idx = index(&[
        ("r", "1", "Pre-Depends: a:any; Depends: b:amd64"),
        ("a", "1", ""),
        ("b", "1", ""),
        ("f", "1", "Depends: c:i386"),
        ("c", "1", ""),
    ]);
    let res = run(&idx, &["r"], &[]).unwrap();
    assert_eq!(selected(&res), ["a=1", "b=1", "r=1"]);
    assert_eq!(res.reasons["a"], "r");
    let err = run(&idx, &["f"], &[]).unwrap_err();
    assert!(
        err.to_string().contains("c:i386: foreign architecture"),
        "{err}"
    );
}

#[test]
fn essential_and_required_packages_are_not_pulled_in() {
    let idx = index(&[
        ("r", "1", "Recommends: rec; Suggests: sug"),
        ("base-files", "1", "Essential: yes; Priority: required"),
        ("rec", "1", ""),
        ("sug", "1", ""),
    ]);
    assert_eq!(selected(&run(&idx, &["r"], &[]).unwrap()), ["r=1"]);
}

#[test]
fn result_does_not_depend_on_input_order() {
    let entries = [
        ("r", "1", "Depends: v, a | b"),
        ("p2", "1", "Provides: v"),
        ("p1", "1", "Provides: v"),
        ("b", "1", ""),
        ("a", "1", ""),
    ];
    let mut reversed = entries;
    reversed.reverse();
    let one = run(&index(&entries), &["r"], &[]).unwrap();
    let two = run(&index(&reversed), &["r"], &[]).unwrap();
    assert_eq!(one, two);
    assert_eq!(selected(&one), ["a=1", "p1=1", "r=1"]);
}
