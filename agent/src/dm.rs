//! Device-mapper through its ioctls on `/dev/mapper/control`: just what a
//! dm-verity root needs (create, load one `verity` target, resume, status,
//! remove). Requests are plain bytes laid out as `linux/dm-ioctl.h` says (the
//! `#[repr(C)]` structs below only document and size-check that layout); replies
//! are parsed with bounds checks. No libdevmapper, no udev cookies.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{opcode, Opcode, Updater};

pub const DM_CONTROL: &str = "/dev/mapper/control";
const DM_NAME_LEN: usize = 128;
const DM_UUID_LEN: usize = 129;
const DM_MAX_TYPE_NAME: usize = 16;
/// Interface version we speak: 4.0.0 (the kernel accepts any 4.x minor <= its own).
const DM_VERSION: [u32; 3] = [4, 0, 0];
const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;
/// Room for one request or one status reply; one verity target needs < 1 KiB.
const BUF_LEN: usize = 16 * 1024;

/// `struct dm_ioctl`: header of every request and reply (312 bytes).
#[repr(C)]
#[allow(dead_code)] // layout reference: fields are written by offset
pub struct DmIoctl {
    version: [u32; 3],
    /// Bytes of the whole buffer, this header included.
    data_size: u32,
    /// Offset of the payload (target specs) from the start of this header.
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    /// `huge_encode_dev` of the mapped device, filled in by the kernel.
    dev: u64,
    name: [u8; DM_NAME_LEN],
    uuid: [u8; DM_UUID_LEN],
    data: [u8; 7],
}

/// `struct dm_target_spec` (40 bytes); the target's parameter string follows it.
#[repr(C)]
#[allow(dead_code)] // layout reference: fields are written by offset
pub struct DmTargetSpec {
    sector_start: u64,
    length: u64,
    status: i32,
    /// On load: bytes from this spec to the next. On status: from the first spec.
    next: u32,
    target_type: [u8; DM_MAX_TYPE_NAME],
}

const HDR: usize = std::mem::size_of::<DmIoctl>();
const SPEC: usize = std::mem::size_of::<DmTargetSpec>();

macro_rules! off {
    ($t:ty, $f:ident) => {
        std::mem::offset_of!($t, $f)
    };
}

const DM_DEV_CREATE: Opcode = opcode::read_write::<DmIoctl>(0xfd, 3);
const DM_DEV_REMOVE: Opcode = opcode::read_write::<DmIoctl>(0xfd, 4);
const DM_DEV_SUSPEND: Opcode = opcode::read_write::<DmIoctl>(0xfd, 6);
const DM_TABLE_LOAD: Opcode = opcode::read_write::<DmIoctl>(0xfd, 9);
const DM_TABLE_STATUS: Opcode = opcode::read_write::<DmIoctl>(0xfd, 12);

#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("open {DM_CONTROL}")]
    Open(#[source] io::Error),
    #[error("{what} is too long for a device-mapper request")]
    TooLong { what: &'static str },
    #[error("{op} {name}")]
    Ioctl {
        op: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("device-mapper reply for {name}: {why}")]
    BadReply { name: String, why: &'static str },
}

/// One active target as DM_TABLE_STATUS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    pub start: u64,
    pub length: u64,
    pub target_type: String,
    pub status: String,
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn get_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn get_u64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// NUL-terminated text at `at`, at most `max` bytes.
fn get_str(buf: &[u8], at: usize, max: usize) -> Option<String> {
    let field = buf.get(at..)?;
    let field = field.get(..max.min(field.len()))?;
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    Some(String::from_utf8_lossy(field.get(..end)?).into_owned())
}

/// One target for a table load.
pub struct Target<'a> {
    pub start: u64,
    pub length: u64,
    pub target_type: &'a str,
    pub params: &'a str,
}

/// Builds a request: header, then each target spec with its NUL-terminated
/// parameters padded to 8 bytes. `data_size` is the whole buffer (`BUF_LEN`), so
/// the kernel has room for its reply.
pub fn request(
    name: &str,
    uuid: &str,
    flags: u32,
    targets: &[Target<'_>],
) -> Result<Vec<u8>, DmError> {
    if name.is_empty() || name.len() >= DM_NAME_LEN || name.contains('/') {
        return Err(DmError::TooLong {
            what: "device name",
        });
    }
    if uuid.len() >= DM_UUID_LEN {
        return Err(DmError::TooLong {
            what: "device uuid",
        });
    }
    let mut buf = vec![0u8; HDR];
    for t in targets {
        if t.target_type.len() >= DM_MAX_TYPE_NAME {
            return Err(DmError::TooLong {
                what: "target type",
            });
        }
        let at = buf.len();
        let len = (SPEC + t.params.len() + 1).div_ceil(8) * 8;
        buf.resize(at + len, 0);
        put(
            &mut buf,
            at + off!(DmTargetSpec, sector_start),
            &t.start.to_ne_bytes(),
        );
        put(
            &mut buf,
            at + off!(DmTargetSpec, length),
            &t.length.to_ne_bytes(),
        );
        put(
            &mut buf,
            at + off!(DmTargetSpec, next),
            &(len as u32).to_ne_bytes(),
        );
        put(
            &mut buf,
            at + off!(DmTargetSpec, target_type),
            t.target_type.as_bytes(),
        );
        put(&mut buf, at + SPEC, t.params.as_bytes());
    }
    if buf.len() > BUF_LEN {
        return Err(DmError::TooLong { what: "table" });
    }
    let version: Vec<u8> = DM_VERSION.iter().flat_map(|v| v.to_ne_bytes()).collect();
    put(&mut buf, off!(DmIoctl, version), &version);
    put(
        &mut buf,
        off!(DmIoctl, data_size),
        &(BUF_LEN as u32).to_ne_bytes(),
    );
    put(
        &mut buf,
        off!(DmIoctl, data_start),
        &(HDR as u32).to_ne_bytes(),
    );
    put(
        &mut buf,
        off!(DmIoctl, target_count),
        &(targets.len() as u32).to_ne_bytes(),
    );
    put(&mut buf, off!(DmIoctl, flags), &flags.to_ne_bytes());
    put(&mut buf, off!(DmIoctl, name), name.as_bytes());
    put(&mut buf, off!(DmIoctl, uuid), uuid.as_bytes());
    Ok(buf)
}

/// Parses a DM_TABLE_STATUS reply.
pub fn parse_status(name: &str, buf: &[u8]) -> Result<Vec<TargetStatus>, DmError> {
    let bad = |why| DmError::BadReply {
        name: name.to_string(),
        why,
    };
    let flags = get_u32(buf, off!(DmIoctl, flags)).ok_or_else(|| bad("short header"))?;
    if flags & DM_BUFFER_FULL_FLAG != 0 {
        return Err(bad("status does not fit the buffer"));
    }
    let count = get_u32(buf, off!(DmIoctl, target_count)).ok_or_else(|| bad("short header"))?;
    let first =
        get_u32(buf, off!(DmIoctl, data_start)).ok_or_else(|| bad("short header"))? as usize;
    let mut out = Vec::new();
    let mut at = first;
    for _ in 0..count.min(64) {
        let start = get_u64(buf, at + off!(DmTargetSpec, sector_start))
            .ok_or_else(|| bad("truncated target"))?;
        let length =
            get_u64(buf, at + off!(DmTargetSpec, length)).ok_or_else(|| bad("truncated target"))?;
        let next = get_u32(buf, at + off!(DmTargetSpec, next))
            .ok_or_else(|| bad("truncated target"))? as usize;
        let target_type = get_str(buf, at + off!(DmTargetSpec, target_type), DM_MAX_TYPE_NAME)
            .ok_or_else(|| bad("truncated target"))?;
        let status = get_str(buf, at + SPEC, BUF_LEN).ok_or_else(|| bad("truncated status"))?;
        out.push(TargetStatus {
            start,
            length,
            target_type,
            status,
        });
        // `next` counts from the first spec; it must move forward
        let following = first + next;
        if following <= at {
            break;
        }
        at = following;
    }
    Ok(out)
}

/// An ioctl buffer with the alignment of `struct dm_ioctl`.
#[repr(C, align(8))]
struct Buf([u8; BUF_LEN]);

/// An open `/dev/mapper/control`.
pub struct Control {
    fd: OwnedFd,
}

impl Control {
    pub fn open() -> Result<Control, DmError> {
        let fd = rustix::fs::open(DM_CONTROL, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| DmError::Open(e.into()))?;
        Ok(Control { fd })
    }

    /// Sends one request; returns the kernel's reply buffer.
    fn call<const OP: Opcode>(
        &self,
        op: &'static str,
        name: &str,
        req: &[u8],
    ) -> Result<Box<Buf>, DmError> {
        let mut buf = Box::new(Buf([0u8; BUF_LEN]));
        put(&mut buf.0, 0, req);
        // SAFETY: every OP here is a DM_* command defined with `struct dm_ioctl`
        // as its argument; the kernel reads `data_size` (= BUF_LEN, set by
        // `request`) bytes from the pointer and writes at most that many back,
        // and `buf` is an exclusively borrowed, live BUF_LEN-byte buffer.
        let res =
            unsafe { rustix::ioctl::ioctl(self.fd.as_fd(), Updater::<OP, Buf>::new(&mut buf)) };
        res.map_err(|e| DmError::Ioctl {
            op,
            name: name.to_string(),
            source: e.into(),
        })?;
        Ok(buf)
    }

    /// DM_DEV_CREATE; returns the new device's (major, minor).
    pub fn create(&self, name: &str, uuid: &str) -> Result<(u32, u32), DmError> {
        let req = request(name, uuid, DM_READONLY_FLAG, &[])?;
        let reply = self.call::<DM_DEV_CREATE>("DM_DEV_CREATE", name, &req)?;
        let dev = get_u64(&reply.0, off!(DmIoctl, dev)).ok_or_else(|| DmError::BadReply {
            name: name.into(),
            why: "no dev",
        })?;
        Ok((rustix::fs::major(dev), rustix::fs::minor(dev)))
    }

    /// DM_TABLE_LOAD of one read-only target into the inactive slot.
    pub fn load(&self, name: &str, target: &Target<'_>) -> Result<(), DmError> {
        let req = request(name, "", DM_READONLY_FLAG, std::slice::from_ref(target))?;
        self.call::<DM_TABLE_LOAD>("DM_TABLE_LOAD", name, &req)
            .map(drop)
    }

    /// DM_DEV_SUSPEND without DM_SUSPEND_FLAG: resume, making the loaded table live.
    pub fn resume(&self, name: &str) -> Result<(), DmError> {
        let req = request(name, "", 0, &[])?;
        self.call::<DM_DEV_SUSPEND>("DM_DEV_SUSPEND (resume)", name, &req)
            .map(drop)
    }

    pub fn remove(&self, name: &str) -> Result<(), DmError> {
        let req = request(name, "", 0, &[])?;
        self.call::<DM_DEV_REMOVE>("DM_DEV_REMOVE", name, &req)
            .map(drop)
    }

    /// DM_TABLE_STATUS (info, not the table).
    pub fn status(&self, name: &str) -> Result<Vec<TargetStatus>, DmError> {
        self.status_and_dev(name).map(|(t, _)| t)
    }

    /// DM_TABLE_STATUS, with the device's (major, minor) from the reply
    /// header: what ties a mounted `/` to this device.
    pub fn status_and_dev(&self, name: &str) -> Result<(Vec<TargetStatus>, (u32, u32)), DmError> {
        let req = request(name, "", 0, &[])?;
        let reply = self.call::<DM_TABLE_STATUS>("DM_TABLE_STATUS", name, &req)?;
        let dev = get_u64(&reply.0, off!(DmIoctl, dev)).ok_or_else(|| DmError::BadReply {
            name: name.into(),
            why: "no dev",
        })?;
        let targets = parse_status(name, &reply.0)?;
        Ok((targets, (rustix::fs::major(dev), rustix::fs::minor(dev))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verity::{state_from_targets, VerityState};

    #[test]
    fn layout_matches_dm_ioctl_h() {
        assert_eq!(HDR, 312);
        assert_eq!(SPEC, 40);
        assert_eq!(off!(DmIoctl, data_size), 12);
        assert_eq!(off!(DmIoctl, flags), 28);
        assert_eq!(off!(DmIoctl, dev), 40);
        assert_eq!(off!(DmIoctl, name), 48);
        assert_eq!(off!(DmIoctl, uuid), 176);
        assert_eq!(off!(DmTargetSpec, next), 20);
        assert_eq!(off!(DmTargetSpec, target_type), 24);
        // _IOWR(0xfd, 3, struct dm_ioctl) as libdevmapper computes it
        assert_eq!(DM_DEV_CREATE as u64, 0xc138_fd03);
        assert_eq!(DM_TABLE_STATUS as u64, 0xc138_fd0c);
    }

    #[test]
    fn load_request_bytes() {
        let params = "1 /dev/vda /dev/vdb 4096 4096 1 1 sha256 x -"; // 44 bytes + NUL -> 88 with spec
        let t = Target {
            start: 0,
            length: 8,
            target_type: "verity",
            params,
        };
        let b = request("nodeimg-root", "", DM_READONLY_FLAG, &[t]).unwrap();
        assert_eq!(b.len(), HDR + 88);
        assert_eq!(get_u32(&b, 0), Some(4));
        assert_eq!(get_u32(&b, 12), Some(BUF_LEN as u32));
        assert_eq!(get_u32(&b, 16), Some(312));
        assert_eq!(get_u32(&b, 20), Some(1));
        assert_eq!(get_u32(&b, 28), Some(DM_READONLY_FLAG));
        assert_eq!(get_str(&b, 48, 128).as_deref(), Some("nodeimg-root"));
        assert_eq!(get_u64(&b, HDR + 8), Some(8));
        assert_eq!(get_u32(&b, HDR + 20), Some(88));
        assert_eq!(get_str(&b, HDR + 24, 16).as_deref(), Some("verity"));
        assert_eq!(get_str(&b, HDR + 40, 100).as_deref(), Some(params));
        assert_eq!(b.len() % 8, 0);
    }

    #[test]
    fn request_limits() {
        assert!(request(&"x".repeat(128), "", 0, &[]).is_err());
        assert!(request("a/b", "", 0, &[]).is_err());
        assert!(request("", "", 0, &[]).is_err());
        let long = "p".repeat(BUF_LEN);
        assert!(request(
            "n",
            "",
            0,
            &[Target {
                start: 0,
                length: 1,
                target_type: "verity",
                params: &long
            }]
        )
        .is_err());
    }

    fn reply(status: &str, flags: u32) -> Vec<u8> {
        let t = Target {
            start: 0,
            length: 20480,
            target_type: "verity",
            params: status,
        };
        let mut b = request("nodeimg-root", "", 0, &[t]).unwrap();
        put(&mut b, 28, &flags.to_ne_bytes());
        // the kernel's `next` counts from the first spec; one target: point past it
        b.resize(BUF_LEN, 0);
        b
    }

    #[test]
    fn status_parses_verity_verdicts() {
        let t = parse_status("n", &reply("V", 0)).unwrap();
        assert_eq!(
            t,
            vec![TargetStatus {
                start: 0,
                length: 20480,
                target_type: "verity".into(),
                status: "V".into()
            }]
        );
        assert_eq!(state_from_targets(&t), VerityState::Verified);
        let t = parse_status("n", &reply("C", 0)).unwrap();
        assert_eq!(state_from_targets(&t), VerityState::Corrupted);
        assert_eq!(state_from_targets(&[]), VerityState::None);
        assert!(parse_status("n", &reply("V", DM_BUFFER_FULL_FLAG)).is_err());
        assert!(parse_status("n", &[0u8; 20]).is_err());
    }

    #[test]
    fn status_survives_garbage_counts() {
        let mut b = reply("V", 0);
        put(&mut b, 20, &u32::MAX.to_ne_bytes()); // target_count
        put(&mut b, 16, &(BUF_LEN as u32 - 8).to_ne_bytes()); // data_start near the end
        assert!(parse_status("n", &b).is_err());
    }
}
