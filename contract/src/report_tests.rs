//! The report's JSON shape, and that what the agent prints the lab reads back.

use super::*;

#[test]
fn ready_report_shape() {
    let mut r = Report::new("6.12.117+deb13-amd64".into(), "console=ttyS0".into());
    r.ready = true;
    r.pid1 = Some("/usr/sbin/nodeagent".into());
    r.root = RootReport {
        device: Some("/dev/mapper/nodeimg-root".into()),
        fstype: Some("squashfs".into()),
        read_only: Some(true),
        verity: VerityState::Verified,
    };
    r.sysctl.insert("kernel.panic".into(), "10".into());
    r.var = Some("tmpfs".into());
    r.stage_ms.insert("report".into(), 5000);
    let line = r.line();
    let json = line.strip_prefix(REPORT_PREFIX).unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["root"]["verity"], "verified");
    assert_eq!(v["root"]["read_only"], true);
    assert_eq!(v["sysctl"]["kernel.panic"], "10");
    assert_eq!(v["var"], "tmpfs");
    assert!(v.get("error").is_none());
    assert!(v.get("warnings").is_none());
    assert!(v.get("boot_entry").is_none());
    assert!(!line.contains('\n'));
}

#[test]
fn state_and_boot_entry_shape() {
    let mut r = Report::new("k".into(), "c".into());
    r.state = Some(StateReport {
        device: "/dev/vda6".into(),
        partition: Some("/dev/vda6".into()),
        disk: Some("/dev/vda".into()),
        created: true,
        grown_from_bytes: None,
        size_bytes: 1 << 30,
        formatted: true,
        resized: false,
        boot_count: 1,
    });
    r.boot_entry = Some(BootEntryReport {
        path: Some("\\EFI\\Linux\\worker-0.1.0+2-1.efi".into()),
        blessed: true,
        note: "renamed to worker-0.1.0.efi".into(),
    });
    r.warnings.push("bless-boot: x".into());
    let v: serde_json::Value =
        serde_json::from_str(r.line().strip_prefix(REPORT_PREFIX).unwrap()).unwrap();
    assert_eq!(v["state"]["partition"], "/dev/vda6");
    assert_eq!(v["state"]["created"], true);
    assert_eq!(v["state"]["size_bytes"], 1u64 << 30);
    assert!(v["state"].get("grown_from_bytes").is_none());
    assert_eq!(
        v["boot_entry"]["path"],
        "\\EFI\\Linux\\worker-0.1.0+2-1.efi"
    );
    assert_eq!(v["boot_entry"]["blessed"], true);
    assert_eq!(v["warnings"][0], "bless-boot: x");
    let mut none = BootEntryReport {
        path: None,
        blessed: false,
        note: "n".into(),
    };
    none.blessed = false;
    let j = serde_json::to_value(&none).unwrap();
    assert!(j["path"].is_null());
}

#[test]
fn failure_report_shape() {
    let mut r = Report::new("k".into(), "c".into());
    r.error = Some("mount-root: verity corrupted".into());
    r.root.verity = VerityState::Corrupted;
    let v: serde_json::Value =
        serde_json::from_str(r.line().strip_prefix(REPORT_PREFIX).unwrap()).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["root"]["verity"], "corrupted");
    assert!(v["error"].as_str().unwrap().contains("verity"));
}

#[test]
fn error_line_is_one_line() {
    assert_eq!(error_line("sysctl", "a\nb"), "NODEIMG-ERROR sysctl: a b");
    assert_eq!(
        warn_line("bless-boot: a\rb"),
        "NODEIMG-WARN bless-boot: a b"
    );
}

#[test]
fn a_full_report_round_trips() {
    let mut r = Report::new("6.12.117+deb13-amd64".into(), "console=ttyS0".into());
    r.ready = true;
    r.pid1 = Some("/usr/sbin/nodeagent".into());
    r.root = RootReport {
        device: Some("/dev/mapper/nodeimg-root".into()),
        fstype: Some("squashfs".into()),
        read_only: Some(true),
        verity: VerityState::Verified,
    };
    r.sysctl.insert("kernel.panic".into(), "10".into());
    r.modules = vec!["ext4".into(), "vfat".into()];
    r.var = Some("ext4".into());
    r.state = Some(StateReport {
        device: "/dev/vda6".into(),
        partition: Some("/dev/vda6".into()),
        disk: Some("/dev/vda".into()),
        created: false,
        grown_from_bytes: Some(1 << 29),
        size_bytes: 1 << 30,
        formatted: false,
        resized: true,
        boot_count: 7,
    });
    r.hostname = Some("node-1".into());
    r.loopback = Some(true);
    r.boot_entry = Some(BootEntryReport {
        path: None,
        blessed: false,
        note: "no boot counting".into(),
    });
    r.warnings.push("bless-boot: x".into());
    r.update_key = Some(format!("sha256:{}", "ab".repeat(32)));
    r.stage_ms.insert("stage1_start".into(), 900);
    r.stage_ms.insert("report".into(), 5000);
    let line = r.line();
    assert_eq!(Report::parse_line(&line).unwrap(), r);
    assert_eq!(Report::parse_line(&format!("{line}\r\n")).unwrap(), r);

    let mut failed = Report::new("k".into(), "c".into());
    failed.error = Some("mount-root: verity corrupted".into());
    failed.root.verity = VerityState::Corrupted;
    assert_eq!(Report::parse_line(&failed.line()).unwrap(), failed);
}

#[test]
fn a_sparse_or_newer_report_still_reads() {
    let r = Report::parse_line("NODEIMG-REPORT {\"ready\":true,\"kernel\":\"6.12\",\"new\":1}")
        .unwrap();
    assert!(r.ready);
    assert_eq!(r.kernel, "6.12");
    assert_eq!(r.root.verity, VerityState::None);
    assert!(matches!(
        Report::parse_line("NODEIMG-REPORT [1,2]"),
        Err(ReportError::Json(_))
    ));
    assert!(matches!(
        Report::parse_line("NODEIMG-ERROR x: y"),
        Err(ReportError::NoPrefix)
    ));
}

#[test]
fn time_section_shape_and_round_trip() {
    let mut r = Report::new("k".into(), "c".into());
    assert!(!r.line().contains("\"time\""), "absent without a server");
    r.time = Some(TimeReport {
        synchronised: true,
        source: "config".into(),
        servers: vec!["10.77.0.1".into()],
        server: Some("10.77.0.1".into()),
        offset_ms: Some(788_918_400_124),
        method: Some("step".into()),
        stratum: Some(1),
        delay_us: Some(2_500),
        synced_at_unix_ms: Some(1_767_225_600_000),
        synced_at_ms: Some(9_500),
        sync_ms: Some(24),
        error: None,
    });
    let line = r.line();
    let v: serde_json::Value =
        serde_json::from_str(line.strip_prefix(REPORT_PREFIX).unwrap()).unwrap();
    assert_eq!(v["time"]["synchronised"], true);
    assert_eq!(v["time"]["offset_ms"], 788_918_400_124i64);
    assert_eq!(v["time"]["server"], "10.77.0.1");
    assert!(v["time"].get("error").is_none());
    assert_eq!(Report::parse_line(&line).unwrap(), r);
    // an interface's DHCP NTP servers are listed only when there are some
    let i: InterfaceReport =
        serde_json::from_str(r#"{"name":"eth0","addresses":[],"ntp":["10.0.2.4"]}"#).unwrap();
    assert_eq!(i.ntp, vec![std::net::Ipv4Addr::new(10, 0, 2, 4)]);
    let none: InterfaceReport = serde_json::from_str(r#"{"name":"eth0","addresses":[]}"#).unwrap();
    assert!(!serde_json::to_string(&none).unwrap().contains("ntp"));
}
