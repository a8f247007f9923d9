//! The KVM probe's verdicts against fake QEMUs (shell scripts that act out
//! a working KVM, the PVM-style hang, and a refusal). Real KVM cannot be
//! made to hang or work on demand; the lab's boot tests run real QEMU.

use std::os::unix::fs::PermissionsExt;

use super::*;

/// A fake QEMU that finds `-serial file:PATH` and then runs `body` with
/// `$log` set to PATH.
fn fake_qemu(dir: &Path, body: &str) -> std::path::PathBuf {
    let script = format!(
        "#!/bin/sh\n\
         [ \"$1\" = --noop ] && exit 0\n\
         prev=\n\
         for a in \"$@\"; do [ \"$prev\" = -serial ] && log=\"${{a#file:}}\"; prev=\"$a\"; done\n\
         {body}\n"
    );
    let path = dir.join("fake-qemu");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    // ETXTBSY while another test thread's fork still holds the file open.
    for _ in 0..100 {
        match Command::new(&path).arg("--noop").status() {
            Ok(s) if s.success() => return path,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("fake qemu at {} never ran", path.display());
}

#[test]
fn a_kernel_banner_on_the_console_means_kvm_works() {
    let dir = tempfile::tempdir().unwrap();
    let qemu = fake_qemu(
        dir.path(),
        "sleep 0.2; echo '[    0.000000] Linux version 6.12.0' >> \"$log\"; sleep 30",
    );
    let start = Instant::now();
    assert_eq!(
        kernel_banner(&qemu, Path::new("vmlinuz"), Duration::from_secs(10)),
        Ok(())
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "waited past the banner"
    );
}

#[test]
fn firmware_output_then_a_kvm_internal_error_is_refused_at_once() {
    // The hang this probe exists for: SeaBIOS prints, the kernel never does.
    let dir = tempfile::tempdir().unwrap();
    let qemu = fake_qemu(
        dir.path(),
        "echo 'Booting from ROM..' >> \"$log\"; \
         echo 'KVM internal error. Suberror: 1' >&2; sleep 30",
    );
    let start = Instant::now();
    assert_eq!(
        kernel_banner(&qemu, Path::new("vmlinuz"), Duration::from_secs(10)),
        Err("KVM internal error")
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "did not stop early"
    );
}

#[test]
fn silence_is_bounded_by_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let qemu = fake_qemu(
        dir.path(),
        "echo 'Booting from ROM..' >> \"$log\"; sleep 30",
    );
    let start = Instant::now();
    assert_eq!(
        kernel_banner(&qemu, Path::new("vmlinuz"), Duration::from_millis(500)),
        Err("no kernel output in time")
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the fake was not killed"
    );
}

#[test]
fn a_qemu_that_exits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let qemu = fake_qemu(dir.path(), "exit 1");
    assert_eq!(
        kernel_banner(&qemu, Path::new("vmlinuz"), Duration::from_secs(10)),
        Err("QEMU exited (KVM refused)")
    );
}
