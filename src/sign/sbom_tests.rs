use std::collections::HashSet;

use serde_json::{json, Value};

use super::*;

const LOCK: &str = r#"
version = 4

[[package]]
name = "nodeagent"
version = "0.1.0"
dependencies = [
 "rustix",
 "sha2 0.10.9",
]

[[package]]
name = "nodeimg"
version = "0.1.0"
dependencies = ["ring"]

[[package]]
name = "ring"
version = "0.17.14"
source = "registry+https://example.invalid/index"
checksum = "aaaa"

[[package]]
name = "rustix"
version = "1.1.2"
source = "registry+https://example.invalid/index"
checksum = "bbbb"
dependencies = ["bitflags"]

[[package]]
name = "bitflags"
version = "2.9.4"
source = "registry+https://example.invalid/index"
checksum = "cccc"

[[package]]
name = "sha2"
version = "0.10.9"
source = "registry+https://example.invalid/index"
checksum = "dddd"
dependencies = ["bitflags"]

[[package]]
name = "sha2"
version = "0.11.0"
source = "registry+https://example.invalid/index"
checksum = "eeee"
"#;

fn manifest() -> Manifest {
    let h = |c: char| c.to_string().repeat(64);
    serde_json::from_value(json!({
        "schema": 1,
        "name": "worker",
        "version": "1.2.0",
        "arch": "amd64",
        "build": {
            "nodeimg_version": "0.1.0",
            "inputs": [{"name": "nodeagent", "sha256": h('a'), "size": 1_500_000}],
            "source_date_epoch": 1_767_225_600u64,
            "lock_checksum": h('0'),
            "debian_suite": "trixie",
            "layers": ["base", "boot"],
        },
        "artifacts": [
            {"kind": "rootfs", "path": "rootfs.squashfs", "sha256": h('1'), "size": 4096},
            {"kind": "kernel", "path": "vmlinuz", "sha256": h('2'), "size": 100},
        ],
        "verity": {
            "root_hash": h('3'), "salt": h('4'), "hash_algorithm": "sha256",
            "data_block_size": 4096, "hash_block_size": 4096, "data_blocks": 1,
            "hash_offset": 0, "hash_start_block": 1, "uuid": null,
        },
        "boot": {
            "kernel_version": "6.12.48+deb13-amd64", "kernel_arch": "x86_64",
            "kernel_signed": true, "cmdline": "ro", "initramfs_modules": [],
            "root_modules": [], "deferred_modules": [],
        },
        "packages": [
            {"name": "libc6", "version": "2.41-12", "sha256": h('5'),
             "origin": "debian:trixie-security/pool/updates/main/g/glibc/libc6_2.41-12_amd64.deb", "role": "rootfs"},
            {"name": "ca-certificates", "version": "20250419", "sha256": h('6'),
             "origin": "debian:trixie/pool/main/c/ca-certificates/ca-certificates_20250419_all.deb", "role": "rootfs"},
            {"name": "linux-image-6.12.48+deb13-amd64", "version": "1:6.12.48-1", "sha256": h('7'),
             "origin": "debian:trixie/pool/main/l/linux-signed-amd64/linux-image-6.12.48+deb13-amd64_6.12.48-1_amd64.deb", "role": "kernel"},
        ],
    }))
    .unwrap()
}

fn doc(extras: &SbomExtras) -> Value {
    let mut out = Vec::new();
    write_sbom(&manifest(), LOCK, extras, &mut out).unwrap();
    assert!(out.ends_with(b"}\n"));
    serde_json::from_slice(&out).unwrap()
}

fn package<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no package {name}"))
}

fn related(doc: &Value, from: &str, kind: &str) -> Vec<String> {
    doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spdxElementId"] == from && r["relationshipType"] == kind)
        .map(|r| r["relatedSpdxElement"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn document_is_consistent_and_deterministic() {
    let extras = SbomExtras::default();
    let d = doc(&extras);
    assert_eq!(d, doc(&extras));
    assert_eq!(d["spdxVersion"], "SPDX-2.3");
    assert_eq!(d["creationInfo"]["created"], "2026-01-01T00:00:00Z");
    let ids: Vec<&str> = d["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["SPDXID"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    for id in &ids {
        assert!(id.starts_with("SPDXRef-"));
        assert!(id[8..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    }
    for r in d["relationships"].as_array().unwrap() {
        for end in ["spdxElementId", "relatedSpdxElement"] {
            let id = r[end].as_str().unwrap();
            assert!(id == "SPDXRef-DOCUMENT" || unique.contains(id), "{id}");
        }
    }
    // image + 2 artifacts + 3 debs + agent + 3 crates
    assert_eq!(ids.len(), 10);
    assert_eq!(
        related(&d, "SPDXRef-DOCUMENT", "DESCRIBES"),
        ["SPDXRef-image"]
    );
    assert_eq!(related(&d, "SPDXRef-image", "CONTAINS").len(), 6);
}

#[test]
fn debian_packages() {
    let d = doc(&SbomExtras::default());
    let libc = package(&d, "libc6");
    assert_eq!(libc["versionInfo"], "2.41-12");
    assert_eq!(libc["supplier"], "Organization: Debian");
    assert_eq!(libc["licenseDeclared"], "NOASSERTION");
    assert_eq!(libc["checksums"][0]["checksumValue"], "5".repeat(64));
    assert_eq!(
        libc["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/libc6@2.41-12?arch=amd64&distro=trixie-security"
    );
    // each package names the suite it came from, not the image's base suite
    assert_eq!(libc["sourceInfo"], "Debian suite trixie-security");
    assert_eq!(
        package(&d, "ca-certificates")["sourceInfo"],
        "Debian suite trixie"
    );
    let ca = package(&d, "ca-certificates");
    assert!(ca["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap()
        .contains("arch=all"));
    let kernel = package(&d, "linux-image-6.12.48+deb13-amd64");
    assert_eq!(
        kernel["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/linux-image-6.12.48+deb13-amd64@1%3A6.12.48-1?arch=amd64&distro=trixie"
    );
    assert_eq!(kernel["primaryPackagePurpose"], "OPERATING-SYSTEM");
    let vmlinuz = package(&d, "vmlinuz");
    assert!(vmlinuz["comment"]
        .as_str()
        .unwrap()
        .contains("Linux 6.12.48+deb13-amd64"));
    let from = related(&d, vmlinuz["SPDXID"].as_str().unwrap(), "GENERATED_FROM");
    assert_eq!(from, [kernel["SPDXID"].as_str().unwrap()]);
}

#[test]
fn maintainers_and_licenses_when_known() {
    let mut extras = SbomExtras::default();
    extras.maintainers.insert(
        "libc6".into(),
        "GNU Libc Maintainers <debian-glibc@lists.debian.org>".into(),
    );
    extras.maintainers.insert(
        "ca-certificates".into(),
        "Julien Cristau <jcristau@debian.org>".into(),
    );
    extras
        .licenses
        .insert("ca-certificates".into(), "MPL-2.0".into());
    let d = doc(&extras);
    assert_eq!(
        package(&d, "libc6")["supplier"],
        "Organization: GNU Libc Maintainers (debian-glibc@lists.debian.org)"
    );
    let ca = package(&d, "ca-certificates");
    assert_eq!(
        ca["supplier"],
        "Person: Julien Cristau (jcristau@debian.org)"
    );
    assert_eq!(ca["licenseDeclared"], "MPL-2.0");
}

/// ca-certificates' copyright file in trixie, cut short: DEP-5 with two
/// Files paragraphs.
const CA_CERTIFICATES_COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Source: http://ftp.debian.org/debian/pool/main/c/ca-certificates/

Files: debian/*
       mozilla/*
       sbin/*
Copyright: 2003 Fumitoshi UKAI <ukai@debian.or.jp>
           2009 Philipp Kern <pkern@debian.org>
License: GPL-2+
 This program is free software; you can redistribute it and/or modify
 it under the terms of the GNU General Public License as published by
 the Free Software Foundation; either version 2 of the License, or
 (at your option) any later version.
 .
 On Debian GNU/Linux systems, the complete text of the GNU General Public
 License can be found in '/usr/share/common-licenses/GPL-2'.

Files: mozilla/certdata.txt
       mozilla/nssckbi.h
Copyright: Mozilla Contributors
License: MPL-2.0
 This Source Code Form is subject to the terms of the Mozilla Public
 License, v. 2.0.
";

/// The licenses the build passes: what each DEP-5 file maps to.
fn licenses_from(copyrights: &[(&str, &str)]) -> BTreeMap<String, String> {
    copyrights
        .iter()
        .filter_map(|(name, text)| {
            let expression = crate::source::copyright::declared_license(text).ok()?;
            Some((name.to_string(), expression))
        })
        .collect()
}

#[test]
fn licenses_from_copyright_files_are_declared_and_stable() {
    let extras = SbomExtras {
        licenses: licenses_from(&[
            ("ca-certificates", CA_CERTIFICATES_COPYRIGHT),
            // not DEP-5: declares nothing
            (
                "libc6",
                "This is the Debian prepackaged version of glibc.\n",
            ),
        ]),
        ..SbomExtras::default()
    };
    assert_eq!(extras.licenses.len(), 1);
    let bytes = |extras: &SbomExtras| {
        let mut out = Vec::new();
        write_sbom(&manifest(), LOCK, extras, &mut out).unwrap();
        out
    };
    let first = bytes(&extras);
    assert_eq!(first, bytes(&extras), "same inputs, same bytes");
    let d: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        package(&d, "ca-certificates")["licenseDeclared"],
        "GPL-2.0-or-later AND MPL-2.0"
    );
    assert_eq!(
        package(&d, "ca-certificates")["licenseConcluded"],
        "NOASSERTION"
    );
    assert_eq!(package(&d, "libc6")["licenseDeclared"], "NOASSERTION");
    // a license changes the document, and only that package's entry
    let without = bytes(&SbomExtras::default());
    assert_ne!(first, without);
    let d0: Value = serde_json::from_slice(&without).unwrap();
    assert_eq!(
        d["packages"].as_array().unwrap().len(),
        d0["packages"].as_array().unwrap().len()
    );
    for (a, b) in d["packages"]
        .as_array()
        .unwrap()
        .iter()
        .zip(d0["packages"].as_array().unwrap())
    {
        if a["name"] != "ca-certificates" {
            assert_eq!(a, b);
        }
    }
}

#[test]
fn agent_and_its_crate_closure() {
    let d = doc(&SbomExtras::default());
    let agent = package(&d, "nodeagent");
    assert_eq!(agent["versionInfo"], "0.1.0");
    assert_eq!(agent["checksums"][0]["checksumValue"], "a".repeat(64));
    let crates: Vec<String> = related(&d, "SPDXRef-nodeagent", "CONTAINS")
        .iter()
        .map(|id| {
            let p = d["packages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["SPDXID"] == id.as_str())
                .unwrap();
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["versionInfo"].as_str().unwrap()
            )
        })
        .collect();
    // bitflags once, sha2 0.10 (as locked) not 0.11; nodeimg's ring absent.
    assert_eq!(crates, ["bitflags 2.9.4", "rustix 1.1.2", "sha2 0.10.9"]);
    assert_eq!(
        package(&d, "rustix")["externalRefs"][0]["referenceLocator"],
        "pkg:cargo/rustix@1.1.2"
    );
}

#[test]
fn the_workspace_lock_has_the_agent() {
    let lock = include_str!("../../Cargo.lock");
    let d = sbom(&manifest(), lock, &SbomExtras::default()).unwrap();
    let names: HashSet<&str> = d.packages.iter().map(|p| p.name.as_str()).collect();
    // rustls and ring: the node API's TLS
    for c in [
        "rustix",
        "serde_json",
        "thiserror",
        "sha2",
        "rustls",
        "ring",
    ] {
        assert!(names.contains(c), "{c} is in nodeagent's closure");
    }
    assert!(!names.contains("pgp"), "pgp is nodeimg's, not the agent's");
    match sbom(&manifest(), "version = 4\n", &SbomExtras::default()) {
        Err(SbomError::NoAgent(n)) => assert_eq!(n, "nodeagent"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn small_helpers() {
    assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339_utc(1_767_225_599), "2025-12-31T23:59:59Z");
    assert_eq!(purl_escape("1:2.3+b1~rc"), "1%3A2.3%2Bb1~rc");
    assert_eq!(spdx_id("deb-0-g++_x"), "SPDXRef-deb-0-g---x");
    assert_eq!(
        deb_arch("debian:trixie/pool/main/a/a/a_1_arm64.deb"),
        Some("arm64")
    );
    assert_eq!(
        deb_suite("debian:trixie-security/pool/updates/main/a/a/a_1_arm64.deb"),
        Some("trixie-security")
    );
    assert_eq!(deb_suite("pool/main/a/a/a_1_arm64.deb"), None);
}

/// The independent judge: `pyspdxtools -i` (spdx-tools from PyPI) parses and
/// validates the document: `$NODEIMG_PYSPDXTOOLS`, else the venv that
/// scripts/setup.sh makes; the test fails when neither exists.
#[test]
fn pyspdxtools_validates() {
    let tool = std::env::var_os("NODEIMG_PYSPDXTOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let venv = std::env::var_os("NODEIMG_VENV")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(std::env::var_os("HOME").unwrap())
                        .join(".cache/nodeimg/venv")
                });
            venv.join("bin/pyspdxtools")
        });
    assert!(
        tool.is_file(),
        "{} is missing: run scripts/setup.sh (make test does)",
        tool.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sbom.spdx.json");
    let mut extras = SbomExtras::default();
    extras.maintainers.insert(
        "libc6".into(),
        "GNU Libc Maintainers <debian-glibc@lists.debian.org>".into(),
    );
    extras.licenses = licenses_from(&[("ca-certificates", CA_CERTIFICATES_COPYRIGHT)]);
    // Every id the DEP-5 mapping can give, so the judge checks the table:
    // the licenses on one package, each exception on another.
    use crate::source::copyright::{EXCEPTIONS, LICENSES};
    let ids: BTreeSet<&str> = LICENSES.iter().map(|(_, id)| *id).collect();
    extras.licenses.insert(
        "libc6".into(),
        ids.into_iter().collect::<Vec<_>>().join(" AND "),
    );
    let with: Vec<String> = EXCEPTIONS
        .iter()
        .map(|e| {
            let license = e.only_with.first().unwrap_or(&"GPL-2.0-or-later");
            format!("{license} WITH {}", e.spdx)
        })
        .collect();
    extras.licenses.insert(
        "linux-image-6.12.48+deb13-amd64".into(),
        format!("({}) AND MIT", with.join(" OR ")),
    );
    let mut out = Vec::new();
    write_sbom(
        &manifest(),
        include_str!("../../Cargo.lock"),
        &extras,
        &mut out,
    )
    .unwrap();
    std::fs::write(&path, out).unwrap();
    let run = std::process::Command::new(tool)
        .arg("-i")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("pyspdxtools -i: {}\n{text}", run.status);
    assert!(run.status.success(), "{text}");
    assert!(!text.to_lowercase().contains("invalid"), "{text}");
}
