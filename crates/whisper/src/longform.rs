//! OpenAI's long-form rules (`transcribe()` in `whisper/transcribe.py`), as pure
//! functions over plain data: which windows a job starts with, what a row's initial
//! tokens are, what to do with a finished row (retry at the next temperature, skip it as
//! silence, keep it), how its tokens split into segments, and where the job's next
//! window starts. The [`Scheduler`](crate::scheduler::Scheduler) applies them; none of
//! them needs a model, so they are unit-tested below.
//!
//! Units: positions in the audio are mel frames (10 ms, [`crate::mel::FRAMES_PER_SECOND`]);
//! a window is `(seek, frames)`: its first frame and how many frames of audio it covers.

use std::io::Write;
use std::ops::Range;

use steno_audio::vad::{self, VadParams};

use crate::mel::{
    frames_to_seconds, seconds_to_frames, HOP_LENGTH, INPUT_STRIDE, N_FRAMES, N_SAMPLES,
};
use crate::transcribe::{Mode, TranscribeOptions};
use crate::transcript::Segment;

/// Seconds per timestamp token.
pub const TIME_PRECISION: f64 = 0.02;
/// Parallel mode: the least audio (mel frames) left in a window's region after the model
/// stopped that is worth decoding again.
pub(crate) const MIN_CONTINUATION_FRAMES: usize = 50;
/// Rows sampled above this temperature do not condition the next window on their text
/// (OpenAI: such text is likely garbage).
const MAX_CONDITIONING_TEMPERATURE: f32 = 0.5;
/// Sampled tokens per second of a window's audio past which a row is degenerate.
/// Whisper's own length limit, 224 tokens per 30 s window, is 7.5 tokens/s; the
/// densest real speech (fast syllable-timed languages at one or two tokens a
/// syllable, plus two timestamps a segment) stays well under 20, so only text the
/// audio cannot hold (a loop, noise read as words) reaches it.
const MAX_TOKENS_PER_SECOND: f64 = 20.0;
/// The least token budget of a row: short windows may still hold a quick sentence.
const MIN_ROW_TOKENS: usize = 32;
/// The share of one row's token budget that one window's failed attempts may spend
/// together before its fallback stops: three quarters, so that a window never samples more
/// than 1.75 times what its audio could hold (the budget, plus the attempt that crossed
/// it), while a row that loops early (at 32 tokens or so) still leaves room for a retry.
/// At one whole row, 2.5 s of noise read as words (a bit-flipped FLAC) ran four
/// temperatures and cost 1.7 times a clean 11 s window with base.
const WINDOW_BUDGET_SHARE: f64 = 0.75;
/// A first pass with unlikely text and a no-speech probability above this fraction of
/// the no-speech threshold is noise: the window is skipped without further
/// temperatures (higher temperatures only sample more unlikely text from noise). Three
/// quarters: at one half, one-word telephone prompts of the English set (no-speech
/// 0.32 and 0.39 with tiny.en) lost their (wrong) word.
const NOISE_NO_SPEECH_FRACTION: f32 = 0.75;

/// The windows a job starts with, as `(seek, frames)`. Audio with no speech at all gets
/// none (an empty transcript); sequential mode starts with the first 30 s and finds
/// the next windows as it goes; parallel mode cuts all of them up front.
pub(crate) fn initial_windows(
    samples: &[f32],
    mode: Mode,
    content_frames: usize,
) -> Vec<(usize, usize)> {
    if vad::is_silent(samples) {
        return Vec::new();
    }
    match mode {
        Mode::Sequential => vec![(0, content_frames.min(N_FRAMES))],
        Mode::Parallel => parallel_windows(samples, content_frames),
    }
}

/// Windows of at most 30 s cut at pauses, as (first frame, frames).
fn parallel_windows(samples: &[f32], content_frames: usize) -> Vec<(usize, usize)> {
    let cuts = vad::split_points(samples, N_SAMPLES, &VadParams::default());
    let mut windows = Vec::new();
    let mut start = 0usize;
    for cut in cuts.into_iter().chain([samples.len()]) {
        let (first, last) = (start / HOP_LENGTH, (cut / HOP_LENGTH).min(content_frames));
        // Windows without speech are never decoded: no hallucinated text on silence.
        if last > first && !vad::is_silent(&samples[start.min(cut)..cut.min(samples.len())]) {
            windows.push((first, (last - first).min(N_FRAMES)));
        }
        start = cut;
    }
    windows
}

/// A row's initial tokens and the index of `<|startoftranscript|>` among them:
/// `<|startofprev|>` and the prompt's last `n_text_ctx / 2 - 1` tokens when there is a
/// prompt, then the sot sequence, then `no_timestamps` when decoding without timestamps.
pub(crate) fn row_initial_tokens(
    prompt: &[u32],
    sot_prev: u32,
    sot_sequence: &[u32],
    no_timestamps: Option<u32>,
    n_text_ctx: usize,
) -> (Vec<u32>, usize) {
    let mut tokens = Vec::new();
    if !prompt.is_empty() {
        let keep = n_text_ctx / 2 - 1;
        tokens.push(sot_prev);
        tokens.extend(&prompt[prompt.len().saturating_sub(keep)..]);
    }
    let sot_index = tokens.len();
    tokens.extend(sot_sequence);
    tokens.extend(no_timestamps);
    (tokens, sot_index)
}

/// The sampling seed of a row: the same window at the same attempt samples the same
/// tokens whatever else shares its batch.
pub(crate) fn row_seed(seed: u64, seek: usize, attempt: usize) -> u64 {
    seed ^ (seek as u64) << 8 ^ attempt as u64
}

/// Tokens the audio of a window of `frames` frames could hold at most
/// ([`MAX_TOKENS_PER_SECOND`], at least [`MIN_ROW_TOKENS`]).
fn audio_token_limit(frames: usize) -> usize {
    let tokens = (frames_to_seconds(frames) * MAX_TOKENS_PER_SECOND).ceil() as usize;
    tokens.max(MIN_ROW_TOKENS)
}

/// The sampled tokens a row of a window of `frames` frames may reach before it is
/// stopped as degenerate: what its audio could hold, never above `sample_len`.
pub(crate) fn row_token_budget(frames: usize, sample_len: usize) -> usize {
    audio_token_limit(frames).min(sample_len)
}

/// Whether a window whose attempts sampled `spent` tokens in all has used up its
/// fallback budget ([`WINDOW_BUDGET_SHARE`] of what its audio could hold), so that its
/// current attempt is its last.
pub(crate) fn window_budget_spent(frames: usize, spent: usize) -> bool {
    spent as f64 >= WINDOW_BUDGET_SHARE * audio_token_limit(frames) as f64
}

/// The figures of a finished row the fallback verdict reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RowQuality {
    pub compression_ratio: f32,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    /// The row was stopped early as degenerate (`decoding::is_degenerate`).
    pub degenerate: bool,
}

/// What to do with a finished row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Decode the window again at the next temperature.
    Retry,
    /// The window is silence: no segments, move past it.
    Skip,
    /// Make segments of the row's tokens.
    Keep,
}

/// OpenAI's temperature fallback and no-speech skip, with three stops of our own
/// that bound a window's cost: a degenerate row fails like repetitive text; a first
/// pass that is unlikely text on audio the no-speech probability leans to silence
/// is skipped as noise; and a window whose attempts spent their token budget
/// (`budget_spent`) gets no further temperature. `attempt` indexes
/// `options.temperatures`; the last temperature's result is kept (or skipped)
/// whatever its quality, except a degenerate row, which has no text worth keeping.
pub(crate) fn verdict(
    options: &TranscribeOptions,
    row: RowQuality,
    attempt: usize,
    budget_spent: bool,
) -> Verdict {
    let low_logprob = options
        .logprob_threshold
        .is_some_and(|t| row.avg_logprob < t);
    let repetitive = row.degenerate
        || options
            .compression_ratio_threshold
            .is_some_and(|t| row.compression_ratio > t);
    let no_speech_above = |fraction: f32| {
        options
            .no_speech_threshold
            .is_some_and(|t| row.no_speech_prob > t * fraction)
    };
    let no_speech = no_speech_above(1.0);
    // Silence decodes to unlikely text; a higher temperature would not help.
    let silent = no_speech && low_logprob;
    let noise = attempt == 0 && low_logprob && no_speech_above(NOISE_NO_SPEECH_FRACTION);
    if noise {
        return Verdict::Skip;
    }
    let last = budget_spent || attempt + 1 >= options.temperatures.len();
    if (repetitive || low_logprob) && !silent && !last {
        return Verdict::Retry;
    }
    if row.degenerate {
        return Verdict::Skip;
    }
    // Confident text overrides the no-speech probability.
    let confident = options
        .logprob_threshold
        .is_some_and(|t| row.avg_logprob > t);
    if no_speech && !confident {
        Verdict::Skip
    } else {
        Verdict::Keep
    }
}

/// Whether the next window is conditioned on this row's text.
pub(crate) fn conditions_next_window(options: &TranscribeOptions, temperature: f32) -> bool {
    options.condition_on_previous_text && temperature <= MAX_CONDITIONING_TEMPERATURE
}

/// A segment cut from a row's tokens: `tokens` indexes the row's sampled tokens; times
/// are absolute seconds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Span {
    pub tokens: Range<usize>,
    pub start: f64,
    pub end: f64,
}

/// A window's segments and how many frames its `seek` advances by.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Split {
    pub spans: Vec<Span>,
    pub advance: usize,
}

/// OpenAI's segment splitting of one row's sampled `tokens` (no EOT) from a window of
/// `frames` frames starting at `time_offset` seconds. Each pair of consecutive
/// timestamps closes a segment; the tokens after the last pair (an unfinished
/// segment) are dropped and `seek` advances to that pair, so the next window decodes
/// them again, unless the row ended on a single timestamp (the last segment is
/// complete; the whole window is consumed). Without a pair, the whole row is one
/// segment ending at its last timestamp, or at the window's end.
pub(crate) fn split_at_timestamps(
    tokens: &[u32],
    timestamp_begin: u32,
    frames: usize,
    time_offset: f64,
) -> Split {
    let is_timestamp = |t: u32| t >= timestamp_begin;
    let seconds = |t: u32| (t - timestamp_begin) as f64 * TIME_PRECISION;
    let n = tokens.len();
    let single_timestamp_ending = ends_on_single_timestamp(tokens, timestamp_begin);
    let mut cuts: Vec<usize> = (1..n)
        .filter(|&i| is_timestamp(tokens[i - 1]) && is_timestamp(tokens[i]))
        .collect();
    if cuts.is_empty() {
        let mut duration = frames_to_seconds(frames);
        if let Some(&last) = tokens.iter().rev().find(|&&t| is_timestamp(t)) {
            if last != timestamp_begin {
                duration = seconds(last);
            }
        }
        let span = Span {
            tokens: 0..n,
            start: time_offset,
            end: time_offset + duration,
        };
        return Split {
            spans: vec![span],
            advance: frames,
        };
    }
    if single_timestamp_ending {
        cuts.push(n);
    }
    let mut spans = Vec::with_capacity(cuts.len());
    let mut last = 0;
    for &cut in &cuts {
        spans.push(Span {
            tokens: last..cut,
            start: time_offset + seconds(tokens[last]),
            end: time_offset + seconds(tokens[cut - 1]),
        });
        last = cut;
    }
    let advance = if single_timestamp_ending {
        frames
    } else {
        (tokens[last - 1] - timestamp_begin) as usize * INPUT_STRIDE
    };
    Split { spans, advance }
}

/// The row's tokens end with a timestamp not paired with another.
pub(crate) fn ends_on_single_timestamp(tokens: &[u32], timestamp_begin: u32) -> bool {
    match tokens {
        [.., a, b] => *a < timestamp_begin && *b >= timestamp_begin,
        [b] => *b >= timestamp_begin,
        [] => false,
    }
}

/// Moves times past the window (the model may name a time beyond a short final
/// window) back into `[window_start, window_end]`, so segments stay on the timeline
/// and never end before they start.
pub(crate) fn clamp_to_window(spans: &mut [Span], window_start: f64, window_end: f64) {
    for span in spans {
        span.start = span.start.clamp(window_start, window_end);
        span.end = span.end.clamp(span.start, window_end);
    }
}

/// With word timestamps, OpenAI resumes after the last word rather than the last
/// timestamp, unless the window ended on a single timestamp. Returns the new advance
/// in frames (at least 1, at most the window), or `None` to keep the timestamp's.
pub(crate) fn word_resume_advance(
    last_word_end: Option<f64>,
    single_timestamp_ending: bool,
    time_offset: f64,
    frames: usize,
) -> Option<usize> {
    let end = last_word_end.filter(|&end| !single_timestamp_ending && end > time_offset)?;
    Some(seconds_to_frames(end - time_offset).min(frames).max(1))
}

/// Segments with no duration or no text keep their times but lose their text, tokens
/// and words (OpenAI's clean-up).
pub(crate) fn blank_empty_segments(segments: &mut [Segment]) {
    for segment in segments {
        if segment.start == segment.end || segment.text.trim().is_empty() {
            segment.text.clear();
            segment.tokens.clear();
            segment.token_logprobs.clear();
            segment.words = segment.words.as_ref().map(|_| Vec::new());
        }
    }
}

/// Sequential mode: the window after one that started at `seek` and advanced by
/// `advance` frames (at least one, so decoding always moves on), as `(seek, frames)`;
/// `None` at the end of the job's `content_frames`.
pub(crate) fn next_sequential_window(
    seek: usize,
    advance: usize,
    content_frames: usize,
) -> Option<(usize, usize)> {
    let next = seek + advance.max(1);
    (next < content_frames).then(|| (next, (content_frames - next).min(N_FRAMES)))
}

/// Parallel mode: a window decodes its VAD region like OpenAI's loop decodes a file.
/// When the model stopped before the region's end (its last segment was incomplete),
/// the rest of the region is decoded from there if at least
/// [`MIN_CONTINUATION_FRAMES`] remain. Returns that window as `(seek, frames)`.
pub(crate) fn region_continuation(
    seek: usize,
    frames: usize,
    advance: usize,
) -> Option<(usize, usize)> {
    let region_end = seek + frames;
    let next = seek + advance.max(1);
    (next + MIN_CONTINUATION_FRAMES <= region_end).then(|| (next, region_end - next))
}

/// zlib compression ratio of the text, as OpenAI computes it: repetitive text
/// compresses well, so a high ratio flags a decoding loop.
pub fn compression_ratio(text: &str) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = encoder.write_all(text.as_bytes());
    let compressed = encoder.finish().map(|c| c.len()).unwrap_or(1).max(1);
    text.len() as f32 / compressed as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timestamp tokens start here in these tests; `ts(k)` is `k * 0.02` s.
    const BEGIN: u32 = 1000;

    fn ts(k: u32) -> u32 {
        BEGIN + k
    }

    fn quality(compression_ratio: f32, avg_logprob: f32, no_speech_prob: f32) -> RowQuality {
        RowQuality {
            compression_ratio,
            avg_logprob,
            no_speech_prob,
            degenerate: false,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn spans(split: &Split) -> Vec<(Range<usize>, f64, f64)> {
        split
            .spans
            .iter()
            .map(|s| (s.tokens.clone(), s.start, s.end))
            .collect()
    }

    fn assert_spans(split: &Split, want: &[(Range<usize>, f64, f64)]) {
        let got = spans(split);
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.0, w.0, "{got:?} vs {want:?}");
            assert!(close(g.1, w.1) && close(g.2, w.2), "{got:?} vs {want:?}");
        }
    }

    /// The fallback verdict with OpenAI's defaults (compression ratio 2.4, logprob
    /// -1.0, no-speech 0.6, six temperatures), at the first attempt unless stated.
    #[test]
    fn verdict_follows_openai_defaults() {
        let options = TranscribeOptions::default();
        let cases = [
            // (compression, avg logprob, no speech, attempt, verdict, why)
            (1.5, -0.3, 0.1, 0, Verdict::Keep, "good text"),
            (2.5, -0.3, 0.1, 0, Verdict::Retry, "too repetitive"),
            (
                2.4,
                -0.3,
                0.1,
                0,
                Verdict::Keep,
                "ratio at the threshold is fine",
            ),
            (1.5, -1.2, 0.1, 0, Verdict::Retry, "too unlikely"),
            (
                1.5,
                -1.0,
                0.1,
                0,
                Verdict::Keep,
                "logprob at the threshold is fine",
            ),
            (2.5, -1.2, 0.1, 4, Verdict::Retry, "a temperature is left"),
            (2.5, -1.2, 0.1, 5, Verdict::Keep, "last temperature: kept"),
            (
                1.5,
                -1.2,
                0.9,
                0,
                Verdict::Skip,
                "silence: skipped, not retried",
            ),
            (
                3.0,
                -1.2,
                0.9,
                0,
                Verdict::Skip,
                "silence even when repetitive",
            ),
            (
                1.5,
                -0.3,
                0.9,
                0,
                Verdict::Keep,
                "confident text overrides no-speech",
            ),
            (
                3.0,
                -0.3,
                0.9,
                0,
                Verdict::Retry,
                "confident but repetitive",
            ),
            (
                1.5,
                -1.0,
                0.9,
                0,
                Verdict::Skip,
                "logprob at threshold is not confident",
            ),
            (
                1.5,
                -1.2,
                0.6,
                1,
                Verdict::Retry,
                "no-speech at threshold is speech (after the first pass)",
            ),
            (
                1.5,
                -1.2,
                0.9,
                5,
                Verdict::Skip,
                "silence at the last temperature",
            ),
        ];
        for (cr, lp, ns, attempt, want, why) in cases {
            assert_eq!(
                verdict(&options, quality(cr, lp, ns), attempt, false),
                want,
                "{why}: cr {cr}, logprob {lp}, no-speech {ns}, attempt {attempt}"
            );
        }
    }

    #[test]
    fn verdict_without_thresholds() {
        let none = TranscribeOptions {
            compression_ratio_threshold: None,
            logprob_threshold: None,
            no_speech_threshold: None,
            ..TranscribeOptions::default()
        };
        assert_eq!(
            verdict(&none, quality(9.0, -9.0, 0.99), 0, false),
            Verdict::Keep
        );
        // Without a logprob threshold, a high no-speech probability alone skips.
        let no_logprob = TranscribeOptions {
            logprob_threshold: None,
            ..TranscribeOptions::default()
        };
        assert_eq!(
            verdict(&no_logprob, quality(1.0, -5.0, 0.7), 0, false),
            Verdict::Skip
        );
        assert_eq!(
            verdict(&no_logprob, quality(1.0, -5.0, 0.5), 0, false),
            Verdict::Keep
        );
        // Without a no-speech threshold nothing is skipped: unlikely text is retried.
        let no_skip = TranscribeOptions {
            no_speech_threshold: None,
            ..TranscribeOptions::default()
        };
        assert_eq!(
            verdict(&no_skip, quality(1.0, -2.0, 0.99), 0, false),
            Verdict::Retry
        );
        assert_eq!(
            verdict(&no_skip, quality(1.0, -2.0, 0.99), 5, false),
            Verdict::Keep
        );
    }

    #[test]
    fn a_first_pass_that_both_signals_call_noise_is_skipped() {
        let options = TranscribeOptions::default();
        let at = |lp, ns, attempt| verdict(&options, quality(1.5, lp, ns), attempt, false);
        // Unlikely text with no-speech above 3/4 of its threshold (0.45): noise, at once.
        assert_eq!(at(-1.2, 0.46, 0), Verdict::Skip);
        assert_eq!(at(-1.2, 0.6, 0), Verdict::Skip);
        // Either signal alone, or a later attempt: OpenAI's rules.
        assert_eq!(at(-1.2, 0.44, 0), Verdict::Retry);
        assert_eq!(at(-0.9, 0.5, 0), Verdict::Keep);
        assert_eq!(at(-1.2, 0.5, 1), Verdict::Retry);
        // Without a logprob or a no-speech threshold, never.
        for options in [
            TranscribeOptions {
                logprob_threshold: None,
                ..TranscribeOptions::default()
            },
            TranscribeOptions {
                no_speech_threshold: None,
                ..TranscribeOptions::default()
            },
        ] {
            assert_ne!(
                verdict(&options, quality(1.5, -1.2, 0.5), 0, false),
                Verdict::Skip
            );
        }
    }

    #[test]
    fn a_degenerate_row_fails_like_repetitive_text_and_is_never_kept() {
        let options = TranscribeOptions::default();
        // Confident, well-compressing text stopped as degenerate: retried...
        let degenerate = RowQuality {
            degenerate: true,
            ..quality(1.5, -0.2, 0.1)
        };
        assert_eq!(verdict(&options, degenerate, 0, false), Verdict::Retry);
        assert_eq!(verdict(&options, degenerate, 4, false), Verdict::Retry);
        // ... and at the last attempt skipped: its text was cut short.
        assert_eq!(verdict(&options, degenerate, 5, false), Verdict::Skip);
        // The same row not degenerate is kept.
        assert_eq!(
            verdict(&options, quality(1.5, -0.2, 0.1), 0, false),
            Verdict::Keep
        );
    }

    #[test]
    fn a_spent_window_budget_makes_the_attempt_the_last() {
        let options = TranscribeOptions::default();
        // Repetitive text: retried while the budget lasts, then kept like OpenAI's last
        // temperature; a degenerate row is skipped; good text is kept either way.
        assert_eq!(
            verdict(&options, quality(3.0, -0.2, 0.1), 1, false),
            Verdict::Retry
        );
        assert_eq!(
            verdict(&options, quality(3.0, -0.2, 0.1), 1, true),
            Verdict::Keep
        );
        let degenerate = RowQuality {
            degenerate: true,
            ..quality(3.0, -0.2, 0.1)
        };
        assert_eq!(verdict(&options, degenerate, 1, true), Verdict::Skip);
        assert_eq!(
            verdict(&options, quality(1.5, -0.2, 0.1), 1, true),
            Verdict::Keep
        );
    }

    #[test]
    fn token_budgets_follow_the_window_audio() {
        // 20 tokens a second, at least 32, never above the length limit.
        assert_eq!(row_token_budget(seconds_to_frames(2.5), 224), 50);
        assert_eq!(row_token_budget(seconds_to_frames(0.5), 224), 32);
        assert_eq!(row_token_budget(N_FRAMES, 224), 224);
        assert_eq!(row_token_budget(seconds_to_frames(5.0), 64), 64);
        // A 2.5 s window's attempts may spend three quarters of a row's worth (37.5 of
        // 50 tokens) before its fallback stops; a full window 450, two full-length attempts.
        assert!(!window_budget_spent(seconds_to_frames(2.5), 37));
        assert!(window_budget_spent(seconds_to_frames(2.5), 38));
        assert!(!window_budget_spent(N_FRAMES, 2 * 224));
        assert!(window_budget_spent(N_FRAMES, 3 * 224));
    }

    #[test]
    fn a_single_temperature_never_retries() {
        let options = TranscribeOptions {
            temperatures: vec![0.0],
            ..TranscribeOptions::default()
        };
        assert_eq!(
            verdict(&options, quality(5.0, -3.0, 0.1), 0, false),
            Verdict::Keep
        );
    }

    #[test]
    fn conditioning_stops_above_half_temperature() {
        let options = TranscribeOptions::default();
        assert!(conditions_next_window(&options, 0.0));
        assert!(conditions_next_window(&options, 0.5));
        assert!(!conditions_next_window(&options, 0.6));
        let off = TranscribeOptions {
            condition_on_previous_text: false,
            ..options
        };
        assert!(!conditions_next_window(&off, 0.0));
    }

    #[test]
    fn consecutive_timestamps_close_segments() {
        // <0.00> a b <1.00><1.00> c <2.00><2.00>: two complete segments, and the final
        // timestamp (the start of an empty third) is dropped; seek moves to 2.00 s.
        let tokens = [ts(0), 1, 2, ts(50), ts(50), 3, ts(100), ts(100)];
        let split = split_at_timestamps(&tokens, BEGIN, 3000, 0.0);
        assert_spans(&split, &[(0..4, 0.0, 1.0), (4..7, 1.0, 2.0)]);
        assert_eq!(split.advance, 200);
    }

    #[test]
    fn unfinished_last_segment_is_decoded_again() {
        // <0.00> a <1.00><1.00> b c (cut off by the length limit): b c are dropped and
        // seek stops at 1.00 s (100 frames) so the next window decodes them again.
        let tokens = [ts(0), 1, ts(50), ts(50), 2, 3];
        let split = split_at_timestamps(&tokens, BEGIN, 3000, 10.0);
        assert_spans(&split, &[(0..3, 10.0, 11.0)]);
        assert_eq!(split.advance, 100);
    }

    #[test]
    fn single_timestamp_ending_consumes_the_window() {
        // <0.00> a <1.00><1.00> b <1.60>: the last segment ends on a single timestamp,
        // so it is complete and the whole window is consumed.
        let tokens = [ts(0), 1, ts(50), ts(50), 2, ts(80)];
        let split = split_at_timestamps(&tokens, BEGIN, 2400, 30.0);
        assert_spans(&split, &[(0..3, 30.0, 31.0), (3..6, 31.0, 31.6)]);
        assert_eq!(split.advance, 2400);
    }

    #[test]
    fn without_pairs_one_segment_ends_at_the_last_timestamp() {
        let tokens = [ts(0), 1, 2, ts(40)];
        let split = split_at_timestamps(&tokens, BEGIN, 3000, 5.0);
        assert_spans(&split, &[(0..4, 5.0, 5.8)]);
        assert_eq!(split.advance, 3000);
    }

    #[test]
    fn without_timestamps_one_segment_spans_the_window() {
        // No timestamp at all (`without_timestamps`), or only <0.00>: the segment lasts
        // the whole window (2000 frames = 20 s).
        for tokens in [&[1u32, 2, 3][..], &[ts(0), 1, 2][..], &[][..]] {
            let split = split_at_timestamps(tokens, BEGIN, 2000, 60.0);
            assert_spans(&split, &[(0..tokens.len(), 60.0, 80.0)]);
            assert_eq!(split.advance, 2000);
        }
    }

    #[test]
    fn single_timestamp_endings() {
        assert!(ends_on_single_timestamp(&[ts(0), 5, ts(20)], BEGIN));
        assert!(ends_on_single_timestamp(&[ts(20)], BEGIN));
        assert!(!ends_on_single_timestamp(
            &[ts(0), 5, ts(20), ts(20)],
            BEGIN
        ));
        assert!(!ends_on_single_timestamp(&[ts(0), 5], BEGIN));
        assert!(!ends_on_single_timestamp(&[5], BEGIN));
        assert!(!ends_on_single_timestamp(&[], BEGIN));
    }

    #[test]
    fn times_are_clamped_to_the_window() {
        let span = |start, end| Span {
            tokens: 0..1,
            start,
            end,
        };
        let mut spans = vec![
            span(10.5, 12.0), // inside: unchanged
            span(9.0, 11.0),  // starts before the window
            span(14.0, 16.0), // ends after it
            span(17.0, 18.0), // wholly after it: a zero-length segment at the end
            span(13.0, 12.0), // ends before it starts
        ];
        clamp_to_window(&mut spans, 10.0, 15.0);
        let got: Vec<(f64, f64)> = spans.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(
            got,
            vec![
                (10.5, 12.0),
                (10.0, 11.0),
                (14.0, 15.0),
                (15.0, 15.0),
                (13.0, 13.0)
            ]
        );
    }

    #[test]
    fn sequential_seek_advances_to_the_end() {
        // (seek, advance, content frames) → next window.
        let cases = [
            (0, 1500, 4000, Some((1500, 2500))),
            (0, 3000, 10_000, Some((3000, 3000))), // capped at 30 s
            (3000, 1000, 4000, None),              // reached the end
            (3000, 1500, 4000, None),              // past the end
            (500, 0, 4000, Some((501, 3000))),     // always moves on
        ];
        for (seek, advance, content, want) in cases {
            assert_eq!(
                next_sequential_window(seek, advance, content),
                want,
                "seek {seek} advance {advance} content {content}"
            );
        }
    }

    #[test]
    fn word_timestamps_resume_after_the_last_word() {
        // Last word ends 2.34 s into a window at 10 s: resume 234 frames later.
        assert_eq!(
            word_resume_advance(Some(12.34), false, 10.0, 3000),
            Some(234)
        );
        // A single timestamp ending keeps the timestamp's advance.
        assert_eq!(word_resume_advance(Some(12.34), true, 10.0, 3000), None);
        // No words, or a last word not after the window start: keep it too.
        assert_eq!(word_resume_advance(None, false, 10.0, 3000), None);
        assert_eq!(word_resume_advance(Some(10.0), false, 10.0, 3000), None);
        // Never past the window, never zero.
        assert_eq!(
            word_resume_advance(Some(45.0), false, 10.0, 1200),
            Some(1200)
        );
        assert_eq!(
            word_resume_advance(Some(10.001), false, 10.0, 3000),
            Some(1)
        );
    }

    #[test]
    fn parallel_regions_continue_while_enough_is_left() {
        // (seek, frames, advance) → continuation.
        let cases = [
            (0, 2500, 1000, Some((1000, 1500))),
            (6000, 2000, 1950, Some((7950, 50))), // exactly MIN_CONTINUATION_FRAMES left
            (6000, 2000, 1951, None),             // one frame fewer
            (6000, 2000, 2000, None),             // the model reached the region's end
            (0, 2500, 0, Some((1, 2499))),        // always moves on
        ];
        for (seek, frames, advance, want) in cases {
            assert_eq!(
                region_continuation(seek, frames, advance),
                want,
                "seek {seek} frames {frames} advance {advance}"
            );
        }
    }

    #[test]
    fn initial_tokens_carry_the_end_of_the_prompt() {
        let (sot_prev, no_ts) = (90, 91);
        let sot = [80, 81, 82];
        assert_eq!(
            row_initial_tokens(&[], sot_prev, &sot, None, 448),
            (vec![80, 81, 82], 0)
        );
        assert_eq!(
            row_initial_tokens(&[1, 2], sot_prev, &sot, Some(no_ts), 448),
            (vec![90, 1, 2, 80, 81, 82, 91], 3)
        );
        // A text context of 8 keeps the last 8 / 2 - 1 = 3 prompt tokens.
        assert_eq!(
            row_initial_tokens(&[1, 2, 3, 4, 5], sot_prev, &sot, None, 8),
            (vec![90, 3, 4, 5, 80, 81, 82], 4)
        );
    }

    #[test]
    fn row_seeds_differ_per_window_and_attempt() {
        assert_eq!(row_seed(0, 0, 0), 0);
        assert_eq!(row_seed(1, 3, 2), 1 ^ (3 << 8) ^ 2);
        assert_ne!(row_seed(7, 3000, 0), row_seed(7, 3000, 1));
        assert_ne!(row_seed(7, 3000, 0), row_seed(7, 6000, 0));
    }

    #[test]
    fn empty_segments_lose_their_text() {
        let segment = |start, end, text: &str| Segment {
            id: 0,
            seek: 0,
            start,
            end,
            text: text.into(),
            tokens: vec![1, 2],
            temperature: 0.0,
            avg_logprob: -0.1,
            compression_ratio: 1.0,
            no_speech_prob: 0.0,
            token_logprobs: vec![-0.1, -0.2],
            words: Some(vec![]),
        };
        let mut segments = vec![
            segment(0.0, 1.0, " Hello"),
            segment(1.0, 1.0, " zero length"),
            segment(1.0, 2.0, "  "),
        ];
        blank_empty_segments(&mut segments);
        assert_eq!(segments[0].text, " Hello");
        assert_eq!(segments[0].tokens, vec![1, 2]);
        for s in &segments[1..] {
            assert!(s.text.is_empty() && s.tokens.is_empty() && s.token_logprobs.is_empty());
            assert_eq!(s.words.as_deref(), Some(&[][..]));
        }
        assert_eq!((segments[1].start, segments[1].end), (1.0, 1.0));
    }

    #[test]
    fn silent_audio_gets_no_window() {
        let silence = vec![0f32; crate::mel::SAMPLE_RATE * 3];
        for mode in [Mode::Sequential, Mode::Parallel] {
            assert!(initial_windows(&silence, mode, 300).is_empty());
        }
    }

    #[test]
    fn compression_ratio_flags_repetition() {
        assert_eq!(compression_ratio(""), 0.0);
        let varied = compression_ratio("The quick brown fox jumps over the lazy dog.");
        let repeated = compression_ratio(&"la ".repeat(100));
        assert!(varied < 1.5, "{varied}");
        assert!(repeated > 2.4, "{repeated}");
    }
}
