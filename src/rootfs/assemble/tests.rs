use super::*;
use crate::spec::load_plan;
use std::fs;

fn plan(layer: &str) -> Plan {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("images")).unwrap();
    fs::create_dir_all(d.path().join("layers/l")).unwrap();
    fs::write(d.path().join("layers/l/layer.toml"), layer).unwrap();
    let img = d.path().join("images/t.toml");
    fs::write(
        &img,
        "schema = 1\nname = \"t\"\nversion = \"1\"\nlayers = [\"l\"]\n",
    )
    .unwrap();
    load_plan(&img).unwrap()
}

fn packages_tree() -> Tree {
    let mut t = Tree::new();
    t.insert("etc/default/foo", Entry::file(b"x".to_vec(), 0o644));
    t.insert("etc/protocols", Entry::file(b"tcp 6".to_vec(), 0o644));
    t.insert(
        "usr/share/ca-certificates/mozilla/B.crt",
        Entry::file(b"B".to_vec(), 0o644),
    );
    t.insert(
        "usr/share/ca-certificates/mozilla/A.crt",
        Entry::file(b"A\n".to_vec(), 0o644),
    );
    t.insert(
        "usr/share/doc/foo/copyright",
        Entry::file(b"c".to_vec(), 0o644),
    );
    t
}

#[test]
fn etc_holds_only_what_layers_keep_or_add() {
    let p = plan(
        "schema = 1\nkeep_etc = [\"/etc/protocols\"]\nremove = [\"usr/share/doc\"]\ngenerate = [\"ca-bundle\"]\n\
         [[files]]\npath = \"/etc/a\"\ncontent = \"a\"\n\
         [sysctl]\n\"kernel.panic\" = { value = \"10\", reason = \"why\" }\n",
    );
    let mut t = packages_tree();
    assemble(&mut t, &p, &Artifacts::new(), &BTreeMap::new()).unwrap();
    assert!(t.get("etc/default/foo").is_none());
    assert!(
        t.get("etc/default").is_none(),
        "emptied package dir stays behind"
    );
    assert!(t.get("etc/protocols").is_some());
    assert!(t.get("usr/share/doc").is_none());
    assert_eq!(
        t.get("etc/ssl/certs/ca-certificates.crt").unwrap().kind,
        Kind::File(b"A\nB\n".to_vec().into())
    );
    let Kind::File(s) = &t.get("etc/sysctl.d/50-nodeimg.conf").unwrap().kind else {
        panic!()
    };
    assert!(String::from_utf8_lossy(s).contains("# why (l)\nkernel.panic = 10\n"));
    assert_eq!(t.get("tmp").unwrap().mode, 0o1777);
}

#[test]
fn shell_is_refused_unless_debug() {
    let mut t = Tree::new();
    t.insert("usr/bin/dash", Entry::file(b"elf".to_vec(), 0o755));
    let owners = BTreeMap::from([("usr/bin/dash".to_string(), "dash".to_string())]);
    let e = assemble(
        &mut t.clone(),
        &plan("schema = 1\n"),
        &Artifacts::new(),
        &owners,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("usr/bin/dash (from package dash)"),
        "{e}"
    );
    assemble(
        &mut t,
        &plan("schema = 1\ndebug = true\n"),
        &Artifacts::new(),
        &owners,
    )
    .unwrap();
}

#[test]
fn artifact_must_be_provided() {
    let p = plan("schema = 1\n[[files]]\npath = \"/usr/sbin/nodeagent\"\nartifact = \"nodeagent\"\nmode = \"0755\"\n");
    let e = assemble(&mut Tree::new(), &p, &Artifacts::new(), &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("nodeagent"), "{e}");
    let mut t = Tree::new();
    let arts = Artifacts::from([("nodeagent".to_string(), b"\x7fELF".to_vec())]);
    assemble(&mut t, &p, &arts, &BTreeMap::new()).unwrap();
    assert_eq!(t.get("usr/sbin/nodeagent").unwrap().mode, 0o755);
}

/// A pinned digest must be the packed one: the build fails naming the
/// image and both digests, and passes with the digest it reports.
#[test]
fn a_pinned_image_digest_is_checked() {
    let layer = |digest: &str| {
        format!(
            "schema = 1\n[[oci_images]]\nname = \"nodeimg.local/pause:1\"\nbinary = \"pause\"\n\
             entrypoint = [\"/pause\"]\nuser = \"65535:65535\"\ndigest = \"{digest}\"\n"
        )
    };
    let arts = Artifacts::from([("pause".to_string(), b"\x7fELF pause".to_vec())]);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let e = assemble(
        &mut Tree::new(),
        &plan(&layer(&wrong)),
        &arts,
        &BTreeMap::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("nodeimg.local/pause:1") && e.contains(&wrong),
        "{e}"
    );
    let packed = e
        .split("packed to ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_string();
    assert!(packed.starts_with("sha256:") && packed != wrong, "{e}");
    let mut t = Tree::new();
    assemble(&mut t, &plan(&layer(&packed)), &arts, &BTreeMap::new()).unwrap();
    let Kind::File(list) = &t.get("usr/lib/nodeimg/images.json").unwrap().kind else {
        panic!("images.json is not a file")
    };
    let list = String::from_utf8_lossy(list);
    assert!(list.contains(&packed), "{list}");
}

/// A user's OCI archive: a file that differs from its pin fails the build
/// naming both hashes; the pinned one is listed with the manifest digest
/// it carries, under the layer's name.
#[test]
fn a_brought_archive_is_checked_against_its_pin_and_listed_by_its_own_digest() {
    let theirs = crate::oci::build_image(&crate::oci::ImageSpec {
        name: "registry.example/falco:0.39".into(),
        files: vec![crate::oci::ImageFile {
            path: "falco".into(),
            mode: 0o755,
            content: crate::oci::Content::Data(b"\x7fELF falco".to_vec()),
        }],
        entrypoint: vec!["/falco".into()],
        user: "0:0".into(),
        mtime: 1_700_000_000,
    })
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("images")).unwrap();
    fs::create_dir_all(d.path().join("layers/l")).unwrap();
    fs::write(d.path().join("layers/l/falco.tar"), &theirs.archive).unwrap();
    let img = d.path().join("images/t.toml");
    fs::write(
        &img,
        "schema = 1\nname = \"t\"\nversion = \"1\"\nlayers = [\"l\"]\n",
    )
    .unwrap();
    let layer = |sha: &str| {
        fs::write(
            d.path().join("layers/l/layer.toml"),
            format!(
                "schema = 1\n[[oci_images]]\nname = \"nodeimg.local/falco:0.39\"\n\
                 archive = \"falco.tar\"\nsha256 = \"{sha}\"\n"
            ),
        )
        .unwrap();
        load_plan(&img).unwrap()
    };
    let wrong = "0".repeat(64);
    let e = assemble(
        &mut Tree::new(),
        &layer(&wrong),
        &Artifacts::new(),
        &BTreeMap::new(),
    )
    .unwrap_err()
    .to_string();
    let real = crate::util::hash::sha256_hex(&theirs.archive);
    assert!(
        e.contains("nodeimg.local/falco:0.39") && e.contains(&wrong) && e.contains(&real),
        "{e}"
    );
    let mut t = Tree::new();
    assemble(&mut t, &layer(&real), &Artifacts::new(), &BTreeMap::new()).unwrap();
    let Kind::File(list) = &t.get("usr/lib/nodeimg/images.json").unwrap().kind else {
        panic!("images.json is not a file")
    };
    let list: Vec<contract::images::PreloadedImage> = serde_json::from_slice(list).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "nodeimg.local/falco:0.39");
    assert_eq!(list[0].digest, theirs.manifest_digest);
    assert!(t
        .get(&format!("usr/lib/nodeimg/images/{}", list[0].file))
        .is_some());
}
