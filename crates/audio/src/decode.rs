//! Upload bytes → mono 16 kHz: probe, demux, decode, downmix, resample, under [`Limits`].

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use symphonia::core::audio::{AudioBuffer, AudioBufferRef, Signal};
use symphonia::core::codecs::{self, CodecType, DecoderOptions};
use symphonia::core::conv::IntoSample;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, Track};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::sample::Sample;

use crate::resample::{check_rate, Resampler};
use crate::{Audio, AudioError, Limits, MAX_CHANNELS, SAMPLE_RATE};

/// What to tell a client whose file we cannot read at all.
const SUPPORTED_FORMATS: &str = "send WAV (PCM, float, A-law, µ-law, ADPCM), FLAC, MP3, \
     M4A/MP4 (AAC-LC, ALAC), Ogg (Opus, Vorbis), WebM/Matroska (Opus, Vorbis, FLAC, AAC), \
     AIFF or CAF";

/// Declared stream lengths above this (2^62 frames, millions of years) are arithmetic
/// that wrapped in a demuxer, and are treated as unknown.
const MAX_PLAUSIBLE_FRAMES: u64 = 1 << 62;

/// Decoded float samples are limited to this magnitude before downmixing and resampling.
const MAX_INPUT_LEVEL: f32 = 64.0;

/// Raw PCM is converted this many frames at a time.
const RAW_CHUNK_FRAMES: usize = 1 << 16;

/// Decodes an uploaded audio file to mono 16 kHz `f32`.
///
/// The container is found by sniffing the content; `hint` (a filename, extension or MIME
/// type) only improves error messages. Opus (in Ogg, Matroska or WebM), which symphonia
/// lacks, is decoded with libopus (see `opus.rs`). The first audio track is decoded, every channel
/// averaged into one, and the result resampled to 16 kHz with a band-limited filter.
///
/// Bounded work: the byte size is checked first, then the duration the header declares
/// (where there is one), then decoded samples as they arrive; decoding stops at the first
/// limit crossed. Damaged packets are skipped up to [`Limits::max_decode_errors`]. A file
/// that ends early (truncated upload) yields the audio it does contain. A PCM header that
/// declares more data than the upload holds — the placeholder length streaming encoders
/// such as `ffmpeg … -f wav -` write — is not trusted; the real length is enforced while
/// decoding. A panic inside a decoder on malformed input becomes [`AudioError::Corrupt`].
///
/// This copies `bytes` once (symphonia reads from an owned source); [`decode_owned`] takes
/// a `Vec<u8>` or `bytes::Bytes` without copying.
pub fn decode(bytes: &[u8], hint: Option<&str>, limits: &Limits) -> Result<Audio, AudioError> {
    // Refuse before copying anything.
    check_upload(bytes.len(), limits)?;
    decode_owned(bytes.to_vec(), hint, limits)
}

/// [`decode`] for an owned buffer (`Vec<u8>`, `bytes::Bytes`, `Arc<[u8]>`…), without copying it.
pub fn decode_owned<B>(bytes: B, hint: Option<&str>, limits: &Limits) -> Result<Audio, AudioError>
where
    B: AsRef<[u8]> + Send + Sync + 'static,
{
    let len = bytes.as_ref().len();
    check_upload(len, limits)?;
    check_caf_chunks(bytes.as_ref())?;
    check_matroska_elements(bytes.as_ref())?;
    check_mp4_atoms(bytes.as_ref())?;
    let hint = hint.map(str::trim).filter(|h| !h.is_empty());
    let bytes = Shared(Arc::new(bytes));
    let attempt = |seekable: bool| {
        catch_unwind(AssertUnwindSafe(|| {
            let source: Box<dyn MediaSource> = if seekable {
                Box::new(Cursor::new(bytes.clone()))
            } else {
                Box::new(ReadOnlySource::new(Cursor::new(bytes.clone())))
            };
            decode_container(source, len, hint, limits)
        }))
        .unwrap_or_else(|_| {
            Err(AudioError::Corrupt(
                "the decoder failed on malformed data".into(),
            ))
        })
    };
    let result = attempt(true);
    // symphonia's Matroska reader follows the SeekHead to elements at the end of the file
    // (Cues, Tags) and fails, or panics, where a truncated upload lacks them. Read such a
    // file once more front to back, as a live stream (what browsers record), so the audio
    // that did arrive is decoded. At most twice the work, only for damaged Matroska.
    if matches!(result, Err(AudioError::Corrupt(_))) && is_matroska(bytes.as_ref()) {
        if let Ok(audio) = attempt(false) {
            return Ok(audio);
        }
    }
    result
}

/// Upload bytes shared between decoding attempts without copying.
struct Shared<B>(Arc<B>);

impl<B> Clone for Shared<B> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Shared<B> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref().as_ref()
    }
}

/// Starts with the EBML magic of Matroska and WebM.
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

fn is_matroska(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3])
}

fn check_upload(len: usize, limits: &Limits) -> Result<(), AudioError> {
    limits.validate()?;
    if len == 0 {
        return Err(AudioError::Empty);
    }
    check_size(len, limits)
}

/// Converts headerless signed 16-bit little-endian PCM (interleaved when `channels > 1`;
/// `None` means mono) to mono 16 kHz `f32`, under the same limits as [`decode`].
pub fn decode_raw_pcm_s16le(
    bytes: &[u8],
    sample_rate: u32,
    channels: Option<u16>,
    limits: &Limits,
) -> Result<Audio, AudioError> {
    limits.validate()?;
    check_rate(sample_rate).map_err(AudioError::InvalidParameter)?;
    let channels = channels.unwrap_or(1);
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(AudioError::InvalidParameter(format!(
            "channel count must be between 1 and {MAX_CHANNELS}, got {channels}"
        )));
    }
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    check_size(bytes.len(), limits)?;
    let frame_bytes = 2 * usize::from(channels);
    if !bytes.len().is_multiple_of(frame_bytes) {
        return Err(AudioError::Corrupt(format!(
            "raw 16-bit PCM of {} bytes is not a whole number of {channels}-channel frames \
             ({frame_bytes} bytes each); check the channel count",
            bytes.len()
        )));
    }
    let frames = bytes.len() / frame_bytes;
    let seconds = frames as f64 / f64::from(sample_rate);
    let limit = limits.effective_max_seconds(sample_rate, channels);
    if seconds > limit {
        return Err(AudioError::TooLong { seconds, limit });
    }

    let mut sink = MonoSink::new(sample_rate, frames);
    let mut mono = Vec::with_capacity(RAW_CHUNK_FRAMES);
    for chunk in bytes.chunks(RAW_CHUNK_FRAMES * frame_bytes) {
        mono.clear();
        let scale = 1.0 / (32768.0 * f32::from(channels));
        mono.extend(chunk.chunks_exact(frame_bytes).map(|frame| {
            let sum: i32 = frame
                .chunks_exact(2)
                .map(|s| i32::from(i16::from_le_bytes([s[0], s[1]])))
                .sum();
            sum as f32 * scale
        }));
        sink.push(&mono);
    }
    Ok(Audio {
        samples: sink.finish(),
        source_rate: sample_rate,
        source_channels: channels,
        duration_seconds: seconds,
    })
}

fn check_size(bytes: usize, limits: &Limits) -> Result<(), AudioError> {
    if bytes > limits.max_bytes {
        Err(AudioError::TooLarge {
            bytes,
            limit: limits.max_bytes,
        })
    } else {
        Ok(())
    }
}

fn decode_container(
    source: Box<dyn MediaSource>,
    len: usize,
    hint: Option<&str>,
    limits: &Limits,
) -> Result<Audio, AudioError> {
    let source = MediaSourceStream::new(source, Default::default());
    let format_options = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(
            &symphonia_hint(hint),
            source,
            &format_options,
            &MetadataOptions::default(),
        )
        .map_err(|e| probe_error(e, hint))?;
    let mut format = probed.format;

    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != codecs::CODEC_TYPE_NULL)
        .cloned()
        .ok_or_else(|| {
            AudioError::Unsupported(format!(
                "the file contains no audio track; {SUPPORTED_FORMATS}"
            ))
        })?;
    let mut track = track;
    if track.codec_params.codec == codecs::CODEC_TYPE_ALAC {
        if let Some(cookie) = track
            .codec_params
            .extra_data
            .as_deref()
            .and_then(alac_config)
        {
            track.codec_params.extra_data = Some(cookie);
        }
    }
    let track_id = track.id;
    check_declared_stream(&track, len, limits)?;
    let mut decoder = crate::opus::codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| codec_error(e, track.codec_params.codec))?;

    // A packet carries at least a byte of the upload, so more packets than bytes means a
    // demuxer going round in circles on hostile input.
    let max_packets = len as u64 + 10_000;
    let max_channel_samples =
        f64::from(limits.max_samples_per_second) * limits.max_duration_seconds;
    let mut packets = 0u64;
    let mut errors = 0u32;
    let mut first_error: Option<String> = None;
    // Duration as whole frames over the rate (exact), summed over rate changes.
    let mut seconds = 0f64;
    let mut seconds_before_rate_change = 0f64;
    let mut frames_at_current_rate = 0u64;
    let mut current_rate = 0u32;
    let mut channel_samples = 0f64;
    let mut source: Option<(u32, u16)> = None;
    let mut sink: Option<MonoSink> = None;
    let mut mono = Vec::new();

    let mut record_error = |message: String| -> Result<(), AudioError> {
        errors += 1;
        let first = first_error.get_or_insert(message);
        if errors > limits.max_decode_errors {
            return Err(AudioError::Corrupt(format!(
                "more than {} damaged packets (first: {first})",
                limits.max_decode_errors
            )));
        }
        Ok(())
    };

    loop {
        if packets >= max_packets {
            return Err(AudioError::Corrupt(
                "the container yields more packets than it has bytes".into(),
            ));
        }
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            // End of stream, or of a truncated upload: keep what was decoded.
            Err(SymphoniaError::IoError(_)) => break,
            // A chained stream (new Ogg logical stream) with new parameters: stop at the first.
            Err(SymphoniaError::ResetRequired) => {
                tracing::debug!(
                    "stream parameters changed mid-file; decoding the first stream only"
                );
                break;
            }
            Err(SymphoniaError::DecodeError(message)) => {
                record_error(format!("demuxing: {message}"))?;
                packets += 1;
                continue;
            }
            Err(other) if sink.is_some() => {
                tracing::debug!(error = %other, "stopping at a demuxer error after decoding audio");
                break;
            }
            Err(other) => return Err(stream_error(other)),
        };
        packets += 1;
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(decoded) => decoded,
            Err(SymphoniaError::DecodeError(message)) => {
                record_error(message.to_string())?;
                continue;
            }
            Err(SymphoniaError::IoError(error)) => {
                record_error(format!("packet ends early ({error})"))?;
                continue;
            }
            Err(SymphoniaError::ResetRequired) => {
                decoder.reset();
                record_error("decoder reset required".into())?;
                continue;
            }
            Err(other) => return Err(stream_error(other)),
        };

        let spec = *decoded.spec();
        let channels = spec.channels.count();
        if channels == 0 {
            return Err(AudioError::Corrupt("the stream declares 0 channels".into()));
        }
        if channels > usize::from(MAX_CHANNELS) {
            return Err(AudioError::Unsupported(format!(
                "{channels} channels; at most {MAX_CHANNELS} are supported"
            )));
        }
        check_rate(spec.rate).map_err(AudioError::Unsupported)?;
        let frames = decoded.frames();
        if frames == 0 {
            continue;
        }
        let channels = channels as u16;
        source.get_or_insert((spec.rate, channels));

        if current_rate != 0 && spec.rate != current_rate {
            seconds_before_rate_change += frames_at_current_rate as f64 / f64::from(current_rate);
            frames_at_current_rate = 0;
        }
        current_rate = spec.rate;
        frames_at_current_rate += frames as u64;
        seconds = seconds_before_rate_change + frames_at_current_rate as f64 / f64::from(spec.rate);
        channel_samples += frames as f64 * f64::from(channels);
        if seconds > limits.max_duration_seconds || channel_samples > max_channel_samples {
            return Err(AudioError::TooLong {
                seconds,
                limit: limits.effective_max_seconds(spec.rate, channels),
            });
        }

        downmix(&decoded, &mut mono);
        let declared = track
            .codec_params
            .n_frames
            .filter(|&f| f <= MAX_PLAUSIBLE_FRAMES)
            .unwrap_or(0) as usize;
        match &mut sink {
            Some(sink) => sink.switch_rate(spec.rate),
            None => sink = Some(MonoSink::new(spec.rate, declared)),
        }
        sink.as_mut().expect("sink was just set").push(&mono);
    }

    let (Some((source_rate, source_channels)), Some(sink)) = (source, sink) else {
        return Err(match first_error {
            Some(error) => AudioError::Corrupt(format!("no audio could be decoded ({error})")),
            None => AudioError::Empty,
        });
    };
    if errors > 0 {
        tracing::debug!(errors, first = ?first_error, "skipped damaged packets");
    }
    Ok(Audio {
        samples: sink.finish(),
        source_rate,
        source_channels,
        duration_seconds: seconds,
    })
}

/// Up-front checks on what the container declares, before any decoding work.
fn check_declared_stream(
    track: &Track,
    upload_bytes: usize,
    limits: &Limits,
) -> Result<(), AudioError> {
    let params = &track.codec_params;
    let channels = params.channels.map(|c| c.count());
    if channels == Some(0) {
        return Err(AudioError::Corrupt("the stream declares 0 channels".into()));
    }
    if let Some(count) = channels.filter(|&c| c > usize::from(MAX_CHANNELS)) {
        return Err(AudioError::Unsupported(format!(
            "{count} channels; at most {MAX_CHANNELS} are supported"
        )));
    }
    if let Some(rate) = params.sample_rate {
        check_rate(rate).map_err(AudioError::Unsupported)?;
    }
    // A "length" near 2^64 is a demuxer's subtraction gone below zero, not a length:
    // symphonia's MP3 reader computes `frames - delay - padding` from the LAME tag, which
    // wraps for a file with fewer frames than its encoder delay (e.g. header only).
    let frames = params.n_frames.filter(|&f| f <= MAX_PLAUSIBLE_FRAMES);
    let (Some(frames), Some(rate)) = (frames, params.sample_rate) else {
        return Ok(());
    };
    let channels = channels.unwrap_or(1) as u16;
    let seconds = frames as f64 / f64::from(rate);
    let limit = limits.effective_max_seconds(rate, channels);
    // Uncompressed data needs at least 4 bits (ADPCM) per sample; a PCM header declaring
    // more than the upload could hold is a streaming placeholder or a truncated file, not a
    // length to reject on. Counting decoded samples enforces the limit instead.
    let placeholder = is_uncompressed(params.codec)
        && (frames as f64) * f64::from(channels) / 2.0 > upload_bytes as f64;
    if seconds > limit && !placeholder {
        return Err(AudioError::TooLong { seconds, limit });
    }
    Ok(())
}

/// The ALAC decoder wants the bare 24-byte `ALACSpecificConfig` (or it followed by a 24-byte
/// channel layout). CAF files (ffmpeg's, Apple's `afconvert`) wrap it in a `frma` atom and an
/// `alac` atom, as Apple's ALAC specification allows; unwrapped here. `None`: leave the cookie
/// as it is.
pub(crate) fn alac_config(cookie: &[u8]) -> Option<Box<[u8]>> {
    const CONFIG: usize = 24;
    let atom = |bytes: &[u8], kind: &[u8; 4]| bytes.len() >= 12 && &bytes[4..8] == kind;
    let mut rest = cookie;
    if atom(rest, b"frma") {
        let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = rest.get(size.max(8)..)?;
    }
    if atom(rest, b"alac") {
        // Atom size and type, then a version and flags word.
        rest = &rest[12..];
    } else if rest.len() == cookie.len() {
        return None;
    }
    let layout = rest
        .get(CONFIG..CONFIG + 8)
        .is_some_and(|l| &l[4..8] == b"chan");
    let keep = if layout && rest.len() >= 2 * CONFIG {
        2 * CONFIG
    } else {
        CONFIG
    };
    rest.get(..keep).map(Box::from)
}

fn is_uncompressed(codec: CodecType) -> bool {
    use codecs::*;
    const UNCOMPRESSED: [CodecType; 44] = [
        CODEC_TYPE_PCM_S32LE,
        CODEC_TYPE_PCM_S32LE_PLANAR,
        CODEC_TYPE_PCM_S32BE,
        CODEC_TYPE_PCM_S32BE_PLANAR,
        CODEC_TYPE_PCM_S24LE,
        CODEC_TYPE_PCM_S24LE_PLANAR,
        CODEC_TYPE_PCM_S24BE,
        CODEC_TYPE_PCM_S24BE_PLANAR,
        CODEC_TYPE_PCM_S16LE,
        CODEC_TYPE_PCM_S16LE_PLANAR,
        CODEC_TYPE_PCM_S16BE,
        CODEC_TYPE_PCM_S16BE_PLANAR,
        CODEC_TYPE_PCM_S8,
        CODEC_TYPE_PCM_S8_PLANAR,
        CODEC_TYPE_PCM_U32LE,
        CODEC_TYPE_PCM_U32LE_PLANAR,
        CODEC_TYPE_PCM_U32BE,
        CODEC_TYPE_PCM_U32BE_PLANAR,
        CODEC_TYPE_PCM_U24LE,
        CODEC_TYPE_PCM_U24LE_PLANAR,
        CODEC_TYPE_PCM_U24BE,
        CODEC_TYPE_PCM_U24BE_PLANAR,
        CODEC_TYPE_PCM_U16LE,
        CODEC_TYPE_PCM_U16LE_PLANAR,
        CODEC_TYPE_PCM_U16BE,
        CODEC_TYPE_PCM_U16BE_PLANAR,
        CODEC_TYPE_PCM_U8,
        CODEC_TYPE_PCM_U8_PLANAR,
        CODEC_TYPE_PCM_F32LE,
        CODEC_TYPE_PCM_F32LE_PLANAR,
        CODEC_TYPE_PCM_F32BE,
        CODEC_TYPE_PCM_F32BE_PLANAR,
        CODEC_TYPE_PCM_F64LE,
        CODEC_TYPE_PCM_F64LE_PLANAR,
        CODEC_TYPE_PCM_F64BE,
        CODEC_TYPE_PCM_F64BE_PLANAR,
        CODEC_TYPE_PCM_ALAW,
        CODEC_TYPE_PCM_MULAW,
        CODEC_TYPE_ADPCM_G722,
        CODEC_TYPE_ADPCM_G726,
        CODEC_TYPE_ADPCM_G726LE,
        CODEC_TYPE_ADPCM_MS,
        CODEC_TYPE_ADPCM_IMA_WAV,
        CODEC_TYPE_ADPCM_IMA_QT,
    ];
    UNCOMPRESSED.contains(&codec)
}

fn symphonia_hint(hint: Option<&str>) -> Hint {
    let mut out = Hint::new();
    if let Some(hint) = hint {
        if hint.contains('/') {
            out.mime_type(hint.split(';').next().unwrap_or(hint).trim());
        } else {
            let extension = hint.rsplit('.').next().unwrap_or(hint);
            out.with_extension(&extension.to_ascii_lowercase());
        }
    }
    out
}

fn probe_error(error: SymphoniaError, hint: Option<&str>) -> AudioError {
    let named = hint
        .map(|h| format!(" (uploaded as '{h}')"))
        .unwrap_or_default();
    match error {
        SymphoniaError::Unsupported(_) => AudioError::Unsupported(format!(
            "the file is not in a recognised audio format{named}; {SUPPORTED_FORMATS}"
        )),
        SymphoniaError::IoError(_) => AudioError::Corrupt(format!(
            "the file ends before its header is complete{named}; the upload may be truncated"
        )),
        other => AudioError::Corrupt(format!("invalid audio header{named}: {other}")),
    }
}

fn codec_error(error: SymphoniaError, codec: CodecType) -> AudioError {
    let name = codec_name(codec);
    match error {
        // A codec we decode, in a variant we do not (e.g. Opus ambisonics): say which.
        SymphoniaError::Unsupported(feature)
            if crate::opus::codecs().get_codec(codec).is_some() =>
        {
            AudioError::Unsupported(format!(
                "this {name} stream uses a feature that is not supported ({feature}); \
                 convert the file, or {SUPPORTED_FORMATS}"
            ))
        }
        SymphoniaError::Unsupported(_) => AudioError::Unsupported(format!(
            "the {name} codec is not supported; convert the file, or {SUPPORTED_FORMATS}"
        )),
        other => AudioError::Corrupt(format!("invalid codec parameters: {other}")),
    }
}

fn stream_error(error: SymphoniaError) -> AudioError {
    match error {
        SymphoniaError::Unsupported(message) => {
            AudioError::Unsupported(format!("{message}; {SUPPORTED_FORMATS}"))
        }
        other => AudioError::Corrupt(other.to_string()),
    }
}

fn codec_name(codec: CodecType) -> String {
    if let Some(descriptor) = crate::opus::codecs().get_codec(codec) {
        return descriptor.long_name.to_string();
    }
    let name = match codec {
        codecs::CODEC_TYPE_SPEEX => "Speex",
        codecs::CODEC_TYPE_WMA => "WMA",
        codecs::CODEC_TYPE_EAC3 => "E-AC-3",
        codecs::CODEC_TYPE_AC4 => "AC-4",
        codecs::CODEC_TYPE_DCA => "DTS",
        codecs::CODEC_TYPE_MUSEPACK => "Musepack",
        codecs::CODEC_TYPE_WAVPACK => "WavPack",
        codecs::CODEC_TYPE_MONKEYS_AUDIO => "Monkey's Audio",
        codecs::CODEC_TYPE_TTA => "TTA",
        codecs::CODEC_TYPE_ATRAC1
        | codecs::CODEC_TYPE_ATRAC3
        | codecs::CODEC_TYPE_ATRAC3PLUS
        | codecs::CODEC_TYPE_ATRAC9 => "ATRAC",
        codecs::CODEC_TYPE_ADPCM_G722
        | codecs::CODEC_TYPE_ADPCM_G726
        | codecs::CODEC_TYPE_ADPCM_G726LE => "G.722/G.726 ADPCM",
        other => return format!("audio codec {other}"),
    };
    name.to_string()
}

/// Averages every channel of `decoded` into `mono` (replacing its contents), as `f32`,
/// with non-finite samples replaced by 0 before they can spread through the filter.
fn downmix(decoded: &AudioBufferRef<'_>, mono: &mut Vec<f32>) {
    match decoded {
        AudioBufferRef::U8(b) => downmix_planes(b, mono),
        AudioBufferRef::U16(b) => downmix_planes(b, mono),
        AudioBufferRef::U24(b) => downmix_planes(b, mono),
        AudioBufferRef::U32(b) => downmix_planes(b, mono),
        AudioBufferRef::S8(b) => downmix_planes(b, mono),
        AudioBufferRef::S16(b) => downmix_planes(b, mono),
        AudioBufferRef::S24(b) => downmix_planes(b, mono),
        AudioBufferRef::S32(b) => downmix_planes(b, mono),
        AudioBufferRef::F32(b) => downmix_planes(b, mono),
        AudioBufferRef::F64(b) => downmix_planes(b, mono),
    }
}

fn downmix_planes<S: Sample + IntoSample<f32>>(buffer: &AudioBuffer<S>, mono: &mut Vec<f32>) {
    let planes = buffer.planes();
    let planes = planes.planes();
    let frames = buffer.frames();
    // Finite, and within ±64 (float sources may exceed full scale; the output is clamped to
    // ±1 anyway): summing 32 channels of f32::MAX would otherwise overflow to inf, and the
    // resampler turn it into NaN.
    let finite = |s: S| {
        let v: f32 = s.into_sample();
        if v.is_finite() {
            v.clamp(-MAX_INPUT_LEVEL, MAX_INPUT_LEVEL)
        } else {
            0.0
        }
    };
    mono.clear();
    mono.extend(planes[0][..frames].iter().map(|&s| finite(s)));
    if planes.len() > 1 {
        for plane in &planes[1..] {
            for (m, &s) in mono.iter_mut().zip(&plane[..frames]) {
                *m += finite(s);
            }
        }
        let scale = 1.0 / planes.len() as f32;
        for m in mono.iter_mut() {
            *m *= scale;
        }
    }
}

/// Collects mono audio at the source rate into 16 kHz output; restarts the resampler if
/// the source rate changes mid-stream.
struct MonoSink {
    rate: u32,
    resampler: Option<Resampler>,
    out: Vec<f32>,
}

impl MonoSink {
    /// `expected_frames` (at `rate`) only sizes the first allocation, capped so a lying
    /// header cannot reserve memory.
    fn new(rate: u32, expected_frames: usize) -> Self {
        let expected = ((expected_frames as u64).saturating_mul(u64::from(SAMPLE_RATE))
            / u64::from(rate)) as usize;
        MonoSink {
            rate,
            resampler: (rate != SAMPLE_RATE).then(|| Resampler::new(rate, SAMPLE_RATE)),
            out: Vec::with_capacity(expected.min(10 * 60 * SAMPLE_RATE as usize)),
        }
    }

    fn switch_rate(&mut self, rate: u32) {
        if rate != self.rate {
            tracing::debug!(
                from = self.rate,
                to = rate,
                "sample rate changed mid-stream"
            );
            if let Some(resampler) = self.resampler.take() {
                resampler.finish(&mut self.out);
            }
            self.rate = rate;
            self.resampler = (rate != SAMPLE_RATE).then(|| Resampler::new(rate, SAMPLE_RATE));
        }
    }

    fn push(&mut self, mono: &[f32]) {
        match &mut self.resampler {
            Some(resampler) => resampler.push(mono, &mut self.out),
            None => self.out.extend_from_slice(mono),
        }
    }

    fn finish(mut self) -> Vec<f32> {
        if let Some(resampler) = self.resampler.take() {
            resampler.finish(&mut self.out);
        }
        for s in &mut self.out {
            // `clamp` keeps NaN; none should reach here, but the contract is [-1, 1].
            *s = if s.is_nan() { 0.0 } else { s.clamp(-1.0, 1.0) };
        }
        self.out
    }
}
