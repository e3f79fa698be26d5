//! Speech as OpenAI's Realtime API takes it (`audio/pcm`, the beta's `pcm16`): mono 16-bit
//! little-endian PCM at 24 kHz. The English set is decoded to 16 kHz ([`assets::samples`])
//! and upsampled by 3/2 here with a windowed-sinc interpolator, so the bench needs no sox on
//! a GPU host and every live client (the SDK scripts, the bench) streams the same bytes.

use std::f64::consts::PI;
use std::path::Path;

use crate::assets;

/// The Realtime API's PCM rate.
pub const RATE: u32 = 24_000;
/// Bytes of one second of [`RATE`] PCM16.
pub const BYTES_PER_SECOND: usize = RATE as usize * 2;
/// Sinc taps on each side of an output sample (at 16 kHz, 1 ms).
const HALF_TAPS: i64 = 16;

/// The audio file at `path` as 24 kHz PCM16 bytes.
pub fn from_file(path: &Path) -> Vec<u8> {
    to_bytes(&upsample_16k(&assets::samples(path)))
}

/// 16 kHz samples at 24 kHz: each output sample interpolated from the 2 × [`HALF_TAPS`]
/// nearest inputs with a Hann-windowed sinc (the input is already band-limited to 8 kHz,
/// below the new Nyquist frequency, so no low-pass is needed).
pub fn upsample_16k(samples: &[f32]) -> Vec<f32> {
    let out_len = samples.len() * 3 / 2;
    (0..out_len)
        .map(|n| {
            // Output n sits at input time n * 2/3.
            let t = n as f64 * 2.0 / 3.0;
            let centre = t.floor() as i64;
            let mut acc = 0.0;
            for k in centre - HALF_TAPS + 1..=centre + HALF_TAPS {
                let Some(&x) = usize::try_from(k).ok().and_then(|k| samples.get(k)) else {
                    continue;
                };
                acc += x as f64 * kernel(t - k as f64);
            }
            acc as f32
        })
        .collect()
}

fn kernel(d: f64) -> f64 {
    if d.abs() >= HALF_TAPS as f64 {
        return 0.0;
    }
    let sinc = if d == 0.0 {
        1.0
    } else {
        (PI * d).sin() / (PI * d)
    };
    let hann = 0.5 + 0.5 * (PI * d / HALF_TAPS as f64).cos();
    sinc * hann
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
