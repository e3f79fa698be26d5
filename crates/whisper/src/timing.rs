//! Word-level timestamps, following the algorithm of OpenAI's `whisper/timing.py`.
//!
//! The decoder is run once more over a window's transcript with `<|notimestamps|>`;
//! the cross-attention weights of the model's alignment heads (decoder layer, head
//! pairs known to track the audio) form a token × audio-position matrix. After
//! per-head standardisation, a median filter over time and averaging over heads,
//! dynamic time warping finds the monotonic path through it; the audio position at
//! which the path enters a word's first token is that word's start.
//! [`add_word_timestamps`] then applies OpenAI's clean-up heuristics (punctuation
//! merging, clamping of overlong words at pauses and segment edges).

use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, Dtype};
use serde::Serialize;

use crate::decoding::AudioFeatures;
use crate::error::{Result, WhisperError};
use crate::mel::{FRAMES_PER_SECOND, INPUT_STRIDE};
use crate::transcript::Segment;
use crate::Whisper;

/// Audio-context positions per second (each encoder output position covers 20 ms).
pub const TOKENS_PER_SECOND: f64 = FRAMES_PER_SECOND as f64 / INPUT_STRIDE as f64;
/// Width of the median filter applied over time to the attention weights.
pub const MEDFILT_WIDTH: usize = 7;
/// Punctuation merged into the following word (OpenAI's default).
pub const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
/// Punctuation merged into the preceding word (OpenAI's default).
pub const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_END_MARKS: &str = ".。!！?？";

/// A word with its time span in seconds and the mean probability of its tokens.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

/// A word as aligned by [`find_alignment`]: times are relative to the window start.
#[derive(Clone, Debug, PartialEq)]
pub struct WordTiming {
    pub word: String,
    pub tokens: Vec<u32>,
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

/// Aligns `text_tokens` (text only: no special or timestamp tokens) with the audio of
/// one window.
///
/// * `features`: the window's encoder output (the same one the text was decoded from).
/// * `sot_sequence`: OpenAI's `tokenizer.sot_sequence`: `[<|startoftranscript|>]` for
///   English-only models, `[sot, language, task]` otherwise; no prompt, no
///   `<|notimestamps|>` (added here). The language token, if any, picks how words are
///   split (at spaces, or at characters for zh/ja/th/lo/my/yue).
/// * `num_frames`: mel frames of real audio in the window (≤ 3000); attention beyond
///   `num_frames / 2` audio positions (the zero padding) is ignored.
///
/// Returns one entry per word, punctuation still separate (see
/// [`merge_punctuations`]); empty when there is no text.
pub fn find_alignment(
    whisper: &Whisper,
    features: &AudioFeatures,
    sot_sequence: &[u32],
    text_tokens: &[u32],
    num_frames: usize,
) -> Result<Vec<WordTiming>> {
    if text_tokens.is_empty() {
        return Ok(Vec::new());
    }
    let tokens = alignment_tokens(whisper, sot_sequence, text_tokens)?;
    let audio_ctx = features.0.shape()[1] as usize;
    let frames = (num_frames / INPUT_STRIDE).clamp(1, audio_ctx);
    let sot_len = sot_sequence.len();

    let weights = alignment_head_weights(whisper, features, &tokens, frames)?;
    let probs = text_token_probabilities(whisper, features, &tokens, sot_len, text_tokens)?;
    let matrix = alignment_matrix(&weights, tokens.len(), frames);
    // Rows of `<|notimestamps|>` and the text tokens (not the sot sequence, not eot).
    let rows = text_tokens.len() + 1;
    let cost: Vec<f32> = matrix[sot_len * frames..(sot_len + rows) * frames]
        .iter()
        .map(|v| -v)
        .collect();
    let jump_times = row_start_times(&dtw(&cost, rows, frames));

    let tk = &whisper.tokenizer;
    let language = sot_sequence.iter().find_map(|&t| tk.to_language_code(t));
    let mut with_eot = text_tokens.to_vec();
    with_eot.push(tk.eot());
    let (words, word_tokens) = tk.split_to_word_tokens(&with_eot, language);
    Ok(word_timings(words, word_tokens, &jump_times, &probs))
}

/// The decoder input of an alignment: `sot_sequence`, `<|notimestamps|>`, the text,
/// EOT. Errors when `text_tokens` holds special tokens or the whole exceeds the text
/// context.
fn alignment_tokens(
    whisper: &Whisper,
    sot_sequence: &[u32],
    text_tokens: &[u32],
) -> Result<Vec<u32>> {
    let tk = &whisper.tokenizer;
    let eot = tk.eot();
    if let Some(&bad) = text_tokens.iter().find(|&&t| t >= eot) {
        return Err(WhisperError::InvalidOption(format!(
            "find_alignment takes text tokens only, got special token {bad}"
        )));
    }
    let mut tokens: Vec<u32> = sot_sequence.to_vec();
    tokens.push(tk.no_timestamps());
    tokens.extend_from_slice(text_tokens);
    tokens.push(eot);
    let n_ctx = whisper.model.dims.n_text_ctx;
    if tokens.len() > n_ctx {
        return Err(WhisperError::InvalidOption(format!(
            "{} tokens to align exceed the text context of {n_ctx}",
            tokens.len()
        )));
    }
    Ok(tokens)
}

/// `[heads][q][frames]` attention weights → one `[q][frames]` matrix: each head's
/// rows renormalised and standardised over tokens, median-filtered over time, then
/// averaged over heads.
fn alignment_matrix(weights: &[f32], q: usize, frames: usize) -> Vec<f32> {
    let heads = weights.len() / (q * frames);
    let mut matrix = vec![0f32; q * frames];
    let mut row = Vec::with_capacity(frames);
    for head in weights.chunks_exact(q * frames) {
        let mut head = head.to_vec();
        normalise_rows(&mut head, frames);
        standardise_columns(&mut head, q, frames);
        for (t, out) in matrix.chunks_exact_mut(frames).enumerate() {
            median_filter(&head[t * frames..(t + 1) * frames], MEDFILT_WIDTH, &mut row);
            for (o, v) in out.iter_mut().zip(&row) {
                *o += v;
            }
        }
    }
    let scale = 1.0 / heads.max(1) as f32;
    for v in &mut matrix {
        *v *= scale;
    }
    matrix
}

/// Seconds at which a DTW path (row, audio position) enters each row.
fn row_start_times(path: &[(usize, usize)]) -> Vec<f64> {
    let mut times = Vec::new();
    let mut previous = None;
    for &(i, j) in path {
        if previous != Some(i) {
            times.push(j as f64 / TOKENS_PER_SECOND);
            previous = Some(i);
        }
    }
    times
}

/// Words with their times (a word starts when the path enters its first token and
/// ends when it enters the next word's) and the mean probability of their text
/// tokens. `word_tokens` ends with the EOT's word, which only closes the last word.
fn word_timings(
    words: Vec<String>,
    word_tokens: Vec<Vec<u32>>,
    jump_times: &[f64],
    probs: &[f32],
) -> Vec<WordTiming> {
    if word_tokens.len() <= 1 {
        return Vec::new();
    }
    let n_text = probs.len();
    let mut boundaries = Vec::with_capacity(word_tokens.len());
    boundaries.push(0usize);
    for t in &word_tokens[..word_tokens.len() - 1] {
        boundaries.push(boundaries.last().copied().unwrap_or(0) + t.len());
    }
    let time_at = |k: usize| -> f64 {
        jump_times
            .get(k)
            .or(jump_times.last())
            .copied()
            .unwrap_or(0.0)
    };
    words
        .into_iter()
        .zip(word_tokens)
        .zip(boundaries.windows(2))
        .map(|((word, tokens), b)| {
            let (from, to) = (b[0].min(n_text), b[1].min(n_text));
            let probability = if to > from {
                (probs[from..to].iter().map(|&p| p as f64).sum::<f64>() / (to - from) as f64) as f32
            } else {
                f32::NAN
            };
            WordTiming {
                word,
                tokens,
                start: time_at(b[0]),
                end: time_at(b[1]),
                probability,
            }
        })
        .collect()
}

/// Cross-attention weights of the alignment heads over the first `frames` audio
/// positions, as f32 `[heads][q][frames]`.
fn alignment_head_weights(
    whisper: &Whisper,
    features: &AudioFeatures,
    tokens: &[u32],
    frames: usize,
) -> Result<Vec<f32>> {
    let q = tokens.len() as i32;
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let input = Array::from_slice(&ids, &[1, q]);
    let dtype = whisper.model.dtype;
    let per_layer = whisper
        .model
        .decoder
        .cross_attention_weights(&input, &features.0, dtype)?;
    let mut selected = Vec::with_capacity(whisper.alignment_heads.len());
    for &(layer, head) in &whisper.alignment_heads {
        let w = per_layer.get(layer).ok_or_else(|| {
            WhisperError::InvalidOption(format!("alignment head layer {layer} out of range"))
        })?;
        if head >= w.shape()[1] as usize {
            return Err(WhisperError::InvalidOption(format!(
                "alignment head {head} of layer {layer} out of range"
            )));
        }
        selected.push(w.try_index((0, head as i32, .., ..frames as i32))?);
    }
    if selected.is_empty() {
        return Err(WhisperError::InvalidOption(
            "the model has no alignment heads".into(),
        ));
    }
    let stacked = mlx_rs::ops::stack(&selected, 0)?
        .as_dtype(Dtype::Float32)?
        .contiguous()?;
    stacked.eval()?;
    Ok(host_f32(&stacked)?.to_vec())
}

/// Probability of each text token at its position (softmax over text tokens only,
/// as OpenAI computes `logits[:, :eot].softmax()`).
fn text_token_probabilities(
    whisper: &Whisper,
    features: &AudioFeatures,
    tokens: &[u32],
    sot_len: usize,
    text_tokens: &[u32],
) -> Result<Vec<f32>> {
    let decoder = &whisper.model.decoder;
    let dtype = whisper.model.dtype;
    let q = tokens.len();
    let mut caches = decoder.new_caches(&features.0)?;
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let input = Array::from_slice(&ids, &[1, q as i32]);
    let positions = Array::from_iter(0..q as i32, &[1, q as i32]);
    let mut mask = vec![0f32; q * q];
    for i in 0..q {
        for m in &mut mask[i * q + i + 1..(i + 1) * q] {
            *m = f32::NEG_INFINITY;
        }
    }
    let mask = Array::from_slice(&mask, &[1, 1, q as i32, q as i32]).as_dtype(dtype)?;
    let hidden = decoder.forward(&input, &positions, &mask, &mut caches)?;
    let n = text_tokens.len() as i32;
    let eot = whisper.tokenizer.eot() as i32;
    let rows = hidden.try_index((0, sot_len as i32..sot_len as i32 + n, ..))?;
    let logits = decoder
        .logits(&rows)?
        .try_index((.., ..eot))?
        .as_dtype(Dtype::Float32)?
        .contiguous()?;
    logits.eval()?;
    let logits = host_f32(&logits)?;
    let width = eot as usize;
    Ok(text_tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let row = &logits[i * width..(i + 1) * width];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let total: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
            (((row[t as usize] - max) as f64).exp() / total) as f32
        })
        .collect())
}

fn host_f32(array: &Array) -> Result<&[f32]> {
    array
        .try_as_slice::<f32>()
        .map_err(|e| WhisperError::Mlx(e.to_string()))
}

/// Rescales each row of `frames` values to sum to one: the decoder's softmax ran over
/// the whole audio context, OpenAI's runs over the first `frames` positions only.
fn normalise_rows(weights: &mut [f32], frames: usize) {
    for row in weights.chunks_exact_mut(frames) {
        let sum: f64 = row.iter().map(|&v| v as f64).sum();
        if sum > 0.0 {
            for v in row.iter_mut() {
                *v = (*v as f64 / sum) as f32;
            }
        }
    }
}

/// `(w - mean) / std` over the token axis (population std), per audio position.
fn standardise_columns(weights: &mut [f32], q: usize, frames: usize) {
    for j in 0..frames {
        let mean = (0..q).map(|i| weights[i * frames + j] as f64).sum::<f64>() / q as f64;
        let var = (0..q)
            .map(|i| (weights[i * frames + j] as f64 - mean).powi(2))
            .sum::<f64>()
            / q as f64;
        let std = var.sqrt();
        let std = if std > 0.0 { std } else { 1.0 };
        for i in 0..q {
            let v = &mut weights[i * frames + j];
            *v = ((*v as f64 - mean) / std) as f32;
        }
    }
}

/// Median filter of odd `width` with reflect padding (the edge sample is not
/// repeated); rows no longer than `width / 2` are copied unchanged.
fn median_filter(x: &[f32], width: usize, out: &mut Vec<f32>) {
    out.clear();
    let pad = width / 2;
    let n = x.len();
    if n <= pad {
        out.extend_from_slice(x);
        return;
    }
    let reflect = |k: isize| -> f32 {
        let last = n as isize - 1;
        let i = if k < 0 {
            -k
        } else if k > last {
            2 * last - k
        } else {
            k
        };
        x[i.clamp(0, last) as usize]
    };
    let mut window = vec![0f32; width];
    for t in 0..n as isize {
        for (k, w) in window.iter_mut().enumerate() {
            *w = reflect(t + k as isize - pad as isize);
        }
        window.sort_unstable_by(f32::total_cmp);
        out.push(window[pad]);
    }
}

/// Dynamic time warping over a `rows × cols` cost matrix (row-major): the cheapest
/// monotonic path from (0, 0) to (rows-1, cols-1), as (row, col) pairs in order.
/// Ties are broken as OpenAI's `dtw_cpu` does (cost accumulated in f32).
pub fn dtw(cost: &[f32], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    assert_eq!(cost.len(), rows * cols, "cost matrix shape");
    let w = cols + 1;
    let mut acc = vec![f32::INFINITY; (rows + 1) * w];
    // 0: diagonal, 1: up (previous row), 2: left (previous column).
    let mut trace = vec![2u8; (rows + 1) * w];
    acc[0] = 0.0;
    for j in 1..=cols {
        for i in 1..=rows {
            let c0 = acc[(i - 1) * w + j - 1];
            let c1 = acc[(i - 1) * w + j];
            let c2 = acc[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            acc[i * w + j] = (cost[(i - 1) * cols + j - 1] as f64 + c as f64) as f32;
            trace[i * w + j] = t;
        }
    }
    for t in trace.iter_mut().take(w) {
        *t = 2;
    }
    for i in 0..=rows {
        trace[i * w] = 1;
    }
    let (mut i, mut j) = (rows, cols);
    let mut path = Vec::with_capacity(rows + cols);
    while i > 0 || j > 0 {
        path.push((i.saturating_sub(1), j.saturating_sub(1)));
        match trace[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i = i.saturating_sub(1),
            _ => j = j.saturating_sub(1),
        }
    }
    path.reverse();
    path
}

/// Merges punctuation into neighbouring words, as OpenAI's `merge_punctuations`:
/// a word made of a space and a `prepended` mark joins the following word; a word in
/// `appended` joins the preceding one (unless that ends with a space). Merged-away
/// entries stay in place with an empty word and no tokens.
pub fn merge_punctuations(alignment: &mut [WordTiming], prepended: &str, appended: &str) {
    let n = alignment.len();
    if n >= 2 {
        let mut j = n - 1;
        for i in (0..n - 1).rev() {
            let previous = &alignment[i];
            // Python's `x in s` on strings is a substring test.
            if previous.word.starts_with(' ') && prepended.contains(previous.word.trim()) {
                let word = std::mem::take(&mut alignment[i].word);
                let tokens = std::mem::take(&mut alignment[i].tokens);
                let following = &mut alignment[j];
                following.word = word + &following.word;
                following.tokens = [tokens, std::mem::take(&mut following.tokens)].concat();
            } else {
                j = i;
            }
        }
    }
    let mut i = 0;
    for j in 1..n {
        if !alignment[i].word.ends_with(' ') && appended.contains(alignment[j].word.as_str()) {
            let word = std::mem::take(&mut alignment[j].word);
            let tokens = std::mem::take(&mut alignment[j].tokens);
            let previous = &mut alignment[i];
            previous.word.push_str(&word);
            previous.tokens.extend(tokens);
        } else {
            i = j;
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Word timestamps for the segments of ONE decoded window, as OpenAI's
/// `add_word_timestamps`. Returns the words of each segment (absolute seconds,
/// rounded to 10 ms) and, like OpenAI, moves each segment's `start`/`end` to its
/// first/last word unless those words look overlong.
///
/// * `segments`: the window's segments, in order; their `tokens` may include
///   timestamp tokens (ignored).
/// * `features`, `sot_sequence`, `num_frames`: as for [`find_alignment`].
/// * `time_offset`: start of the window in seconds (`seek * 0.01`).
/// * `last_speech_timestamp`: end of the last word of the previous windows (0 at the
///   start of a file); updated to the end of this window's last word, as OpenAI's
///   `transcribe()` does after the call.
pub fn add_word_timestamps(
    whisper: &Whisper,
    segments: &mut [Segment],
    features: &AudioFeatures,
    sot_sequence: &[u32],
    time_offset: f64,
    num_frames: usize,
    last_speech_timestamp: &mut f64,
) -> Result<Vec<Vec<Word>>> {
    if segments.is_empty() {
        return Ok(Vec::new());
    }
    let eot = whisper.tokenizer.eot();
    let text_per_segment: Vec<Vec<u32>> = segments
        .iter()
        .map(|s| s.tokens.iter().copied().filter(|&t| t < eot).collect())
        .collect();
    let text_tokens: Vec<u32> = text_per_segment.iter().flatten().copied().collect();
    let mut alignment = find_alignment(whisper, features, sot_sequence, &text_tokens, num_frames)?;
    let limits = DurationLimits::of(&alignment);
    if let Some(limits) = limits {
        clamp_sentence_end_words(&mut alignment, limits.max);
    }
    let limits = limits.unwrap_or(DurationLimits {
        median: 0.0,
        max: 0.0,
    });
    merge_punctuations(&mut alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);

    let mut last_speech = *last_speech_timestamp;
    let mut aligned = alignment.iter();
    let mut result = Vec::with_capacity(segments.len());
    for (segment, text) in segments.iter_mut().zip(&text_per_segment) {
        let mut words = segment_words(&mut aligned, text.len(), time_offset);
        if !words.is_empty() {
            clamp_words_after_pause(&mut words, last_speech, limits);
            fit_segment_to_words(segment, &mut words, limits.median);
            last_speech = segment.end;
        }
        result.push(words);
    }
    if let Some(last) = result.iter().flatten().last() {
        *last_speech_timestamp = last.end;
    }
    Ok(result)
}

/// OpenAI's bounds on a word's duration: the median of the nonzero durations, at most
/// 0.7 s, and twice that.
#[derive(Clone, Copy, Debug, PartialEq)]
struct DurationLimits {
    median: f64,
    max: f64,
}

impl DurationLimits {
    /// `None` when no word has a nonzero duration.
    fn of(alignment: &[WordTiming]) -> Option<Self> {
        let mut durations: Vec<f64> = alignment
            .iter()
            .map(|t| t.end - t.start)
            .filter(|&d| d != 0.0)
            .collect();
        if durations.is_empty() {
            return None;
        }
        let median = median(&mut durations).min(0.7);
        Some(Self {
            median,
            max: median * 2.0,
        })
    }
}

/// Words at sentence boundaries are at most `max_duration` long: a sentence-ending
/// mark loses its tail, the word after one loses its head.
fn clamp_sentence_end_words(alignment: &mut [WordTiming], max_duration: f64) {
    for i in 1..alignment.len() {
        if alignment[i].end - alignment[i].start > max_duration {
            if SENTENCE_END_MARKS.contains(alignment[i].word.as_str()) {
                alignment[i].end = alignment[i].start + max_duration;
            } else if SENTENCE_END_MARKS.contains(alignment[i - 1].word.as_str()) {
                alignment[i].start = alignment[i].end - max_duration;
            }
        }
    }
}

/// The next words of the alignment that make up a segment of `text_tokens` text tokens,
/// in absolute seconds rounded to 10 ms; merged-away (empty) entries are consumed but
/// not returned.
fn segment_words<'a>(
    aligned: &mut impl Iterator<Item = &'a WordTiming>,
    text_tokens: usize,
    time_offset: f64,
) -> Vec<Word> {
    let mut saved_tokens = 0;
    let mut words = Vec::new();
    while saved_tokens < text_tokens {
        let Some(timing) = aligned.next() else {
            break;
        };
        if !timing.word.is_empty() {
            words.push(Word {
                word: timing.word.clone(),
                start: round2(time_offset + timing.start),
                end: round2(time_offset + timing.end),
                probability: timing.probability,
            });
        }
        saved_tokens += timing.tokens.len();
    }
    words
}

/// The first and second word after a pause (since `last_speech`) are at most twice the
/// median duration.
fn clamp_words_after_pause(words: &mut [Word], last_speech: f64, limits: DurationLimits) {
    let n = words.len();
    let max_duration = limits.max;
    if words[0].end - last_speech > limits.median * 4.0
        && (words[0].end - words[0].start > max_duration
            || (n > 1 && words[1].end - words[0].start > max_duration * 2.0))
    {
        if n > 1 && words[1].end - words[1].start > max_duration {
            let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
            words[0].end = boundary;
            words[1].start = boundary;
        }
        words[0].start = (words[0].end - max_duration).max(0.0);
    }
}

/// Moves the segment's start and end to its first and last word, unless that word
/// looks overlong: then the word is trimmed to the segment's timestamp instead.
fn fit_segment_to_words(segment: &mut Segment, words: &mut [Word], median_duration: f64) {
    if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
        words[0].start = (words[0].end - median_duration).min(segment.start).max(0.0);
    } else {
        segment.start = words[0].start;
    }
    let last = words.len() - 1;
    if segment.end > words[last].start && segment.end + 0.5 < words[last].end {
        words[last].end = (words[last].start + median_duration).max(segment.end);
    } else {
        segment.end = words[last].end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(word: &str, tokens: &[u32]) -> WordTiming {
        WordTiming {
            word: word.into(),
            tokens: tokens.to_vec(),
            start: 0.0,
            end: 0.0,
            probability: 1.0,
        }
    }

    #[test]
    fn dtw_follows_the_cheap_diagonal() {
        // 3 rows × 5 columns; row r is cheap on columns 2r..2r+1.
        let mut cost = vec![1.0f32; 15];
        for (r, cols) in [(0, 0..2), (1, 2..4), (2, 4..5)] {
            for c in cols {
                cost[r * 5 + c] = -1.0;
            }
        }
        let path = dtw(&cost, 3, 5);
        assert_eq!(path, vec![(0, 0), (0, 1), (1, 2), (1, 3), (2, 4)]);
    }

    /// Expected paths printed by openai-whisper 20250625's `dtw_cpu`: on ties the
    /// recursion prefers the left move, so the path drops rows first from (0, 0).
    #[test]
    fn dtw_breaks_ties_like_openai() {
        assert_eq!(dtw(&[0.0; 6], 2, 3), vec![(0, 0), (1, 0), (1, 1), (1, 2)]);
        assert_eq!(dtw(&[0.0; 6], 3, 2), vec![(0, 0), (1, 0), (2, 0), (2, 1)]);
    }

    #[test]
    fn rows_start_where_the_path_enters_them() {
        // Audio positions are 20 ms apart: row 0 at 0, row 1 at position 3 (60 ms),
        // row 2 at position 4 (80 ms).
        let path = [(0, 0), (0, 1), (0, 2), (1, 3), (2, 4), (2, 5)];
        assert_eq!(row_start_times(&path), vec![0.0, 0.06, 0.08]);
    }

    #[test]
    fn words_span_from_their_first_token_to_the_next_word() {
        // Two words of 2 and 1 tokens, then the EOT's word; the path entered the token
        // rows at 0.0, 0.1, 0.3 s and EOT's at 0.5 s.
        let words = vec![" hello".to_string(), " you".to_string(), String::new()];
        let word_tokens = vec![vec![1, 2], vec![3], vec![99]];
        let got = word_timings(words, word_tokens, &[0.0, 0.1, 0.3, 0.5], &[0.5, 1.0, 0.25]);
        let summary: Vec<(&str, f64, f64, f32)> = got
            .iter()
            .map(|w| (w.word.as_str(), w.start, w.end, w.probability))
            .collect();
        assert_eq!(
            summary,
            vec![(" hello", 0.0, 0.3, 0.75), (" you", 0.3, 0.5, 0.25)]
        );
        // Only the EOT: no words.
        assert!(word_timings(vec![String::new()], vec![vec![99]], &[0.0], &[]).is_empty());
    }

    #[test]
    fn the_alignment_matrix_averages_standardised_heads() {
        // One head, 2 tokens × 3 positions: each row renormalised to sum 1, then each
        // column standardised over the two tokens to ±1 (or 0 where they agree).
        let weights = [2.0, 1.0, 1.0, 1.0, 1.0, 2.0];
        let one = alignment_matrix(&weights, 2, 3);
        // Rows [0.5, .25, .25] and [.25, .25, .5] → columns (+1,-1), (0,0), (-1,+1);
        // the median filter of width 7 leaves rows of 3 unchanged.
        assert_eq!(one, vec![1.0, 0.0, -1.0, -1.0, 0.0, 1.0]);
        // The same head twice averages to the same matrix.
        let two = alignment_matrix(&[weights, weights].concat(), 2, 3);
        assert_eq!(two, one);
    }

    fn timed(word: &str, start: f64, end: f64) -> WordTiming {
        WordTiming {
            start,
            end,
            ..timing(word, &[1])
        }
    }

    fn word(start: f64, end: f64) -> Word {
        Word {
            word: " w".into(),
            start,
            end,
            probability: 1.0,
        }
    }

    #[test]
    fn duration_limits_use_the_median_capped_at_0_7_s() {
        let short = [
            timed(" a", 0.0, 0.2),
            timed(" b", 0.2, 0.2),
            timed(" c", 0.2, 0.6),
        ];
        // Nonzero durations 0.2 and 0.4: median 0.3 (within float rounding).
        let limits = DurationLimits::of(&short).unwrap();
        assert!((limits.median - 0.3).abs() < 1e-9 && (limits.max - 0.6).abs() < 1e-9);
        let long = [timed(" a", 0.0, 2.0)];
        assert_eq!(
            DurationLimits::of(&long),
            Some(DurationLimits {
                median: 0.7,
                max: 1.4
            })
        );
        assert_eq!(DurationLimits::of(&[timed(" a", 1.0, 1.0)]), None);
    }

    #[test]
    fn sentence_ends_are_clamped() {
        let mut words = [
            timed(" Hi", 0.0, 0.3),
            timed(".", 0.3, 2.3),     // an overlong full stop loses its tail
            timed(" Then", 2.3, 4.3), // the word after it loses its head
            timed(" more", 4.3, 6.3), // overlong, but not at a sentence end
        ];
        clamp_sentence_end_words(&mut words, 1.0);
        let times: Vec<(f64, f64)> = words.iter().map(|w| (w.start, w.end)).collect();
        assert_eq!(times, vec![(0.0, 0.3), (0.3, 1.3), (3.3, 4.3), (4.3, 6.3)]);
    }

    #[test]
    fn a_long_first_word_after_a_pause_is_shortened() {
        let limits = DurationLimits {
            median: 0.3,
            max: 0.6,
        };
        // Speech last ended at 1.0; the first word claims 2.0..5.0 (overlong, and
        // ending 4 s after the last speech > 4 × median): it keeps its last 0.6 s.
        let mut words = [word(2.0, 5.0), word(5.0, 5.3)];
        clamp_words_after_pause(&mut words, 1.0, limits);
        assert!((words[0].start - 4.4).abs() < 1e-9 && words[0].end == 5.0);
        // Right after speech (no pause) nothing changes.
        let mut words = [word(2.0, 5.0)];
        clamp_words_after_pause(&mut words, 4.9, limits);
        assert_eq!((words[0].start, words[0].end), (2.0, 5.0));
    }

    #[test]
    fn segments_move_to_their_words_unless_a_word_is_overlong() {
        let mut segment = Segment {
            id: 0,
            seek: 0,
            start: 1.0,
            end: 3.0,
            text: " a b".into(),
            tokens: vec![],
            temperature: 0.0,
            avg_logprob: 0.0,
            compression_ratio: 1.0,
            no_speech_prob: 0.0,
            token_logprobs: vec![],
            words: None,
        };
        // Words within half a second of the segment's ends: the segment follows them.
        let mut words = [word(1.2, 1.5), word(2.0, 2.8)];
        fit_segment_to_words(&mut segment, &mut words, 0.3);
        assert_eq!((segment.start, segment.end), (1.2, 2.8));
        // A first word starting over 0.5 s before the segment is cut to the segment's
        // start; a last word ending over 0.5 s after it is cut to a median duration
        // (but not before the segment's end).
        segment.start = 2.0;
        segment.end = 4.0;
        let mut words = [word(1.0, 2.5), word(3.8, 6.0)];
        fit_segment_to_words(&mut segment, &mut words, 0.3);
        assert_eq!((segment.start, segment.end), (2.0, 4.0));
        assert_eq!((words[0].start, words[0].end), (2.0, 2.5));
        assert!(words[1].start == 3.8 && (words[1].end - 4.1).abs() < 1e-9);
    }

    #[test]
    fn median_filter_reflects_at_edges() {
        let x = [5.0, 1.0, 4.0, 2.0, 3.0];
        let mut out = Vec::new();
        median_filter(&x, 3, &mut out);
        // Padded: [1, 5,1,4,2,3, 2].
        assert_eq!(out, vec![1.0, 4.0, 2.0, 3.0, 2.0]);
        median_filter(&[1.0, 2.0, 3.0], 7, &mut out);
        assert_eq!(out, vec![1.0, 2.0, 3.0]);
    }

    fn merged(words: &[(&str, &[u32])]) -> Vec<(String, Vec<u32>)> {
        let mut words: Vec<WordTiming> = words.iter().map(|(w, t)| timing(w, t)).collect();
        merge_punctuations(&mut words, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
        words.into_iter().map(|w| (w.word, w.tokens)).collect()
    }

    fn owned(words: &[(&str, &[u32])]) -> Vec<(String, Vec<u32>)> {
        words
            .iter()
            .map(|(w, t)| (w.to_string(), t.to_vec()))
            .collect()
    }

    /// Expected values printed by openai-whisper 20250625's `merge_punctuations`.
    #[test]
    fn punctuation_merges_like_openai() {
        let got = merged(&[
            (" \"", &[1]),
            (" Hello", &[2]),
            (",", &[3]),
            (" world", &[4]),
            (".\"", &[5]),
            ("!", &[6]),
        ]);
        let want = owned(&[
            ("", &[]),
            (" \" Hello,", &[1, 2, 3]),
            ("", &[]),
            (" world", &[4]),
            (".\"!", &[5, 6]),
            ("", &[]),
        ]);
        assert_eq!(got, want);
        let got = merged(&[
            (" (", &[1]),
            (" ", &[2]),
            (" a", &[3]),
            (" ", &[7]),
            ("", &[8]),
            (")", &[9]),
        ]);
        let want = owned(&[
            ("", &[]),
            ("", &[]),
            (" (  a", &[1, 2, 3]),
            ("", &[]),
            (" ", &[7, 8]),
            (")", &[9]),
        ]);
        assert_eq!(got, want);
    }
}
