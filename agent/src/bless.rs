//! Marks this boot good for systemd-boot's boot counting, once every health
//! check passed (the Boot Loader Specification's "blessing").
//!
//! systemd-boot renames a counted entry on each try (`x+3.efi`, then
//! `x+2-1.efi`, ...) and tells the OS the new name in the EFI variable
//! `LoaderBootCountPath`, and the ESP it ran from in `LoaderDevicePartUUID`.
//! [`bless`] reads both from efivarfs, mounts that ESP (vfat) privately,
//! renames the entry to its name without the counter (`x.efi`) in the same
//! directory, syncs and unmounts. No variable means no UEFI or no counting:
//! nothing to do, and the report says so.
//!
//! The parsers ([`efivar_string`], [`entry_path`], [`blessed_name`]) are pure.
//! A path outside `\EFI\Linux\` and `\loader\entries\`, with `..`, or with
//! characters outside `[A-Za-z0-9._+~-]` is refused, never renamed. Blessing
//! never fails the boot: the result is a report field, and a counted entry
//! left unblessed is a warning (systemd-boot then keeps counting down and
//! falls back to another entry, which is the point of counting).

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;

use crate::devices::DeviceError;
use crate::error::chain;
use crate::sys::{Files, Mount, Mounts};
use contract::report::BootEntryReport;

/// Present only when the kernel was started through UEFI.
pub const EFI_DIR: &str = "/sys/firmware/efi";
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// systemd's vendor GUID of every `Loader*` variable.
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// Where the ESP is mounted while the entry is renamed (on the /run tmpfs).
pub const ESP_MOUNT: &str = contract::paths::ESP_MOUNT;
/// Directories of counted entries: type 2 (UKIs) and type 1 (entry files).
const ENTRY_DIRS: [[&str; 2]; 2] = [["EFI", "Linux"], ["loader", "entries"]];

#[derive(Debug, thiserror::Error)]
pub enum BlessError {
    #[error("mount efivarfs on {EFIVARS}")]
    Efivarfs(#[source] io::Error),
    #[error("read EFI variable {name}")]
    ReadVar {
        name: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("EFI variable {name}: {why}")]
    BadVar {
        name: &'static str,
        why: &'static str,
    },
    #[error("refusing LoaderBootCountPath {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("LoaderDevicePartUUID {value:?} is not a GUID")]
    BadEspUuid { value: String },
    #[error("find the ESP PARTUUID={uuid}")]
    FindEsp {
        uuid: String,
        #[source]
        source: DeviceError,
    },
    #[error("no partition has PARTUUID={uuid} (the ESP systemd-boot ran from)")]
    NoEsp { uuid: String },
    #[error("{step} {path}")]
    Step {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rename {from} to {to} on the ESP")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not on the ESP under its booted name or its blessed name")]
    Missing { path: PathBuf },
}

fn var_path(name: &str) -> PathBuf {
    Path::new(EFIVARS).join(format!("{name}-{LOADER_GUID}"))
}

/// The string in an efivarfs file: 4 attribute bytes, then UTF-16LE text up
/// to a NUL (or the end).
pub fn efivar_string(name: &'static str, bytes: &[u8]) -> Result<String, BlessError> {
    let bad = |why| BlessError::BadVar { name, why };
    let data = bytes
        .get(4..)
        .ok_or(bad("shorter than its 4 attribute bytes"))?;
    if data.len() % 2 != 0 {
        return Err(bad("odd number of UTF-16 bytes"));
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .take_while(|u| *u != 0)
        .collect();
    let s = String::from_utf16(&units).map_err(|_| bad("not valid UTF-16"))?;
    if s.is_empty() {
        return Err(bad("empty"));
    }
    Ok(s)
}

/// A counted entry: its directory on the ESP and the names before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPath {
    /// `["EFI", "Linux"]` as spelled in the variable (FAT ignores case).
    pub dir: Vec<String>,
    pub name: String,
    /// The name without the counter; `None` when `name` has no counter.
    pub blessed: Option<String>,
}

fn safe_name(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~-".contains(&b))
}

/// Splits and checks `LoaderBootCountPath` (`\EFI\Linux\x+2-1.efi`).
pub fn entry_path(path: &str) -> Result<EntryPath, &'static str> {
    let rest = path
        .strip_prefix('\\')
        .ok_or("not an absolute ESP path (no leading \\)")?;
    let parts: Vec<&str> = rest.split('\\').collect();
    if parts.contains(&"..") {
        return Err("contains ..");
    }
    if !parts.iter().all(|c| safe_name(c)) {
        return Err("an empty component, or characters outside [A-Za-z0-9._+~-]");
    }
    let (name, dir) = parts.split_last().ok_or("empty")?;
    let known = ENTRY_DIRS.iter().any(|d| {
        d.len() == dir.len()
            && d.iter()
                .zip(dir.iter())
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    });
    if !known {
        return Err("not directly under \\EFI\\Linux\\ or \\loader\\entries\\");
    }
    Ok(EntryPath {
        dir: dir.iter().map(|c| c.to_string()).collect(),
        name: name.to_string(),
        blessed: blessed_name(name)?,
    })
}

/// `x+3.efi` and `x+0-3.efi` become `x.efi`; `x.efi` has no counter
/// (`None`), nor has `x-1.0+deb13.efi` (a `+` not followed by digits is part
/// of the name, as systemd-boot reads it). `+3.efi`, `x+.efi`, `x+3-.efi`,
/// `x+3x.efi` and names not ending in `.efi` or `.conf` are refused.
pub fn blessed_name(name: &str) -> Result<Option<String>, &'static str> {
    if !safe_name(name) {
        return Err("characters outside [A-Za-z0-9._+~-]");
    }
    let lower = name.to_ascii_lowercase();
    let suffix_len = [".efi", ".conf"]
        .iter()
        .find(|s| lower.ends_with(*s))
        .map(|s| s.len())
        .ok_or("not a .efi or .conf entry")?;
    let (stem, suffix) = name.split_at(name.len() - suffix_len);
    let Some((prefix, counter)) = stem.rsplit_once('+') else {
        return Ok(None);
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    let counted = match counter.split_once('-') {
        None => digits(counter),
        Some((left, done)) => digits(left) && digits(done),
    };
    if !counted {
        let starts_like_a_counter = counter
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_digit() || b == b'-');
        if starts_like_a_counter {
            return Err("a malformed boot counter (expected +LEFT or +LEFT-DONE)");
        }
        return Ok(None);
    }
    if prefix.is_empty() {
        return Err("nothing before the boot counter");
    }
    Ok(Some(format!("{prefix}{suffix}")))
}

/// The outcome for the report: `path` absent when there was no counting.
fn report(path: Option<&str>, blessed: bool, note: String) -> BootEntryReport {
    BootEntryReport {
        path: path.map(str::to_string),
        blessed,
        note,
    }
}

/// Reads one Loader variable; `Ok(None)` when it does not exist.
fn read_var<F: Files>(s: &mut F, name: &'static str) -> Result<Option<String>, BlessError> {
    match s.read(&var_path(name)) {
        Ok(b) => efivar_string(name, &b).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BlessError::ReadVar { name, source }),
    }
}

/// Mounts efivarfs read-only unless it is there already (it has entries).
fn efivars_mounted<S: Mounts + Files>(s: &mut S) -> Result<(), BlessError> {
    if !s.list(Path::new(EFIVARS)).unwrap_or_default().is_empty() {
        return Ok(());
    }
    let hard = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    match s.mount(&Mount::new("efivarfs", EFIVARS, "efivarfs", hard, "")) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(e) => Err(BlessError::Efivarfs(e)),
    }
}

/// Blesses the booted entry; never fails, the report says what happened.
/// `find_esp` turns a lower-case PARTUUID into a device node.
pub fn bless<S, F>(s: &mut S, find_esp: F) -> BootEntryReport
where
    S: Mounts + Files,
    F: FnOnce(&str) -> Result<Option<PathBuf>, DeviceError>,
{
    if !s.is_dir(Path::new(EFI_DIR)) {
        return report(
            None,
            false,
            format!("not booted through UEFI (no {EFI_DIR}): no boot counting"),
        );
    }
    let path = match efivars_mounted(s).and_then(|()| read_var(s, "LoaderBootCountPath")) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return report(
                None,
                false,
                "no LoaderBootCountPath: the boot loader did not count this boot".into(),
            )
        }
        Err(e) => return report(None, false, format!("not blessed: {}", chain(&e))),
    };
    match bless_entry(s, &path, find_esp) {
        Ok((blessed, note)) => report(Some(&path), blessed, note),
        Err(e) => report(Some(&path), false, format!("not blessed: {}", chain(&e))),
    }
}

fn bless_entry<S, F>(s: &mut S, path: &str, find_esp: F) -> Result<(bool, String), BlessError>
where
    S: Mounts + Files,
    F: FnOnce(&str) -> Result<Option<PathBuf>, DeviceError>,
{
    let entry = entry_path(path).map_err(|why| BlessError::BadPath {
        path: path.into(),
        why,
    })?;
    let Some(blessed) = entry.blessed.clone() else {
        return Ok((
            true,
            "the entry has no boot counter: nothing to rename".into(),
        ));
    };
    let raw = read_var(s, "LoaderDevicePartUUID")?.ok_or(BlessError::BadVar {
        name: "LoaderDevicePartUUID",
        why: "missing, so the ESP is unknown",
    })?;
    let uuid = raw.to_ascii_lowercase();
    if crate::gpt::guid_bytes(&uuid).is_none() {
        return Err(BlessError::BadEspUuid { value: raw });
    }
    let esp = find_esp(&uuid)
        .map_err(|source| BlessError::FindEsp {
            uuid: uuid.clone(),
            source,
        })?
        .ok_or_else(|| BlessError::NoEsp { uuid: uuid.clone() })?;
    let target = Path::new(ESP_MOUNT);
    s.mkdir_all(target).map_err(|source| BlessError::Step {
        step: "create directory",
        path: target.into(),
        source,
    })?;
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let m = Mount::new(&esp.display().to_string(), target, "vfat", flags, "");
    s.mount(&m).map_err(|source| BlessError::Step {
        step: "mount vfat",
        path: esp.clone(),
        source,
    })?;
    let renamed = rename_on_esp(s, target, &entry, &blessed);
    // unmount whatever happened: it also writes the FAT out
    let unmounted = s.unmount(target).map_err(|source| BlessError::Step {
        step: "unmount",
        path: target.into(),
        source,
    });
    let note = renamed?;
    unmounted?;
    Ok((true, format!("{note} on {}", esp.display())))
}

fn rename_on_esp<F: Files>(
    s: &mut F,
    mnt: &Path,
    entry: &EntryPath,
    blessed: &str,
) -> Result<String, BlessError> {
    let dir = entry.dir.iter().fold(mnt.to_path_buf(), |p, c| p.join(c));
    let from = dir.join(&entry.name);
    let to = dir.join(blessed);
    match s.rename_noreplace(&from, &to) {
        Ok(()) => {}
        // an earlier boot blessed it and systemd-boot then booted the same
        // name again only if it kept the variable: nothing left to do
        Err(e) if e.kind() == io::ErrorKind::NotFound && s.exists(&to) => {
            return Ok(format!("already blessed as {blessed}"));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BlessError::Missing { path: from });
        }
        Err(source) => return Err(BlessError::Rename { from, to, source }),
    }
    s.sync_dir(&dir).map_err(|source| BlessError::Step {
        step: "sync directory",
        path: dir.clone(),
        source,
    })?;
    Ok(format!("renamed {} to {blessed}", entry.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, Fake};

    fn var(text: &str) -> Vec<u8> {
        let mut b = vec![0x07, 0, 0, 0]; // NV | BS | RT
        for u in text.encode_utf16().chain([0]) {
            b.extend(u.to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_efivar_strings() {
        let name = "LoaderBootCountPath";
        assert_eq!(
            efivar_string(name, &var("\\EFI\\Linux\\a+2-1.efi")).unwrap(),
            "\\EFI\\Linux\\a+2-1.efi"
        );
        // without the NUL, too
        let mut b = var("abc");
        b.truncate(b.len() - 2);
        assert_eq!(efivar_string(name, &b).unwrap(), "abc");
        assert!(efivar_string(name, &[7, 0, 0]).is_err());
        assert!(efivar_string(name, &[7, 0, 0, 0, 0x41]).is_err());
        assert!(efivar_string(name, &var("")).is_err());
        // an unpaired surrogate
        assert!(efivar_string(name, &[7, 0, 0, 0, 0x00, 0xd8, 0, 0]).is_err());
    }

    #[test]
    fn blessed_names() {
        let ok = |n: &str| blessed_name(n).unwrap();
        assert_eq!(ok("a+3.efi").as_deref(), Some("a.efi"));
        assert_eq!(ok("a+0-3.efi").as_deref(), Some("a.efi"));
        assert_eq!(
            ok("worker-0.1.0+2-1.efi").as_deref(),
            Some("worker-0.1.0.efi")
        );
        assert_eq!(
            ok("w-1.0+deb13+1-2.EFI").as_deref(),
            Some("w-1.0+deb13.EFI")
        );
        assert_eq!(ok("entry+1.conf").as_deref(), Some("entry.conf"));
        assert_eq!(ok("a.efi"), None);
        assert_eq!(ok("w-1.0+deb13.efi"), None);
        for weird in [
            "+3.efi",
            "a+.efi",
            "a+3-.efi",
            "a+-3.efi",
            "a+3x.efi",
            "a+3-1-1.efi",
            "a+3",
            "a+3.exe",
            "a b+3.efi",
            "a/b+3.efi",
            "a+9999999999.efi",
            "",
        ] {
            assert!(blessed_name(weird).is_err(), "{weird:?} accepted");
        }
    }

    #[test]
    fn entry_paths() {
        let e = entry_path("\\EFI\\Linux\\worker-0.1.0+2-1.efi").unwrap();
        assert_eq!(e.dir, ["EFI", "Linux"]);
        assert_eq!(e.name, "worker-0.1.0+2-1.efi");
        assert_eq!(e.blessed.as_deref(), Some("worker-0.1.0.efi"));
        let e = entry_path("\\efi\\linux\\a+1.efi").unwrap();
        assert_eq!(e.blessed.as_deref(), Some("a.efi"));
        let e = entry_path("\\loader\\entries\\nodeimg+3.conf").unwrap();
        assert_eq!(e.blessed.as_deref(), Some("nodeimg.conf"));
        for bad in [
            "EFI\\Linux\\a+1.efi",
            "\\EFI\\BOOT\\BOOTX64+1.efi",
            "\\EFI\\Linux\\..\\..\\a+1.efi",
            "\\EFI\\Linux\\..",
            "\\EFI\\Linux\\sub\\a+1.efi",
            "\\EFI\\\\Linux\\a+1.efi",
            "\\a+1.efi",
            "\\EFI\\Linux\\",
            "/EFI/Linux/a+1.efi",
            "\\EFI\\Linux\\a+1.efi\u{0}",
        ] {
            assert!(entry_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    const ESP_UUID: &str = "C0FFEE00-1111-2222-3333-444455556666";

    fn efi_fake(count_path: Option<&str>) -> Fake {
        let mut f = Fake::new().with_dir(EFI_DIR);
        let mut put = |name: &str, text: &str| {
            f.files.insert(var_path(name), var(text));
        };
        if let Some(p) = count_path {
            put("LoaderBootCountPath", p);
        }
        put("LoaderDevicePartUUID", ESP_UUID);
        f
    }

    fn esp(uuid: &str) -> Result<Option<PathBuf>, DeviceError> {
        assert_eq!(uuid, ESP_UUID.to_ascii_lowercase());
        Ok(Some("/dev/vda1".into()))
    }

    #[test]
    fn renames_the_counted_entry_on_the_esp() {
        let mut f = efi_fake(Some("\\EFI\\Linux\\w-0.1+2-1.efi"));
        f.files.insert(
            "/run/nodeimg/esp/EFI/Linux/w-0.1+2-1.efi".into(),
            b"MZ".to_vec(),
        );
        let r = bless(&mut f, esp);
        assert!(r.blessed, "{r:?}");
        assert_eq!(r.path.as_deref(), Some("\\EFI\\Linux\\w-0.1+2-1.efi"));
        assert_eq!(r.note, "renamed w-0.1+2-1.efi to w-0.1.efi on /dev/vda1");
        let p = PathBuf::from;
        let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        assert_eq!(
            f.calls,
            [
                // efivarfs had entries (the fake's variables): not mounted again
                Call::Mkdir(p(ESP_MOUNT)),
                Call::Mount(Mount::new("/dev/vda1", ESP_MOUNT, "vfat", flags, "")),
                Call::Rename(
                    p("/run/nodeimg/esp/EFI/Linux/w-0.1+2-1.efi"),
                    p("/run/nodeimg/esp/EFI/Linux/w-0.1.efi")
                ),
                Call::SyncDir(p("/run/nodeimg/esp/EFI/Linux")),
                Call::Unmount(p(ESP_MOUNT)),
            ]
        );
        assert!(f
            .files
            .contains_key(Path::new("/run/nodeimg/esp/EFI/Linux/w-0.1.efi")));
    }

    #[test]
    fn mounts_efivarfs_when_it_is_empty() {
        let mut f = Fake::new().with_dir(EFI_DIR);
        let r = bless(&mut f, esp);
        assert!(!r.blessed);
        assert_eq!(r.path, None);
        assert!(r.note.starts_with("no LoaderBootCountPath"), "{}", r.note);
        let hard = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        assert_eq!(
            f.calls,
            [Call::Mount(Mount::new(
                "efivarfs", EFIVARS, "efivarfs", hard, ""
            ))]
        );
    }

    #[test]
    fn without_uefi_nothing_happens() {
        let mut f = Fake::new();
        let r = bless(&mut f, |_| panic!("no ESP lookup without UEFI"));
        assert!(!r.blessed);
        assert_eq!(r.path, None);
        assert!(r.note.contains("not booted through UEFI"), "{}", r.note);
        assert!(f.calls.is_empty());
    }

    #[test]
    fn refuses_paths_outside_the_entry_directories() {
        let mut f = efi_fake(Some("\\EFI\\BOOT\\..\\Linux\\x+1.efi"));
        let r = bless(&mut f, |_| panic!("no ESP lookup for a refused path"));
        assert!(!r.blessed);
        assert!(r.note.starts_with("not blessed: refusing"), "{}", r.note);
        assert!(f.calls.is_empty());
    }

    #[test]
    fn unmounts_even_when_the_rename_fails() {
        let mut f = efi_fake(Some("\\EFI\\Linux\\w+1-2.efi"));
        // neither the booted nor the blessed name exists
        let r = bless(&mut f, esp);
        assert!(!r.blessed);
        assert!(r.note.contains("is not on the ESP"), "{}", r.note);
        assert_eq!(f.calls.last(), Some(&Call::Unmount(ESP_MOUNT.into())));
        // the blessed name alone: an earlier boot did it
        let mut f = efi_fake(Some("\\EFI\\Linux\\w+1-2.efi"));
        f.files
            .insert("/run/nodeimg/esp/EFI/Linux/w.efi".into(), b"MZ".to_vec());
        let r = bless(&mut f, esp);
        assert!(r.blessed, "{r:?}");
        assert!(r.note.starts_with("already blessed"), "{}", r.note);
        // both names: never overwrite
        let mut f = efi_fake(Some("\\EFI\\Linux\\w+1-2.efi"));
        f.files
            .insert("/run/nodeimg/esp/EFI/Linux/w.efi".into(), b"old".to_vec());
        f.files.insert(
            "/run/nodeimg/esp/EFI/Linux/w+1-2.efi".into(),
            b"new".to_vec(),
        );
        let r = bless(&mut f, esp);
        assert!(!r.blessed);
        assert!(r.note.contains("rename"), "{}", r.note);
        assert_eq!(
            f.files[Path::new("/run/nodeimg/esp/EFI/Linux/w.efi")],
            b"old"
        );
        assert_eq!(f.calls.last(), Some(&Call::Unmount(ESP_MOUNT.into())));
    }

    #[test]
    fn an_unknown_esp_is_reported() {
        let mut f = efi_fake(Some("\\EFI\\Linux\\w+1.efi"));
        let r = bless(&mut f, |_| Ok(None));
        assert!(!r.blessed);
        assert!(
            r.note.contains("no partition has PARTUUID=c0ffee00"),
            "{}",
            r.note
        );
    }
}
