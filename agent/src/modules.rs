//! Kernel modules: parse a `modules.order` (one absolute path per line, already
//! in dependency order: the builder resolved `depends=` and `softdep`), load each
//! with `finit_module`, and read `/proc/modules` for the report. There is no
//! modprobe and no modules.dep in an image; this file never resolves anything.

use std::path::{Path, PathBuf};

use crate::sys::{Files, Loaded, Modules};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("read module list {path}")]
    ReadList {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: module path must be absolute, got {text:?}")]
    NotAbsolute {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("load {module}")]
    Load {
        module: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Paths in a modules.order text; blank lines and `#` comments are skipped.
pub fn parse_order(list: &Path, text: &str) -> Result<Vec<PathBuf>, ModuleError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if !t.starts_with('/') {
            return Err(ModuleError::NotAbsolute {
                path: list.into(),
                line: i + 1,
                text: t.into(),
            });
        }
        out.push(PathBuf::from(t));
    }
    Ok(out)
}

/// What one list load did, for progress output.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadSummary {
    pub loaded: usize,
    pub already: usize,
    /// Drivers for hardware the machine lacks (ENODEV), by file name.
    pub no_device: Vec<String>,
    /// The slowest load (file name, ms): module loading dominates TCG boot time.
    pub slowest: Option<(String, u64)>,
}

impl std::fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} loaded, {} present", self.loaded, self.already)?;
        if !self.no_device.is_empty() {
            write!(f, ", no hardware for {}", self.no_device.join(" "))?;
        }
        if let Some((name, ms)) = &self.slowest {
            write!(f, ", slowest {name} {ms} ms")?;
        }
        Ok(())
    }
}

/// Loads every module of `list`, in order, stopping at the first failure.
/// A missing list is an error unless `optional`.
pub fn load_list<S: Files + Modules>(
    sys: &mut S,
    list: &Path,
    optional: bool,
) -> Result<LoadSummary, ModuleError> {
    let text = match sys.read(list) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LoadSummary::default())
        }
        Err(source) => {
            return Err(ModuleError::ReadList {
                path: list.into(),
                source,
            })
        }
    };
    let mut sum = LoadSummary::default();
    for module in parse_order(list, &text)? {
        let t = crate::sys::uptime_ms();
        match sys.load(&module) {
            Ok(Loaded::New) => sum.loaded += 1,
            Ok(Loaded::Already) => sum.already += 1,
            Ok(Loaded::NoDevice) => sum.no_device.push(
                module
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            Err(source) => return Err(ModuleError::Load { module, source }),
        }
        let ms = crate::sys::uptime_ms().saturating_sub(t);
        if sum.slowest.as_ref().is_none_or(|(_, max)| ms > *max) {
            let name = module
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            sum.slowest = Some((name, ms));
        }
    }
    Ok(sum)
}

/// Module names from `/proc/modules` (first column), sorted.
/// Where the kernel takes the one-way switch that ends module loading.
const MODULES_DISABLED: &str = "/proc/sys/kernel/modules_disabled";

/// Disables module loading for the rest of the boot unless `open_flag`
/// exists; reads the switch back. `Ok(true)`: loading is off.
pub fn lock(open_flag: &Path) -> std::io::Result<bool> {
    lock_at(open_flag, Path::new(MODULES_DISABLED))
}

fn lock_at(open_flag: &Path, switch: &Path) -> std::io::Result<bool> {
    if !open_flag.exists() {
        std::fs::write(switch, b"1\n")?;
    }
    Ok(std::fs::read_to_string(switch)?.trim() == "1")
}

pub fn parse_proc_modules(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_writes_the_switch_unless_the_image_opts_out() {
        let dir = tempfile::tempdir().unwrap();
        let (flag, switch) = (dir.path().join("open"), dir.path().join("switch"));
        std::fs::write(&switch, "0\n").unwrap();
        std::fs::write(&flag, "").unwrap();
        assert!(!lock_at(&flag, &switch).unwrap());
        assert_eq!(std::fs::read_to_string(&switch).unwrap(), "0\n");
        std::fs::remove_file(&flag).unwrap();
        assert!(lock_at(&flag, &switch).unwrap());
    }
    use crate::fake::{Call, Fake};

    const ORDER: &str = "# early modules\n\
        /usr/lib/modules/6.12/kernel/drivers/block/virtio_blk.ko.xz\n\
        \n\
        /usr/lib/modules/6.12/kernel/drivers/md/dm-mod.ko.xz\n\
        /usr/lib/modules/6.12/kernel/drivers/md/dm-verity.ko\n";

    #[test]
    fn parses_order_and_keeps_it() {
        let p = parse_order(Path::new("/l"), ORDER).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p[0].ends_with("virtio_blk.ko.xz"));
        assert!(p[2].ends_with("dm-verity.ko"));
        let e = parse_order(Path::new("/l"), "/a.ko\nkernel/b.ko\n").unwrap_err();
        assert!(
            matches!(e, ModuleError::NotAbsolute { line: 2, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn driver_without_hardware_is_skipped_not_fatal() {
        let mut f = Fake::new().with_file("/order", ORDER);
        f.absent_hardware
            .push("/usr/lib/modules/6.12/kernel/drivers/md/dm-mod.ko.xz".into());
        let s = load_list(&mut f, Path::new("/order"), false).unwrap();
        assert_eq!(s.loaded, 2);
        assert_eq!(s.no_device, ["dm-mod.ko.xz"]);
        assert!(s.to_string().contains("no hardware for dm-mod.ko.xz"));
    }

    #[test]
    fn loads_in_order_and_counts_builtins() {
        let mut f = Fake::new().with_file("/order", ORDER);
        f.builtin
            .push("/usr/lib/modules/6.12/kernel/drivers/md/dm-mod.ko.xz".into());
        let s = load_list(&mut f, Path::new("/order"), false).unwrap();
        assert_eq!((s.loaded, s.already), (2, 1));
        assert!(s.slowest.is_some());
        let loads: Vec<_> = f
            .calls
            .iter()
            .filter(|c| matches!(c, Call::Load(_)))
            .collect();
        assert_eq!(loads.len(), 3);
        assert_eq!(
            loads[0],
            &Call::Load("/usr/lib/modules/6.12/kernel/drivers/block/virtio_blk.ko.xz".into())
        );
    }

    #[test]
    fn stops_at_first_failure_and_names_the_module() {
        let mut f = Fake::new().with_file("/order", ORDER);
        f.fail = Some(Call::Load(
            "/usr/lib/modules/6.12/kernel/drivers/md/dm-mod.ko.xz".into(),
        ));
        let e = load_list(&mut f, Path::new("/order"), false).unwrap_err();
        assert!(e.to_string().contains("dm-mod.ko.xz"), "{e}");
        assert_eq!(f.calls.len(), 2);
    }

    #[test]
    fn missing_list() {
        let mut f = Fake::new();
        assert_eq!(
            load_list(&mut f, Path::new("/none"), true).unwrap(),
            LoadSummary::default()
        );
        assert!(load_list(&mut f, Path::new("/none"), false).is_err());
    }

    #[test]
    fn proc_modules_names() {
        let t = "dm_verity 53248 1 - Live 0x0000000000000000\nsquashfs 81920 1 - Live 0x0\n";
        assert_eq!(parse_proc_modules(t), vec!["dm_verity", "squashfs"]);
    }
}
