//! The raw GPT disk image: ESP, then root and verity for slot A (the built
//! image) and slot B (equally sized, empty), all on 1 MiB boundaries.
//!
//! Contract: [`write_disk`] takes the ESP image, the root image and its
//! verity tree as readers of known length, the slot sizes, the verity root
//! hash and the version, and writes the whole disk into a sink that must be
//! empty or zero-filled (a fresh file): it writes the GPT and the three
//! payloads and nothing else, so slot B, the slack after each payload and
//! the tail stay holes in a file. Partitions, in table order:
//!
//! | # | label              | type (DPS)          | PARTUUID                         |
//! |---|--------------------|---------------------|----------------------------------|
//! | 1 | `esp`              | ESP                 | `DiskIds::esp`                   |
//! | 2 | `root-a-<version>` | root (x86-64)       | first 128 bits of the root hash  |
//! | 3 | `verity-a-<version>` | root verity (x86-64) | last 128 bits of the root hash |
//! | 4 | `root-b`           | root (x86-64)       | `DiskIds::root_b`                |
//! | 5 | `verity-b`         | root verity (x86-64) | `DiskIds::verity_b`             |
//!
//! There is no state partition: the agent creates it on first boot in the
//! space after slot B, so the image is as small as it can be and fits any
//! larger disk. The image ends 1 MiB after slot B with the backup GPT.
//! The returned [`DiskLayout`] records offsets, sizes and GUIDs for the
//! manifest. Nothing reads the clock; the same inputs give the same bytes.

use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use super::gpt::{self, GptError, Guid, Partition, PartitionType, SECTOR};

/// Alignment of every partition, and the size of the head and tail areas.
pub const ALIGN: u64 = 1 << 20;

/// Errors from writing a disk image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("version `{version}` is empty or holds characters other than [A-Za-z0-9._+~-]")]
    BadVersion { version: String },
    #[error("{partition} payload is {len} bytes but its slot holds {slot}")]
    SlotTooSmall {
        partition: &'static str,
        len: u64,
        slot: u64,
    },
    #[error("{partition} payload ended after {got} of {expected} bytes")]
    ShortPayload {
        partition: &'static str,
        expected: u64,
        got: u64,
    },
    #[error("the partition table is invalid")]
    Table {
        #[source]
        source: GptError,
    },
    #[error("cannot write the {partition} partition")]
    Io {
        partition: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A payload streamed into a partition: `len` bytes from `reader`.
pub struct Payload<'a> {
    /// Source of the bytes.
    pub reader: &'a mut dyn Read,
    /// Exact number of bytes the reader yields.
    pub len: u64,
}

/// GUIDs of the disk and of the partitions whose GUID the root hash does
/// not fix. Inputs, so that builds are reproducible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskIds {
    /// The disk GUID.
    pub disk: Guid,
    /// The ESP's partition GUID.
    pub esp: Guid,
    /// Slot B root partition GUID (until an update writes slot B).
    pub root_b: Guid,
    /// Slot B verity partition GUID.
    pub verity_b: Guid,
}

impl DiskIds {
    /// GUIDs derived from `seed` (e.g. the image's input hash): SHA-256 of
    /// a per-role tag and the seed, cut to 128 bits with the UUID version 4
    /// and RFC 4122 variant bits set, as systemd-repart shapes the UUIDs it
    /// derives from its seed.
    pub fn derive(seed: &[u8]) -> DiskIds {
        let id = |role: &str| {
            let mut input = format!("nodeimg-disk-{role}\0").into_bytes();
            input.extend_from_slice(seed);
            let h = crate::util::hash::sha256(&input);
            let mut b = [0u8; 16];
            b.copy_from_slice(&h[..16]);
            b[6] = (b[6] & 0x0F) | 0x40;
            b[8] = (b[8] & 0x3F) | 0x80;
            Guid(b)
        };
        DiskIds {
            disk: id("disk"),
            esp: id("esp"),
            root_b: id("root-b"),
            verity_b: id("verity-b"),
        }
    }
}

/// What to lay out besides the payloads.
#[derive(Clone, Copy, Debug)]
pub struct DiskSpec<'a> {
    /// Image version, part of the slot A labels (`root-a-<version>`).
    pub version: &'a str,
    /// dm-verity root hash of slot A: fixes slot A's partition UUIDs.
    pub root_hash: &'a [u8],
    /// Size of each root slot (rounded up to [`ALIGN`]).
    pub slot_size_root: u64,
    /// Size of each verity slot (rounded up to [`ALIGN`]).
    pub slot_size_verity: u64,
    /// The remaining GUIDs.
    pub ids: DiskIds,
}

/// What a partition is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Esp,
    RootA,
    VerityA,
    RootB,
    VerityB,
}

/// One partition as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacedPartition {
    /// Partition number (1-based, as `/dev/vda<N>`).
    pub number: u32,
    pub role: Role,
    /// GPT label (PARTLABEL).
    pub label: String,
    #[serde(rename = "type")]
    pub type_guid: Guid,
    /// PARTUUID.
    pub uuid: Guid,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Partition size in bytes.
    pub size: u64,
    /// Bytes of payload written at its start (0 for slot B).
    pub content_len: u64,
}

/// The disk as written: what the manifest records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskLayout {
    /// Image size in bytes.
    pub size: u64,
    pub disk_guid: Guid,
    pub partitions: Vec<PlacedPartition>,
}

fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

fn check_version(version: &str) -> Result<(), DiskError> {
    let ok = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(DiskError::BadVersion {
            version: version.to_owned(),
        })
    }
}

/// Plans the layout for an ESP of `esp_len` bytes and the given payload
/// lengths, without writing anything.
pub fn plan_disk(
    spec: &DiskSpec<'_>,
    esp_len: u64,
    root_len: u64,
    verity_len: u64,
) -> Result<DiskLayout, DiskError> {
    check_version(spec.version)?;
    let root_slot = align_up(spec.slot_size_root);
    let verity_slot = align_up(spec.slot_size_verity);
    for (partition, len, slot) in [
        ("root-a", root_len, root_slot),
        ("verity-a", verity_len, verity_slot),
    ] {
        if len > slot {
            return Err(DiskError::SlotTooSmall {
                partition,
                len,
                slot,
            });
        }
    }
    let (root_a, verity_a) = gpt::verity_partition_uuids(spec.root_hash)
        .map_err(|source| DiskError::Table { source })?;
    let v = spec.version;
    let rows = [
        (
            Role::Esp,
            "esp".to_owned(),
            PartitionType::ESP,
            spec.ids.esp,
            align_up(esp_len.max(1)),
            esp_len,
        ),
        (
            Role::RootA,
            format!("root-a-{v}"),
            PartitionType::ROOT_X86_64,
            root_a,
            root_slot,
            root_len,
        ),
        (
            Role::VerityA,
            format!("verity-a-{v}"),
            PartitionType::ROOT_VERITY_X86_64,
            verity_a,
            verity_slot,
            verity_len,
        ),
        (
            Role::RootB,
            "root-b".to_owned(),
            PartitionType::ROOT_X86_64,
            spec.ids.root_b,
            root_slot,
            0,
        ),
        (
            Role::VerityB,
            "verity-b".to_owned(),
            PartitionType::ROOT_VERITY_X86_64,
            spec.ids.verity_b,
            verity_slot,
            0,
        ),
    ];
    let mut offset = ALIGN;
    let mut partitions = Vec::with_capacity(rows.len());
    for (number, (role, label, ty, uuid, size, content_len)) in (1..).zip(rows) {
        partitions.push(PlacedPartition {
            number,
            role,
            label,
            type_guid: ty.0,
            uuid,
            offset,
            size,
            content_len,
        });
        offset += size;
    }
    Ok(DiskLayout {
        size: offset + ALIGN,
        disk_guid: spec.ids.disk,
        partitions,
    })
}

/// Writes the disk (see the module docs) into `out` and returns its layout.
pub fn write_disk<W: Write + Seek>(
    mut out: W,
    spec: &DiskSpec<'_>,
    esp: Payload<'_>,
    root_a: Payload<'_>,
    verity_a: Payload<'_>,
) -> Result<DiskLayout, DiskError> {
    let layout = plan_disk(spec, esp.len, root_a.len, verity_a.len)?;
    let table: Vec<Partition> = layout
        .partitions
        .iter()
        .map(|p| Partition {
            type_guid: PartitionType(p.type_guid),
            part_guid: p.uuid,
            name: p.label.clone(),
            first_lba: p.offset / SECTOR,
            last_lba: (p.offset + p.size) / SECTOR - 1,
            attributes: 0,
        })
        .collect();
    gpt::write_gpt(&mut out, layout.size, layout.disk_guid, &table)
        .map_err(|source| DiskError::Table { source })?;
    let offset = |i: usize| layout.partitions[i].offset;
    copy_payload(&mut out, offset(0), esp, "esp")?;
    copy_payload(&mut out, offset(1), root_a, "root-a")?;
    copy_payload(&mut out, offset(2), verity_a, "verity-a")?;
    out.flush().map_err(|source| DiskError::Io {
        partition: "whole-disk",
        source,
    })?;
    Ok(layout)
}

fn copy_payload<W: Write + Seek>(
    out: &mut W,
    offset: u64,
    payload: Payload<'_>,
    partition: &'static str,
) -> Result<(), DiskError> {
    let io = |source| DiskError::Io { partition, source };
    out.seek(SeekFrom::Start(offset)).map_err(io)?;
    // The sink starts zero-filled (see the module docs): whole blocks of
    // zeros (most of the ESP) are skipped, so a file keeps them as holes.
    let mut reader = payload.reader.take(payload.len);
    let mut block = vec![0u8; HOLE_BLOCK];
    let mut got = 0u64;
    loop {
        let n = read_full(&mut reader, &mut block).map_err(io)?;
        if n == 0 {
            break;
        }
        if n == HOLE_BLOCK && block.iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(n as i64)).map_err(io)?;
        } else {
            out.write_all(&block[..n]).map_err(io)?;
        }
        got += n as u64;
    }
    if got != payload.len {
        return Err(DiskError::ShortPayload {
            partition,
            expected: payload.len,
            got,
        });
    }
    Ok(())
}

/// Block size for hole detection while copying payloads.
const HOLE_BLOCK: usize = 64 << 10;

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
