//! Speech as OpenAI's Realtime API takes it (`audio/pcm`, the beta's `pcm16`): mono 16-bit
//! little-endian PCM at 24 kHz. The English set is decoded to 16 kHz ([`assets::samples`])
//! and upsampled by 3/2 here with steno-audio's resampler, so the bench needs no sox on a GPU
//! host and every live client (the SDK scripts, the bench) streams the same bytes.

use std::path::Path;

use crate::assets;

/// The Realtime API's PCM rate.
pub const RATE: u32 = 24_000;
/// Bytes of one second of [`RATE`] PCM16.
pub const BYTES_PER_SECOND: usize = RATE as usize * 2;

/// The audio file at `path` as 24 kHz PCM16 bytes.
pub fn from_file(path: &Path) -> Vec<u8> {
    to_bytes(&upsample_16k(&assets::samples(path)))
}

/// 16 kHz samples at 24 kHz, through the resampler that decodes uploads.
pub fn upsample_16k(samples: &[f32]) -> Vec<f32> {
    steno_audio::resample(samples, steno_audio::SAMPLE_RATE, RATE)
}

/// Float samples in [-1, 1] as PCM16 little-endian bytes (clipped).
pub fn to_bytes(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|&s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect()
}

/// Seconds of audio in `bytes` of [`RATE`] PCM16.
pub fn seconds(bytes: usize) -> f64 {
    bytes as f64 / BYTES_PER_SECOND as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(freq: f64, rate: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (0.5 * (2.0 * PI * freq * i as f64 / rate).sin()) as f32)
            .collect()
    }

    #[test]
    fn a_tone_keeps_its_frequency_and_level() {
        for freq in [200.0, 1_000.0, 3_000.0, 6_000.0] {
            let up = upsample_16k(&sine(freq, 16_000.0, 16_000));
            assert_eq!(up.len(), 24_000);
            let expected = sine(freq, 24_000.0, 24_000);
            // Away from the edges, where the kernel runs out of input.
            let worst = up[100..23_900]
                .iter()
                .zip(&expected[100..23_900])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 0.01, "{freq} Hz: worst error {worst}");
        }
    }

    #[test]
    fn bytes_are_little_endian_and_clipped() {
        assert_eq!(to_bytes(&[0.0, 1.0, -2.0]), [0, 0, 0xff, 0x7f, 0x01, 0x80]);
        assert_eq!(seconds(48_000), 1.0);
    }
}
