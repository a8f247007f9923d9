//! dm-verity on top of [`crate::dm`]: the verity target line built from the
//! command line, the target's verdict (`V`/`C`) as the report spells it, and the
//! full read-through pass of `nodeimg.verity=full`. The table builder is pure.

use std::io;
use std::path::Path;

use crate::dm::{Control, TargetStatus};
use contract::cmdline::VerityArgs;

pub use contract::report::VerityState;

/// The verdict of the first verity target in a device's status.
pub fn state_from_targets(t: &[TargetStatus]) -> VerityState {
    match t
        .iter()
        .find(|t| t.target_type == "verity")
        .map(|t| t.status.chars().next())
    {
        Some(Some('V')) => VerityState::Verified,
        Some(Some('C')) => VerityState::Corrupted,
        _ => VerityState::None,
    }
}

/// The verity target line: format 1, 4096-byte blocks, sha256, no optional args
/// (so a bad block returns EIO; no panic/restart on corruption).
pub fn verity_table(v: &VerityArgs, data_dev: &Path, hash_dev: &Path) -> String {
    format!(
        "1 {} {} 4096 4096 {} {} sha256 {} {}",
        data_dev.display(),
        hash_dev.display(),
        v.data_blocks,
        v.hash_start,
        v.root_hash,
        v.salt.as_deref().unwrap_or("-")
    )
}

/// Length of the target in 512-byte sectors (the cmdline parser bounds data_blocks).
pub fn verity_sectors(v: &VerityArgs) -> u64 {
    v.data_blocks.saturating_mul(8)
}

/// Best-effort verdict for a device, for reports and error messages.
pub fn verity_state(name: &str) -> VerityState {
    match Control::open().and_then(|c| c.status(name)) {
        Ok(t) => state_from_targets(&t),
        Err(_) => VerityState::None,
    }
}

/// The verdict of `name` and whether `/` is that very device: a mount
/// of some other dm device must not borrow this one's verdict.
pub fn root_is_verified_device(name: &str) -> VerityState {
    let Ok((targets, (major, minor))) = Control::open().and_then(|c| c.status_and_dev(name)) else {
        return VerityState::None;
    };
    let root_dev = rustix::fs::stat("/").map(|st| st.st_dev);
    match root_dev {
        Ok(d) if rustix::fs::major(d) == major && rustix::fs::minor(d) == minor => {
            state_from_targets(&targets)
        }
        _ => VerityState::None,
    }
}

/// Reads `bytes` bytes of `dev` once (the `nodeimg.verity=full` pass): every
/// block goes through its hash check, and the first failure surfaces as EIO.
pub fn read_through(dev: &Path, bytes: u64) -> io::Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(dev)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = buf
            .get_mut(..want)
            .ok_or_else(|| io::Error::other("buffer"))?;
        let n = f.read(chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} ended {left} bytes early", dev.display()),
            ));
        }
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::cmdline::DeviceRef;

    fn args(salt: Option<&str>) -> VerityArgs {
        VerityArgs {
            data: DeviceRef::Path("/dev/vda".into()),
            hash: DeviceRef::Path("/dev/vdb".into()),
            root_hash: "ab".repeat(32),
            salt: salt.map(str::to_string),
            data_blocks: 2560,
            hash_start: 1,
        }
    }

    #[test]
    fn verity_table_line() {
        let t = verity_table(
            &args(Some("00ff")),
            Path::new("/dev/vda"),
            Path::new("/dev/vdb"),
        );
        assert_eq!(
            t,
            format!(
                "1 /dev/vda /dev/vdb 4096 4096 2560 1 sha256 {} 00ff",
                "ab".repeat(32)
            )
        );
        let t = verity_table(&args(None), Path::new("/dev/vda1"), Path::new("/dev/vda2"));
        assert!(t.ends_with(" -"), "{t}");
        assert_eq!(verity_sectors(&args(None)), 20480);
    }

    fn status(ty: &str, s: &str) -> TargetStatus {
        TargetStatus {
            start: 0,
            length: 8,
            target_type: ty.into(),
            status: s.into(),
        }
    }

    #[test]
    fn verdict_from_status_char() {
        assert_eq!(
            state_from_targets(&[status("verity", "V")]),
            VerityState::Verified
        );
        assert_eq!(
            state_from_targets(&[status("verity", "C 3")]),
            VerityState::Corrupted
        );
        assert_eq!(
            state_from_targets(&[status("linear", "")]),
            VerityState::None
        );
        assert_eq!(state_from_targets(&[]), VerityState::None);
    }
}
