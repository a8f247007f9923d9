//! The parser keeps the agent's old behaviour; the printer round-trips
//! every variant through it.

use super::*;

const HASH: &str = "4f1c6bd9a1e2e3b2c1d0f9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8";

fn base() -> String {
    format!(
        "BOOT_IMAGE=/vmlinuz console=ttyS0 quiet nodeimg.root=/dev/vda nodeimg.hash=/dev/vdb \
         nodeimg.roothash={HASH} nodeimg.salt=00ff nodeimg.data_blocks=2560 nodeimg.hash_start=1 \
         nodeimg.fstype=squashfs\n"
    )
}

#[test]
fn parses_the_contract() {
    let c = Cmdline::parse(&base()).unwrap();
    assert_eq!(c.verity.data, DeviceRef::Path("/dev/vda".into()));
    assert_eq!(c.verity.hash, DeviceRef::Path("/dev/vdb".into()));
    assert_eq!(c.verity.root_hash, HASH);
    assert_eq!(c.verity.salt.as_deref(), Some("00ff"));
    assert_eq!(c.verity.data_blocks, 2560);
    assert_eq!(c.verity.hash_start, 1);
    assert_eq!(c.fstype, RootFs::Squashfs);
    assert_eq!(c.state, None);
    assert!(!c.fail_health);
    assert!(!c.verify_full);
    assert_eq!(c.failure, FailurePolicy::default());
}

#[test]
fn optional_keys() {
    let raw = format!(
        "{} nodeimg.state=PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4 nodeimg.verity=full \
         nodeimg.on_failure=hang nodeimg.failure_delay=0 nodeimg.fstype=erofs",
        base().replace("nodeimg.fstype=squashfs", "")
    );
    let c = Cmdline::parse(&raw).unwrap();
    assert_eq!(
        c.state,
        Some(StateRef::Device(DeviceRef::PartUuid(
            "0fc63daf-8483-4772-8e79-3d69d8477de4".into()
        )))
    );
    assert!(c.verify_full);
    assert_eq!(c.fstype, RootFs::Erofs);
    assert_eq!(c.failure.action, FailureAction::Hang);
    assert_eq!(c.failure.delay, Duration::ZERO);
}

#[test]
fn salt_dash_means_none_and_fstype_defaults() {
    let raw = base()
        .replace("nodeimg.salt=00ff", "nodeimg.salt=-")
        .replace("nodeimg.fstype=squashfs", "");
    let c = Cmdline::parse(&raw).unwrap();
    assert_eq!(c.verity.salt, None);
    assert_eq!(c.fstype, RootFs::Squashfs);
}

#[test]
fn unknown_nodeimg_key_is_an_error_other_keys_are_not() {
    let e = Cmdline::parse(&format!("{} nodeimg.rootfs=x", base())).unwrap_err();
    assert_eq!(
        e,
        CmdlineError::UnknownKey {
            key: "nodeimg.rootfs".into()
        }
    );
    assert!(Cmdline::parse(&format!("{} foo.bar=1 ro nodeimgx=2", base())).is_ok());
}

#[test]
fn rejects_bad_values() {
    let cases = [
        ("nodeimg.roothash=", "nodeimg.roothash=abc "),
        ("nodeimg.salt=00ff", "nodeimg.salt=0g"),
        ("nodeimg.data_blocks=2560", "nodeimg.data_blocks=0"),
        ("nodeimg.data_blocks=2560", "nodeimg.data_blocks=-1"),
        ("nodeimg.root=/dev/vda", "nodeimg.root=vda"),
        ("nodeimg.root=/dev/vda", "nodeimg.root=/dev/../etc/x"),
        ("nodeimg.hash=/dev/vdb", "nodeimg.hash=PARTUUID=xyz"),
        ("nodeimg.fstype=squashfs", "nodeimg.fstype=ext4"),
    ];
    for (from, to) in cases {
        let raw = base().replace(from, to);
        assert!(Cmdline::parse(&raw).is_err(), "{to} accepted");
    }
    let e = Cmdline::parse(&format!("{} nodeimg.on_failure=explode", base())).unwrap_err();
    assert!(matches!(e, CmdlineError::BadValue { .. }), "{e:?}");
}

#[test]
fn missing_and_duplicate_keys() {
    let e = Cmdline::parse(&base().replace("nodeimg.hash_start=1", "")).unwrap_err();
    assert_eq!(e, CmdlineError::Missing { key: "hash_start" });
    let e = Cmdline::parse(&format!("{} nodeimg.root=/dev/vdc", base())).unwrap_err();
    assert_eq!(
        e,
        CmdlineError::Duplicate {
            key: "nodeimg.root".into()
        }
    );
}

#[test]
fn root_and_hash_may_be_initramfs_files() {
    let raw = base()
        .replace(
            "nodeimg.root=/dev/vda",
            "nodeimg.root=file:/nodeimg/root.img",
        )
        .replace(
            "nodeimg.hash=/dev/vdb",
            "nodeimg.hash=file:/nodeimg/root.verity",
        );
    let c = Cmdline::parse(&raw).unwrap();
    assert_eq!(c.verity.data, DeviceRef::File("/nodeimg/root.img".into()));
    assert_eq!(
        c.verity.hash,
        DeviceRef::File("/nodeimg/root.verity".into())
    );
    assert_eq!(c.verity.data.to_string(), "file:/nodeimg/root.img");
    for bad in [
        "file:",
        "file:/",
        "file:nodeimg/root.img",
        "file:/nodeimg/../etc/x",
        "file:/nodeimg/./root.img",
        "file://root.img",
        "file:/nodeimg/",
        "file:/dev/vda",
        "file:/proc/self/exe",
    ] {
        let raw = base().replace("nodeimg.root=/dev/vda", &format!("nodeimg.root={bad}"));
        assert!(Cmdline::parse(&raw).is_err(), "{bad} accepted");
    }
    // a state disk must be writable and outlive the boot: never a file
    let raw = format!("{} nodeimg.state=file:/nodeimg/state.img", base());
    assert!(Cmdline::parse(&raw).is_err());
}

#[test]
fn state_auto_and_the_health_switch() {
    let c = Cmdline::parse(&format!(
        "{} nodeimg.state=auto nodeimg.health=fail",
        base()
    ))
    .unwrap();
    assert_eq!(c.state, Some(StateRef::Auto));
    assert!(c.fail_health);
    let c = Cmdline::parse(&format!("{} nodeimg.health=ok", base())).unwrap();
    assert!(!c.fail_health);
    for bad in [
        "nodeimg.health=",
        "nodeimg.health=maybe",
        "nodeimg.state=AUTO",
        "nodeimg.state=automatic",
    ] {
        assert!(
            Cmdline::parse(&format!("{} {bad}", base())).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn quotes_group_words() {
    assert_eq!(
        words(" a=\"b c\"  d\n"),
        vec!["a=b c".to_string(), "d".to_string()]
    );
}

#[test]
fn failure_policy_survives_a_broken_cmdline() {
    let p = failure_policy("nodeimg.bogus nodeimg.on_failure=reboot nodeimg.failure_delay=7");
    assert_eq!(
        p,
        FailurePolicy {
            action: FailureAction::Reboot,
            delay: Duration::from_secs(7)
        }
    );
    let p = failure_policy("nodeimg.on_failure=nope nodeimg.failure_delay=x");
    assert_eq!(p, FailurePolicy::default());
}

/// Every variant of every key, as a full command line.
fn variants() -> Vec<Cmdline> {
    let verity = VerityArgs {
        data: DeviceRef::Path("/dev/vda".into()),
        hash: DeviceRef::Path("/dev/vdb".into()),
        root_hash: HASH.into(),
        salt: Some("00ff".into()),
        data_blocks: 2560,
        hash_start: 1,
    };
    let base = Cmdline {
        verity,
        fstype: RootFs::Squashfs,
        state: None,
        fail_health: false,
        verify_full: false,
        failure: FailurePolicy::default(),
        test_kill: None,
        config_url: None,
        test_cert_lifetime: None,
    };
    let mut out = vec![base.clone()];
    let devices = [
        DeviceRef::Path("/dev/nvme0n1p3".into()),
        DeviceRef::PartUuid("0fc63daf-8483-4772-8e79-3d69d8477de4".into()),
        DeviceRef::File("/nodeimg/root.img".into()),
    ];
    for d in &devices {
        let mut c = base.clone();
        c.verity.data = d.clone();
        c.verity.hash = d.clone();
        out.push(c);
    }
    for state in [
        StateRef::Auto,
        StateRef::Device(DeviceRef::Path("/dev/vdc".into())),
        StateRef::Device(DeviceRef::PartUuid(
            "11111111-2222-3333-4444-555555555555".into(),
        )),
    ] {
        let mut c = base.clone();
        c.state = Some(state);
        out.push(c);
    }
    for action in [
        FailureAction::PowerOff,
        FailureAction::Reboot,
        FailureAction::Hang,
    ] {
        let mut c = base.clone();
        c.failure = FailurePolicy {
            action,
            delay: Duration::from_secs(3600),
        };
        out.push(c);
    }
    let mut c = base.clone();
    c.verity.salt = None;
    c.fstype = RootFs::Erofs;
    c.fail_health = true;
    c.verify_full = true;
    c.failure.delay = Duration::ZERO;
    out.push(c);
    for (service, always) in [("containerd", false), ("etcd", true)] {
        let mut c = base.clone();
        c.test_kill = Some(TestKill {
            service: service.into(),
            always,
        });
        out.push(c);
    }
    for url in [
        format!("http://10.0.2.100/config.toml#sha256={HASH}"),
        format!("https://boot.lab:8443/nodes/w1.toml?v=2#sha256={HASH}"),
    ] {
        let mut c = base.clone();
        c.config_url = Some(ConfigUrl::parse(&url).unwrap());
        out.push(c);
    }
    out
}

#[test]
fn config_url_is_parsed_and_every_bad_one_names_the_argument() {
    let c = Cmdline::parse(&format!(
        "{} nodeimg.config=http://10.0.2.100:8080/c.toml#sha256={}",
        base(),
        HASH.to_ascii_uppercase()
    ))
    .unwrap();
    let u = c.config_url.unwrap();
    assert_eq!(
        (u.tls, u.host.as_str(), u.port()),
        (false, "10.0.2.100", 8080)
    );
    assert_eq!((u.path.as_str(), u.sha256.as_str()), ("/c.toml", HASH));
    assert_eq!(Cmdline::parse(&base()).unwrap().config_url, None);
    for bad in [
        "http://10.0.2.100/c.toml".to_string(),
        "http://10.0.2.100/c.toml#sha256=abc".to_string(),
        format!("http://10.0.2.100/c.toml#sha256={}", HASH.replace('a', "x")),
        format!("ftp://10.0.2.100/c.toml#sha256={HASH}"),
        format!("http:///c.toml#sha256={HASH}"),
        format!("http://:80/c.toml#sha256={HASH}"),
        String::new(),
    ] {
        let e = Cmdline::parse(&format!("{} nodeimg.config={bad}", base())).unwrap_err();
        assert!(matches!(e, CmdlineError::BadValue { .. }), "{bad}: {e:?}");
        assert!(e.to_string().contains("nodeimg.config"), "{bad}: {e}");
    }
    let url = format!("http://h/c#sha256={HASH}");
    let e = Cmdline::parse(&format!(
        "{} nodeimg.config={url} nodeimg.config={url}",
        base()
    ))
    .unwrap_err();
    assert_eq!(
        e,
        CmdlineError::Duplicate {
            key: "nodeimg.config".into()
        }
    );
}

#[test]
fn test_kill_values_are_checked() {
    let line = |v: &str| {
        format!("nodeimg.roothash={HASH} nodeimg.data_blocks=1 nodeimg.hash_start=1 nodeimg.root=/dev/vda nodeimg.hash=/dev/vdb nodeimg.test_kill={v}")
    };
    assert!(Cmdline::parse(&line("containerd:always")).is_ok());
    for bad in ["", "Containerd", "containerd:twice", "a/b"] {
        let e = Cmdline::parse(&line(bad)).unwrap_err();
        assert!(e.to_string().contains("test_kill"), "{bad}: {e}");
    }
}

#[test]
fn test_cert_lifetime_is_a_bounded_number_of_seconds() {
    let line = |v: &str| {
        format!("nodeimg.roothash={HASH} nodeimg.data_blocks=1 nodeimg.hash_start=1 nodeimg.root=/dev/vda nodeimg.hash=/dev/vdb nodeimg.test_cert_lifetime={v}")
    };
    let c = Cmdline::parse(&line("60")).unwrap();
    assert_eq!(c.test_cert_lifetime, Some(60));
    assert!(
        c.to_string().contains("nodeimg.test_cert_lifetime=60"),
        "{c}"
    );
    assert_eq!(Cmdline::parse(&c.to_string()).unwrap(), c);
    for bad in ["", "29", "x", "31536001"] {
        let e = Cmdline::parse(&line(bad)).unwrap_err();
        assert!(e.to_string().contains("test_cert_lifetime"), "{bad}: {e}");
    }
}

#[test]
fn every_variant_round_trips_through_the_printer() {
    for c in variants() {
        let line = c.to_string();
        assert_eq!(Cmdline::parse(&line).unwrap(), c, "{line}");
        // and again inside a line with the kernel's own words around it
        let line = format!("console=ttyS0 {line} quiet");
        assert_eq!(Cmdline::parse(&line).unwrap(), c, "{line}");
    }
}

#[test]
fn a_partial_line_round_trips_and_keeps_kernel_words() {
    let line = KernelCmdline {
        kernel: vec!["console=ttyS0,115200".into(), "ro".into(), "a=b c".into()],
        nodeimg: Args {
            root_hash: Some(HASH.into()),
            salt: Some(None),
            data_blocks: Some(3),
            hash_start: Some(1),
            fstype: Some(RootFs::Squashfs),
            ..Args::default()
        },
    };
    let text = line.to_string();
    assert_eq!(
        text,
        format!(
            "console=ttyS0,115200 ro a=\"b c\" nodeimg.roothash={HASH} nodeimg.salt=- \
             nodeimg.data_blocks=3 nodeimg.hash_start=1 nodeimg.fstype=squashfs"
        )
    );
    assert_eq!(KernelCmdline::parse(&text).unwrap(), line);
    // without devices the agent refuses it, naming the first missing key
    assert_eq!(
        Cmdline::parse(&text).unwrap_err(),
        CmdlineError::Missing { key: "root" }
    );
}

#[test]
fn extend_adds_devices_and_refuses_a_key_twice() {
    let mut line = KernelCmdline::parse(&format!(
        "quiet nodeimg.roothash={HASH} nodeimg.data_blocks=3 nodeimg.hash_start=1"
    ))
    .unwrap();
    line.extend(KernelCmdline {
        kernel: vec!["panic=-1".into()],
        nodeimg: Args {
            root: Some(DeviceRef::File("/nodeimg/root.img".into())),
            hash: Some(DeviceRef::File("/nodeimg/root.verity".into())),
            ..Args::default()
        },
    })
    .unwrap();
    assert_eq!(
        line.to_string(),
        format!(
            "quiet panic=-1 nodeimg.roothash={HASH} nodeimg.data_blocks=3 nodeimg.hash_start=1 \
             nodeimg.root=file:/nodeimg/root.img nodeimg.hash=file:/nodeimg/root.verity"
        )
    );
    let c = Cmdline::parse(&line.to_string()).unwrap();
    assert_eq!(c.verity.data, DeviceRef::File("/nodeimg/root.img".into()));
    let again = line.extend(KernelCmdline::parse("nodeimg.root=/dev/vda").unwrap());
    assert_eq!(
        again.unwrap_err(),
        CmdlineError::Duplicate {
            key: "nodeimg.root".into()
        }
    );
}

#[test]
fn every_key_is_printed_by_the_full_form() {
    let line = variants()[4].to_string(); // the first with a state disk
                                          // test_kill is a testing switch and config a URL only some nodes
                                          // have: absent unless set
    for key in KEYS
        .iter()
        .filter(|k| !["test_kill", "config", "test_cert_lifetime"].contains(*k))
    {
        assert!(line.contains(&format!("nodeimg.{key}=")), "{key}: {line}");
    }
}
