//! Whisper's log-mel front end, matching openai/whisper `audio.py` to f32 rounding.
//!
//! `log_mel_spectrogram` follows `whisper.audio.log_mel_spectrogram`:
//!
//! 1. append `padding` zero samples (OpenAI's `transcribe()` passes `N_SAMPLES`);
//! 2. STFT with `n_fft = 400`, `hop = 160`, a periodic Hann window and `center=True`
//!    reflect padding of `n_fft / 2` on both sides (as `torch.stft`);
//! 3. power spectrum `|X|^2`, dropping the last frame (`stft[..., :-1]`);
//! 4. the mel filterbank of librosa `filters.mel(sr=16000, n_fft=400, n_mels=N)`
//!    (Slaney mel scale, Slaney area normalisation), computed here rather than shipped;
//! 5. `log10(max(mel, 1e-10))`, then `max(x, max(x) - 8)` with the max over the whole
//!    input, then `(x + 4) / 4`.
//!
//! The result is frame-major (`data[frame * n_mels + mel]`), the layout of MLX's
//! `conv1d` input (N, L, C). [`Mel::window`] cuts a decoding window and pads it with
//! zeros in the log-mel domain, as OpenAI's `pad_or_trim` does on the mel segment.
//!
//! Speed: one cached FFT plan (in [`MelFilters`]), two real frames per complex FFT, and a
//! sparse filterbank (each Slaney filter covers a handful of FFT bins).

use std::fmt;
use std::sync::Arc;

use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

/// Sample rate Whisper expects (Hz): the rate steno-audio decodes every upload to, defined
/// once there (`usize` here because mel arithmetic indexes sample buffers).
pub const SAMPLE_RATE: usize = steno_audio::SAMPLE_RATE as usize;
/// STFT window length in samples (25 ms).
pub const N_FFT: usize = 400;
/// STFT hop in samples (10 ms).
pub const HOP_LENGTH: usize = 160;
/// Length of one decoding window in seconds.
pub const CHUNK_SECONDS: usize = 30;
/// Samples in one decoding window.
pub const N_SAMPLES: usize = CHUNK_SECONDS * SAMPLE_RATE;
/// Mel frames in one decoding window.
pub const N_FRAMES: usize = N_SAMPLES / HOP_LENGTH;
/// Mel frames per second of audio (100: one every 10 ms).
pub const FRAMES_PER_SECOND: usize = SAMPLE_RATE / HOP_LENGTH;
/// Mel frames per audio-context position: the encoder's second convolution has stride 2,
/// so one encoder output (and one timestamp token step) covers 2 frames, 20 ms.
pub const INPUT_STRIDE: usize = 2;

/// Seconds of audio covered by `frames` mel frames.
pub fn frames_to_seconds(frames: usize) -> f64 {
    frames as f64 * HOP_LENGTH as f64 / SAMPLE_RATE as f64
}

/// Mel frames in `seconds` of audio, rounded to the nearest frame (negative: 0).
pub fn seconds_to_frames(seconds: f64) -> usize {
    (seconds * FRAMES_PER_SECOND as f64).round() as usize
}

/// Number of FFT bins of a real `N_FFT`-point transform (`N_FFT / 2 + 1`).
pub const N_FREQS: usize = N_FFT / 2 + 1;

/// A log-mel spectrogram, frame-major: `data[frame * n_mels + mel]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mel {
    pub n_mels: usize,
    pub n_frames: usize,
    pub data: Vec<f32>,
}

impl Mel {
    /// The `n_mels` values of frame `i`. Panics when `i >= n_frames`.
    pub fn frame(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_mels..(i + 1) * self.n_mels]
    }

    /// Frames `[start_frame, start_frame + n_frames)`, frame-major (`n_frames * n_mels`
    /// values). Frames past the end of the spectrogram are zeros (0.0 in the normalised
    /// log-mel domain), as OpenAI's `pad_or_trim(mel_segment, N_FRAMES)` pads them.
    pub fn window(&self, start_frame: usize, n_frames: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; n_frames * self.n_mels];
        let start = start_frame.min(self.n_frames);
        let end = start_frame.saturating_add(n_frames).min(self.n_frames);
        if end > start {
            let src = &self.data[start * self.n_mels..end * self.n_mels];
            out[..src.len()].copy_from_slice(src);
        }
        out
    }

    /// Duration covered by the frames, in seconds (`n_frames * HOP_LENGTH / SAMPLE_RATE`).
    pub fn duration_seconds(&self) -> f64 {
        frames_to_seconds(self.n_frames)
    }
}

/// One mel filter: nonzero weights over FFT bins `start .. start + weights.len()`.
#[derive(Debug, Clone)]
struct SparseFilter {
    start: usize,
    weights: Vec<f32>,
}

/// The mel filterbank for a given `n_mels`, with the cached FFT plan and window.
///
/// Build once and share (it is `Send + Sync` and cheap to clone).
#[derive(Clone)]
pub struct MelFilters {
    n_mels: usize,
    filters: Vec<SparseFilter>,
    window: Arc<[f32]>,
    fft: Arc<dyn Fft<f32>>,
}

impl fmt::Debug for MelFilters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MelFilters")
            .field("n_mels", &self.n_mels)
            .field("n_fft", &N_FFT)
            .finish_non_exhaustive()
    }
}

impl MelFilters {
    /// librosa `filters.mel(sr=16000, n_fft=400, n_mels=n_mels)` (Slaney scale and norm,
    /// `fmin = 0`, `fmax = sr / 2`), the matrix in OpenAI's `mel_filters.npz`.
    /// Whisper uses 80 (tiny … large-v2) or 128 (large-v3, large-v3-turbo).
    ///
    /// Panics when `n_mels == 0`.
    pub fn new(n_mels: usize) -> Self {
        assert!(n_mels > 0, "n_mels must be positive");
        let dense = slaney_mel_filterbank(n_mels);
        let filters = dense
            .chunks_exact(N_FREQS)
            .map(|row| {
                let first = row.iter().position(|&w| w != 0.0);
                match first {
                    Some(first) => {
                        let last = row.iter().rposition(|&w| w != 0.0).unwrap_or(first);
                        SparseFilter {
                            start: first,
                            weights: row[first..=last].iter().map(|&w| w as f32).collect(),
                        }
                    }
                    None => SparseFilter {
                        start: 0,
                        weights: Vec::new(),
                    },
                }
            })
            .collect();
        let window: Arc<[f32]> = (0..N_FFT)
            .map(|n| {
                // torch.hann_window(N_FFT), periodic.
                let x = 2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64;
                (0.5 - 0.5 * x.cos()) as f32
            })
            .collect();
        let fft = FftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        MelFilters {
            n_mels,
            filters,
            window,
            fft,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// The dense filterbank, row-major `[n_mels][N_FFT / 2 + 1]`, as `mel_filters.npz`.
    pub fn dense(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.n_mels * N_FREQS];
        for (row, f) in out.chunks_exact_mut(N_FREQS).zip(&self.filters) {
            row[f.start..f.start + f.weights.len()].copy_from_slice(&f.weights);
        }
        out
    }

    /// Apply the sparse filterbank to one power spectrum (`N_FREQS` bins), writing the
    /// `n_mels` linear mel energies into `out`; returns the largest.
    #[inline]
    fn apply(&self, power: &[f32], out: &mut [f32]) -> f32 {
        let mut max = 0.0f32;
        for (o, f) in out.iter_mut().zip(&self.filters) {
            let bins = &power[f.start..f.start + f.weights.len()];
            let s: f32 = bins.iter().zip(&f.weights).map(|(p, w)| p * w).sum();
            *o = s;
            max = max.max(s);
        }
        max
    }
}

/// `log10(x)` for positive normal `x`, within a few f32 ulps of `f32::log10` (absolute
/// error < 2e-6 over Whisper's range `[1e-10, 1e10]`). Branch-free so that the loop
/// over a whole spectrogram vectorises; `f32::log10` from libm was half the run time.
#[inline(always)]
fn fast_log10(x: f32) -> f32 {
    const SQRT_HALF_BITS: u32 = 0x3f35_04f3; // 0.70710677
    const LOG10_2: f32 = std::f32::consts::LOG10_2;
    const LOG10_E: f32 = std::f32::consts::LOG10_E;
    let bits = x.to_bits();
    // x = m * 2^e with m in [sqrt(1/2), sqrt(2)).
    let e = (bits.wrapping_sub(SQRT_HALF_BITS) as i32) >> 23;
    let m = f32::from_bits(bits.wrapping_sub((e as u32) << 23));
    // ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716: the series to s^9
    // leaves < 1e-9.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
    e as f32 * LOG10_2 + (2.0 * s * p) * LOG10_E
}

/// librosa's Slaney mel scale (`htk=False`): linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// librosa `filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels, fmin=0, fmax=sr/2,
/// htk=False, norm="slaney")`, row-major `[n_mels][N_FREQS]`, in f64.
fn slaney_mel_filterbank(n_mels: usize) -> Vec<f64> {
    let sr = SAMPLE_RATE as f64;
    // np.fft.rfftfreq(n=N_FFT, d=1/sr)
    let fftfreqs: Vec<f64> = (0..N_FREQS).map(|k| k as f64 * sr / N_FFT as f64).collect();
    // mel_frequencies(n_mels + 2, fmin=0, fmax=sr/2): np.linspace in mel, back to Hz.
    let min_mel = hz_to_mel(0.0);
    let max_mel = hz_to_mel(sr / 2.0);
    let n_pts = n_mels + 2;
    let mel_f: Vec<f64> = (0..n_pts)
        .map(|i| {
            // np.linspace: start + i * step, the last point exactly `stop`.
            let m = if i == n_pts - 1 {
                max_mel
            } else {
                min_mel + i as f64 * (max_mel - min_mel) / (n_pts - 1) as f64
            };
            mel_to_hz(m)
        })
        .collect();
    let mut weights = vec![0.0f64; n_mels * N_FREQS];
    for i in 0..n_mels {
        let fdiff_lo = mel_f[i + 1] - mel_f[i];
        let fdiff_hi = mel_f[i + 2] - mel_f[i + 1];
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (k, &f) in fftfreqs.iter().enumerate() {
            let lower = -(mel_f[i] - f) / fdiff_lo;
            let upper = (mel_f[i + 2] - f) / fdiff_hi;
            weights[i * N_FREQS + k] = 0f64.max(lower.min(upper)) * enorm;
        }
    }
    weights
}

/// Sample `t` of `samples ++ zeros(padding)` (logical length `len`), with the reflect
/// extension of `torch.stft(center=True, pad_mode="reflect")` outside `[0, len)`
/// (repeated reflection when the pad exceeds the signal, like `numpy.pad`).
#[inline]
fn reflect_sample(samples: &[f32], len: usize, t: isize) -> f32 {
    let idx = if len <= 1 {
        0
    } else {
        let period = 2 * (len as isize - 1);
        let mut m = t.rem_euclid(period);
        if m >= len as isize {
            m = period - m;
        }
        m as usize
    };
    samples.get(idx).copied().unwrap_or(0.0)
}

/// Fill `buf` (N_FFT values) with the windowed frame `f` of the padded signal.
#[inline]
fn frame_into(
    samples: &[f32],
    len: usize,
    window: &[f32],
    f: usize,
    mut put: impl FnMut(usize, f32),
) {
    let start = (f * HOP_LENGTH) as isize - (N_FFT / 2) as isize;
    let interior = start >= 0 && (start as usize + N_FFT) <= samples.len();
    if interior {
        let s = &samples[start as usize..start as usize + N_FFT];
        for (j, (&x, &w)) in s.iter().zip(window).enumerate() {
            put(j, x * w);
        }
    } else if start >= samples.len() as isize && start as usize + N_FFT <= len {
        // Wholly inside the appended zero padding.
        for j in 0..N_FFT {
            put(j, 0.0);
        }
    } else {
        for (j, &w) in window.iter().enumerate() {
            put(j, reflect_sample(samples, len, start + j as isize) * w);
        }
    }
}

/// OpenAI Whisper's `log_mel_spectrogram(samples, n_mels, padding)` for 16 kHz mono
/// samples. Returns `(samples.len() + padding) / HOP_LENGTH` frames.
pub fn log_mel_spectrogram(samples: &[f32], filters: &MelFilters, padding: usize) -> Mel {
    let n_mels = filters.n_mels;
    let len = samples.len() + padding;
    // torch.stft(center=True) gives 1 + len / HOP frames; the last one is dropped.
    let n_frames = len / HOP_LENGTH;
    let mut data = vec![0.0f32; n_frames * n_mels];
    let max = mel_energies(samples, len, filters, 0..n_frames, &mut data);
    log_scale(&mut data, max);
    Mel {
        n_mels,
        n_frames,
        data,
    }
}

/// A job's log-mel computed a window at a time from its samples, so that a long job
/// holds its samples (4 bytes a sample) rather than the log-mel of the whole file
/// (`n_mels` floats every 160 samples, 2× to 3.2× larger). Its windows equal the same
/// frames of [`log_mel_spectrogram`] bit for bit: the log scale's floor comes from the
/// whole file's largest energy, found once by [`WindowedMel::new`].
#[derive(Clone)]
pub struct WindowedMel {
    samples: Vec<f32>,
    /// Logical length: the samples and the padding zeros after them.
    len: usize,
    n_frames: usize,
    max: f32,
    filters: MelFilters,
}

/// Frames per pass when [`WindowedMel::new`] looks for the largest energy (even, see
/// [`mel_energies`]): a few MB of scratch.
const MAX_PASS_FRAMES: usize = 4096;

impl WindowedMel {
    /// The log-mel of `samples ++ zeros(padding)`, as [`log_mel_spectrogram`] computes it.
    pub fn new(samples: Vec<f32>, filters: &MelFilters, padding: usize) -> Self {
        let len = samples.len() + padding;
        let n_frames = len / HOP_LENGTH;
        let mut scratch = vec![0.0f32; MAX_PASS_FRAMES.min(n_frames) * filters.n_mels];
        let mut max = 0.0f32;
        for start in (0..n_frames).step_by(MAX_PASS_FRAMES) {
            let frames = start..(start + MAX_PASS_FRAMES).min(n_frames);
            let out = &mut scratch[..frames.len() * filters.n_mels];
            max = max.max(mel_energies(&samples, len, filters, frames, out));
        }
        WindowedMel {
            samples,
            len,
            n_frames,
            max,
            filters: filters.clone(),
        }
    }

    pub fn n_mels(&self) -> usize {
        self.filters.n_mels
    }

    pub fn n_frames(&self) -> usize {
        self.n_frames
    }

    /// The samples, without the padding.
    pub fn samples(&self) -> &[f32] {
        &self.samples
    }

    /// What [`Mel::window`] gives for the whole file's log-mel: frames
    /// `[start_frame, start_frame + n_frames)`, zeros past the end.
    pub fn window(&self, start_frame: usize, n_frames: usize) -> Vec<f32> {
        let n_mels = self.filters.n_mels;
        let mut out = vec![0.0f32; n_frames * n_mels];
        let start = start_frame.min(self.n_frames);
        let end = start_frame.saturating_add(n_frames).min(self.n_frames);
        if end <= start {
            return out;
        }
        // The whole-file pass pairs frames (2k, 2k + 1) in one FFT, and the pairing
        // changes the rounding: compute from the even frame before `start` to the odd
        // frame after `end` so that every pair is the same.
        let first = start & !1;
        let last = (end + (end & 1)).min(self.n_frames);
        let mut data = vec![0.0f32; (last - first) * n_mels];
        mel_energies(
            &self.samples,
            self.len,
            &self.filters,
            first..last,
            &mut data,
        );
        log_scale(&mut data, self.max);
        let src = &data[(start - first) * n_mels..(end - first) * n_mels];
        out[..src.len()].copy_from_slice(src);
        out
    }
}

/// The linear mel energies of `frames` of `samples ++ zeros` (logical length `len`)
/// into `out` (`frames.len() * n_mels`); returns the largest. `frames` starts at an even
/// frame: two real frames share one complex FFT, (2k, 2k + 1), whatever the range.
fn mel_energies(
    samples: &[f32],
    len: usize,
    filters: &MelFilters,
    frames: std::ops::Range<usize>,
    out: &mut [f32],
) -> f32 {
    debug_assert!(frames.start.is_multiple_of(2), "pairs start at even frames");
    let n_mels = filters.n_mels;
    let window = &filters.window[..];
    let fft = &filters.fft;
    // Two real frames per complex FFT: z = a + i b, then
    // A[k] = (Z[k] + conj Z[N-k]) / 2, B[k] = (Z[k] - conj Z[N-k]) / 2i.
    const PAIRS: usize = 32;
    let mut buf = vec![Complex32::default(); PAIRS * N_FFT];
    let mut scratch = vec![Complex32::default(); fft.get_inplace_scratch_len()];
    let mut power_a = [0.0f32; N_FREQS];
    let mut power_b = [0.0f32; N_FREQS];
    let mut max = 0.0f32;
    let (first, end) = (frames.start, frames.end);

    let mut f0 = first;
    while f0 < end {
        let frames_here = (end - f0).min(2 * PAIRS);
        let pairs_here = frames_here.div_ceil(2);
        let chunk = &mut buf[..pairs_here * N_FFT];
        for (p, slot) in chunk.chunks_exact_mut(N_FFT).enumerate() {
            let fa = f0 + 2 * p;
            let fb = fa + 1;
            frame_into(samples, len, window, fa, |j, v| {
                slot[j] = Complex32::new(v, 0.0)
            });
            if fb < end {
                frame_into(samples, len, window, fb, |j, v| slot[j].im = v);
            }
        }
        fft.process_with_scratch(chunk, &mut scratch);
        for (p, z) in chunk.chunks_exact(N_FFT).enumerate() {
            let fa = f0 + 2 * p;
            let fb = fa + 1;
            for k in 0..N_FREQS {
                let zk = z[k];
                let zn = z[(N_FFT - k) % N_FFT].conj();
                let a = (zk + zn) * 0.5;
                let b = zk - zn; // = 2i B[k]; |B|^2 = |b|^2 / 4
                power_a[k] = a.norm_sqr();
                power_b[k] = b.norm_sqr() * 0.25;
            }
            let row = fa - first;
            let m = filters.apply(&power_a, &mut out[row * n_mels..(row + 1) * n_mels]);
            max = max.max(m);
            if fb < end {
                let m = filters.apply(&power_b, &mut out[(row + 1) * n_mels..(row + 2) * n_mels]);
                max = max.max(m);
            }
        }
        f0 += frames_here;
    }
    max
}

/// Whisper's log scale: `log10`, floored 8 below the largest energy `max` (of the whole
/// file), shifted and scaled to about [-1, 1].
fn log_scale(data: &mut [f32], max: f32) {
    // log10 is monotonic, so max(log10(max(mel, 1e-10))) = log10(max(max(mel), 1e-10)).
    let floor = max.max(1e-10).log10() - 8.0;
    for v in data {
        // Exactly -10 at (and below) the clamp, as f32 log10(1e-10) is in torch.
        let l = if *v <= 1e-10 { -10.0 } else { fast_log10(*v) };
        *v = (l.max(floor) + 4.0) * 0.25;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::{FRAC_1_SQRT_2, SQRT_2};

    #[test]
    fn filters_are_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<MelFilters>();
        check::<Mel>();
    }

    #[test]
    fn fast_log10_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = 1e-10f32;
        while x < 1e10 {
            let err = (f64::from(fast_log10(x)) - f64::from(x).log10()).abs();
            worst = worst.max(err);
            x *= 1.000_37;
        }
        for x in [1.0f32, 0.5, 2.0, 10.0, FRAC_1_SQRT_2, SQRT_2, 1e-10] {
            let err = (f64::from(fast_log10(x)) - f64::from(x).log10()).abs();
            worst = worst.max(err);
        }
        assert!(worst < 2e-6, "worst abs error {worst}");
    }

    #[test]
    fn reflect_matches_torch() {
        let x = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        let got: Vec<f32> = (-4..9).map(|t| reflect_sample(&x, 5, t)).collect();
        assert_eq!(
            got,
            [4.0, 3.0, 2.0, 1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0, 1.0, 0.0]
        );
        // Padding zeros are part of the reflected signal.
        assert_eq!(reflect_sample(&x, 7, 7), 0.0);
        assert_eq!(reflect_sample(&x, 7, 9), 3.0);
    }

    #[test]
    fn windows_equal_the_whole_file_log_mel() {
        // Random audio, louder in the middle so that the floor comes from far away.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let samples: Vec<f32> = (0..16_000 * 7 + 123)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let gain = if (40_000..50_000).contains(&i) {
                    0.9
                } else {
                    0.01
                };
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * gain
            })
            .collect();
        for n_mels in [80, 128] {
            let filters = MelFilters::new(n_mels);
            let whole = log_mel_spectrogram(&samples, &filters, 3_000 * HOP_LENGTH);
            let windowed = WindowedMel::new(samples.clone(), &filters, 3_000 * HOP_LENGTH);
            assert_eq!(windowed.n_frames(), whole.n_frames);
            for (start, frames) in [
                (0, 3000),
                (1, 3000),
                (257, 1234),
                (3333, 1000),
                (3698, 7),
                (9000, 200),
            ] {
                let got = windowed.window(start, frames);
                assert!(
                    got == whole.window(start, frames),
                    "window ({start}, {frames}), {n_mels} mels"
                );
            }
        }
    }
}
