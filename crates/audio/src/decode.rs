//! Upload bytes → mono 16 kHz: probe, demux, decode, downmix, resample, under [`Limits`].
//!
//! The path: [`decode_owned`] checks the size and the container's declared sizes
//! (`header_guard`), then `decode_container` probes the format (`open_container`), picks
//! the track (`first_audio_track`), checks what it declares (`check_declared_stream`) and
//! reads it packet by packet (`decode_track`: `next_packet`, the codec, `TrackOutput::push`
//! for downmixing and resampling into a `MonoSink`).

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use symphonia::core::audio::{AudioBuffer, AudioBufferRef, Signal};
use symphonia::core::codecs::{self, CodecType, Decoder, DecoderOptions};
use symphonia::core::conv::IntoSample;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader, Packet, Track};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::sample::Sample;

use crate::header_guard::{check_declared_sizes, is_matroska};
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
    let mut samples = Collect::default();
    let source = decode_into(bytes, hint, limits, &mut samples)?;
    Ok(source.with_samples(samples.0))
}

/// Where decoded 16 kHz mono samples go, a chunk at a time as decoding produces them,
/// so that nothing needs to hold the whole file's samples but their final owner (the
/// decoder child writes each chunk to the server: see [`crate::child`]).
pub trait SampleSink {
    /// The source declares about `samples` in all (the container's length, capped by the
    /// limits; a hint to size memory, not a promise). Called at most once per attempt,
    /// before the first [`SampleSink::write`]; an error stops decoding.
    fn expect(&mut self, samples: usize) -> Result<(), AudioError> {
        let _ = samples;
        Ok(())
    }
    /// The next samples, each in [-1, 1]; an error stops decoding and is returned.
    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError>;
    /// Decoding starts over from the first sample (a damaged Matroska file read again
    /// front to back): forget what was written.
    fn restart(&mut self) -> Result<(), AudioError>;
}

/// What decoding reports besides the samples it wrote to its [`SampleSink`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceInfo {
    /// Sample rate of the source stream (the first one, if it changed mid-stream).
    pub source_rate: u32,
    /// Channel count of the source stream (the first decoded packet's).
    pub source_channels: u16,
    /// Duration of the decoded audio in seconds, measured at the source rate.
    pub duration_seconds: f64,
}

impl SourceInfo {
    /// The [`Audio`] of these `samples`.
    pub fn with_samples(self, samples: Vec<f32>) -> Audio {
        Audio {
            samples,
            source_rate: self.source_rate,
            source_channels: self.source_channels,
            duration_seconds: self.duration_seconds,
        }
    }
}

/// A [`SampleSink`] that keeps every sample in memory.
#[derive(Default)]
struct Collect(Vec<f32>);

impl SampleSink for Collect {
    /// Sized from what the source declares, capped at 10 minutes so that a lying
    /// header cannot reserve memory.
    fn expect(&mut self, samples: usize) -> Result<(), AudioError> {
        self.0.reserve(samples.min(10 * 60 * SAMPLE_RATE as usize));
        Ok(())
    }

    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.0.extend_from_slice(samples);
        Ok(())
    }

    fn restart(&mut self) -> Result<(), AudioError> {
        self.0.clear();
        Ok(())
    }
}

/// [`decode_owned`], its samples written to `sink` as they are decoded rather than
/// returned: memory for one chunk, not the file.
pub fn decode_into<B>(
    bytes: B,
    hint: Option<&str>,
    limits: &Limits,
    sink: &mut dyn SampleSink,
) -> Result<SourceInfo, AudioError>
where
    B: AsRef<[u8]> + Send + Sync + 'static,
{
    let len = bytes.as_ref().len();
    check_upload(len, limits)?;
    check_declared_sizes(bytes.as_ref())?;
    let hint = hint.map(str::trim).filter(|h| !h.is_empty());
    let bytes = Shared(Arc::new(bytes));
    let attempt = |seekable: bool, sink: &mut dyn SampleSink| {
        catch_unwind(AssertUnwindSafe(|| {
            let source: Box<dyn MediaSource> = if seekable {
                Box::new(Cursor::new(bytes.clone()))
            } else {
                Box::new(ReadOnlySource::new(Cursor::new(bytes.clone())))
            };
            decode_container(source, len, hint, limits, sink)
        }))
        .unwrap_or_else(|_| {
            Err(AudioError::Corrupt(
                "the decoder failed on malformed data".into(),
            ))
        })
    };
    let result = attempt(true, sink);
    // symphonia's Matroska reader follows the SeekHead to elements at the end of the file
    // (Cues, Tags) and fails, or panics, where a truncated upload lacks them. Read such a
    // file once more front to back, as a live stream (what browsers record), so the audio
    // that did arrive is decoded. At most twice the work, only for damaged Matroska.
    if matches!(result, Err(AudioError::Corrupt(_))) && is_matroska(bytes.as_ref()) {
        sink.restart()?;
        if let Ok(source) = attempt(false, sink) {
            return Ok(source);
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

    let mut samples = Collect::default();
    let mut sink = MonoSink::new(sample_rate, frames, &mut samples)?;
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
        sink.push(&mono, &mut samples)?;
    }
    sink.finish(&mut samples)?;
    Ok(Audio {
        samples: samples.0,
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

/// Decodes the first audio track of the container in `source` (`len` bytes) under `limits`:
/// probe the container, pick the track, check what it declares, then decode it.
fn decode_container(
    source: Box<dyn MediaSource>,
    len: usize,
    hint: Option<&str>,
    limits: &Limits,
    sink: &mut dyn SampleSink,
) -> Result<SourceInfo, AudioError> {
    let mut format = open_container(source, hint)?;
    let track = first_audio_track(format.tracks())?;
    check_declared_stream(&track, len, limits)?;
    let decoder = crate::opus::codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| codec_error(e, track.codec_params.codec))?;
    decode_track(format.as_mut(), decoder, &track, len, limits, sink)
}

/// Probes the container format from the content (`hint` only names it in errors).
fn open_container(
    source: Box<dyn MediaSource>,
    hint: Option<&str>,
) -> Result<Box<dyn FormatReader>, AudioError> {
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
    Ok(probed.format)
}

/// The first track with a codec, its ALAC cookie unwrapped for the decoder (see
/// [`alac_config`]).
fn first_audio_track(tracks: &[Track]) -> Result<Track, AudioError> {
    let mut track = tracks
        .iter()
        .find(|t| t.codec_params.codec != codecs::CODEC_TYPE_NULL)
        .cloned()
        .ok_or_else(|| {
            AudioError::Unsupported(format!(
                "the file contains no audio track; {SUPPORTED_FORMATS}"
            ))
        })?;
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
    Ok(track)
}

/// Reads `track`'s packets from `format` and decodes them into 16 kHz mono, skipping
/// damaged packets within [`Limits::max_decode_errors`] and stopping at the first limit
/// crossed. `len` (the upload's size) bounds the packet count.
fn decode_track(
    format: &mut dyn FormatReader,
    mut decoder: Box<dyn Decoder>,
    track: &Track,
    len: usize,
    limits: &Limits,
    sink: &mut dyn SampleSink,
) -> Result<SourceInfo, AudioError> {
    // A packet carries at least a byte of the upload, so more packets than bytes means a
    // demuxer going round in circles on hostile input.
    let max_packets = len as u64 + 10_000;
    let mut packets = 0u64;
    let mut damage = Damage::new(limits.max_decode_errors);
    let mut output = TrackOutput::new(limits, declared_frames(track), sink);
    loop {
        if packets >= max_packets {
            return Err(AudioError::Corrupt(
                "the container yields more packets than it has bytes".into(),
            ));
        }
        let packet = match next_packet(format, output.has_audio())? {
            Demuxed::Packet(packet) => packet,
            Demuxed::Damaged(reason) => {
                damage.record(reason)?;
                packets += 1;
                continue;
            }
            Demuxed::End => break,
        };
        packets += 1;
        if packet.track_id() != track.id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(decoded) => decoded,
            Err(error) => {
                if matches!(error, SymphoniaError::ResetRequired) {
                    decoder.reset();
                }
                damage.record(damaged_packet(error)?)?;
                continue;
            }
        };
        output.push(&decoded)?;
    }
    output.finish(&damage)
}

/// The frame count the track declares, if plausible (0 if not): sizes the first allocation.
fn declared_frames(track: &Track) -> usize {
    track
        .codec_params
        .n_frames
        .filter(|&f| f <= MAX_PLAUSIBLE_FRAMES)
        .unwrap_or(0) as usize
}

/// What the demuxer gave: a packet, a damaged one to count and skip (the reason), or the
/// end of the audio.
enum Demuxed {
    Packet(Packet),
    Damaged(String),
    End,
}

/// The next packet; `decoded_audio` says whether audio was decoded already, in which case a
/// demuxer failure ends the audio instead of failing the upload.
fn next_packet(format: &mut dyn FormatReader, decoded_audio: bool) -> Result<Demuxed, AudioError> {
    match format.next_packet() {
        Ok(packet) => Ok(Demuxed::Packet(packet)),
        // End of stream, or of a truncated upload: keep what was decoded.
        Err(SymphoniaError::IoError(_)) => Ok(Demuxed::End),
        // A chained stream (new Ogg logical stream) with new parameters: stop at the first.
        Err(SymphoniaError::ResetRequired) => {
            tracing::debug!("stream parameters changed mid-file; decoding the first stream only");
            Ok(Demuxed::End)
        }
        Err(SymphoniaError::DecodeError(message)) => {
            Ok(Demuxed::Damaged(format!("demuxing: {message}")))
        }
        Err(other) if decoded_audio => {
            tracing::debug!(error = %other, "stopping at a demuxer error after decoding audio");
            Ok(Demuxed::End)
        }
        Err(other) => Err(stream_error(other)),
    }
}

/// A decoder error on one packet: `Ok(reason)` when the packet is damaged and may be
/// skipped (the caller resets the decoder where it asks for it), `Err` when the stream
/// cannot be decoded at all.
fn damaged_packet(error: SymphoniaError) -> Result<String, AudioError> {
    match error {
        SymphoniaError::DecodeError(message) => Ok(message.to_string()),
        SymphoniaError::IoError(error) => Ok(format!("packet ends early ({error})")),
        SymphoniaError::ResetRequired => Ok("decoder reset required".into()),
        other => Err(stream_error(other)),
    }
}

/// Damaged packets skipped so far, failing the upload past `max`.
struct Damage {
    count: u32,
    max: u32,
    first: Option<String>,
}

impl Damage {
    fn new(max: u32) -> Self {
        Damage {
            count: 0,
            max,
            first: None,
        }
    }

    /// Counts one damaged packet; [`AudioError::Corrupt`] once there are more than `max`.
    fn record(&mut self, reason: String) -> Result<(), AudioError> {
        self.count += 1;
        let first = self.first.get_or_insert(reason);
        if self.count > self.max {
            return Err(AudioError::Corrupt(format!(
                "more than {} damaged packets (first: {first})",
                self.max
            )));
        }
        Ok(())
    }
}

/// The decoded length of a track: whole frames over their rate (exact), summed over rate
/// changes, and the samples of all channels (for the per-second sample budget).
#[derive(Default)]
struct DecodedLength {
    seconds: f64,
    seconds_before_rate_change: f64,
    frames_at_current_rate: u64,
    current_rate: u32,
    channel_samples: f64,
}

impl DecodedLength {
    fn add(&mut self, rate: u32, channels: u16, frames: usize) {
        if self.current_rate != 0 && rate != self.current_rate {
            self.seconds_before_rate_change +=
                self.frames_at_current_rate as f64 / f64::from(self.current_rate);
            self.frames_at_current_rate = 0;
        }
        self.current_rate = rate;
        self.frames_at_current_rate += frames as u64;
        self.seconds =
            self.seconds_before_rate_change + self.frames_at_current_rate as f64 / f64::from(rate);
        self.channel_samples += frames as f64 * f64::from(channels);
    }
}

/// Decoded buffers of one track → 16 kHz mono into a [`SampleSink`], under the duration
/// and sample limits.
struct TrackOutput<'a> {
    limits: &'a Limits,
    /// The sample budget: `max_samples_per_second` × `max_duration_seconds`.
    max_channel_samples: f64,
    /// What the container declares, to size the first allocation.
    declared_frames: usize,
    length: DecodedLength,
    /// Rate and channels of the first non-empty buffer.
    source: Option<(u32, u16)>,
    sink: Option<MonoSink>,
    /// The current buffer downmixed, reused between buffers.
    mono: Vec<f32>,
    out: &'a mut dyn SampleSink,
}

impl<'a> TrackOutput<'a> {
    fn new(limits: &'a Limits, declared_frames: usize, out: &'a mut dyn SampleSink) -> Self {
        TrackOutput {
            limits,
            max_channel_samples: f64::from(limits.max_samples_per_second)
                * limits.max_duration_seconds,
            declared_frames,
            length: DecodedLength::default(),
            source: None,
            sink: None,
            mono: Vec::new(),
            out,
        }
    }

    fn has_audio(&self) -> bool {
        self.sink.is_some()
    }

    /// Checks a decoded buffer's layout and the limits, then downmixes and resamples it.
    fn push(&mut self, decoded: &AudioBufferRef<'_>) -> Result<(), AudioError> {
        let (rate, channels) = buffer_layout(decoded)?;
        let frames = decoded.frames();
        if frames == 0 {
            return Ok(());
        }
        self.source.get_or_insert((rate, channels));
        self.length.add(rate, channels, frames);
        if self.length.seconds > self.limits.max_duration_seconds
            || self.length.channel_samples > self.max_channel_samples
        {
            return Err(AudioError::TooLong {
                seconds: self.length.seconds,
                limit: self.limits.effective_max_seconds(rate, channels),
            });
        }
        downmix(decoded, &mut self.mono);
        if self.sink.is_none() {
            let declared = self.declared_frames.min(self.max_frames(rate, channels));
            self.sink = Some(MonoSink::new(rate, declared, self.out)?);
        }
        let sink = self.sink.as_mut().expect("made above");
        sink.switch_rate(rate, self.out)?;
        sink.push(&self.mono, self.out)
    }

    /// Most frames at `rate` × `channels` the limits let through: what a declared
    /// length is capped at before it sizes anything.
    fn max_frames(&self, rate: u32, channels: u16) -> usize {
        (self.limits.effective_max_seconds(rate, channels) * f64::from(rate)) as usize
    }

    /// The decoded audio; [`AudioError::Empty`] or [`AudioError::Corrupt`] (naming the first
    /// damaged packet) when there is none.
    fn finish(self, damage: &Damage) -> Result<SourceInfo, AudioError> {
        let (Some((source_rate, source_channels)), Some(sink)) = (self.source, self.sink) else {
            return Err(match &damage.first {
                Some(error) => AudioError::Corrupt(format!("no audio could be decoded ({error})")),
                None => AudioError::Empty,
            });
        };
        if damage.count > 0 {
            tracing::debug!(errors = damage.count, first = ?damage.first, "skipped damaged packets");
        }
        sink.finish(self.out)?;
        Ok(SourceInfo {
            source_rate,
            source_channels,
            duration_seconds: self.length.seconds,
        })
    }
}

/// A decoded buffer's (rate, channels), checked against what this crate accepts.
fn buffer_layout(decoded: &AudioBufferRef<'_>) -> Result<(u32, u16), AudioError> {
    let spec = *decoded.spec();
    let channels = spec.channels.count();
    check_channels(channels)?;
    check_rate(spec.rate).map_err(AudioError::Unsupported)?;
    Ok((spec.rate, channels as u16))
}

/// A stream has 1 to [`MAX_CHANNELS`] channels.
fn check_channels(channels: usize) -> Result<(), AudioError> {
    if channels == 0 {
        return Err(AudioError::Corrupt("the stream declares 0 channels".into()));
    }
    if channels > usize::from(MAX_CHANNELS) {
        return Err(AudioError::Unsupported(format!(
            "{channels} channels; at most {MAX_CHANNELS} are supported"
        )));
    }
    Ok(())
}

/// Up-front checks on what the container declares, before any decoding work.
fn check_declared_stream(
    track: &Track,
    upload_bytes: usize,
    limits: &Limits,
) -> Result<(), AudioError> {
    let params = &track.codec_params;
    let channels = params.channels.map(|c| c.count());
    if let Some(count) = channels {
        check_channels(count)?;
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

/// Mono audio at the source rate → 16 kHz, written to a [`SampleSink`] a chunk at a
/// time; restarts the resampler if the source rate changes mid-stream.
struct MonoSink {
    rate: u32,
    resampler: Option<Resampler>,
    /// Output not yet written.
    out: Vec<f32>,
}

/// 16 kHz samples written to the [`SampleSink`] at a time (1 s: 64 KiB).
const SINK_CHUNK: usize = SAMPLE_RATE as usize;

impl MonoSink {
    /// `expected_frames` (at `rate`) is what the source declares, told to `sink`.
    fn new(
        rate: u32,
        expected_frames: usize,
        sink: &mut dyn SampleSink,
    ) -> Result<Self, AudioError> {
        let expected = ((expected_frames as u64).saturating_mul(u64::from(SAMPLE_RATE))
            / u64::from(rate)) as usize;
        sink.expect(expected)?;
        Ok(MonoSink {
            rate,
            resampler: (rate != SAMPLE_RATE).then(|| Resampler::new(rate, SAMPLE_RATE)),
            out: Vec::with_capacity(2 * SINK_CHUNK),
        })
    }

    fn switch_rate(&mut self, rate: u32, sink: &mut dyn SampleSink) -> Result<(), AudioError> {
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
            self.flush(sink, SINK_CHUNK)?;
        }
        Ok(())
    }

    fn push(&mut self, mono: &[f32], sink: &mut dyn SampleSink) -> Result<(), AudioError> {
        match &mut self.resampler {
            Some(resampler) => resampler.push(mono, &mut self.out),
            None => self.out.extend_from_slice(mono),
        }
        self.flush(sink, SINK_CHUNK)
    }

    /// Writes what is left, the resampler's tail included.
    fn finish(mut self, sink: &mut dyn SampleSink) -> Result<(), AudioError> {
        if let Some(resampler) = self.resampler.take() {
            resampler.finish(&mut self.out);
        }
        self.flush(sink, 1)
    }

    /// Writes the output to `sink` once there are at least `at_least` samples, each
    /// clamped to [-1, 1].
    fn flush(&mut self, sink: &mut dyn SampleSink, at_least: usize) -> Result<(), AudioError> {
        if self.out.len() < at_least {
            return Ok(());
        }
        for s in &mut self.out {
            // `clamp` keeps NaN; none should reach here, but the contract is [-1, 1].
            *s = if s.is_nan() { 0.0 } else { s.clamp(-1.0, 1.0) };
        }
        let written = sink.write(&self.out);
        self.out.clear();
        written
    }
}
