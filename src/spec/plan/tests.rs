use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("images")).unwrap();
        Fixture { dir }
    }
    fn image(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("images/test.toml");
        fs::write(&p, text).unwrap();
        p
    }
    fn layer(&self, name: &str, text: &str) {
        let d = self.dir.path().join("layers").join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("layer.toml"), text).unwrap();
    }
}

const IMAGE: &str = "schema = 1\nname = \"test\"\nversion = \"1\"\nlayers = [\"a\", \"b\"]\n";

fn err(f: &Fixture, image: &str) -> String {
    let e = load_plan(&f.image(image)).unwrap_err();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

#[test]
fn layers_merge_in_order() {
    let f = Fixture::new();
    f.layer(
        "a",
        r#"schema = 1
packages.include = ["libc6", "containerd (>= 1.7)"]
remove = ["/usr/share/doc"]
[[files]]
path = "/etc/x"
content = "a"
[sysctl]
"kernel.panic" = { value = "5", reason = "r" }
"#,
    );
    f.layer(
        "b",
        r#"schema = 1
packages.exclude = ["perl-base"]
[[files]]
path = "etc/x"
content = "b"
mode = "0600"
[sysctl]
"kernel.panic" = { value = "10", reason = "kubelet wants it" }
"#,
    );
    let p = load_plan(&f.image(IMAGE)).unwrap();
    assert_eq!(
        p.packages.iter().collect::<Vec<_>>(),
        ["containerd (>= 1.7)", "libc6"]
    );
    assert!(p.excludes.contains("perl-base"));
    assert_eq!(p.remove, ["usr/share/doc"]);
    let x = &p.files["etc/x"];
    assert_eq!(
        (x.content.clone(), x.mode, x.layer.as_str()),
        (FileContent::Data(b"b".to_vec()), 0o600, "b")
    );
    assert_eq!(p.sysctl["kernel.panic"].0.value, "10");
    assert_eq!(p.debian.suite, "trixie");
}

#[test]
fn unknown_key_names_file_and_key() {
    let f = Fixture::new();
    f.layer("a", "schema = 1\npackagez = 1\n");
    f.layer("b", "schema = 1\n");
    let e = err(&f, IMAGE);
    assert!(e.contains("layers/a/layer.toml"), "{e}");
    assert!(e.contains("packagez"), "{e}");
}

#[test]
fn malformed_toml_names_line() {
    let f = Fixture::new();
    let e = err(&f, "schema = 1\nname = \"x\nversion = 1\n");
    assert!(e.contains("images/test.toml"), "{e}");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn unknown_layer() {
    let f = Fixture::new();
    f.layer("a", "schema = 1\n");
    let e = err(&f, IMAGE);
    assert!(e.contains("unknown layer `b`"), "{e}");
}

#[test]
fn bad_values_are_named() {
    let f = Fixture::new();
    f.layer("b", "schema = 1\n");
    for (layer, needle) in [
        ("schema = 2\n", "schema = 2"),
        ("schema = 1\nremove = [\"../etc\"]\n", "remove[0]"),
        (
            "schema = 1\n[[files]]\npath = \"/x\"\ncontent = \"a\"\nmode = \"999\"\n",
            "files[0].mode",
        ),
        ("schema = 1\n[[files]]\npath = \"/x\"\n", "files[0]"),
        (
            "schema = 1\npackages.include = [\"Bad Name\"]\n",
            "packages.include[0]",
        ),
        (
            "schema = 1\n[sysctl]\n\"a b\" = { value = \"1\", reason = \"r\" }\n",
            "sysctl",
        ),
        (
            "schema = 1\n[sysctl]\n\"a.b\" = { value = \"1\", reason = \" \" }\n",
            "reason",
        ),
    ] {
        f.layer("a", layer);
        let e = err(&f, IMAGE);
        assert!(e.contains(needle), "{layer:?}: {e}");
    }
    assert!(err(
        &f,
        "schema = 1\nname = \"t\"\nversion = \"1\"\narch = \"arm64\"\nlayers = [\"b\"]\n"
    )
    .contains("arch"));
    assert!(err(
        &f,
        "schema = 1\nname = \"t\"\nversion = \"1\"\nlayers = [\"b\", \"b\"]\n"
    )
    .contains("twice"));
}

#[test]
fn debian_pockets_default_to_updates_and_security_and_are_checked() {
    let f = Fixture::new();
    f.layer("b", "schema = 1\n");
    let head = "schema = 1\nname = \"t\"\nversion = \"1\"\nlayers = [\"b\"]\n";
    let suites = |image: &str| {
        let p = load_plan(&f.image(image)).unwrap();
        p.debian
            .suites()
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        suites(head),
        ["trixie", "trixie-updates", "trixie-security"]
    );
    // listed order does not matter; `[]` is the base suite alone
    let image =
        format!("{head}[debian]\nsuite = \"forky\"\npockets = [\"security\", \"updates\"]\n");
    assert_eq!(suites(&image), ["forky", "forky-updates", "forky-security"]);
    assert_eq!(
        suites(&format!("{head}[debian]\npockets = []\n")),
        ["trixie"]
    );
    assert_eq!(
        suites(&format!("{head}[debian]\npockets = [\"security\"]\n")),
        ["trixie", "trixie-security"]
    );

    for (debian, needles) in [
        (
            "pockets = [\"backports\"]",
            &["images/test.toml", "pockets", "unknown pocket `backports`"][..],
        ),
        (
            "pockets = [\"updates\", \"updates\"]",
            &[
                "images/test.toml",
                "`debian.pockets`",
                "`updates` is listed twice",
            ],
        ),
        (
            "suite = \"trixie-security\"",
            &["`debian.suite`", "is a pocket"],
        ),
        ("suite = \"../x\"", &["`debian.suite`", "not a suite name"]),
    ] {
        let e = err(&f, &format!("{head}[debian]\n{debian}\n"));
        for n in needles {
            assert!(e.contains(n), "{debian}: {n:?} not in {e}");
        }
    }
}

#[test]
fn oci_images_pack_build_products_and_recipe_programs() {
    let f = Fixture::new();
    let recipe = f.dir.path().join("recipes/dns");
    fs::create_dir_all(&recipe).unwrap();
    fs::write(
        recipe.join("recipe.toml"),
        "schema = 1\ngo = \"go1.26.8\"\nmodule = \"example.com/dns\"\nversion = \"v1.0.0\"\n\
         [programs]\ndns = \"example.com/dns\"\n",
    )
    .unwrap();
    fs::write(
        recipe.join("go.mod"),
        "module x\n\nrequire example.com/dns v1.0.0\n",
    )
    .unwrap();
    fs::write(recipe.join("go.sum"), "").unwrap();
    let image = |binary: &str| {
        format!(
            "schema = 1\n[[oci_images]]\nname = \"nodeimg.local/{}:1\"\nbinary = \"{binary}\"\n\
             entrypoint = [\"/x\"]\nuser = \"65532:65532\"\n",
            binary.replace('/', "-")
        )
    };
    f.layer("b", &image("pause"));
    f.layer("a", &image("dns/dns"));
    let plan = load_plan(&f.image(IMAGE)).unwrap();
    assert_eq!(plan.oci_images.len(), 2);
    let programs = plan.recipe_programs();
    assert_eq!(programs.len(), 1);
    assert!(programs["dns"].contains("dns"));
    f.layer("a", &image("dns/nope"));
    let e = err(&f, IMAGE);
    assert!(
        e.contains("oci_images[0].binary") && e.contains("no program `nope`"),
        "{e}"
    );
    f.layer("a", &image("nothing"));
    let e = err(&f, IMAGE);
    assert!(
        e.contains("oci_images[0].binary") && e.contains("unknown build artifact"),
        "{e}"
    );
    f.layer("a", &(image("dns/dns") + "digest = \"sha256:ABC\"\n"));
    let e = err(&f, IMAGE);
    assert!(
        e.contains("oci_images[0].digest") && e.contains("64 lowercase hex"),
        "{e}"
    );
}

/// An OCI archive a user brings: pinned by its sha256, held by the plan
/// at its path beside the layer, and never mixed with a packed image's
/// keys.
#[test]
fn a_brought_archive_is_pinned_and_found_beside_its_layer() {
    let f = Fixture::new();
    let hex = "ab".repeat(32);
    let archive = |extra: &str| {
        format!(
            "schema = 1\n[[oci_images]]\nname = \"nodeimg.local/falco:0.39\"\n\
             archive = \"falco.tar\"\n{extra}"
        )
    };
    f.layer("b", "schema = 1\n");
    f.layer("a", &archive(&format!("sha256 = \"{hex}\"\n")));
    let plan = load_plan(&f.image(IMAGE)).unwrap();
    let img = &plan.oci_images["nodeimg.local/falco:0.39"];
    assert!(
        img.archive
            .as_ref()
            .is_some_and(|p| p.ends_with("layers/a/falco.tar")),
        "{img:?}"
    );
    assert!(plan.recipe_programs().is_empty());
    for (extra, key, says) in [
        ("", "oci_images[0].sha256", "must be pinned"),
        (
            "sha256 = \"ABC\"\n",
            "oci_images[0].sha256",
            "must be pinned",
        ),
        (
            &format!("sha256 = \"{hex}\"\nuser = \"0:0\"\n"),
            "oci_images[0]",
            "belong to an image packed",
        ),
        (
            &format!("sha256 = \"{hex}\"\nbinary = \"pause\"\n"),
            "oci_images[0]",
            "either `binary`",
        ),
    ] {
        f.layer("a", &archive(extra));
        let e = err(&f, IMAGE);
        assert!(e.contains(key) && e.contains(says), "{extra}: {e}");
    }
}

/// Both Kubernetes images preload the images the security stack's
/// objects name (contract::stack), from a recipe the repo holds.
#[test]
fn the_kubernetes_images_preload_what_the_stack_runs() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for image in ["k8s-control-plane", "k8s-worker"] {
        let plan = load_plan(&repo.join(format!("images/{image}.toml"))).unwrap();
        let img = plan
            .oci_images
            .get(contract::stack::NETWORK_POLICY_IMAGE)
            .unwrap_or_else(|| panic!("{image} does not preload the NetworkPolicy engine"));
        assert!(plan.recipe_programs().contains_key("kube-network-policies"));
        let dns = plan
            .oci_images
            .get(contract::stack::DNS_IMAGE)
            .unwrap_or_else(|| panic!("{image} does not preload CoreDNS"));
        // the digests the stack's pods name are the ones the build checks
        assert_eq!(
            img.digest.as_deref(),
            Some(contract::stack::NETWORK_POLICY_DIGEST)
        );
        assert_eq!(dns.digest.as_deref(), Some(contract::stack::DNS_DIGEST));
        assert!(plan.recipe_programs().contains_key("coredns"));
        assert!(img
            .binary
            .as_deref()
            .is_some_and(|b| b.starts_with("kube-network-policies/")));
        for m in ["nft_queue", "nfnetlink_queue"] {
            assert!(plan.deferred_modules.contains(m), "{image}: {m}");
        }
    }
}

/// containerd's `sandbox_image`, the image the containerd layer packs and
/// the one nodeagent runs its confinement probe with are one name.
#[test]
fn the_sandbox_image_is_one_name_everywhere() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = fs::read_to_string(repo.join("layers/containerd/config.toml")).unwrap();
    let want = format!("sandbox_image = \"{}\"", contract::images::SANDBOX_IMAGE);
    assert!(
        config.contains(&want),
        "layers/containerd/config.toml: no {want}"
    );
    let plan = load_plan(&repo.join("images/worker.toml")).unwrap();
    let img = &plan.oci_images[contract::images::SANDBOX_IMAGE];
    assert_eq!(img.binary.as_deref(), Some("pause"));
}
