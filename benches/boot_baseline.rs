//! `cargo bench --bench boot_baseline -- DIR [RUNS]`: in one run, boots the
//! built image in DIR through the lab (PVH vmlinux, TCG) to its report, and
//! the same kernel with a minimal initramfs whose `/init` only powers off.
//! The difference is what nodeagent's boot adds. Prints a markdown table.

use std::path::Path;
use std::time::{Duration, Instant};

use nodeimg::boot::{extract_vmlinux, initramfs};
use nodeimg::lab::{self, BootOptions, Disk, Vm, VmBoot, VmConfig};
use nodeimg::manifest::Manifest;

/// A 144-byte static x86-64 ELF: `reboot(LINUX_REBOOT_CMD_POWER_OFF)`.
/// Hand-assembled so the baseline has no runtime at all to start.
fn poweroff_elf() -> Vec<u8> {
    let code: [u8; 24] = [
        0xbf, 0xad, 0xde, 0xe1, 0xfe, // mov edi, 0xfee1dead (magic 1)
        0xbe, 0x69, 0x19, 0x12, 0x28, // mov esi, 0x28121969 (magic 2)
        0xba, 0xdc, 0xfe, 0x21, 0x43, // mov edx, 0x4321fedc (POWER_OFF)
        0xb8, 0xa9, 0x00, 0x00, 0x00, // mov eax, 169 (reboot)
        0x0f, 0x05, // syscall
        0xeb, 0xfe, // jmp . (not reached)
    ];
    let base: u64 = 0x40_0000;
    let size = (64 + 56 + code.len()) as u64;
    let mut e = Vec::new();
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(base + 120).to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 0, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    e.extend_from_slice(&0u64.to_le_bytes());
    e.extend_from_slice(&base.to_le_bytes());
    e.extend_from_slice(&base.to_le_bytes());
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&0x1000u64.to_le_bytes());
    e.extend_from_slice(&code);
    e
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("error: {what}: {e}");
    std::process::exit(1);
}

/// Milliseconds from QEMU start until the minimal guest powers QEMU off.
fn baseline_ms(vmlinux: &Path, initrd: &Path, cmdline: &str, work: &Path) -> u64 {
    let config = VmConfig {
        qemu: BootOptions::default().qemu,
        accel: lab::Resolved::Tcg,
        cpus: 1,
        memory_mib: BootOptions::default().memory_mib,
        boot: VmBoot::Kernel {
            kernel: vmlinux.to_path_buf(),
            initrd: initrd.to_path_buf(),
            append: cmdline.to_string(),
            reboot: false,
        },
        disks: Vec::<Disk>::new(),
        serial_log: work.join("baseline-serial.log"),
        qmp_socket: work.join("baseline-qmp.sock"),
        qemu_log: work.join("baseline-qemu.log"),
        fw_cfg: Vec::new(),
        nic: None,
        tap: None,
        rtc_base: None,
    };
    let mut vm = Vm::spawn(&config).unwrap_or_else(|e| fail("starting the baseline VM", e));
    let started = vm.started();
    // The guest prints no marker: it powers off, and QEMU exits.
    match vm.wait_for(
        "never-printed-marker",
        Instant::now() + Duration::from_secs(120),
    ) {
        Err(lab::LabError::Exited { .. }) => started.elapsed().as_millis() as u64,
        Err(e) => fail("baseline VM", e),
        Ok(_) => fail("baseline VM", "printed the impossible marker"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(dir) = args.first().map(Path::new) else {
        eprintln!("usage: cargo bench --bench boot_baseline -- DIR [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
    let manifest = Manifest::read(dir).unwrap_or_else(|e| fail("reading the manifest", e));
    let arts = lab::boot_artifacts(dir, &manifest).unwrap_or_else(|e| fail("artifacts", e));
    let work = tempfile::tempdir().unwrap_or_else(|e| fail("scratch dir", e));
    let bz = std::fs::read(&arts.kernel).unwrap_or_else(|e| fail("kernel", e));
    let vmlinux = work.path().join("vmlinux");
    std::fs::write(
        &vmlinux,
        extract_vmlinux(&bz).unwrap_or_else(|e| fail("vmlinux", e)),
    )
    .unwrap_or_else(|e| fail("vmlinux", e));
    let initrd = work.path().join("poweroff.img");
    let tiny =
        initramfs::build(&poweroff_elf(), &[], "", 0).unwrap_or_else(|e| fail("initramfs", e));
    std::fs::write(&initrd, tiny).unwrap_or_else(|e| fail("initramfs", e));
    let cmdline = lab::lab_cmdline(&arts.cmdline, &[]).unwrap_or_else(|e| fail("cmdline", e));

    // A formatted state disk, so runs measure a steady-state boot, not mke2fs.
    let state = work.path().join("state.img");
    let opts = BootOptions {
        state: Some(state),
        accel: lab::Accel::Tcg,
        ..BootOptions::default()
    };
    let first = lab::boot_direct(dir, &manifest, &opts).unwrap_or_else(|e| fail("first boot", e));
    if !first.ready() {
        fail("first boot", first.report.report.line());
    }
    let mut base = Vec::new();
    let mut agent = Vec::new();
    for _ in 0..runs {
        base.push(baseline_ms(&vmlinux, &initrd, &cmdline, work.path()));
        let out = lab::boot_direct(dir, &manifest, &opts).unwrap_or_else(|e| fail("boot", e));
        if !out.ready() {
            fail("boot", out.report.report.line());
        }
        agent.push(out.report.boot_ms);
    }
    base.sort_unstable();
    agent.sort_unstable();
    let (b, a) = (base[base.len() / 2], agent[agent.len() / 2]);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    eprintln!("baseline runs {base:?} ms; nodeagent runs {agent:?} ms");
    println!(
        "| kernel + minimal initramfs that powers off (median of {runs}) | {:.2} s |",
        b as f64 / 1000.0
    );
    println!("| kernel + nodeimg initramfs to `ready` report, verified root (median of {runs}) | {:.2} s |", a as f64 / 1000.0);
    println!(
        "| what nodeagent's boot adds [< 2 s] | {:.2} s |",
        a.saturating_sub(b) as f64 / 1000.0
    );
    println!(
        "| initramfs (zstd) | {} KiB |",
        size(&arts.initramfs) / 1024
    );
}
