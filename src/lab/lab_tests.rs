//! `boot_direct` against a fake `qemu-system-x86_64` (a shell script that
//! writes to the serial log QEMU was given, then sleeps or exits): the
//! waits, the bounds, the kill and the kept evidence, without QEMU.

use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use super::*;
use crate::manifest::{Artifact, BootRecord};
use crate::util::hash::sha256_hex;

/// Writes a fake QEMU whose console prints `console` and then runs `then`.
fn fake_qemu(dir: &Path, console: &str, then: &str) -> PathBuf {
    let script = format!(
        "#!/bin/sh\n\
         [ \"$1\" = --noop ] && exit 0\n\
         for a in \"$@\"; do case \"$a\" in file,id=serial0,path=*) log=\"${{a#file,id=serial0,path=}}\"; log=\"${{log%,append=on}}\";; esac; done\n\
         printf '%b' '{console}' >> \"$log\"\n\
         {then}\n"
    );
    let path = dir.join("fake-qemu");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another test thread may fork while the file was open for writing
    // (ETXTBSY until that child execs): wait until it runs.
    for _ in 0..100 {
        match std::process::Command::new(&path).arg("--noop").status() {
            Ok(s) if s.success() => return path,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("fake qemu at {} never ran", path.display());
}

fn build_dir(dir: &Path) -> Manifest {
    let mut artifacts = Vec::new();
    for kind in artifacts::KINDS {
        let data = format!("fake {kind}");
        std::fs::write(dir.join(kind), &data).unwrap();
        artifacts.push(Artifact {
            kind: kind.into(),
            path: kind.into(),
            sha256: sha256_hex(data.as_bytes()),
            size: data.len() as u64,
        });
    }
    let mut m = Manifest::sample(artifacts);
    m.boot = Some(BootRecord {
        kernel_version: "6.12.0".into(),
        kernel_arch: "x86_64".into(),
        kernel_signed: true,
        cmdline: "quiet".into(),
        initramfs_modules: Vec::new(),
        root_modules: Vec::new(),
        uefi_modules: Vec::new(),
        deferred_modules: Vec::new(),
    });
    m
}

fn opts(qemu: PathBuf, work: &Path) -> BootOptions {
    BootOptions {
        timeout: Duration::from_secs(20),
        bzimage: true, // The fake kernel has no payload to unpack.
        accel: Accel::Tcg,
        shutdown_timeout: Duration::from_millis(300),
        work_dir: Some(work.to_path_buf()),
        qemu,
        ..BootOptions::default()
    }
}

#[test]
fn report_line_is_parsed_timed_and_the_vm_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = build_dir(dir.path());
    let console =
        "[    1.0] kernel noise\\r\\nNODEIMG-REPORT {\"ready\":true,\"kernel\":\"6.12\"}\\r\\n";
    let qemu = fake_qemu(dir.path(), console, "exec sleep 60");
    let work = dir.path().join("run");
    let start = Instant::now();
    let out = boot_direct(dir.path(), &manifest, &opts(qemu, &work)).unwrap();
    assert!(out.ready());
    assert_eq!(out.report.report.kernel, "6.12");
    assert!(out.report.boot_ms < 20_000);
    // No QMP socket: the power button fails, the bound passes, QEMU is killed.
    assert_eq!(out.shutdown, Shutdown::Killed);
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(std::fs::read_to_string(&out.serial_log)
        .unwrap()
        .contains("kernel noise"));
    // The state disk was created sparse in the run directory.
    assert_eq!(
        std::fs::metadata(work.join("state.img")).unwrap().len(),
        1 << 30
    );
}

#[test]
fn a_vm_that_exits_or_stays_silent_is_an_error_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = build_dir(dir.path());
    let qemu = fake_qemu(dir.path(), "Kernel panic - not syncing\\n", "exit 0");
    let err = boot_direct(dir.path(), &manifest, &opts(qemu, &dir.path().join("a"))).unwrap_err();
    assert!(matches!(err, LabError::Exited { .. }), "{err}");
    let log = std::fs::read_to_string(err.serial_log().unwrap()).unwrap();
    assert!(log.contains("Kernel panic"));

    let qemu = fake_qemu(dir.path(), "nothing\\n", "exec sleep 60");
    let mut o = opts(qemu, &dir.path().join("b"));
    o.timeout = Duration::from_millis(500);
    let start = Instant::now();
    let err = boot_direct(dir.path(), &manifest, &o).unwrap_err();
    assert!(matches!(err, LabError::Timeout { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the timeout was not a bound"
    );

    let qemu = fake_qemu(dir.path(), "NODEIMG-REPORT [1,2]\\n", "exec sleep 60");
    let err = boot_direct(dir.path(), &manifest, &opts(qemu, &dir.path().join("c"))).unwrap_err();
    assert!(matches!(err, LabError::BadReport { .. }), "{err}");
}
