//! Batched decoding: many windows ("rows"), possibly from different requests with
//! different prompts, languages, tasks and temperatures, advance one token per
//! decoder call. Rows join ([`Batch::admit`]) and leave ([`Batch::step`] returns the
//! finished ones, [`Batch::cancel`] drops one) between steps.
//!
//! All rows share one time axis of the self-attention cache. A row's tokens occupy
//! the right-aligned slice `start..time`; everything before `start` is masked. When
//! rows leave, the common unused prefix is sliced off, so the axis never grows past
//! the longest live row (≤ `n_text_ctx`) plus one admission.
//!
//! Logit rules (suppress-blank, suppress-tokens, timestamp rules) and sampling run
//! on the host over each row's logits, following OpenAI's `decoding.py`.

use std::sync::Arc;

use mlx_rs::ops;
use mlx_rs::{Array, Dtype};

use crate::error::Result;
use crate::model::{drop_cache_prefix, LayerCache, WhisperModel};

/// Opaque identifier the caller gives a row.
pub type RowId = u64;

/// Encoder output of one 30 s window, `[1, audio_ctx, state]`; kept so a temperature
/// fallback or word alignment does not re-encode.
#[derive(Clone)]
pub struct AudioFeatures(pub(crate) Array);

/// Token ids the logit rules need.
#[derive(Clone, Debug)]
pub struct SpecialTokens {
    pub eot: u32,
    pub no_speech: Option<u32>,
    pub no_timestamps: u32,
    pub timestamp_begin: u32,
    /// `encode(" ")`, suppressed at the first sampled position.
    pub blank: Vec<u32>,
}

/// What decoding a row must respect, shared by the rows of one request.
#[derive(Clone, Debug)]
pub struct RowRules {
    pub specials: SpecialTokens,
    /// Suppress the blank token and EOT at the first sampled position.
    pub suppress_blank: bool,
    /// Token ids never sampled.
    pub suppress_tokens: Vec<u32>,
    /// `None` decodes without timestamps.
    pub timestamps: Option<TimestampRules>,
    /// Maximum number of sampled tokens (OpenAI: `n_text_ctx / 2`).
    pub sample_len: usize,
}

#[derive(Clone, Debug)]
pub struct TimestampRules {
    /// Largest timestamp index allowed as the first token (`max_initial_timestamp /
    /// 0.02`); `None` for no limit.
    pub max_initial_timestamp_index: Option<u32>,
}

/// One window to decode.
pub struct RowSpec {
    pub id: RowId,
    /// `[<|startofprev|>, prompt…] + sot sequence [+ <|notimestamps|>] [+ prefix]`.
    pub initial_tokens: Vec<u32>,
    /// Index of `<|startoftranscript|>` in `initial_tokens` (for no-speech).
    pub sot_index: usize,
    pub temperature: f32,
    pub seed: u64,
    pub rules: Arc<RowRules>,
    pub features: AudioFeatures,
}

/// A finished row.
#[derive(Clone, Debug)]
pub struct RowOutcome {
    pub id: RowId,
    /// Sampled tokens, without the final EOT.
    pub tokens: Vec<u32>,
    /// Log-probability of each sampled token (same length as `tokens`).
    pub token_logprobs: Vec<f32>,
    /// Sum of sampled tokens' log-probabilities, including the EOT's.
    pub sum_logprob: f32,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    pub temperature: f32,
    /// The row ended with EOT (rather than the length limit).
    pub completed: bool,
}

struct ActiveRow {
    id: RowId,
    rules: Arc<RowRules>,
    temperature: f32,
    rng: Rng,
    /// Time index of the row's first token in the shared cache.
    start: usize,
    /// All tokens (initial + sampled), including `pending`.
    tokens: Vec<u32>,
    sample_begin: usize,
    pending: u32,
    sum_logprob: f32,
    token_logprobs: Vec<f32>,
    no_speech_prob: f32,
    finished: Option<bool>,
}

impl ActiveRow {
    fn sampled(&self) -> &[u32] {
        &self.tokens[self.sample_begin..]
    }

    fn outcome(self) -> RowOutcome {
        let completed = self.finished.unwrap_or(false);
        let mut tokens = self.tokens[self.sample_begin..].to_vec();
        let mut token_logprobs = self.token_logprobs;
        if completed {
            tokens.pop();
            token_logprobs.pop();
        }
        let avg_logprob = self.sum_logprob / (tokens.len() as f32 + 1.0);
        RowOutcome {
            id: self.id,
            tokens,
            token_logprobs,
            sum_logprob: self.sum_logprob,
            avg_logprob,
            no_speech_prob: self.no_speech_prob,
            temperature: self.temperature,
            completed,
        }
    }
}

/// The running set of rows and their caches.
pub struct Batch {
    rows: Vec<ActiveRow>,
    caches: Vec<LayerCache>,
    time: usize,
    dtype: Dtype,
}

impl Batch {
    pub fn new(model: &WhisperModel) -> Self {
        Self {
            rows: Vec::new(),
            caches: Vec::new(),
            time: 0,
            dtype: model.dtype,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = RowId> + '_ {
        self.rows.iter().map(|r| r.id)
    }

    /// Length of the shared time axis (for tests and metrics).
    pub fn time(&self) -> usize {
        self.time
    }

    /// Adds rows: one decoder call over their (left-padded) initial tokens fills
    /// their caches and samples each one's first token. Rows that finish at once
    /// (EOT first) are returned.
    pub fn admit(&mut self, model: &WhisperModel, specs: Vec<RowSpec>) -> Result<Vec<RowOutcome>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let n = specs.len();
        let longest = specs
            .iter()
            .map(|s| s.initial_tokens.len())
            .max()
            .unwrap_or(0);
        let features: Vec<&Array> = specs.iter().map(|s| &s.features.0).collect();
        let features = ops::concatenate(&features, 0)?;

        let mut tokens = Vec::with_capacity(n * longest);
        let mut positions = Vec::with_capacity(n * longest);
        let mut mask = vec![0f32; n * longest * longest];
        for (i, spec) in specs.iter().enumerate() {
            let pad = longest - spec.initial_tokens.len();
            for j in 0..longest {
                tokens.push(if j < pad {
                    spec.initial_tokens[0]
                } else {
                    spec.initial_tokens[j - pad]
                } as i32);
                positions.push(j.saturating_sub(pad) as i32);
                for k in 0..longest {
                    // Causal within the row's own tokens; padding queries see only
                    // themselves so no softmax row is empty.
                    let visible = (k <= j && k >= pad) || k == j;
                    if !visible {
                        mask[(i * longest + j) * longest + k] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let shape = [n as i32, longest as i32];
        let tokens = Array::from_slice(&tokens, &shape);
        let positions = Array::from_slice(&positions, &shape);
        let mask = Array::from_slice(&mask, &[n as i32, 1, longest as i32, longest as i32])
            .as_dtype(self.dtype)?;
        let mut caches = model.decoder.new_caches(&features)?;
        let hidden = model
            .decoder
            .forward(&tokens, &positions, &mask, &mut caches)?;

        // Logits at each row's last token and at its <|startoftranscript|>.
        let state = hidden.shape()[2];
        let flat = hidden.reshape(&[(n * longest) as i32, state])?;
        let mut picks: Vec<i32> = (0..n).map(|i| ((i + 1) * longest - 1) as i32).collect();
        picks.extend(
            specs.iter().enumerate().map(|(i, s)| {
                (i * longest + longest - s.initial_tokens.len() + s.sot_index) as i32
            }),
        );
        let picked = flat.take_axis(Array::from_slice(&picks, &[2 * n as i32]), 0)?;
        let logits = host_logits(&model.decoder.logits(&picked)?)?;
        let vocab = logits.len() / (2 * n);

        let mut new_rows = Vec::with_capacity(n);
        for (i, spec) in specs.into_iter().enumerate() {
            let sot_logits = &logits[(n + i) * vocab..(n + i + 1) * vocab];
            let no_speech_prob = spec
                .rules
                .specials
                .no_speech
                .map(|t| softmax_at(sot_logits, t as usize))
                .unwrap_or(0.0);
            let sample_begin = spec.initial_tokens.len();
            new_rows.push(ActiveRow {
                id: spec.id,
                rules: spec.rules,
                temperature: spec.temperature,
                rng: Rng::new(spec.seed),
                start: 0,
                tokens: spec.initial_tokens,
                sample_begin,
                pending: 0,
                sum_logprob: 0.0,
                token_logprobs: Vec::new(),
                no_speech_prob,
                finished: None,
            });
        }
        for (i, row) in new_rows.iter_mut().enumerate() {
            let mut row_logits = logits[i * vocab..(i + 1) * vocab].to_vec();
            advance(row, &mut row_logits);
        }
        self.merge(new_rows, caches, longest)?;
        self.collect_finished()
    }

    /// Right-aligns the new rows' caches (length `new_time`) with the batch's.
    fn merge(
        &mut self,
        rows: Vec<ActiveRow>,
        caches: Vec<LayerCache>,
        new_time: usize,
    ) -> Result<()> {
        if self.rows.is_empty() {
            self.caches = caches;
            self.time = new_time;
            self.rows = rows;
            for row in &mut self.rows {
                row.start = new_time - row.sample_begin;
            }
            return Ok(());
        }
        let time = self.time.max(new_time);
        let (grow_old, grow_new) = (time - self.time, time - new_time);
        for (old, new) in self.caches.iter_mut().zip(caches) {
            old.self_keys = ops::concatenate(
                &[
                    left_pad(&old.self_keys, grow_old)?,
                    left_pad(&new.self_keys, grow_new)?,
                ],
                0,
            )?;
            old.self_values = ops::concatenate(
                &[
                    left_pad(&old.self_values, grow_old)?,
                    left_pad(&new.self_values, grow_new)?,
                ],
                0,
            )?;
            old.cross_keys = ops::concatenate(&[&old.cross_keys, &new.cross_keys], 0)?;
            old.cross_values = ops::concatenate(&[&old.cross_values, &new.cross_values], 0)?;
        }
        for row in &mut self.rows {
            row.start += grow_old;
        }
        for mut row in rows {
            row.start = time - row.sample_begin;
            self.rows.push(row);
        }
        self.time = time;
        Ok(())
    }

    /// Feeds every row's pending token through the decoder and samples the next.
    /// Returns the rows that finished.
    pub fn step(&mut self, model: &WhisperModel) -> Result<Vec<RowOutcome>> {
        if self.rows.is_empty() {
            return Ok(Vec::new());
        }
        let b = self.rows.len();
        let tokens: Vec<i32> = self.rows.iter().map(|r| r.pending as i32).collect();
        let positions: Vec<i32> = self
            .rows
            .iter()
            .map(|r| (r.tokens.len() - 1) as i32)
            .collect();
        let keys = self.time + 1;
        let mut mask = vec![0f32; b * keys];
        for (i, row) in self.rows.iter().enumerate() {
            for m in &mut mask[i * keys..i * keys + row.start] {
                *m = f32::NEG_INFINITY;
            }
        }
        let tokens = Array::from_slice(&tokens, &[b as i32, 1]);
        let positions = Array::from_slice(&positions, &[b as i32, 1]);
        let mask = Array::from_slice(&mask, &[b as i32, 1, 1, keys as i32]).as_dtype(self.dtype)?;
        let hidden = model
            .decoder
            .forward(&tokens, &positions, &mask, &mut self.caches)?;
        self.time = keys;
        let state = hidden.shape()[2];
        let logits = host_logits(&model.decoder.logits(&hidden.reshape(&[b as i32, state])?)?)?;
        let vocab = logits.len() / b;
        for (i, row) in self.rows.iter_mut().enumerate() {
            let mut row_logits = logits[i * vocab..(i + 1) * vocab].to_vec();
            advance(row, &mut row_logits);
        }
        self.collect_finished()
    }

    /// Drops a row (its request went away). Returns whether it was present.
    pub fn cancel(&mut self, id: RowId) -> Result<bool> {
        let Some(index) = self.rows.iter().position(|r| r.id == id) else {
            return Ok(false);
        };
        self.rows[index].finished = Some(false);
        self.remove_finished()?;
        Ok(true)
    }

    fn collect_finished(&mut self) -> Result<Vec<RowOutcome>> {
        Ok(self
            .remove_finished()?
            .into_iter()
            .map(ActiveRow::outcome)
            .collect())
    }

    /// Takes finished rows out of the batch, gathers the caches of the rest and
    /// slices off the time steps no remaining row uses.
    fn remove_finished(&mut self) -> Result<Vec<ActiveRow>> {
        if self.rows.iter().all(|r| r.finished.is_none()) {
            return Ok(Vec::new());
        }
        let (mut keep, mut live, mut done) = (Vec::new(), Vec::new(), Vec::new());
        for (i, row) in std::mem::take(&mut self.rows).into_iter().enumerate() {
            if row.finished.is_some() {
                done.push(row);
            } else {
                keep.push(i as i32);
                live.push(row);
            }
        }
        if live.is_empty() {
            self.caches.clear();
            self.time = 0;
            return Ok(done);
        }
        let keep = Array::from_slice(&keep, &[keep.len() as i32]);
        let unused = live.iter().map(|r| r.start).min().unwrap_or(0);
        for cache in &mut self.caches {
            let gather = |a: &Array| -> Result<Array> { Ok(a.take_axis(&keep, 0)?) };
            cache.self_keys = drop_cache_prefix(&gather(&cache.self_keys)?, unused as i32)?;
            cache.self_values = drop_cache_prefix(&gather(&cache.self_values)?, unused as i32)?;
            cache.cross_keys = gather(&cache.cross_keys)?;
            cache.cross_values = gather(&cache.cross_values)?;
        }
        for row in &mut live {
            row.start -= unused;
        }
        self.time -= unused;
        self.rows = live;
        Ok(done)
    }
}

fn left_pad(cache: &Array, by: usize) -> Result<Array> {
    if by == 0 {
        return Ok(cache.clone());
    }
    let s = cache.shape();
    let zeros = ops::zeros_dtype(&[s[0], s[1], by as i32, s[3]], cache.dtype())?;
    Ok(ops::concatenate(&[&zeros, cache], 2)?)
}

/// Evaluates logits and copies them to the host as f32.
fn host_logits(logits: &Array) -> Result<Vec<f32>> {
    let logits = logits.as_dtype(Dtype::Float32)?;
    logits.eval()?;
    Ok(logits.as_slice::<f32>().to_vec())
}

fn softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let total: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    (logits[index] - max).exp() / total
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let log_total = logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln() + max;
    logits.iter().map(|l| l - log_total).collect()
}

fn logsumexp(values: &[f32]) -> f32 {
    let max = values.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    values.iter().map(|v| (v - max).exp()).sum::<f32>().ln() + max
}

/// Applies the row's logit rules, samples the next token and updates the row.
fn advance(row: &mut ActiveRow, logits: &mut [f32]) {
    apply_rules(&row.rules, row.sampled(), logits);
    let token = sample(logits, row.temperature, &mut row.rng);
    let logprob = log_softmax(logits)[token as usize];
    let eot = row.rules.specials.eot;
    row.sum_logprob += logprob;
    row.token_logprobs.push(logprob);
    row.tokens.push(token);
    row.pending = token;
    if token == eot {
        row.finished = Some(true);
    } else if row.sampled().len() >= row.rules.sample_len {
        row.finished = Some(false);
    }
}

/// OpenAI's SuppressBlank, SuppressTokens and ApplyTimestampRules, in that order.
pub(crate) fn apply_rules(rules: &RowRules, sampled: &[u32], logits: &mut [f32]) {
    let specials = &rules.specials;
    let neg = f32::NEG_INFINITY;
    if rules.suppress_blank && sampled.is_empty() {
        for &t in specials.blank.iter().chain([&specials.eot]) {
            logits[t as usize] = neg;
        }
    }
    for &t in &rules.suppress_tokens {
        if let Some(l) = logits.get_mut(t as usize) {
            *l = neg;
        }
    }
    let Some(ts) = &rules.timestamps else {
        return;
    };
    let begin = specials.timestamp_begin as usize;
    logits[specials.no_timestamps as usize] = neg;
    let is_ts = |t: u32| t >= specials.timestamp_begin;
    let last_was_timestamp = sampled.last().is_some_and(|&t| is_ts(t));
    let penultimate_was_timestamp = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
    if last_was_timestamp {
        if penultimate_was_timestamp {
            logits[begin..].fill(neg);
        } else {
            logits[..specials.eot as usize].fill(neg);
        }
    }
    if let Some(&last_ts) = sampled.iter().rev().find(|&&t| is_ts(t)) {
        // Timestamps never decrease; a segment has nonzero length.
        let floor = if last_was_timestamp && !penultimate_was_timestamp {
            last_ts
        } else {
            last_ts + 1
        } as usize;
        let end = floor.min(logits.len());
        logits[begin..end].fill(neg);
    }
    if sampled.is_empty() {
        logits[..begin].fill(neg);
        if let Some(max_index) = ts.max_initial_timestamp_index {
            let last_allowed = begin + max_index as usize + 1;
            if last_allowed < logits.len() {
                logits[last_allowed..].fill(neg);
            }
        }
    }
    let logprobs = log_softmax(logits);
    let timestamp_logprob = logsumexp(&logprobs[begin..]);
    let max_text = logprobs[..begin].iter().cloned().fold(neg, f32::max);
    if timestamp_logprob > max_text {
        logits[..begin].fill(neg);
    }
}

fn sample(logits: &[f32], temperature: f32, rng: &mut Rng) -> u32 {
    if temperature <= 0.0 {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - max) / temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut target = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        target -= w;
        if target <= 0.0 && *w > 0.0 {
            return i as u32;
        }
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0) as u32
}

/// SplitMix64: small, seedable, good enough for sampling.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}
