//! Energy-based voice activity detection on 16 kHz mono audio.
//!
//! Frames of 30 ms are compared with a *local* noise floor: a low percentile of the frame
//! energies in the few seconds before and after each frame. Stationary noise — hiss, hum, a fan —
//! sits at its own floor and is never speech however loud it is; digital silence and very
//! quiet frames are never speech either ([`VadParams::min_level_dbfs`]). Runs of loud
//! frames are padded by a short lead and a hangover (so word onsets and trailing consonants
//! stay inside), gaps shorter than a real pause are bridged, and regions with less loud time
//! than a syllable are dropped (clicks).
//!
//! Whole-file and offline by design: the floor looks ahead as well as back, which a
//! streaming VAD could not do.

use crate::SAMPLE_RATE;

/// Hop of the energy grid used to place cuts (10 ms).
const CUT_HOP: usize = SAMPLE_RATE as usize / 100;
/// Length of the quiet spot looked for when a window has no pause (100 ms).
const QUIET_SPOT_HOPS: usize = 10;

/// Tuning of [`speech_regions`]. The defaults suit conversational speech and podcasts.
#[derive(Debug, Clone, PartialEq)]
pub struct VadParams {
    /// Analysis frame length in milliseconds.
    pub frame_ms: u32,
    /// A frame is speech when its energy is this many dB above the local noise floor.
    /// Lower finds quieter speech and more noise.
    pub threshold_db: f32,
    /// Frames quieter than this (dB relative to a full-scale square wave) are never speech.
    pub min_level_dbfs: f32,
    /// How far before and after each frame its noise floor is estimated from. Longer is
    /// steadier; shorter follows a changing background faster. Speech that runs this long
    /// without any gap between words raises its own floor.
    pub noise_context_ms: u32,
    /// Which percentile of the frame energies in the context is the noise floor (0–1).
    pub noise_percentile: f32,
    /// Speech regions start this much before their first loud frame.
    pub lead_ms: u32,
    /// Speech regions continue this long after their last loud frame.
    pub hangover_ms: u32,
    /// A region with less loud time than this in it is a click or a bump, not speech.
    pub min_speech_ms: u32,
    /// Gaps between speech regions shorter than this are bridged (a pause inside a
    /// sentence is not a split point for the VAD).
    pub min_silence_ms: u32,
}

impl Default for VadParams {
    fn default() -> Self {
        VadParams {
            frame_ms: 30,
            threshold_db: 10.0,
            min_level_dbfs: -55.0,
            noise_context_ms: 3_000,
            noise_percentile: 0.10,
            lead_ms: 60,
            hangover_ms: 210,
            min_speech_ms: 120,
            min_silence_ms: 300,
        }
    }
}

impl VadParams {
    fn frames(&self, ms: u32) -> usize {
        (ms as usize).div_ceil(self.frame_ms.max(1) as usize)
    }

    fn frame_len(&self) -> usize {
        (SAMPLE_RATE as usize * self.frame_ms.max(1) as usize / 1000).max(1)
    }
}

/// Sample ranges `[start, end)` of speech in 16 kHz mono `samples`, sorted and disjoint.
pub fn speech_regions(samples: &[f32], params: &VadParams) -> Vec<(usize, usize)> {
    let frame_len = params.frame_len();
    let energies = frame_energies_db(samples, frame_len);
    if energies.is_empty() {
        return Vec::new();
    }
    let floor = noise_floor(&energies, params);
    let loud: Vec<bool> = energies
        .iter()
        .zip(&floor)
        .map(|(&e, &f)| e > f + params.threshold_db && e > params.min_level_dbfs)
        .collect();

    // Runs of loud frames, padded by lead and hangover, with short gaps bridged; then
    // regions with too little loud time in them (clicks, bumps) dropped. Dropping after
    // bridging keeps a train of short syllable peaks in noisy audio, each of which alone
    // would be too short.
    let (lead, hangover) = (
        params.frames(params.lead_ms),
        params.frames(params.hangover_ms),
    );
    let min_gap = params.frames(params.min_silence_ms);
    // (start frame, end frame, loud frames inside)
    let mut merged: Vec<(usize, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < loud.len() {
        if !loud[i] {
            i += 1;
            continue;
        }
        let run_start = i;
        while i < loud.len() && loud[i] {
            i += 1;
        }
        let (start, end) = (
            run_start.saturating_sub(lead),
            (i + hangover).min(loud.len()),
        );
        match merged.last_mut() {
            Some(last) if start <= last.1 + min_gap => {
                last.1 = last.1.max(end);
                last.2 += i - run_start;
            }
            _ => merged.push((start, end, i - run_start)),
        }
    }
    let min_loud = params.frames(params.min_speech_ms).max(1);
    merged
        .into_iter()
        .filter(|&(_, _, loud_frames)| loud_frames >= min_loud)
        .map(|(start, end, _)| (start * frame_len, (end * frame_len).min(samples.len())))
        .filter(|(start, end)| end > start)
        .collect()
}

/// True when `samples` (16 kHz mono) hold no speech: silence, or any steady noise.
pub fn is_silent(samples: &[f32]) -> bool {
    speech_regions(samples, &VadParams::default()).is_empty()
}

/// Where to cut 16 kHz mono `samples` so that no piece is longer than
/// `max_window_samples` (normally Whisper's 30 s window, `steno_whisper::mel::N_SAMPLES`):
/// sorted cut positions, excluding
/// 0 and `samples.len()`, empty when the audio already fits.
///
/// Each cut lies in the last third of the window it ends, in the longest pause found there
/// (the quietest one among equally long pauses), at the pause's middle. Where that part has
/// no pause — fast continuous speech, music — the cut goes in the middle of its quietest
/// 100 ms, which is usually the gap between two words.
pub fn split_points(samples: &[f32], max_window_samples: usize, params: &VadParams) -> Vec<usize> {
    let len = samples.len();
    if max_window_samples == 0 || len <= max_window_samples {
        return Vec::new();
    }
    let regions = speech_regions(samples, params);
    let pauses = pauses_between(&regions, len);
    let energy = HopEnergy::new(samples);

    let mut cuts = Vec::new();
    let mut start = 0;
    while len - start > max_window_samples {
        let hi = start + max_window_samples;
        let lo = hi - max_window_samples / 3;
        let best_pause = pauses
            .iter()
            .filter_map(|&(a, b)| {
                let (a, b) = (a.max(lo + 1), b.min(hi));
                (b > a).then_some((a, b))
            })
            .max_by(|x, y| {
                (x.1 - x.0)
                    .cmp(&(y.1 - y.0))
                    .then(energy.mean(y.0, y.1).total_cmp(&energy.mean(x.0, x.1)))
            });
        let cut = match best_pause {
            Some((a, b)) => a + (b - a) / 2,
            None => energy.quietest_spot(lo, hi).unwrap_or(hi),
        };
        debug_assert!(cut > start && cut <= hi);
        cuts.push(cut);
        start = cut;
    }
    cuts
}

/// Non-speech stretches of `[0, len)` given sorted disjoint speech regions.
fn pauses_between(regions: &[(usize, usize)], len: usize) -> Vec<(usize, usize)> {
    let mut pauses = Vec::with_capacity(regions.len() + 1);
    let mut position = 0;
    for &(start, end) in regions {
        if start > position {
            pauses.push((position, start));
        }
        position = position.max(end);
    }
    if len > position {
        pauses.push((position, len));
    }
    pauses
}

/// Energy of each frame in dB (mean square after removing the frame's DC offset, so a
/// biased ADC does not look loud). A trailing partial frame counts if at least half full.
fn frame_energies_db(samples: &[f32], frame_len: usize) -> Vec<f32> {
    samples
        .chunks(frame_len)
        .filter(|frame| frame.len() * 2 >= frame_len)
        .map(|frame| {
            let n = frame.len() as f64;
            let (sum, sum_sq) = frame.iter().fold((0f64, 0f64), |(s, q), &x| {
                let x = if x.is_finite() { f64::from(x) } else { 0.0 };
                (s + x, q + x * x)
            });
            let mean = sum / n;
            let power = (sum_sq / n - mean * mean).max(0.0);
            (10.0 * (power + 1e-10).log10()) as f32
        })
        .collect()
}

/// Local noise floor per frame: the `noise_percentile` of the frame energies in the
/// `noise_context_ms` before it and, separately, in the `noise_context_ms` after it; the
/// higher of the two. Taking the higher side means a step in background level (a muted
/// stretch followed by room noise, a quiet room followed by a street) is met by the floor
/// on the loud side at once, instead of being called speech for seconds. Evaluated every
/// few frames and interpolated between.
fn noise_floor(energies: &[f32], params: &VadParams) -> Vec<f32> {
    const BLOCK: usize = 10;
    let n = energies.len();
    let context = params.frames(params.noise_context_ms).max(BLOCK);
    let percentile = params.noise_percentile.clamp(0.0, 1.0);
    let mut scratch = Vec::with_capacity(context + 1);
    let mut level_of = |range: std::ops::Range<usize>| {
        scratch.clear();
        scratch.extend_from_slice(&energies[range]);
        let k = ((scratch.len() - 1) as f32 * percentile).round() as usize;
        *scratch.select_nth_unstable_by(k, f32::total_cmp).1
    };
    let centres: Vec<usize> = (0..n.div_ceil(BLOCK))
        .map(|b| (b * BLOCK + BLOCK / 2).min(n - 1))
        .collect();
    let levels: Vec<f32> = centres
        .iter()
        .map(|&c| {
            let before = c.saturating_sub(context)..c + 1;
            let after = c..(c + context + 1).min(n);
            // Near the ends of the file one side is too short to know the noise; use the other.
            let enough = context / 2;
            match (before.len() > enough, after.len() > enough) {
                (true, true) => level_of(before).max(level_of(after)),
                (true, false) => level_of(before),
                (false, true) => level_of(after),
                (false, false) => level_of(before.start..after.end),
            }
        })
        .collect();
    (0..n)
        .map(|i| {
            let b = (i / BLOCK).min(centres.len() - 1);
            let (b0, b1) = if i < centres[b] {
                (b.saturating_sub(1), b)
            } else {
                (b, (b + 1).min(centres.len() - 1))
            };
            if b0 == b1 || centres[b1] == centres[b0] {
                levels[b0]
            } else {
                let t = (i - centres[b0]) as f32 / (centres[b1] - centres[b0]) as f32;
                levels[b0] + t.clamp(0.0, 1.0) * (levels[b1] - levels[b0])
            }
        })
        .collect()
}

/// Cumulative energy on a 10 ms grid, for pause loudness and quiet-spot search in
/// O(1) per query without a per-sample prefix array.
struct HopEnergy {
    prefix: Vec<f64>,
}

impl HopEnergy {
    fn new(samples: &[f32]) -> Self {
        let mut prefix = Vec::with_capacity(samples.len() / CUT_HOP + 2);
        prefix.push(0.0);
        let mut total = 0.0;
        for hop in samples.chunks(CUT_HOP) {
            total += hop
                .iter()
                .map(|&x| {
                    if x.is_finite() {
                        f64::from(x) * f64::from(x)
                    } else {
                        0.0
                    }
                })
                .sum::<f64>();
            prefix.push(total);
        }
        HopEnergy { prefix }
    }

    /// Mean energy per hop over the hops covering samples `[a, b)`.
    fn mean(&self, a: usize, b: usize) -> f64 {
        let (ha, hb) = (a / CUT_HOP, b.div_ceil(CUT_HOP).min(self.prefix.len() - 1));
        if hb <= ha {
            return 0.0;
        }
        (self.prefix[hb] - self.prefix[ha]) / (hb - ha) as f64
    }

    /// Middle of the quietest 100 ms lying wholly within `(lo, hi]`.
    fn quietest_spot(&self, lo: usize, hi: usize) -> Option<usize> {
        let first = lo / CUT_HOP + 1;
        let last = (hi / CUT_HOP).min(self.prefix.len() - 1);
        (first..=last.checked_sub(QUIET_SPOT_HOPS)?)
            .min_by(|&x, &y| {
                let ex = self.prefix[x + QUIET_SPOT_HOPS] - self.prefix[x];
                let ey = self.prefix[y + QUIET_SPOT_HOPS] - self.prefix[y];
                ex.total_cmp(&ey)
            })
            .map(|hop| (hop + QUIET_SPOT_HOPS / 2) * CUT_HOP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{jfk_wav, pseudo_speech, sine, white_noise};

    const RATE: usize = SAMPLE_RATE as usize;
    /// Whisper's window: 30 s at 16 kHz.
    const MAX_WINDOW_SAMPLES: usize = 30 * RATE;

    fn secs(s: f64) -> usize {
        (s * RATE as f64).round() as usize
    }

    /// Builds a signal from (is_speech, seconds) segments over a noise bed; returns it with
    /// the true speech intervals.
    fn layout(
        segments: &[(bool, f64)],
        noise_rms: f64,
        speech_level: f64,
    ) -> (Vec<f32>, Vec<(usize, usize)>) {
        let total: f64 = segments.iter().map(|s| s.1).sum();
        let mut signal = white_noise(noise_rms, SAMPLE_RATE, total + 0.1, 11);
        let mut truth = Vec::new();
        let mut position = 0;
        for (i, &(speech, seconds)) in segments.iter().enumerate() {
            let n = secs(seconds);
            if speech {
                let burst = pseudo_speech(seconds, speech_level, i as u64);
                for (dst, s) in signal[position..].iter_mut().zip(burst) {
                    *dst += s;
                }
                truth.push((position, position + n));
            }
            position += n;
        }
        signal.truncate(position);
        (signal, truth)
    }

    fn overlap(a: (usize, usize), b: (usize, usize)) -> usize {
        a.1.min(b.1).saturating_sub(a.0.max(b.0))
    }

    #[test]
    fn five_minutes_of_silence_or_steady_noise_is_silent() {
        let five_minutes = 300.0;
        let cases: Vec<(&str, Vec<f32>)> = vec![
            ("digital silence", vec![0.0; secs(five_minutes)]),
            (
                "-50 dBFS white noise",
                white_noise(0.003, SAMPLE_RATE, five_minutes, 1),
            ),
            (
                "-26 dBFS white noise",
                white_noise(0.05, SAMPLE_RATE, five_minutes, 2),
            ),
            ("hum and hiss", {
                let hum = sine(50.0, 0.05, SAMPLE_RATE, five_minutes);
                let hiss = white_noise(0.01, SAMPLE_RATE, five_minutes, 3);
                hum.iter().zip(&hiss).map(|(a, b)| a + b).collect()
            }),
            ("DC offset", vec![0.2; secs(five_minutes)]),
        ];
        for (name, signal) in cases {
            let regions = speech_regions(&signal, &VadParams::default());
            assert!(regions.is_empty(), "{name}: {regions:?}");
            assert!(is_silent(&signal), "{name}");
        }
        assert!(is_silent(&[]));
        assert!(is_silent(&[0.5; 100]));
    }

    #[test]
    fn a_step_in_background_noise_is_not_speech() {
        let mut signal = vec![0.0; secs(20.0)];
        signal.extend(white_noise(0.02, SAMPLE_RATE, 20.0, 7));
        signal.extend(white_noise(0.002, SAMPLE_RATE, 20.0, 8));
        signal.extend(white_noise(0.05, SAMPLE_RATE, 20.0, 9));
        let regions = speech_regions(&signal, &VadParams::default());
        assert!(regions.is_empty(), "{regions:?}");
    }

    #[test]
    fn a_click_is_not_speech() {
        let mut signal = white_noise(0.001, SAMPLE_RATE, 5.0, 4);
        for s in &mut signal[secs(2.0)..secs(2.01)] {
            *s = 0.9;
        }
        assert!(is_silent(&signal));
    }

    #[test]
    fn speech_bursts_are_found_with_their_boundaries() {
        let segments = [
            (false, 1.0),
            (true, 1.5),
            (false, 1.0),
            (true, 0.8),
            (false, 2.0),
            (true, 2.0),
            (false, 1.0),
        ];
        for (noise, level) in [(0.001, 0.3), (0.03, 0.3), (0.0, 0.05)] {
            let (signal, truth) = layout(&segments, noise, level);
            let found = speech_regions(&signal, &VadParams::default());
            assert_eq!(found.len(), truth.len(), "noise {noise}: {found:?}");
            for (f, t) in found.iter().zip(&truth) {
                // Starts a little early (lead), ends a little late (hangover), never cut short.
                assert!(
                    f.0 <= t.0 + secs(0.05) && f.0 + secs(0.15) >= t.0,
                    "noise {noise}: start {f:?} vs {t:?}"
                );
                assert!(
                    f.1 + secs(0.05) >= t.1 && f.1 <= t.1 + secs(0.35),
                    "noise {noise}: end {f:?} vs {t:?}"
                );
            }
            assert!(!is_silent(&signal));
        }
    }

    #[test]
    fn short_gaps_are_bridged() {
        let (signal, _) = layout(
            &[
                (false, 0.5),
                (true, 1.0),
                (false, 0.15),
                (true, 1.0),
                (false, 0.5),
            ],
            0.001,
            0.3,
        );
        let found = speech_regions(&signal, &VadParams::default());
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn jfk_is_mostly_speech() {
        let Some(wav) = jfk_wav() else { return };
        let audio = crate::decode(&wav, None, &crate::Limits::default()).unwrap();
        let regions = speech_regions(&audio.samples, &VadParams::default());
        let speech: usize = regions.iter().map(|r| r.1 - r.0).sum();
        let coverage = speech as f64 / audio.samples.len() as f64;
        eprintln!(
            "jfk regions (s): {:?}",
            regions
                .iter()
                .map(|r| (r.0 as f64 / 16e3, r.1 as f64 / 16e3))
                .collect::<Vec<_>>()
        );
        assert!(coverage > 0.6, "coverage {coverage}");
        assert!(regions[0].0 < secs(1.0), "{regions:?}");
        assert!(regions[regions.len() - 1].1 > secs(9.5), "{regions:?}");
        assert!(!is_silent(&audio.samples));
        // Silence either side of real speech does not move the speech or add any.
        let mut padded = vec![0.0; secs(60.0)];
        padded.extend_from_slice(&audio.samples);
        padded.extend(white_noise(0.002, SAMPLE_RATE, 60.0, 5));
        let shifted = speech_regions(&padded, &VadParams::default());
        let total: usize = shifted.iter().map(|r| r.1 - r.0).sum();
        assert!(
            (total as f64 - speech as f64).abs() < secs(0.5) as f64,
            "{total} vs {speech}"
        );
        assert!(
            shifted
                .iter()
                .all(|r| r.0 >= secs(59.9) && r.1 <= secs(71.5)),
            "{shifted:?}"
        );
    }

    #[test]
    fn short_audio_needs_no_cut() {
        let signal = vec![0.1; MAX_WINDOW_SAMPLES];
        assert!(split_points(&signal, MAX_WINDOW_SAMPLES, &VadParams::default()).is_empty());
        assert!(split_points(&[], MAX_WINDOW_SAMPLES, &VadParams::default()).is_empty());
    }

    #[test]
    fn cuts_fall_in_pauses_and_windows_fit() {
        // 5 s utterances separated by 0.8 s pauses, 95 s in all.
        let mut segments = vec![(false, 0.3)];
        while segments.iter().map(|s| s.1).sum::<f64>() < 95.0 {
            segments.push((true, 5.0));
            segments.push((false, 0.8));
        }
        let (signal, truth) = layout(&segments, 0.002, 0.3);
        let cuts = split_points(&signal, MAX_WINDOW_SAMPLES, &VadParams::default());
        assert!(!cuts.is_empty());
        let mut bounds = vec![0];
        bounds.extend(&cuts);
        bounds.push(signal.len());
        for w in bounds.windows(2) {
            assert!(
                w[1] > w[0] && w[1] - w[0] <= MAX_WINDOW_SAMPLES,
                "{bounds:?}"
            );
        }
        for &cut in &cuts {
            assert!(
                truth.iter().all(|&t| overlap(t, (cut, cut + 1)) == 0),
                "cut at {cut} is inside speech"
            );
        }
        // Windows are used well: every cut but the last lands in its window's last third.
        for w in bounds.windows(2).take(cuts.len()) {
            assert!(w[1] - w[0] >= MAX_WINDOW_SAMPLES * 2 / 3, "{bounds:?}");
        }
    }

    #[test]
    fn longest_pause_wins() {
        // Pauses of 0.4 s at 21 s and 1.5 s at 27 s inside the 20–30 s search zone.
        let (signal, _) = layout(
            &[
                (true, 21.0),
                (false, 0.4),
                (true, 5.6),
                (false, 1.5),
                (true, 10.0),
            ],
            0.002,
            0.3,
        );
        let cuts = split_points(&signal, MAX_WINDOW_SAMPLES, &VadParams::default());
        assert_eq!(cuts.len(), 1, "{cuts:?}");
        assert!(cuts[0] > secs(27.0) && cuts[0] < secs(28.5), "{cuts:?}");
    }

    #[test]
    fn without_pauses_the_cut_goes_to_the_quietest_spot() {
        let mut signal = pseudo_speech(70.0, 0.3, 9);
        // A 150 ms dip (too short to be a VAD pause) at 25 s.
        for s in &mut signal[secs(25.0)..secs(25.15)] {
            *s *= 0.01;
        }
        let cuts = split_points(&signal, MAX_WINDOW_SAMPLES, &VadParams::default());
        assert!(cuts[0] >= secs(25.0) && cuts[0] <= secs(25.15), "{cuts:?}");
        let mut start = 0;
        for &cut in cuts.iter().chain([signal.len()].iter()) {
            assert!(cut - start <= MAX_WINDOW_SAMPLES);
            start = cut;
        }
    }

    #[test]
    fn tiny_windows_still_make_progress() {
        let signal = white_noise(0.1, SAMPLE_RATE, 1.0, 6);
        for max in [1, 2, 100, 1_000, 4_000] {
            let cuts = split_points(&signal, max, &VadParams::default());
            let mut start = 0;
            for &cut in cuts.iter().chain([signal.len()].iter()) {
                assert!(
                    cut > start && cut - start <= max,
                    "max {max}: {start}..{cut}"
                );
                start = cut;
            }
        }
    }
}
