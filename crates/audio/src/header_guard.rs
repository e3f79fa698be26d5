//! Container headers checked before symphonia reads them. Its demuxers allocate what a
//! header declares (chunk sizes, packet counts, element sizes, table lengths) before reading
//! it, so a few hundred hostile bytes could abort the process on a failed allocation (each
//! case found by `make fuzz`). Every declared size must fit in the upload.

use crate::AudioError;

/// Rejects CAF, Matroska/WebM and MP4 headers that declare more than the upload holds;
/// other formats pass unchecked.
pub(crate) fn check_declared_sizes(bytes: &[u8]) -> Result<(), AudioError> {
    check_caf_chunks(bytes)?;
    check_matroska_elements(bytes)?;
    check_mp4_atoms(bytes)
}

/// Starts with the EBML magic of Matroska and WebM.
pub(crate) fn is_matroska(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3])
}

/// CAF chunk sizes and packet counts are taken on trust by symphonia's demuxer, which
/// allocates them up front: a few hundred bytes declaring 2^56 packets, or a chunk of
/// 2^40 bytes, abort the process on the failed allocation (found by `make fuzz`). A chunk
/// other than `data` must fit in the upload, and a packet table holds at least one byte
/// per packet.
fn check_caf_chunks(bytes: &[u8]) -> Result<(), AudioError> {
    if !bytes.starts_with(b"caff") {
        return Ok(());
    }
    let corrupt = |what: &str| Err(AudioError::Corrupt(format!("CAF file: {what}")));
    let be64 = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
    };
    let mut at = 8;
    while let (Some(kind), Some(size)) = (bytes.get(at..at + 4), be64(at + 4)) {
        let body = at + 12;
        let remaining = (bytes.len() - body) as i64;
        if kind == b"data" {
            // The audio itself may run to the end (size -1) or be cut short; symphonia
            // reads it packet by packet.
            if size < 0 || size >= remaining {
                return Ok(());
            }
        } else if !(0..=remaining).contains(&size) {
            return corrupt(&format!(
                "the {:?} chunk declares {size} bytes, {remaining} are left",
                String::from_utf8_lossy(kind)
            ));
        }
        if kind == b"pakt" {
            let packets = be64(body).unwrap_or(0);
            if !(0..=size).contains(&packets) {
                return corrupt(&format!(
                    "the packet table declares {packets} packets in {size} bytes"
                ));
            }
        }
        at = body + size as usize;
    }
    Ok(())
}

/// Matroska/WebM master elements: their children follow their header, so the scan below
/// descends into them instead of skipping their (possibly cut-off) body.
const MATROSKA_MASTERS: [u32; 46] = [
    0x1A45_DFA3, // EBML header
    0x1853_8067, // Segment
    0x114D_9B74, // SeekHead
    0x4DBB,      // Seek
    0x1549_A966, // Info
    0x1654_AE6B, // Tracks
    0xAE,        // TrackEntry
    0xE1,        // Audio
    0xE0,        // Video
    0x6D80,      // ContentEncodings
    0x6240,      // ContentEncoding
    0x1F43_B675, // Cluster
    0xA0,        // BlockGroup
    0x75A1,      // BlockAdditions
    0xA6,        // BlockMore
    0x1C53_BB6B, // Cues
    0xBB,        // CuePoint
    0xB7,        // CueTrackPositions
    0x1254_C367, // Tags
    0x7373,      // Tag
    0x1043_A770, // Chapters
    0x1941_A469, // Attachments
    0x61A7,      // AttachedFile
    0x45B9,      // EditionEntry
    0xB6,        // ChapterAtom
    0x80,        // ChapterDisplay
    0x8F,        // ChapterTrack
    0x6944,      // ChapProcess
    0x6911,      // ChapProcessCommand
    0x63C0,      // Targets
    0x67C8,      // SimpleTag
    0x5034,      // ContentCompression
    0x5035,      // ContentEncryption
    0x47E7,      // ContentEncAESSettings
    0x8E,        // Slices
    0xE8,        // TimeSlice
    0x5854,      // SilentTracks
    0xDB,        // CueReference
    0x6624,      // TrackTranslate
    0xE2,        // TrackOperation
    0xE3,        // TrackCombinePlanes
    0xE4,        // TrackPlane
    0xE9,        // TrackJoinBlocks
    0x55B0,      // Colour
    0x55D0,      // MasteringMetadata
    0x7670,      // Projection
];

/// An EBML variable-length integer at `at`: (value without the length marker, its
/// length), or `None` past the end or on an invalid first byte.
fn ebml_vint(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *bytes.get(at)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let mut value = u64::from(first) & (0xFF >> len);
    for &b in bytes.get(at + 1..at + len)? {
        value = value << 8 | u64::from(b);
    }
    Some((value, len))
}

/// symphonia's Matroska demuxer allocates a leaf element's declared size before reading
/// it: a 100-byte upload declaring a 36 PB block aborted the process on the failed
/// allocation (found by `make fuzz`). A leaf element may not declare more bytes than the
/// whole upload holds; masters (often cut short in a truncated file) are descended into.
fn check_matroska_elements(bytes: &[u8]) -> Result<(), AudioError> {
    if !is_matroska(bytes) {
        return Ok(());
    }
    let mut at = 0;
    while let Some((_, id_len)) = ebml_vint(bytes, at) {
        let Some((size, size_len)) = ebml_vint(bytes, at + id_len) else {
            break;
        };
        let id = bytes[at..at + id_len]
            .iter()
            .fold(0u32, |id, &b| id << 8 | u32::from(b));
        let body = at + id_len + size_len;
        let unknown = size == (1u64 << (7 * size_len)) - 1;
        if MATROSKA_MASTERS.contains(&id) || unknown {
            at = body;
        } else if size > bytes.len() as u64 {
            return Err(AudioError::Corrupt(format!(
                "Matroska element {id:#X} declares {size} bytes in a {}-byte file",
                bytes.len()
            )));
        } else {
            if id == 0xA3 || id == 0xA1 {
                let block = &bytes[body.min(bytes.len())..(body + size as usize).min(bytes.len())];
                check_matroska_laces(block, size)?;
            }
            at = body + size as usize;
        }
    }
    Ok(())
}

/// A (Simple)Block's Xiph or EBML lacing lists the sizes of all but its last frame, and
/// symphonia allocates each before reading it: a 400-byte upload declaring a 3 TB lace
/// aborted the process (found by `make fuzz`). Each size, and their running sum, must fit
/// in the block. `block` holds what the upload has of a block declaring `size` bytes.
fn check_matroska_laces(block: &[u8], size: u64) -> Result<(), AudioError> {
    // Track number, 16-bit timestamp, flags, then the number of laced frames minus one.
    let Some((_, track_len)) = ebml_vint(block, 0) else {
        return Ok(());
    };
    let (Some(&flags), Some(&count)) = (block.get(track_len + 2), block.get(track_len + 3)) else {
        return Ok(());
    };
    let xiph = match (flags >> 1) & 0b11 {
        0b01 => true,
        0b11 => false,
        _ => return Ok(()),
    };
    let too_big = |lace: u64| {
        Err(AudioError::Corrupt(format!(
            "Matroska block lacing declares a {lace}-byte frame in a {size}-byte block"
        )))
    };
    let mut at = track_len + 4;
    let (mut previous, mut total) = (0i64, 0u64);
    for index in 0..usize::from(count) {
        let lace = if xiph {
            let mut lace = 0u64;
            loop {
                let Some(&byte) = block.get(at) else {
                    return Ok(());
                };
                at += 1;
                lace += u64::from(byte);
                if byte != 255 {
                    break lace;
                }
            }
        } else {
            let Some((value, len)) = ebml_vint(block, at) else {
                return Ok(());
            };
            at += len;
            // The first size is unsigned, the others are signed differences from the last.
            previous = if index == 0 {
                value as i64
            } else {
                let bias = (1i64 << (7 * len - 1)) - 1;
                previous.wrapping_add(value as i64 - bias)
            };
            previous as u64
        };
        total = total.saturating_add(lace);
        if lace > size || total > size {
            return too_big(lace);
        }
    }
    Ok(())
}

/// MP4 atoms whose children follow their 8-byte header.
const MP4_CONTAINERS: [&[u8; 4]; 11] = [
    b"moov", b"trak", b"mdia", b"minf", b"stbl", b"udta", b"edts", b"dinf", b"mvex", b"moof",
    b"traf",
];

/// MP4 tables symphonia allocates from their entry count: (atom, offset of the count in
/// the body, bytes per entry).
const MP4_TABLES: [(&[u8; 4], usize, u64); 8] = [
    (b"stts", 4, 8),
    (b"stsc", 4, 12),
    (b"stsz", 8, 4),
    (b"stco", 4, 4),
    (b"co64", 4, 8),
    (b"ctts", 4, 8),
    (b"stss", 4, 4),
    (b"elst", 4, 12),
];

/// symphonia's MP4 demuxer allocates atoms and sample tables from their declared sizes and
/// counts before reading them: a 2 KB upload declaring 26 GB aborted the process on the
/// failed allocation (found by `make fuzz`). Atoms other than `mdat` must fit in the
/// upload, and a table's entries must fit in its atom (`stsz` with one size for every
/// sample has no entries).
fn check_mp4_atoms(bytes: &[u8]) -> Result<(), AudioError> {
    if bytes.get(4..8) != Some(b"ftyp") {
        return Ok(());
    }
    let corrupt = |what: String| Err(AudioError::Corrupt(format!("MP4 file: {what}")));
    let be32 = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u64::from(u32::from_be_bytes(b.try_into().expect("4 bytes"))))
    };
    let mut at = 0;
    while let (Some(size), Some(kind)) = (be32(at), bytes.get(at + 4..at + 8)) {
        let (header, size) = match size {
            1 => match bytes.get(at + 8..at + 16) {
                Some(b) => (16, u64::from_be_bytes(b.try_into().expect("8 bytes"))),
                None => break,
            },
            0 => (8, (bytes.len() - at) as u64),
            size => (8, size),
        };
        let remaining = (bytes.len() - at) as u64;
        if kind == b"mdat" && size > remaining {
            // The audio itself, cut short: symphonia reads it packet by packet.
            break;
        }
        if size < header || size > remaining {
            return corrupt(format!(
                "the {:?} atom declares {size} bytes, {remaining} are left",
                String::from_utf8_lossy(kind)
            ));
        }
        let body = at + header as usize;
        if let Some((_, offset, entry)) = MP4_TABLES.iter().find(|(name, ..)| &name[..] == kind) {
            let uniform_stsz = kind == b"stsz" && be32(body + 4).is_some_and(|s| s != 0);
            let count = be32(body + offset).unwrap_or(0);
            let room = size - header;
            if !uniform_stsz && count.saturating_mul(*entry) > room {
                return corrupt(format!(
                    "the {:?} table declares {count} entries in {room} bytes",
                    String::from_utf8_lossy(kind)
                ));
            }
        }
        at = if MP4_CONTAINERS.iter().any(|name| &name[..] == kind) {
            body
        } else {
            at + size as usize
        };
    }
    Ok(())
}
