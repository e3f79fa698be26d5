//! Opus decoding for symphonia, which has no Opus decoder of its own.
//!
//! # Which decoder
//!
//! libopus, the reference decoder, through the `opusic-sys` bindings (pinned in the
//! workspace manifest). libopus is what browsers, Android and ffmpeg use; it is fuzzed
//! continuously (OSS-Fuzz) and bounds its work by construction: one packet decodes to at
//! most 120 ms per channel. `opusic-sys` 0.7.7 ships the libopus 1.6.1 sources and, with
//! its default `bundled` feature, always builds them with CMake and links them statically,
//! never probing for a system libopus: every machine decodes with the same library and
//! needs only a C compiler and CMake (`scripts/setup.sh` installs it). Its build keeps
//! upstream's defaults of run-time hardening, stack protector and `_FORTIFY_SOURCE`, and
//! leaves the neural-network extensions (DRED, OSCE) out.
//!
//! `audiopus_sys` was the first candidate but is unsuitable: its newest release (0.2.2)
//! ships libopus 1.3.1 (2019), and its build script first asks pkg-config for a system
//! libopus whatever features are set (only an environment variable, `LIBOPUS_NO_PKG`,
//! forces the bundled copy), so the library linked would depend on the machine; its
//! CMake project also declares a minimum version CMake 4 no longer accepts. The
//! pure-Rust decoders are young and far less exercised on hostile input.
//!
//! # What is decoded
//!
//! Everything is decoded at 48 kHz, the rate Opus always runs at internally (the
//! "input sample rate" in the header is only informational). Channel-mapping family 0
//! (mono, stereo) uses a plain decoder; families 1 (Vorbis channel order) and 255
//! (unordered) use libopus's multistream decoder, up to [`MAX_OPUS_CHANNELS`] channels.
//! Ambisonics (families 2 and 3) is refused as unsupported: averaging ambisonic
//! components is not a mono downmix.
//!
//! The header's pre-skip (decoder warm-up samples at the start) is dropped, and the
//! output gain applied, as RFC 7845 says. Both Ogg (where symphonia puts the `OpusHead`
//! packet in `extra_data`) and Matroska/WebM (where `CodecPrivate` is the `OpusHead`)
//! give us the header. Trimming the container asks for (`Packet::trim_start`/`trim_end`;
//! symphonia's Ogg demuxer derives the end trim from the last granule position) is
//! applied as well. symphonia's Matroska demuxer drops `DiscardPadding`, so WebM keeps
//! the encoder's end padding (under one frame, at most 20 ms of near-silence).
//!
//! A packet libopus rejects is a [`symphonia::core::errors::Error::DecodeError`], which
//! the caller counts against its damaged-packet limit; so is an empty packet (libopus
//! would otherwise conceal it as a lost packet of whatever length was asked for).

use std::ptr::NonNull;
use std::sync::OnceLock;

use opusic_sys as sys;
use symphonia::core::audio::{AsAudioBufferRef, AudioBuffer, AudioBufferRef, Channels};
use symphonia::core::audio::{Signal, SignalSpec};
use symphonia::core::codecs::{
    CodecDescriptor, CodecParameters, CodecRegistry, Decoder, DecoderOptions, FinalizeResult,
    CODEC_TYPE_OPUS,
};
use symphonia::core::errors::{decode_error, unsupported_error, Error, Result};
use symphonia::core::formats::Packet;

/// Opus always decodes at this rate here.
pub const OPUS_RATE: u32 = 48_000;
/// The longest packet Opus allows: 120 ms at 48 kHz, per channel.
const MAX_PACKET_FRAMES: usize = 5_760;
/// Most channels accepted in a multistream (channel-mapping family 1 or 255) stream; family 1
/// defines layouts up to 8, and symphonia's Ogg demuxer accepts no more.
pub const MAX_OPUS_CHANNELS: usize = 8;
/// Shortest valid `OpusHead` (family 0); other families add 2 bytes and one per channel.
const OPUS_HEAD_MIN_LEN: usize = 19;

/// symphonia's codecs plus Opus. Use this instead of `symphonia::default::get_codecs()`.
pub fn codecs() -> &'static CodecRegistry {
    static REGISTRY: OnceLock<CodecRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_all::<OpusDecoder>();
        registry
    })
}

/// The identification header (RFC 7845 §5.1), as Ogg and Matroska carry it.
#[derive(Debug, Clone, PartialEq)]
struct OpusHead {
    channels: usize,
    pre_skip: u16,
    /// Output gain in dB, Q7.8.
    gain_q8: i16,
    /// Streams, coupled (stereo) streams and the channel mapping, for families other than 0.
    multistream: Option<(u8, u8, Vec<u8>)>,
}

impl OpusHead {
    fn parse(head: &[u8]) -> Result<Self> {
        if head.len() < OPUS_HEAD_MIN_LEN || &head[..8] != b"OpusHead" {
            return decode_error("opus: the codec header is not an OpusHead");
        }
        // The upper nibble is the major version; only 0 is defined, and readers must refuse
        // others. The lower nibble is a compatible minor version.
        if head[8] >> 4 != 0 {
            return unsupported_error("opus: unknown header version");
        }
        let channels = usize::from(head[9]);
        if channels == 0 {
            return decode_error("opus: the header declares 0 channels");
        }
        let pre_skip = u16::from_le_bytes([head[10], head[11]]);
        let gain_q8 = i16::from_le_bytes([head[16], head[17]]);
        let family = head[18];
        let multistream = match family {
            0 if channels <= 2 => None,
            0 => return decode_error("opus: channel-mapping family 0 with more than 2 channels"),
            1 | 255 => {
                if channels > MAX_OPUS_CHANNELS {
                    return unsupported_error("opus: more than 8 channels");
                }
                let table = head.get(19..21 + channels).ok_or(Error::DecodeError(
                    "opus: the channel mapping table is cut off",
                ))?;
                let (streams, coupled) = (table[0], table[1]);
                let mapping = table[2..].to_vec();
                let decoded = usize::from(streams) + usize::from(coupled);
                if streams == 0 || coupled > streams || decoded > 255 {
                    return decode_error("opus: invalid stream counts in the channel mapping");
                }
                // 255 marks a silent channel; anything else must name a decoded channel.
                if mapping
                    .iter()
                    .any(|&m| m != 255 && usize::from(m) >= decoded)
                {
                    return decode_error("opus: the channel mapping names a missing stream");
                }
                Some((streams, coupled, mapping))
            }
            2 | 3 => return unsupported_error("opus: ambisonics (channel-mapping family 2 or 3)"),
            _ => return unsupported_error("opus: unknown channel-mapping family"),
        };
        Ok(OpusHead {
            channels,
            pre_skip,
            gain_q8,
            multistream,
        })
    }

    /// Matroska without `CodecPrivate`: a plain mono or stereo stream, pre-skip from the
    /// container's codec delay if it has one.
    fn from_params(params: &CodecParameters) -> Result<Self> {
        let channels = params
            .channels
            .map(|c| c.count())
            .or_else(|| params.channel_layout.map(|l| l.into_channels().count()))
            .unwrap_or(0);
        if !(1..=2).contains(&channels) {
            return decode_error("opus: no OpusHead and no mono or stereo channel count");
        }
        Ok(OpusHead {
            channels,
            pre_skip: params
                .delay
                .map_or(0, |d| d.min(u32::from(u16::MAX)) as u16),
            gain_q8: 0,
            multistream: None,
        })
    }

    /// One plane per channel. Only mono and stereo positions are meaningful: for the
    /// multistream families the positions merely label planes, which the caller averages.
    fn symphonia_channels(&self) -> Channels {
        Channels::from_bits_truncate((1u32 << self.channels) - 1)
    }
}

/// An owned libopus decoder state.
enum State {
    Single(NonNull<sys::OpusDecoder>),
    Multi(NonNull<sys::OpusMSDecoder>),
}

// SAFETY: a libopus decoder state is plain heap memory owned by this value alone; libopus has
// no global or thread-local mutable state, and every use goes through `&mut self`.
unsafe impl Send for State {}
// SAFETY: as above; `&State` gives no access to the decoder.
unsafe impl Sync for State {}

impl State {
    fn new(head: &OpusHead) -> Result<Self> {
        let mut error = 0;
        let channels = head.channels as i32;
        let rate = OPUS_RATE as i32;
        let state = match &head.multistream {
            None => {
                // SAFETY: valid arguments; libopus allocates the state or reports an error.
                let st = unsafe { sys::opus_decoder_create(rate, channels, &mut error) };
                NonNull::new(st).filter(|_| error == 0).map(State::Single)
            }
            Some((streams, coupled, mapping)) => {
                // SAFETY: `mapping` holds `channels` bytes, as libopus reads.
                let st = unsafe {
                    sys::opus_multistream_decoder_create(
                        rate,
                        channels,
                        i32::from(*streams),
                        i32::from(*coupled),
                        mapping.as_ptr(),
                        &mut error,
                    )
                };
                NonNull::new(st).filter(|_| error == 0).map(State::Multi)
            }
        };
        // libopus frees the state and returns null whenever it reports an error.
        state.ok_or(Error::DecodeError(
            "opus: libopus refused the stream configuration",
        ))
    }

    /// Decodes one packet into `pcm` (interleaved, room for [`MAX_PACKET_FRAMES`] frames),
    /// returning frames per channel or libopus's error code.
    fn decode(&mut self, packet: &[u8], pcm: &mut [f32], channels: usize) -> i32 {
        debug_assert_eq!(pcm.len(), MAX_PACKET_FRAMES * channels);
        let Ok(len) = i32::try_from(packet.len()) else {
            return OPUS_INVALID_PACKET;
        };
        let frames = MAX_PACKET_FRAMES as i32;
        // SAFETY: `packet` is readable for `len` bytes and `pcm` writable for `frames` frames
        // of `channels` samples, the most libopus writes; the state is live and exclusive.
        unsafe {
            match self {
                State::Single(st) => sys::opus_decode_float(
                    st.as_ptr(),
                    packet.as_ptr(),
                    len,
                    pcm.as_mut_ptr(),
                    frames,
                    0,
                ),
                State::Multi(st) => sys::opus_multistream_decode_float(
                    st.as_ptr(),
                    packet.as_ptr(),
                    len,
                    pcm.as_mut_ptr(),
                    frames,
                    0,
                ),
            }
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // SAFETY: each state came from the matching `*_create` and is destroyed once.
        unsafe {
            match self {
                State::Single(st) => sys::opus_decoder_destroy(st.as_ptr()),
                State::Multi(st) => sys::opus_multistream_decoder_destroy(st.as_ptr()),
            }
        }
    }
}

/// libopus's `OPUS_INVALID_PACKET`.
const OPUS_INVALID_PACKET: i32 = -4;

fn libopus_error(code: i32) -> Error {
    Error::DecodeError(match code {
        -1 => "opus: bad argument (libopus)",
        -2 => "opus: packet longer than 120 ms",
        -3 => "opus: libopus internal error",
        OPUS_INVALID_PACKET => "opus: invalid packet",
        -5 => "opus: unimplemented request (libopus)",
        -6 => "opus: invalid decoder state",
        -7 => "opus: out of memory",
        _ => "opus: libopus failed",
    })
}

/// symphonia [`Decoder`] for Opus in Ogg, Matroska and WebM, backed by libopus.
pub struct OpusDecoder {
    params: CodecParameters,
    head: OpusHead,
    state: State,
    /// Pre-skip frames not dropped yet.
    skip: usize,
    /// Linear output gain from the header.
    gain: f32,
    /// libopus's interleaved output.
    pcm: Vec<f32>,
    buf: AudioBuffer<f32>,
}

impl OpusDecoder {
    fn decode_inner(&mut self, packet: &Packet) -> Result<()> {
        self.buf.clear();
        let data = packet.buf();
        if data.is_empty() {
            return decode_error("opus: empty packet");
        }
        let channels = self.head.channels;
        let frames = self.state.decode(data, &mut self.pcm, channels);
        if frames < 0 {
            return Err(libopus_error(frames));
        }
        let frames = (frames as usize).min(MAX_PACKET_FRAMES);

        // Pre-skip first, then whatever the container trims (the larger, not the sum, where
        // both apply to the same packet, so a container that already counts pre-skip in its
        // trim does not double it).
        let pre_skip = self.skip.min(frames);
        self.skip -= pre_skip;
        let start = pre_skip.max(packet.trim_start() as usize).min(frames);
        let end = frames.saturating_sub(packet.trim_end() as usize).max(start);

        self.buf.render_reserved(Some(end - start));
        let gain = self.gain;
        let pcm = &self.pcm[start * channels..end * channels];
        for ch in 0..channels {
            let plane = self.buf.chan_mut(ch);
            for (out, frame) in plane.iter_mut().zip(pcm.chunks_exact(channels)) {
                *out = frame[ch] * gain;
            }
        }
        Ok(())
    }
}

impl Decoder for OpusDecoder {
    fn try_new(params: &CodecParameters, _options: &DecoderOptions) -> Result<Self> {
        if params.codec != CODEC_TYPE_OPUS {
            return unsupported_error("opus: not an Opus stream");
        }
        let head = match params.extra_data.as_deref() {
            Some(extra) => OpusHead::parse(extra)?,
            None => OpusHead::from_params(params)?,
        };
        let state = State::new(&head)?;
        let spec = SignalSpec::new(OPUS_RATE, head.symphonia_channels());
        if spec.channels.count() != head.channels {
            return unsupported_error("opus: channel layout");
        }
        let mut params = params.clone();
        params
            .with_sample_rate(OPUS_RATE)
            .with_channels(spec.channels)
            .with_delay(u32::from(head.pre_skip))
            .with_max_frames_per_packet(MAX_PACKET_FRAMES as u64);
        // Q7.8 dB to a linear factor; ±128 dB at the extremes, finite either way, and the
        // caller clamps the final output.
        let gain = 10f32.powf(f32::from(head.gain_q8) / (20.0 * 256.0));
        Ok(OpusDecoder {
            params,
            skip: usize::from(head.pre_skip),
            gain,
            pcm: vec![0.0; MAX_PACKET_FRAMES * head.channels],
            buf: AudioBuffer::new(MAX_PACKET_FRAMES as u64, spec),
            state,
            head,
        })
    }

    fn supported_codecs() -> &'static [CodecDescriptor] {
        &[CodecDescriptor {
            codec: CODEC_TYPE_OPUS,
            short_name: "opus",
            long_name: "Opus",
            inst_func: |params, options| Ok(Box::new(OpusDecoder::try_new(params, options)?)),
        }]
    }

    /// A fresh decoder state (after a discontinuity); pre-skip is not applied again.
    fn reset(&mut self) {
        if let Ok(state) = State::new(&self.head) {
            self.state = state;
        }
        self.buf.clear();
    }

    fn codec_params(&self) -> &CodecParameters {
        &self.params
    }

    fn decode(&mut self, packet: &Packet) -> Result<AudioBufferRef<'_>> {
        if let Err(error) = self.decode_inner(packet) {
            self.buf.clear();
            return Err(error);
        }
        Ok(self.buf.as_audio_buffer_ref())
    }

    fn finalize(&mut self) -> FinalizeResult {
        FinalizeResult::default()
    }

    fn last_decoded(&self) -> AudioBufferRef<'_> {
        self.buf.as_audio_buffer_ref()
    }
}
