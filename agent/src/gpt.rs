//! Just enough GPT to turn `PARTUUID=<guid>` into a partition number: the
//! kernel does not put PARTUUID in sysfs (udev learns it by probing), so we read
//! the primary header and entry array ourselves. Pure over byte slices. CRCs are
//! not checked: the GPT only says where to look; dm-verity judges the content.

/// "EFI PART" at the start of the header (LBA 1).
const SIGNATURE: &[u8; 8] = b"EFI PART";

/// Where the entry array is and how it is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses the header block (LBA 1); `None` when it is not a sane GPT header.
pub fn parse_header(block: &[u8]) -> Option<Header> {
    if block.get(..8)? != SIGNATURE {
        return None;
    }
    let h = Header {
        entries_lba: u64_at(block, 72)?,
        entry_count: u32_at(block, 80)?,
        entry_size: u32_at(block, 84)?,
    };
    let sane = (128..=4096).contains(&h.entry_size)
        && h.entry_size.is_multiple_of(8)
        && h.entry_count <= 1024;
    sane.then_some(h)
}

/// GUID bytes as text: the first three fields are little-endian on disk.
pub fn guid_string(g: &[u8]) -> Option<String> {
    let b: &[u8; 16] = g.get(..16)?.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// (1-based partition number, unique GUID) of every used entry.
pub fn partitions(h: &Header, entries: &[u8]) -> Vec<(u32, String)> {
    let size = h.entry_size as usize;
    (0..h.entry_count)
        .filter_map(|i| {
            let e = entries.get(i as usize * size..(i as usize + 1) * size)?;
            if e.get(..16)?.iter().all(|&b| b == 0) {
                return None; // unused entry: zero type GUID
            }
            Some((i + 1, guid_string(e.get(16..32)?)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1-based partition number whose unique GUID is `want` (lower-case text).
    fn find_partition(h: &Header, entries: &[u8], want: &str) -> Option<u32> {
        partitions(h, entries)
            .into_iter()
            .find(|(_, g)| g == want)
            .map(|(n, _)| n)
    }

    /// GUID text to on-disk bytes.
    fn guid_bytes(s: &str) -> [u8; 16] {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap();
        }
        b[..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        b
    }

    fn header(count: u32, size: u32) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(SIGNATURE);
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&size.to_le_bytes());
        h
    }

    const ROOT_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

    #[test]
    fn guid_round_trip() {
        let g = "11223344-5566-7788-99aa-bbccddeeff00";
        assert_eq!(guid_string(&guid_bytes(g)).unwrap(), g);
        // the type GUID of an x86-64 root partition as it sits on disk
        assert_eq!(&guid_bytes(ROOT_TYPE)[..4], &[0xe3, 0xbc, 0x68, 0x4f]);
    }

    #[test]
    fn finds_the_partition_by_unique_guid() {
        let h = parse_header(&header(4, 128)).unwrap();
        assert_eq!(
            h,
            Header {
                entries_lba: 2,
                entry_count: 4,
                entry_size: 128
            }
        );
        let mut entries = vec![0u8; 4 * 128];
        let want = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
        entries[128..144].copy_from_slice(&guid_bytes(ROOT_TYPE));
        entries[144..160].copy_from_slice(&guid_bytes("11111111-2222-3333-4444-555555555555"));
        entries[256..272].copy_from_slice(&guid_bytes(ROOT_TYPE));
        entries[272..288].copy_from_slice(&guid_bytes(want));
        assert_eq!(find_partition(&h, &entries, want), Some(3));
        assert_eq!(
            find_partition(&h, &entries, "11111111-2222-3333-4444-555555555555"),
            Some(2)
        );
        assert_eq!(
            find_partition(&h, &entries, "00000000-0000-0000-0000-000000000000"),
            None
        );
        assert_eq!(partitions(&h, &entries).len(), 2);
        // a truncated array is not a panic
        assert_eq!(find_partition(&h, &entries[..200], want), None);
    }

    #[test]
    fn rejects_non_gpt() {
        assert!(parse_header(&[0u8; 512]).is_none());
        assert!(parse_header(&header(4, 64)).is_none());
        assert!(parse_header(&header(4, u32::MAX - 7)).is_none());
        assert!(parse_header(&header(100_000, 128)).is_none());
        assert!(parse_header(b"EFI PART").is_none());
    }
}
