//! The voice encoder's front end: Resemblyzer's `wav_to_mel_spectrogram`, which is
//! librosa's `feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40)`:
//! a periodic Hann window, `center=True` with zero padding of `n_fft / 2` on both sides
//! (librosa ≥ 0.10), the power spectrum `|X|^2`, and the Slaney mel filterbank (the same
//! filters as Whisper's, with 40 bands). Linear power, not log: the encoder was trained
//! on it, so the input's level matters ([`normalize_volume`]).
//!
//! Frame-major (`data[frame * N_MELS + band]`), `1 + len / 160` frames, frame `i`
//! centred on sample `160 i`.

use std::sync::Arc;

use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};
use steno_whisper::mel::{MelFilters, HOP_LENGTH, N_FFT, N_FREQS};

/// Mel bands the encoder reads.
pub const N_MELS: usize = 40;
/// Samples per mel frame (10 ms).
pub const HOP: usize = HOP_LENGTH;

/// The filterbank, window and FFT plan, made once per encoder.
pub struct MelFrontEnd {
    /// Dense `[N_MELS][N_FREQS]`.
    filters: Vec<f32>,
    window: Vec<f32>,
    fft: Arc<dyn Fft<f32>>,
}

impl MelFrontEnd {
    pub fn new() -> Self {
        let window = (0..N_FFT)
            .map(|n| {
                let x = 2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64;
                (0.5 - 0.5 * x.cos()) as f32
            })
            .collect();
        MelFrontEnd {
            filters: MelFilters::new(N_MELS).dense(),
            window,
            fft: FftPlanner::<f32>::new().plan_fft_forward(N_FFT),
        }
    }

    /// Frames in the mel of `len` samples.
    pub fn n_frames(len: usize) -> usize {
        1 + len / HOP
    }

    /// The mel power spectrogram of 16 kHz `samples`, frame-major.
    pub fn mel(&self, samples: &[f32]) -> Vec<f32> {
        let n_frames = Self::n_frames(samples.len());
        let mut out = vec![0.0f32; n_frames * N_MELS];
        let mut buf = vec![Complex32::default(); N_FFT];
        let mut scratch = vec![Complex32::default(); self.fft.get_inplace_scratch_len()];
        let mut power = [0.0f32; N_FREQS];
        for (f, row) in out.chunks_exact_mut(N_MELS).enumerate() {
            // Frame f covers samples [160 f - 200, 160 f + 200), zeros outside.
            let start = (f * HOP) as isize - (N_FFT / 2) as isize;
            for (j, slot) in buf.iter_mut().enumerate() {
                let t = start + j as isize;
                let x = if t >= 0 {
                    samples.get(t as usize).copied().unwrap_or(0.0)
                } else {
                    0.0
                };
                *slot = Complex32::new(x * self.window[j], 0.0);
            }
            self.fft.process_with_scratch(&mut buf, &mut scratch);
            for (p, z) in power.iter_mut().zip(&buf) {
                *p = z.norm_sqr();
            }
            for (o, filter) in row.iter_mut().zip(self.filters.chunks_exact(N_FREQS)) {
                *o = filter.iter().zip(&power).map(|(w, p)| w * p).sum();
            }
        }
        out
    }
}

impl Default for MelFrontEnd {
    fn default() -> Self {
        Self::new()
    }
}

/// Resemblyzer's volume target (dBFS of 16-bit full scale).
pub const TARGET_DBFS: f32 = -30.0;

/// The gain Resemblyzer's `normalize_volume(wav, -30, increase_only=True)` applies:
/// quiet audio is raised to -30 dBFS RMS, louder audio is left alone.
pub fn volume_gain(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 1.0;
    }
    let mean_square = samples
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        / samples.len() as f64;
    if mean_square <= 0.0 {
        return 1.0;
    }
    let dbfs = 10.0 * mean_square.log10();
    let change = f64::from(TARGET_DBFS) - dbfs;
    if change < 0.0 {
        1.0
    } else {
        10f64.powf(change / 20.0) as f32
    }
}

/// `samples` scaled by [`volume_gain`].
pub fn normalize_volume(samples: &[f32]) -> Vec<f32> {
    let gain = volume_gain(samples);
    samples.iter().map(|&x| x * gain).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_lands_in_its_band_and_frames_follow_librosa() {
        let front = MelFrontEnd::new();
        let tone: Vec<f32> = (0..16_000)
            .map(|n| (2.0 * std::f32::consts::PI * 440.0 * n as f32 / 16_000.0).sin() * 0.1)
            .collect();
        let mel = front.mel(&tone);
        assert_eq!(mel.len(), 101 * N_MELS);
        let row = &mel[50 * N_MELS..51 * N_MELS];
        let loudest = (0..N_MELS)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        // 440 Hz: Slaney bands are 66.7 Hz wide below 1 kHz, centres at 66.7 (i + 1).
        assert!((5..=6).contains(&loudest), "band {loudest}");
    }

    #[test]
    fn quiet_audio_is_raised_to_minus_30_dbfs_and_loud_audio_kept() {
        let quiet = vec![0.001f32; 1000];
        let raised = normalize_volume(&quiet);
        let rms = (raised.iter().map(|x| x * x).sum::<f32>() / 1000.0).sqrt();
        assert!((20.0 * rms.log10() - TARGET_DBFS).abs() < 1e-3);
        assert_eq!(volume_gain(&[0.5f32; 100]), 1.0);
        assert_eq!(volume_gain(&[0.0f32; 100]), 1.0);
    }
}
