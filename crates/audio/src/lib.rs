//! steno-audio: uploaded bytes → mono 16 kHz `f32` samples, in process.
//!
//! Decodes containers and codecs with symphonia (format sniffed from content, the
//! filename only a hint), and Opus with libopus; downmixes, resamples to 16 kHz, finds
//! speech with a VAD, and enforces limits so a hostile upload cannot take unbounded time
//! or memory.
//!
//! * [`decode`] / [`decode_owned`] — any container/codec symphonia supports, and Opus in
//!   Ogg, Matroska or WebM → [`Audio`].
//! * [`decode_into`] — the same, each chunk of samples written to a [`SampleSink`] as it
//!   is decoded (the decoder child streams them to the server this way).
//! * [`decode_raw_pcm_s16le`] — headerless little-endian 16-bit PCM → [`Audio`].
//! * [`child`] — the wire format for decoding in a child process, so that a decoder that
//!   aborts (symphonia allocating what a crafted file declares) costs one upload, not the
//!   server.
//! * [`live`] — a Realtime session's appended audio (24 kHz PCM16, G.711 μ-law/A-law)
//!   → 16 kHz, append by append.
//! * [`vad`] — energy VAD: [`vad::speech_regions`], [`vad::split_points`], [`vad::is_silent`].
//!
//! Sample hygiene, the same for every path: non-finite decoded samples (NaN, ±inf,
//! possible in float WAV) are replaced by 0 before any filtering, and the 16 kHz
//! output is clamped to [-1, 1] (float sources may exceed full scale, and the
//! resampler can overshoot slightly on clipped input).

pub mod child;
mod decode;
mod error;
mod header_guard;
pub mod live;
mod opus;
mod resample;
pub mod vad;

#[cfg(test)]
mod decode_tests;
#[cfg(test)]
mod opus_tests;
#[cfg(test)]
mod testutil;

pub use decode::{decode, decode_into, decode_owned, decode_raw_pcm_s16le, SampleSink, SourceInfo};
pub use error::AudioError;
pub use resample::resample;

/// The sample rate of every [`Audio`] this crate returns, and what [`vad`] assumes.
/// The one definition of the fact: `steno_whisper::mel::SAMPLE_RATE` derives from it.
pub const SAMPLE_RATE: u32 = 16_000;

/// Default largest upload in bytes: 25 MiB, the limit of OpenAI's audio endpoints
/// (`Limits::default().max_bytes`).
pub const MAX_UPLOAD_BYTES: usize = 25 * 1024 * 1024;

/// Duration in seconds of `samples` mono samples at [`SAMPLE_RATE`] (what every [`Audio`]
/// holds).
pub fn seconds(samples: usize) -> f64 {
    samples as f64 / f64::from(SAMPLE_RATE)
}

/// Lowest source sample rate accepted (Hz); below this a header is nonsense.
pub const MIN_SOURCE_RATE: u32 = 1_000;
/// Highest source sample rate accepted (Hz).
pub const MAX_SOURCE_RATE: u32 = 384_000;
/// Most channels accepted in one stream.
pub const MAX_CHANNELS: u16 = 32;

/// Decoded audio, ready for log-mel: mono, [`SAMPLE_RATE`] Hz, samples in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Mono samples at 16 kHz, each in [-1, 1].
    pub samples: Vec<f32>,
    /// Sample rate of the source stream (the first one, if it changed mid-stream).
    pub source_rate: u32,
    /// Channel count of the source stream (the first decoded packet's).
    pub source_channels: u16,
    /// Duration of the decoded audio in seconds, measured at the source rate.
    pub duration_seconds: f64,
}

/// Bounds on the work one upload may cause. Every bound is checked before or while
/// decoding, so a hostile file fails fast with a typed [`AudioError`].
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest accepted upload in bytes ([`AudioError::TooLarge`] above). Default
    /// [`MAX_UPLOAD_BYTES`] (25 MiB, OpenAI's limit).
    pub max_bytes: usize,
    /// Longest accepted audio in seconds ([`AudioError::TooLong`] above). Checked against the
    /// declared length up front where the container has one, and against decoded samples as
    /// they arrive. Default 3 hours.
    pub max_duration_seconds: f64,
    /// Decoding budget in samples (all channels, at the source rate) per second of
    /// `max_duration_seconds`. Default 96 000: 48 kHz stereo gets the full duration; streams
    /// with more channels or a higher rate get proportionally less (e.g. 6 ch × 48 kHz gets a
    /// third), reported as [`AudioError::TooLong`] with that smaller limit. This is what bounds
    /// the work a tiny, highly compressible file declaring 384 kHz × 8 channels could cause.
    pub max_samples_per_second: u32,
    /// Packets that fail to demux or decode before the upload is rejected as
    /// [`AudioError::Corrupt`]; a few bad frames in a long file are skipped. Default 100.
    pub max_decode_errors: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: MAX_UPLOAD_BYTES,
            max_duration_seconds: 3.0 * 3600.0,
            max_samples_per_second: 96_000,
            max_decode_errors: 100,
        }
    }
}

impl Limits {
    /// Rejects settings that would disable the bounds by accident (NaN, zero, negative).
    pub fn validate(&self) -> Result<(), AudioError> {
        if !(self.max_duration_seconds.is_finite() && self.max_duration_seconds > 0.0) {
            return Err(AudioError::InvalidParameter(format!(
                "max_duration_seconds must be a positive number of seconds, got {}",
                self.max_duration_seconds
            )));
        }
        if self.max_bytes == 0 {
            return Err(AudioError::InvalidParameter(
                "max_bytes must be at least 1".into(),
            ));
        }
        if self.max_samples_per_second == 0 {
            return Err(AudioError::InvalidParameter(
                "max_samples_per_second must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The duration limit for a stream of `rate` Hz × `channels`: `max_duration_seconds`,
    /// lowered where the stream would exceed the per-second sample budget.
    pub(crate) fn effective_max_seconds(&self, rate: u32, channels: u16) -> f64 {
        let per_second = f64::from(rate) * f64::from(channels.max(1));
        let budget = f64::from(self.max_samples_per_second) * self.max_duration_seconds;
        self.max_duration_seconds.min(budget / per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_count_16khz_samples() {
        assert_eq!(seconds(0), 0.0);
        assert_eq!(seconds(16_000), 1.0);
        assert_eq!(seconds(8_000), 0.5);
        assert_eq!(seconds(30 * 16_000), 30.0);
        // The division the callers did by hand, bit for bit.
        assert_eq!(seconds(12_345), 12_345.0 / 16_000.0);
    }

    #[test]
    fn default_upload_limit_is_openais_25_mib() {
        assert_eq!(MAX_UPLOAD_BYTES, 26_214_400);
        assert_eq!(Limits::default().max_bytes, MAX_UPLOAD_BYTES);
        assert_eq!(Limits::default().validate(), Ok(()));
    }
}
