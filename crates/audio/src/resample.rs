//! Band-limited sample-rate conversion: a Kaiser-windowed sinc, polyphase, streaming.
//!
//! The ratio is kept exact as `in/out = step/den` (reduced by their gcd), so output `n`
//! sits exactly at input time `n * step / den` — no drift over hours of audio. Each
//! output is one dot product of a precomputed filter phase with the input around that
//! time. For the usual rates (8, 11.025, 22.05, 32, 44.1, 48, 96 kHz…) there are few
//! distinct phases and the table is exact; for odd rates whose exact table would be huge
//! the fractional position is rounded to one of at most 4096 phases, an error of under
//! 1/8192 of an input sample (< -70 dB for anything Whisper hears).
//!
//! On x86-64 the inner loop is compiled twice and the AVX2 copy chosen at run time; on
//! aarch64 (Apple silicon) NEON is the baseline and the portable loop vectorises as is.

use crate::{MAX_SOURCE_RATE, MIN_SOURCE_RATE};

/// Sinc zero crossings on each side of the centre: sets the transition band width and the
/// cost (2 × this many multiply-adds per output, times the downsampling ratio). 20 is a
/// little longer than ffmpeg's default resampler (16), which Whisper's training audio went
/// through.
const ZERO_CROSSINGS: f64 = 20.0;
/// Cutoff as a fraction of the lower Nyquist frequency. For a 16 kHz output the -6 dB point
/// is 7.2 kHz, the passband is flat to ~6.3 kHz and the stopband (-75 dB) starts at ~8 kHz,
/// so nothing aliases back into the band Whisper's mel filters cover.
const ROLLOFF: f64 = 0.90;
/// Kaiser β; 7.5 gives about -75 dB stopband.
const KAISER_BETA: f64 = 7.5;
/// Largest exact phase count; above it phases are quantised.
const MAX_EXACT_PHASES: u64 = 4096;
/// Table size bound in coefficients (8 MiB of f32).
const MAX_TABLE_COEFFS: usize = 1 << 21;
/// Taps are padded to a multiple of this so the dot product runs in full SIMD lanes.
const LANES: usize = 8;

/// Converts mono `f32` samples at `source_rate` Hz to 16 kHz.
///
/// Already-16 kHz input is copied unchanged. Non-finite samples are treated as 0; the
/// output is not clamped (see [`crate::decode`] for that). The reference the decoding tests
/// compare with; decoding itself resamples as packets arrive (`MonoSink`).
#[cfg(test)]
pub(crate) fn resample_to_16k(
    samples: &[f32],
    source_rate: u32,
) -> Result<Vec<f32>, crate::AudioError> {
    use crate::{AudioError, SAMPLE_RATE};
    check_rate(source_rate).map_err(AudioError::InvalidParameter)?;
    if source_rate == SAMPLE_RATE {
        return Ok(samples.iter().map(|&s| finite(s)).collect());
    }
    Ok(resample(samples, source_rate, SAMPLE_RATE))
}

/// Mono `f32` samples at `in_rate` Hz converted to `out_rate` Hz in one call (the
/// streaming [`Resampler`] fed in chunks, then finished). Non-finite samples count as 0.
pub fn resample(samples: &[f32], in_rate: u32, out_rate: u32) -> Vec<f32> {
    let mut resampler = Resampler::new(in_rate, out_rate);
    let mut out = Vec::with_capacity(resampler.output_len(samples.len() as u64) as usize);
    let mut chunk = Vec::with_capacity(1 << 16);
    for part in samples.chunks(1 << 16) {
        chunk.clear();
        chunk.extend(part.iter().map(|&s| finite(s)));
        resampler.push(&chunk, &mut out);
    }
    resampler.finish(&mut out);
    out
}

fn finite(sample: f32) -> f32 {
    if sample.is_finite() {
        sample
    } else {
        0.0
    }
}

/// `Err(message)` unless `rate` is within the accepted source range.
pub(crate) fn check_rate(rate: u32) -> Result<(), String> {
    if (MIN_SOURCE_RATE..=MAX_SOURCE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(format!(
            "sample rate {rate} Hz is outside the supported range {MIN_SOURCE_RATE}–{MAX_SOURCE_RATE} Hz"
        ))
    }
}

/// Streaming converter from `in_rate` to `out_rate`: feed with [`Resampler::push`], end
/// with [`Resampler::finish`]. Output `n` is the band-limited input at time
/// `n * in_rate / out_rate` input samples, so the output is aligned with the input (no delay)
/// and `ceil(len * out_rate / in_rate)` samples long.
pub(crate) struct Resampler {
    /// Input samples advanced per `den` outputs (`in_rate / gcd`).
    step: u64,
    /// Outputs per `step` input samples (`out_rate / gcd`).
    den: u64,
    /// `step / den` and `step % den`, so advancing needs no division.
    step_whole: u64,
    step_rem: u64,
    /// Taps reach `half_taps - 1` samples before the centre and up to `taps - half_taps` after.
    half_taps: usize,
    taps: usize,
    phases: usize,
    exact_phases: bool,
    /// `phases / den`, for rounding a position to a quantised phase.
    phase_scale: f64,
    /// `phases` rows of `taps` coefficients.
    table: Vec<f32>,
    /// Input not yet fully consumed; `buffer[0]` is absolute input index `buffer_origin`
    /// (negative while the leading zero padding is still held).
    buffer: Vec<f32>,
    buffer_origin: i64,
    pushed: u64,
    produced: u64,
    /// Position of the next output: input index `next_index + next_rem / den`.
    next_index: u64,
    next_rem: u64,
}

impl Resampler {
    pub(crate) fn new(in_rate: u32, out_rate: u32) -> Self {
        assert!(in_rate > 0 && out_rate > 0, "sample rates must be positive");
        let g = gcd(u64::from(in_rate), u64::from(out_rate));
        let (step, den) = (u64::from(in_rate) / g, u64::from(out_rate) / g);

        // Cutoff in cycles per input sample: the lower of the two Nyquist frequencies.
        let cutoff = ROLLOFF * 0.5 * (f64::from(out_rate) / f64::from(in_rate)).min(1.0);
        let half_len = ZERO_CROSSINGS / (2.0 * cutoff);
        let half_taps = half_len.ceil() as usize + 1;
        let taps = (2 * half_taps).div_ceil(LANES) * LANES;

        let exact_phases = den <= MAX_EXACT_PHASES && den as usize * taps <= MAX_TABLE_COEFFS;
        let phases = if exact_phases {
            den as usize
        } else {
            (MAX_TABLE_COEFFS / taps).clamp(256, MAX_EXACT_PHASES as usize)
        };

        let i0_beta = bessel_i0(KAISER_BETA);
        let mut table = vec![0f32; phases * taps];
        let mut row = vec![0f64; taps];
        for (phase, coeffs) in table.chunks_exact_mut(taps).enumerate() {
            let frac = phase as f64 / phases as f64;
            for (j, c) in row.iter_mut().enumerate() {
                let tau = frac + (half_taps as f64 - 1.0) - j as f64;
                *c = if tau.abs() >= half_len {
                    0.0
                } else {
                    let x = tau / half_len;
                    sinc(2.0 * cutoff * tau) * bessel_i0(KAISER_BETA * (1.0 - x * x).sqrt())
                        / i0_beta
                };
            }
            // Unit gain at DC for every phase, or a constant input would come out rippled.
            let sum: f64 = row.iter().sum();
            for (dst, &c) in coeffs.iter_mut().zip(&row) {
                *dst = (c / sum) as f32;
            }
        }

        Resampler {
            step,
            den,
            step_whole: step / den,
            step_rem: step % den,
            half_taps,
            taps,
            phases,
            exact_phases,
            phase_scale: phases as f64 / den as f64,
            table,
            buffer: vec![0.0; half_taps - 1],
            buffer_origin: -(half_taps as i64 - 1),
            pushed: 0,
            produced: 0,
            next_index: 0,
            next_rem: 0,
        }
    }

    /// Number of outputs that `input_len` inputs produce in total.
    pub(crate) fn output_len(&self, input_len: u64) -> u64 {
        (u128::from(input_len) * u128::from(self.den)).div_ceil(u128::from(self.step)) as u64
    }

    /// Appends the outputs that `input` makes computable to `out`.
    pub(crate) fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.buffer.extend_from_slice(input);
        self.pushed += input.len() as u64;
        self.produce(out, u64::MAX);
        self.discard_consumed();
    }

    /// Appends the remaining outputs (the tail, filtered against zeros past the end).
    pub(crate) fn finish(mut self, out: &mut Vec<f32>) {
        let total = self.output_len(self.pushed);
        self.buffer.resize(self.buffer.len() + self.taps + 1, 0.0);
        self.produce(out, total);
        debug_assert_eq!(self.produced, total);
    }

    fn produce(&mut self, out: &mut Vec<f32>, limit: u64) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.produce_avx2(out, limit) };
        }
        self.produce_portable(out, limit);
    }

    /// The same loop compiled for 256-bit vectors (twice the width of x86-64's baseline
    /// SSE2). Same lanes, same summation order: results are identical to the portable path.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn produce_avx2(&mut self, out: &mut Vec<f32>, limit: u64) {
        self.produce_portable(out, limit);
    }

    #[inline(always)]
    fn produce_portable(&mut self, out: &mut Vec<f32>, limit: u64) {
        let available_end = self.buffer_origin + self.buffer.len() as i64;
        let (taps, half_taps) = (self.taps, self.half_taps as i64);
        let remaining_estimate = self.output_len(self.pushed).saturating_sub(self.produced);
        out.reserve(remaining_estimate.min(limit.saturating_sub(self.produced)) as usize);
        while self.produced < limit {
            let (index, phase) = self.current_position();
            let start = index as i64 - (half_taps - 1);
            if start + taps as i64 > available_end {
                break;
            }
            let offset = (start - self.buffer_origin) as usize;
            let coeffs = &self.table[phase * taps..(phase + 1) * taps];
            out.push(dot(coeffs, &self.buffer[offset..offset + taps]));
            self.produced += 1;
            self.next_index += self.step_whole;
            self.next_rem += self.step_rem;
            if self.next_rem >= self.den {
                self.next_rem -= self.den;
                self.next_index += 1;
            }
        }
    }

    /// Integer input index and table phase of the next output.
    fn current_position(&self) -> (u64, usize) {
        if self.exact_phases {
            return (self.next_index, self.next_rem as usize);
        }
        // Nearest table phase; `next_rem < den` so this is in 0..=phases.
        let q = (self.next_rem as f64 * self.phase_scale).round() as usize;
        if q == self.phases {
            (self.next_index + 1, 0)
        } else {
            (self.next_index, q)
        }
    }

    /// Drops input that no future output needs, in large steps so the copy is amortised.
    fn discard_consumed(&mut self) {
        let first_needed = self.next_index as i64 - (self.half_taps as i64 - 1);
        let consumed = (first_needed - self.buffer_origin).max(0) as usize;
        if consumed > 0 && consumed >= self.buffer.len() / 2 {
            let consumed = consumed.min(self.buffer.len());
            self.buffer.drain(..consumed);
            self.buffer_origin += consumed as i64;
        }
    }
}

/// Dot product in two independent `LANES`-wide accumulators: one running sum would make
/// every add wait for the previous one, and the compiler may not reorder float adds itself.
#[inline(always)]
fn dot(coeffs: &[f32], samples: &[f32]) -> f32 {
    let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
    let mut coeff_pairs = coeffs.chunks_exact(2 * LANES);
    let mut sample_pairs = samples.chunks_exact(2 * LANES);
    for (c, s) in (&mut coeff_pairs).zip(&mut sample_pairs) {
        for lane in 0..LANES {
            a[lane] += c[lane] * s[lane];
            b[lane] += c[LANES + lane] * s[LANES + lane];
        }
    }
    let (c, s) = (coeff_pairs.remainder(), sample_pairs.remainder());
    for (c, s) in c.chunks_exact(LANES).zip(s.chunks_exact(LANES)) {
        for lane in 0..LANES {
            a[lane] += c[lane] * s[lane];
        }
    }
    for lane in 0..LANES {
        a[lane] += b[lane];
    }
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Modified Bessel function of the first kind, order 0 (power series; converges fast for
/// the β used here).
fn bessel_i0(x: f64) -> f64 {
    let half = x / 2.0;
    let (mut sum, mut term, mut k) = (1.0f64, 1.0f64, 1.0f64);
    loop {
        term *= (half / k) * (half / k);
        sum += term;
        if term < sum * 1e-16 {
            return sum;
        }
        k += 1.0;
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{amplitude_at, estimate_frequency, rms, sine};
    use crate::AudioError;

    fn resample(samples: &[f32], in_rate: u32, out_rate: u32) -> Vec<f32> {
        let mut r = Resampler::new(in_rate, out_rate);
        let mut out = Vec::new();
        r.push(samples, &mut out);
        r.finish(&mut out);
        out
    }

    /// Middle part of a signal, away from the edges where the filter sees zero padding.
    fn middle(x: &[f32]) -> &[f32] {
        &x[x.len() / 5..x.len() * 4 / 5]
    }

    #[test]
    fn sine_1khz_from_44k1_keeps_frequency_and_amplitude() {
        let input = sine(1000.0, 0.8, 44_100, 2.0);
        let out = resample(&input, 44_100, 16_000);
        assert_eq!(
            out.len(),
            (input.len() as u64 * 16_000).div_ceil(44_100) as usize
        );
        let mid = middle(&out);
        let freq = estimate_frequency(mid, 16_000);
        assert!((freq - 1000.0).abs() < 10.0, "frequency {freq}");
        let amp = rms(mid) * std::f64::consts::SQRT_2;
        assert!((amp - 0.8).abs() < 0.008, "amplitude {amp}");
        // Phase alignment: output n sits at input time n * 44100/16000, no delay.
        let expected = sine(1000.0, 0.8, 16_000, 2.0);
        let err = middle(&out)
            .iter()
            .zip(middle(&expected[..out.len()]))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 0.01, "max deviation from the ideal 16 kHz sine {err}");
    }

    #[test]
    fn tone_above_8khz_does_not_alias() {
        for freq in [8_500.0, 12_000.0, 20_000.0] {
            let input = sine(freq, 1.0, 44_100, 1.0);
            let out = resample(&input, 44_100, 16_000);
            let level_db = 20.0 * (rms(middle(&out)) * std::f64::consts::SQRT_2).log10();
            assert!(level_db < -60.0, "{freq} Hz aliased at {level_db:.1} dB");
        }
        // And specifically nothing at the 4 kHz alias of 12 kHz.
        let out = resample(&sine(12_000.0, 1.0, 44_100, 1.0), 44_100, 16_000);
        let alias = amplitude_at(middle(&out), 16_000, 4_000.0);
        assert!(alias < 0.01, "alias amplitude {alias}");
    }

    #[test]
    fn passband_is_flat_across_rates() {
        for in_rate in [
            8_000, 11_025, 22_050, 32_000, 44_100, 48_000, 96_000, 192_000,
        ] {
            // Flat up to 80 % of the lower Nyquist frequency; the transition band is above.
            let edge = 0.8 * 0.5 * f64::from(in_rate.min(16_000));
            for freq in [100.0, 1_000.0, 3_000.0, edge] {
                if freq > edge {
                    continue;
                }
                let out = resample(&sine(freq, 0.5, in_rate, 1.0), in_rate, 16_000);
                let amp = rms(middle(&out)) * std::f64::consts::SQRT_2;
                assert!(
                    (amp - 0.5).abs() < 0.005,
                    "{in_rate} Hz → 16 kHz, {freq} Hz tone: amplitude {amp}"
                );
            }
        }
    }

    #[test]
    fn upsampling_creates_no_images() {
        let out = resample(&sine(1_000.0, 0.5, 8_000, 1.0), 8_000, 16_000);
        let mid = middle(&out);
        assert!((amplitude_at(mid, 16_000, 1_000.0) - 0.5).abs() < 0.005);
        // The image of 1 kHz at an 8 kHz rate would appear at 7 kHz.
        assert!(amplitude_at(mid, 16_000, 7_000.0) < 0.0005);
    }

    #[test]
    fn odd_rate_uses_quantised_phases_accurately() {
        // gcd(11_111, 16_000) = 1: 16 000 exact phases would be too many.
        let r = Resampler::new(11_111, 16_000);
        assert!(!r.exact_phases);
        let out = resample(&sine(1_000.0, 0.5, 11_111, 1.0), 11_111, 16_000);
        let expected = sine(1_000.0, 0.5, 16_000, 1.0);
        let err = middle(&out)
            .iter()
            .zip(middle(&expected[..out.len()]))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 0.005, "max deviation {err}");
    }

    #[test]
    fn streaming_in_chunks_matches_one_shot() {
        let input = sine(440.0, 0.5, 48_000, 0.5);
        let whole = resample(&input, 48_000, 16_000);
        let mut r = Resampler::new(48_000, 16_000);
        let mut chunked = Vec::new();
        for chunk in input.chunks(777) {
            r.push(chunk, &mut chunked);
        }
        r.finish(&mut chunked);
        assert_eq!(whole, chunked);
    }

    #[test]
    fn dc_gain_is_one_and_lengths_are_exact() {
        for in_rate in [8_000, 22_050, 44_100, 48_000, 11_111, 384_000, 1_000] {
            for len in [0usize, 1, 2, 3, 100, 12_345] {
                let out = resample(&vec![0.25; len], in_rate, 16_000);
                let expected = (len as u64 * 16_000).div_ceil(u64::from(in_rate)) as usize;
                assert_eq!(out.len(), expected, "{in_rate} Hz, {len} samples");
            }
            let out = resample(&vec![0.25; in_rate as usize], in_rate, 16_000);
            for &s in middle(&out) {
                assert!((s - 0.25).abs() < 1e-4, "{in_rate}: {s}");
            }
        }
    }

    #[test]
    fn public_helper_validates_rate_and_passes_16k_through() {
        assert!(matches!(
            resample_to_16k(&[0.0], 999),
            Err(AudioError::InvalidParameter(_))
        ));
        assert!(matches!(
            resample_to_16k(&[0.0], 400_000),
            Err(AudioError::InvalidParameter(_))
        ));
        let x = vec![0.1, f32::NAN, -0.2, f32::INFINITY];
        assert_eq!(
            resample_to_16k(&x, 16_000).unwrap(),
            vec![0.1, 0.0, -0.2, 0.0]
        );
        let out = resample_to_16k(&sine(1_000.0, 0.5, 48_000, 0.3), 48_000).unwrap();
        assert_eq!(out.len(), 4_800);
    }
}
