//! Live input: the raw audio a Realtime session appends (OpenAI's `audio/pcm` 16-bit
//! little-endian at 24 kHz, `audio/pcmu` G.711 μ-law and `audio/pcma` G.711 A-law at
//! 8 kHz) → mono 16 kHz `f32`, one append at a time.
//!
//! The resampler streams: it keeps the few input samples its filter still needs between
//! appends, so a turn cut anywhere is the same audio as the whole stream resampled at
//! once (short of the filter's last ~1 ms, which waits for the next append).

use crate::resample::Resampler;
use crate::{AudioError, SAMPLE_RATE};

/// The wire format of live audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveFormat {
    /// Signed 16-bit little-endian PCM, mono, at this rate (OpenAI's `pcm16` is 24 kHz).
    Pcm16 { rate: u32 },
    /// G.711 μ-law, 8 kHz (`g711_ulaw`, `audio/pcmu`).
    Mulaw,
    /// G.711 A-law, 8 kHz (`g711_alaw`, `audio/pcma`).
    Alaw,
}

/// OpenAI's PCM rate for Realtime sessions.
pub const REALTIME_PCM_RATE: u32 = 24_000;
/// The G.711 sample rate.
const G711_RATE: u32 = 8_000;

impl LiveFormat {
    pub fn rate(self) -> u32 {
        match self {
            LiveFormat::Pcm16 { rate } => rate,
            LiveFormat::Mulaw | LiveFormat::Alaw => G711_RATE,
        }
    }

    /// Bytes one sample takes on the wire.
    pub fn sample_bytes(self) -> usize {
        match self {
            LiveFormat::Pcm16 { .. } => 2,
            LiveFormat::Mulaw | LiveFormat::Alaw => 1,
        }
    }
}

/// Turns appended bytes of one stream into 16 kHz samples.
pub struct LiveDecoder {
    format: LiveFormat,
    resampler: Resampler,
    /// Decoded samples at the source rate, reused between appends.
    scratch: Vec<f32>,
}

impl LiveDecoder {
    pub fn new(format: LiveFormat) -> Result<Self, AudioError> {
        crate::resample::check_rate(format.rate()).map_err(AudioError::InvalidParameter)?;
        Ok(Self {
            format,
            resampler: Resampler::new(format.rate(), SAMPLE_RATE),
            scratch: Vec::new(),
        })
    }

    pub fn format(&self) -> LiveFormat {
        self.format
    }

    /// Appends the 16 kHz samples of `bytes` to `out`, each in [-1, 1]. PCM that is not
    /// a whole number of samples is refused whole (nothing is kept of it).
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.scratch.clear();
        match self.format {
            LiveFormat::Pcm16 { .. } => {
                if !bytes.len().is_multiple_of(2) {
                    return Err(AudioError::InvalidParameter(format!(
                        "16-bit PCM comes in whole 2-byte samples; got {} bytes",
                        bytes.len()
                    )));
                }
                self.scratch.extend(
                    bytes
                        .chunks_exact(2)
                        .map(|s| f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0),
                );
            }
            LiveFormat::Mulaw => self.scratch.extend(bytes.iter().map(|&b| g711(mulaw(b)))),
            LiveFormat::Alaw => self.scratch.extend(bytes.iter().map(|&b| g711(alaw(b)))),
        }
        let start = out.len();
        self.resampler.push(&self.scratch, out);
        for s in &mut out[start..] {
            *s = s.clamp(-1.0, 1.0);
        }
        Ok(())
    }
}

fn g711(linear: i16) -> f32 {
    f32::from(linear) / 32768.0
}

/// G.711 μ-law byte → linear 16-bit (ITU-T G.711: bits inverted, sign, 3-bit segment,
/// 4-bit step; the bias of 0x84 removed).
pub fn mulaw(byte: u8) -> i16 {
    let b = !byte;
    let segment = (b >> 4) & 0x07;
    let step = i32::from(b & 0x0f);
    let magnitude = (((step << 3) + 0x84) << segment) - 0x84;
    let value = if b & 0x80 != 0 { -magnitude } else { magnitude };
    value as i16
}

/// G.711 A-law byte → linear 16-bit (ITU-T G.711: even bits inverted, sign set for
/// positive, 3-bit segment, 4-bit step).
pub fn alaw(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let segment = (a >> 4) & 0x07;
    let step = i32::from(a & 0x0f);
    let magnitude = if segment == 0 {
        (step << 4) + 8
    } else {
        ((step << 4) + 0x108) << (segment - 1)
    };
    let value = if a & 0x80 != 0 { magnitude } else { -magnitude };
    value as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_reference_values() {
        // Silence, the extremes and one mid-scale code of each law.
        assert_eq!(mulaw(0xff), 0);
        assert_eq!(mulaw(0x7f), 0);
        assert_eq!(mulaw(0x80), 32124);
        assert_eq!(mulaw(0x00), -32124);
        assert_eq!(mulaw(0xcf), 924);
        assert_eq!(alaw(0xd5), 8);
        assert_eq!(alaw(0x55), -8);
        assert_eq!(alaw(0xaa), 32256);
        assert_eq!(alaw(0x2a), -32256);
    }

    #[test]
    fn g711_has_128_levels_a_side_and_is_symmetric() {
        for law in [mulaw as fn(u8) -> i16, alaw] {
            let mut levels: Vec<i16> = (0u8..=0xff).map(law).filter(|&v| v > 0).collect();
            levels.sort_unstable();
            levels.dedup();
            assert_eq!(levels.len(), 128 - usize::from(law(0xff) == 0));
            for b in 0u8..=0xff {
                assert_eq!(law(b), -law(b ^ 0x80), "{b:#x}");
            }
        }
    }

    #[test]
    fn pcm16_at_24k_becomes_16k_with_its_tone_kept() {
        let mut decoder = LiveDecoder::new(LiveFormat::Pcm16 { rate: 24_000 }).unwrap();
        // One second of a 440 Hz tone at half scale, appended in uneven pieces.
        let bytes: Vec<u8> = (0..24_000)
            .flat_map(|n| {
                let t = n as f64 / 24_000.0;
                let s = (0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin() * 32767.0) as i16;
                s.to_le_bytes()
            })
            .collect();
        let mut out = Vec::new();
        for piece in bytes.chunks(962) {
            decoder.push(piece, &mut out).unwrap();
        }
        assert!((15_950..=16_000).contains(&out.len()), "{}", out.len());
        // Away from the edges each output is the tone at its own time.
        for (n, &s) in out.iter().enumerate().skip(100).take(15_000) {
            let t = n as f64 / 16_000.0;
            let want = 0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin();
            assert!(
                (f64::from(s) - want).abs() < 0.01,
                "sample {n}: {s} vs {want}"
            );
        }
    }

    #[test]
    fn odd_pcm_is_refused_whole() {
        let mut decoder = LiveDecoder::new(LiveFormat::Pcm16 { rate: 24_000 }).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            decoder.push(&[1, 2, 3], &mut out),
            Err(AudioError::InvalidParameter(_))
        ));
        assert!(out.is_empty());
        decoder.push(&[0; 4800], &mut out).unwrap();
        assert!(!out.is_empty());
    }

    #[test]
    fn g711_doubles_to_16k() {
        // Each law's code for (nearly) zero.
        for (format, quiet) in [(LiveFormat::Mulaw, 0xff), (LiveFormat::Alaw, 0xd5)] {
            let mut decoder = LiveDecoder::new(format).unwrap();
            let mut out = Vec::new();
            decoder.push(&[quiet; 8000], &mut out).unwrap();
            assert!((15_950..=16_000).contains(&out.len()), "{format:?}");
            assert!(out.iter().all(|s| s.abs() < 0.01));
        }
    }
}
