//! Batched decoding: many rows (windows being decoded), possibly from different jobs
//! with different prompts, languages, tasks and temperatures, advance one token per
//! decoder step. Rows join ([`Batch::admit`]) and leave ([`Batch::step`] returns the
//! finished ones, [`Batch::cancel`] drops one) between steps.
//!
//! All rows share one time axis of the self-attention cache. A row's tokens occupy
//! the right-aligned slice `start..time`; everything before `start` is masked. When
//! rows leave, the common unused prefix is sliced off, so the axis never grows past
//! the longest live row (≤ `n_text_ctx`) plus one admission.
//!
//! Logit rules (suppress-blank, suppress-tokens, timestamp rules) and sampling run
//! on the host over each row's logits, following OpenAI's `decoding.py`.

use std::collections::HashMap;
use std::sync::Arc;

use mlx_rs::ops::{
    self,
    indexing::{TryIndexMutOp, TryIndexOp},
};
use mlx_rs::{Array, Dtype};

use crate::beam::{self, BeamGroup, Candidate, Search};
use crate::cpu::simd::{argmax, logsumexp, max};
use crate::error::{Result, WhisperError};
use crate::host_logits::{HostLogits, LogitRows};
use crate::model::{drop_cache_prefix, CompiledStep, LayerCache, TextDecoder, WhisperModel};

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
    /// Stop degenerate rows early ([`is_degenerate`]). On for transcription; off where
    /// a benchmark times a fixed number of steps on whatever the rows sample.
    pub stop_degenerate: bool,
    /// Terms to favour (`keywords[]`); empty for none.
    pub keywords: KeywordBias,
}

pub use crate::keywords::{KeywordBias, KeywordTerm, MAX_KEYWORD_BIAS};

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
    /// Sampled tokens past which the row is degenerate: more text than its window's
    /// audio could hold (`longform::row_token_budget`). At `rules.sample_len` or above it
    /// never fires; the length limit ends the row first.
    pub max_tokens: usize,
    /// One row, or a group of rows for the window's candidates ([`crate::beam`]); a group
    /// finishes as one [`RowOutcome`] under this spec's id.
    pub search: Search,
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
    /// The row was stopped early as degenerate ([`is_degenerate`]): the fallback
    /// verdict rejects it like text that fails the compression check.
    pub degenerate: bool,
}

#[derive(Clone)]
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
    max_tokens: usize,
    degenerate: bool,
    finished: Option<bool>,
}

impl ActiveRow {
    /// A row about to sample its first token; `sot_logits` are the logits at its
    /// `<|startoftranscript|>`, whose no-speech probability the row reports.
    fn new(spec: RowSpec, sot_logits: &[f32]) -> Self {
        let no_speech_prob = spec
            .rules
            .specials
            .no_speech
            .map(|t| softmax_at(sot_logits, t as usize))
            .unwrap_or(0.0);
        let sample_begin = spec.initial_tokens.len();
        ActiveRow {
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
            max_tokens: spec.max_tokens,
            degenerate: false,
            finished: None,
        }
    }

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
            degenerate: self.degenerate,
        }
    }
}

/// How [`Batch::step`] runs the decoder and keeps the self-attention caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// Caches of the batch's time axis, grown by one time step each step (new shapes
    /// every step).
    Dynamic,
    /// Static caches ([`TextDecoder::static_step`]): `[row bucket, heads, time bucket,
    /// dim]`, the same shapes for every step until the rows reach the next bucket
    /// ([`row_bucket`], [`time_bucket`]); the step run op by op.
    Static,
    /// Static caches and the step compiled by MLX ([`CompiledStep`]), one trace per
    /// row-count bucket.
    Compiled,
}

/// `decoding.compiled_step`: 0 auto, 1 on, 2 off (process-wide, set at start-up).
static COMPILED_STEP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets `decoding.compiled_step`: `Some(true)` on, `Some(false)` off, `None` the
/// measured winner of the device ([`StepKind::default_for_device`]).
pub fn set_compiled_step(on: Option<bool>) {
    let value = match on {
        None => 0,
        Some(true) => 1,
        Some(false) => 2,
    };
    COMPILED_STEP.store(value, std::sync::atomic::Ordering::Relaxed);
}

impl StepKind {
    /// What `decoding.compiled_step = "auto"` picks, by measurement (`make bench-model`
    /// on the CPU, `deploy/gpu/run.sh step` on the GPU).
    pub fn default_for_device() -> Self {
        if crate::model::on_cpu() {
            StepKind::Dynamic
        } else {
            StepKind::Compiled
        }
    }

    /// The kind `decoding.compiled_step` asks for.
    pub fn configured() -> Self {
        match COMPILED_STEP.load(std::sync::atomic::Ordering::Relaxed) {
            1 => StepKind::Compiled,
            2 => StepKind::Dynamic,
            _ => Self::default_for_device(),
        }
    }
}

/// Time steps static caches hold for rows that need `steps`: 64, 128, 256, then all
/// `most` (the text context). Few shapes, and the first steps of a batch attend over a
/// short axis rather than the whole context.
fn time_bucket(steps: usize, most: usize) -> usize {
    steps.max(64).next_power_of_two().min(most)
}

/// Rows a static batch of `rows` rows holds: a few fixed sizes, so that few shapes
/// (and compiled traces) cover every batch.
fn row_bucket(rows: usize) -> usize {
    rows.next_power_of_two()
}

/// The running set of rows and their caches.
pub struct Batch {
    /// A group's rows (same id) stay next to each other.
    rows: Vec<ActiveRow>,
    /// The windows decoded by a group of rows, by their rows' id.
    groups: HashMap<RowId, Group>,
    /// Dynamic: `[rows, heads, time, dim]` self caches; static: `[row_bucket(rows),
    /// heads, capacity, dim]` (rows past `rows.len()` are padding).
    caches: Vec<LayerCache>,
    /// The shared time axis of dynamic caches.
    time: usize,
    dtype: Dtype,
    kind: StepKind,
    /// The longest time axis of static caches (`n_text_ctx`; see [`time_bucket`]).
    capacity: usize,
    compiled: Option<CompiledStep>,
}

impl Batch {
    /// A batch that steps as `decoding.compiled_step` says ([`StepKind::configured`]).
    pub fn new(model: &WhisperModel) -> Self {
        Self::with_kind(model, StepKind::configured())
    }

    pub fn with_kind(model: &WhisperModel, kind: StepKind) -> Self {
        Self {
            rows: Vec::new(),
            groups: HashMap::new(),
            caches: Vec::new(),
            time: 0,
            dtype: model.dtype,
            kind,
            capacity: model.dims.n_text_ctx,
            compiled: None,
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

    /// Adds rows: one decoder call over their (left-padded) initial tokens fills
    /// their caches and samples each one's first token. Rows that finish at once
    /// (EOT first) are returned.
    pub fn admit(&mut self, model: &WhisperModel, specs: Vec<RowSpec>) -> Result<Vec<RowOutcome>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let n = specs.len();
        let initial: Vec<&[u32]> = specs.iter().map(|s| s.initial_tokens.as_slice()).collect();
        let prefill = Prefill::new(&initial);
        let longest = prefill.longest;
        let features: Vec<&Array> = specs.iter().map(|s| &s.features.0).collect();
        let features = ops::concatenate(&features, 0)?;
        let shape = [n as i32, longest as i32];
        let tokens = Array::from_slice(&prefill.tokens, &shape);
        let positions = Array::from_slice(&prefill.positions, &shape);
        let mask = Array::from_slice(
            &prefill.mask,
            &[n as i32, 1, longest as i32, longest as i32],
        )
        .as_dtype(self.dtype)?;
        let mut caches = model.decoder.new_caches(&features)?;
        let hidden = model
            .decoder
            .forward(&tokens, &positions, &mask, &mut caches)?;

        // Logits at each row's last token and at its <|startoftranscript|>.
        let state = hidden.shape()[2];
        let flat = hidden.reshape(&[(n * longest) as i32, state])?;
        let sot_indices: Vec<usize> = specs.iter().map(|s| s.sot_index).collect();
        let picks = prefill.logit_positions(&initial, &sot_indices);
        let picked = flat.take_axis(Array::from_slice(&picks, &[2 * n as i32]), 0)?;
        let logits = model.decoder.host_logits(&picked)?;
        let logits = logits.rows();

        for spec in &specs {
            if let Some(group) = Group::new(spec.search) {
                self.groups.insert(spec.id, group);
            }
        }
        let new_rows: Vec<ActiveRow> = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| ActiveRow::new(spec, &logits.row(n + i)))
            .collect();
        let first = self.rows.len();
        if self.kind == StepKind::Dynamic {
            self.merge(new_rows, caches, longest)?;
        } else {
            self.merge_static(new_rows, caches, longest)?;
        }
        self.advance_rows(first, logits)
    }

    /// Adds new rows' caches (right-aligned, `longest` long) to static caches: each row
    /// left-aligned at time 0, into the rows after the batch's.
    fn merge_static(
        &mut self,
        rows: Vec<ActiveRow>,
        caches: Vec<LayerCache>,
        longest: usize,
    ) -> Result<()> {
        let lengths: Vec<usize> = rows.iter().map(|r| r.sample_begin).collect();
        let steps = longest + 1;
        self.reserve_time(steps)?;
        let time = match self.static_time() {
            0 => time_bucket(steps, self.capacity),
            time => time,
        };
        let caches = TextDecoder::left_align(caches, &lengths, longest, time)?;
        let (old, new) = (self.rows.len(), rows.len());
        let bucket = row_bucket(old + new);
        if self.caches.is_empty() {
            self.caches = caches.clone();
        }
        for (cache, new_cache) in self.caches.iter_mut().zip(caches) {
            let place = |a: &Array, b: Array| place_rows(a, old, b, bucket);
            cache.self_keys = place(&cache.self_keys, new_cache.self_keys)?;
            cache.self_values = place(&cache.self_values, new_cache.self_values)?;
            cache.cross_keys = place(&cache.cross_keys, new_cache.cross_keys)?;
            cache.cross_values = place(&cache.cross_values, new_cache.cross_values)?;
        }
        self.rows.extend(rows);
        Ok(())
    }

    /// The time axis of static caches (0 while there are none).
    fn static_time(&self) -> usize {
        self.caches
            .first()
            .map_or(0, |c| c.self_keys.shape()[2] as usize)
    }

    /// Grows static caches' time axis to hold `steps` time steps ([`time_bucket`]),
    /// zeros past the old end.
    fn reserve_time(&mut self, steps: usize) -> Result<()> {
        let have = self.static_time();
        if have == 0 || steps <= have {
            return Ok(());
        }
        let want = time_bucket(steps, self.capacity);
        let grow = |a: &Array| -> Result<Array> {
            let s = a.shape();
            let zeros = ops::zeros_dtype(&[s[0], s[1], (want - have) as i32, s[3]], a.dtype())?;
            Ok(ops::concatenate(&[a, &zeros], 2)?)
        };
        for cache in &mut self.caches {
            cache.self_keys = grow(&cache.self_keys)?;
            cache.self_values = grow(&cache.self_values)?;
        }
        Ok(())
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
        let logits = match self.kind {
            StepKind::Dynamic => self.dynamic_logits(model)?,
            StepKind::Static | StepKind::Compiled => self.static_logits(model)?,
        };
        self.advance_rows(0, logits.rows())
    }

    /// Samples the next token of the rows from `first` on (row `first + i` from the
    /// `i`-th row of `logits`; the rows before `first` wait), a group's
    /// rows choosing together; then keeps the rows that go on, their caches gathered
    /// into place ([`Self::gather_caches`]). Returns the rows and groups that finished.
    fn advance_rows(&mut self, first: usize, logits: LogitRows) -> Result<Vec<RowOutcome>> {
        let old_len = self.rows.len();
        let old_ids: Vec<RowId> = self.rows.iter().map(|r| r.id).collect();
        let mut next: Vec<(usize, ActiveRow)> = Vec::with_capacity(old_len);
        let mut units: Vec<Vec<(usize, ActiveRow)>> = Vec::new();
        for (i, row) in std::mem::take(&mut self.rows).into_iter().enumerate() {
            match units.last_mut() {
                _ if i < first => next.push((i, row)),
                Some(unit) if unit[0].1.id == row.id && self.groups.contains_key(&row.id) => {
                    unit.push((i, row))
                }
                _ => units.push(vec![(i, row)]),
            }
        }
        let logits_of = |i: usize| logits.row(i - first);
        let work: Vec<_> = units
            .into_iter()
            .map(|unit| {
                let id = unit[0].1.id;
                (id, unit, self.groups.remove(&id))
            })
            .collect();
        // Each unit reads only its own rows' logits: they choose over the cores.
        let advanced = crate::cpu::map_split(work, |(id, unit, group)| {
            let advanced = match group {
                None => advance_single(unit, &logits_of),
                Some(group) => group.advance(unit, &logits_of),
            };
            (id, advanced)
        });
        let mut outcomes = Vec::new();
        for (id, advanced) in advanced {
            next.extend(advanced.rows);
            outcomes.extend(advanced.outcome);
            if let Some(group) = advanced.group {
                self.groups.insert(id, group);
            }
        }
        let order: Vec<usize> = next.iter().map(|(i, _)| *i).collect();
        self.rows = next.into_iter().map(|(_, row)| row).collect();
        if order.len() != old_len || order.iter().enumerate().any(|(k, &i)| k != i) {
            // A group's rows share their audio: reordered among themselves, each row's
            // cross-attention caches stay right.
            let same_audio = order.len() == old_len
                && order
                    .iter()
                    .enumerate()
                    .all(|(k, &i)| old_ids[k] == old_ids[i]);
            self.gather_caches(&order, !same_audio)?;
        }
        Ok(outcomes)
    }

    /// One step over dynamic caches: each row's logits, `[rows · vocab]` on the host.
    fn dynamic_logits(&mut self, model: &WhisperModel) -> Result<HostLogits> {
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
        model
            .decoder
            .host_logits(&hidden.reshape(&[b as i32, state])?)
    }

    /// One step over static caches, compiled or not: each row's logits, `[rows · vocab]`
    /// on the host. The old caches are moved into the step, so that MLX writes the new
    /// keys into their buffers rather than into copies.
    fn static_logits(&mut self, model: &WhisperModel) -> Result<HostLogits> {
        let (b, bucket) = (self.rows.len(), self.caches[0].self_keys.shape()[0]);
        let mut tokens = vec![0i32; bucket as usize];
        let mut positions = vec![0i32; bucket as usize];
        for (i, row) in self.rows.iter().enumerate() {
            tokens[i] = row.pending as i32;
            positions[i] = (row.tokens.len() - 1) as i32;
        }
        let steps = positions.iter().max().map_or(0, |&p| p as usize + 1);
        if steps > self.capacity {
            return Err(WhisperError::Internal(
                "a row outgrew the text context".into(),
            ));
        }
        self.reserve_time(steps)?;
        let mut inputs = vec![
            Array::from_slice(&tokens, &[bucket, 1]),
            Array::from_slice(&positions, &[bucket, 1]),
        ];
        for c in std::mem::take(&mut self.caches) {
            inputs.extend([c.self_keys, c.self_values, c.cross_keys, c.cross_values]);
        }
        let outputs = match self.kind {
            StepKind::Compiled => self
                .compiled
                .get_or_insert_with(|| CompiledStep::new(model.decoder.clone()))
                .call(&inputs)?,
            _ => model.decoder.static_step(&inputs)?,
        };
        let mut outputs = outputs.into_iter();
        let logits = outputs.next().expect("static_step returns logits");
        let mut inputs = inputs.into_iter().skip(2);
        while let (Some(self_keys), Some(self_values)) = (outputs.next(), outputs.next()) {
            let _old_self = (inputs.next(), inputs.next());
            self.caches.push(LayerCache {
                self_keys,
                self_values,
                cross_keys: inputs.next().expect("four arrays a layer"),
                cross_values: inputs.next().expect("four arrays a layer"),
            });
        }
        HostLogits::evaluate(&logits.try_index(..b as i32)?)
    }

    /// Drops a row (its request went away). Returns whether it was present.
    pub fn cancel(&mut self, id: RowId) -> Result<bool> {
        self.groups.remove(&id);
        let mut found = false;
        for row in self.rows.iter_mut().filter(|r| r.id == id) {
            row.finished = Some(false);
            found = true;
        }
        if found {
            self.remove_finished()?;
        }
        Ok(found)
    }

    /// Takes finished rows out of the batch ([`Self::gather`] of the rest).
    fn remove_finished(&mut self) -> Result<Vec<ActiveRow>> {
        if self.rows.iter().all(|r| r.finished.is_none()) {
            return Ok(Vec::new());
        }
        let keep: Vec<usize> = (0..self.rows.len())
            .filter(|&i| self.rows[i].finished.is_none())
            .collect();
        self.gather(&keep)
    }

    /// Makes the batch's rows `order` (indices of the current rows; an index may
    /// repeat, and rows left out are dropped), with their caches. The one place rows
    /// are reordered. Returns the rows left out, in their old order.
    fn gather(&mut self, order: &[usize]) -> Result<Vec<ActiveRow>> {
        let mut uses = vec![0usize; self.rows.len()];
        for &i in order {
            *uses.get_mut(i).ok_or_else(|| {
                WhisperError::Internal(format!("gather: no row {i} in {}", self.rows.len()))
            })? += 1;
        }
        let mut old: Vec<Option<ActiveRow>> = std::mem::take(&mut self.rows)
            .into_iter()
            .map(Some)
            .collect();
        let mut rows = Vec::with_capacity(order.len());
        for &i in order {
            uses[i] -= 1;
            // The last use takes the row; earlier ones copy it.
            rows.push(if uses[i] == 0 {
                old[i].take()
            } else {
                old[i].clone()
            });
        }
        self.rows = rows.into_iter().flatten().collect();
        self.gather_caches(order, true)?;
        Ok(old.into_iter().flatten().collect())
    }

    /// [`Self::gather`]'s caches. Dynamic caches also lose the time steps no row uses
    /// any more; static ones keep their bucket's shape, padded with copies of a row.
    /// `cross: false` keeps the cross-attention caches where every row keeps its audio
    /// (beams reordered within their group): they are the largest, and the same for all.
    fn gather_caches(&mut self, order: &[usize], cross: bool) -> Result<()> {
        if order.is_empty() {
            self.caches.clear();
            self.time = 0;
            return Ok(());
        }
        let mut index: Vec<i32> = order.iter().map(|&i| i as i32).collect();
        let unused = match self.kind {
            StepKind::Dynamic => self.rows.iter().map(|r| r.start).min().unwrap_or(0),
            StepKind::Static | StepKind::Compiled => {
                index.resize(row_bucket(order.len()), index[0]);
                0
            }
        };
        let index = Array::from_slice(&index, &[index.len() as i32]);
        for cache in &mut self.caches {
            let gather = |a: &Array| -> Result<Array> { Ok(a.take_axis(&index, 0)?) };
            cache.self_keys = gather(&cache.self_keys)?;
            cache.self_values = gather(&cache.self_values)?;
            if cross {
                cache.cross_keys = gather(&cache.cross_keys)?;
                cache.cross_values = gather(&cache.cross_values)?;
            }
            if unused > 0 {
                cache.self_keys = drop_cache_prefix(&cache.self_keys, unused as i32)?;
                cache.self_values = drop_cache_prefix(&cache.self_values, unused as i32)?;
            }
        }
        for row in &mut self.rows {
            row.start -= unused;
        }
        self.time -= unused;
        Ok(())
    }
}

/// Static caches `a` (`old` rows used) with `new`'s rows after them, `bucket` rows in
/// all: written in place where `a` already has that many rows, else copied into a
/// new array padded with zeros.
fn place_rows(a: &Array, old: usize, new: Array, bucket: usize) -> Result<Array> {
    let (n, rows) = (new.shape()[0] as usize, a.shape()[0] as usize);
    if old == 0 && rows == n && n == bucket {
        return Ok(new);
    }
    if rows == bucket {
        let mut a = a.clone();
        a.try_index_mut(old as i32..(old + n) as i32, &new)?;
        return Ok(a);
    }
    let mut parts = vec![a.try_index(..old as i32)?, new];
    if bucket > old + n {
        let s = parts[1].shape().to_vec();
        let pad = [(bucket - old - n) as i32, s[1], s[2], s[3]];
        parts.push(ops::zeros_dtype(&pad, a.dtype())?);
    }
    Ok(ops::concatenate(&parts, 0)?)
}

/// What advancing one window's rows by a step gives: the rows that go on, each with the
/// index of the row whose caches it continues, and the outcome once the window is done.
struct Advanced {
    rows: Vec<(usize, ActiveRow)>,
    outcome: Option<RowOutcome>,
    group: Option<Group>,
}

/// A window decoded by a group of rows ([`crate::beam`]).
enum Group {
    /// Best of `n` sampled rows: those that finished so far.
    BestOf {
        n: usize,
        length_penalty: Option<f32>,
        finished: Vec<Candidate<ActiveRow>>,
    },
    Beam(BeamGroup<ActiveRow>),
}

impl Group {
    fn new(search: Search) -> Option<Self> {
        match search {
            Search::Single => None,
            Search::BestOf { n, length_penalty } => Some(Group::BestOf {
                n,
                length_penalty,
                finished: Vec::new(),
            }),
            Search::Beam(options) => Some(Group::Beam(BeamGroup::new(options))),
        }
    }

    fn advance(
        self,
        unit: Vec<(usize, ActiveRow)>,
        logits_of: &impl Fn(usize) -> Vec<f32>,
    ) -> Advanced {
        match self {
            Group::BestOf {
                n,
                length_penalty,
                finished,
            } => advance_best_of(unit, n, length_penalty, finished, logits_of),
            Group::Beam(group) => advance_beam(unit, group, logits_of),
        }
    }
}

/// A row on its own: samples one token.
fn advance_single(
    unit: Vec<(usize, ActiveRow)>,
    logits_of: &impl Fn(usize) -> Vec<f32>,
) -> Advanced {
    let mut rows = Vec::new();
    let mut outcome = None;
    for (i, mut row) in unit {
        advance(&mut row, &mut logits_of(i));
        match row.finished {
            Some(_) => outcome = Some(row.outcome()),
            None => rows.push((i, row)),
        }
    }
    Advanced {
        rows,
        outcome,
        group: None,
    }
}

/// The row as a candidate of its window.
fn candidate(row: ActiveRow) -> Candidate<ActiveRow> {
    let ended_with_eot = row.finished == Some(true);
    Candidate {
        sum_logprob: row.sum_logprob,
        length: row.sampled().len() - usize::from(ended_with_eot),
        degenerate: row.degenerate,
        item: row,
    }
}

/// Best of `n`: a group just admitted is one row and forks into `n` (the same caches,
/// each its own random numbers); each row samples on its own, and once all have finished
/// the best-ranked is the window's outcome.
fn advance_best_of(
    mut unit: Vec<(usize, ActiveRow)>,
    n: usize,
    length_penalty: Option<f32>,
    mut finished: Vec<Candidate<ActiveRow>>,
    logits_of: &impl Fn(usize) -> Vec<f32>,
) -> Advanced {
    let (source, template) = (unit[0].0, unit[0].1.clone());
    for k in unit.len() + finished.len()..n {
        let mut row = template.clone();
        row.rng = template.rng.fork(k as u64);
        unit.push((source, row));
    }
    let mut rows = Vec::new();
    for (i, mut row) in unit {
        advance(&mut row, &mut logits_of(i));
        match row.finished {
            Some(_) => finished.push(candidate(row)),
            None => rows.push((i, row)),
        }
    }
    if !rows.is_empty() {
        let group = Group::BestOf {
            n,
            length_penalty,
            finished,
        };
        return Advanced {
            rows,
            outcome: None,
            group: Some(group),
        };
    }
    let outcome = beam::best(&finished, length_penalty)
        .map(|i| finished.swap_remove(i).item.outcome())
        .or_else(|| Some(template.outcome()));
    Advanced {
        rows,
        outcome,
        group: None,
    }
}

/// One step of a beam search: the beams' continuations ranked together
/// ([`beam::choose`]), those ending in EOT collected; the search ends when enough have
/// finished (patience), or when its likeliest live beam stops (the length limit, or
/// degenerate), and the winner is the window's outcome. A live beam that stops
/// while a likelier one goes on is dropped.
fn advance_beam(
    unit: Vec<(usize, ActiveRow)>,
    mut group: BeamGroup<ActiveRow>,
    logits_of: &impl Fn(usize) -> Vec<f32>,
) -> Advanced {
    let logprobs: Vec<Vec<f32>> = unit
        .iter()
        .map(|(i, row)| {
            let mut logits = logits_of(*i);
            apply_rules(&row.rules, row.sampled(), &mut logits);
            log_softmax(&logits)
        })
        .collect();
    let beams: Vec<beam::Beam> = unit
        .iter()
        .map(|(_, row)| beam::Beam {
            sampled: row.sampled(),
            sum_logprob: row.sum_logprob,
        })
        .collect();
    let logprobs: Vec<&[f32]> = logprobs.iter().map(Vec::as_slice).collect();
    let eot = unit[0].1.rules.specials.eot;
    let choice = beam::choose(&beams, &logprobs, group.options.beam_size, eot);
    let extend = |e: &beam::Extension| {
        let (i, source) = &unit[e.source];
        let mut row = source.clone();
        push_token(&mut row, e.token, e.logprob);
        (*i, row)
    };
    group.add_finished(choice.finished.iter().map(|e| candidate(extend(e).1)));
    let live: Vec<(usize, ActiveRow)> = choice.live.iter().map(extend).collect();
    let stopped = live.first().is_none_or(|(_, row)| row.finished.is_some());
    if group.is_done() || stopped {
        let live = live.into_iter().map(|(_, row)| candidate(row)).collect();
        let winner = group.finalize(live).unwrap_or_else(|| unit[0].1.clone());
        return Advanced {
            rows: Vec::new(),
            outcome: Some(winner.outcome()),
            group: None,
        };
    }
    Advanced {
        rows: live
            .into_iter()
            .filter(|(_, r)| r.finished.is_none())
            .collect(),
        outcome: None,
        group: Some(Group::Beam(group)),
    }
}

/// The inputs of one decoder call over new rows' initial tokens, right-aligned in a
/// `[rows, longest]` grid: padding repeats a row's first token; the mask
/// `[rows, 1, longest, longest]` is causal within each row's own tokens, and a padding
/// query sees only itself so that no softmax row is empty.
struct Prefill {
    longest: usize,
    tokens: Vec<i32>,
    positions: Vec<i32>,
    mask: Vec<f32>,
}

impl Prefill {
    fn new(initial: &[&[u32]]) -> Self {
        let n = initial.len();
        let longest = initial.iter().map(|t| t.len()).max().unwrap_or(0);
        let mut tokens = Vec::with_capacity(n * longest);
        let mut positions = Vec::with_capacity(n * longest);
        let mut mask = vec![0f32; n * longest * longest];
        for (i, row) in initial.iter().enumerate() {
            let pad = longest - row.len();
            for j in 0..longest {
                tokens.push(if j < pad { row[0] } else { row[j - pad] } as i32);
                positions.push(j.saturating_sub(pad) as i32);
                for k in 0..longest {
                    let visible = (k <= j && k >= pad) || k == j;
                    if !visible {
                        mask[(i * longest + j) * longest + k] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Self {
            longest,
            tokens,
            positions,
            mask,
        }
    }

    /// Flat grid positions whose logits are needed: each row's last token (to sample
    /// from), then each row's `<|startoftranscript|>` (for the no-speech probability).
    fn logit_positions(&self, initial: &[&[u32]], sot_indices: &[usize]) -> Vec<i32> {
        let longest = self.longest;
        let mut picks: Vec<i32> = (0..initial.len())
            .map(|i| ((i + 1) * longest - 1) as i32)
            .collect();
        picks.extend(
            initial
                .iter()
                .zip(sot_indices)
                .enumerate()
                .map(|(i, (row, sot))| (i * longest + longest - row.len() + sot) as i32),
        );
        picks
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

fn softmax_at(logits: &[f32], index: usize) -> f32 {
    (logits[index] - logsumexp(logits)).exp()
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let log_total = logsumexp(logits);
    logits.iter().map(|l| l - log_total).collect()
}

/// Applies the row's logit rules, samples the next token and updates the row.
fn advance(row: &mut ActiveRow, logits: &mut [f32]) {
    apply_rules(&row.rules, row.sampled(), logits);
    let token = sample(logits, row.temperature, &mut row.rng);
    let logprob = logits[token as usize] - logsumexp(logits);
    push_token(row, token, logprob);
}

/// Adds a chosen token to the row; ends it at EOT, at its length limit, or as
/// degenerate.
fn push_token(row: &mut ActiveRow, token: u32, logprob: f32) {
    let eot = row.rules.specials.eot;
    row.sum_logprob += logprob;
    row.token_logprobs.push(logprob);
    row.tokens.push(token);
    row.pending = token;
    if token == eot {
        row.finished = Some(true);
    } else if row.sampled().len() >= row.rules.sample_len {
        row.finished = Some(false);
    } else if row.rules.stop_degenerate && is_degenerate(row.sampled(), eot, row.max_tokens) {
        row.degenerate = true;
        row.finished = Some(false);
    }
}

/// A loop repeats a run of at most this many text tokens (a sentence or so).
const MAX_LOOP_PERIOD: usize = 32;
/// ... at least this many times in a row ...
const MIN_LOOP_REPEATS: usize = 4;
/// ... over at least this many tokens: 32 tokens of a period ≤ 8 compress far beyond
/// the 2.4 ratio threshold, while a short real repetition ("no, no, no") stays under.
const MIN_LOOP_TOKENS: usize = 32;

/// Whether a row's `sampled` tokens (no EOT yet) are degenerate, so that sampling
/// more would only waste decoder steps on text the fallback verdict rejects anyway:
/// at least `max_tokens` of them (more than the window's audio could hold), or text
/// ending in a loop ([`ends_in_loop`]; timestamps, which still advance in a loop, are
/// left out).
pub(crate) fn is_degenerate(sampled: &[u32], eot: u32, max_tokens: usize) -> bool {
    if sampled.len() >= max_tokens {
        return true;
    }
    let text: Vec<u32> = sampled.iter().copied().filter(|&t| t < eot).collect();
    ends_in_loop(&text)
}

/// Whether `text` ends with one run of `p ≤ MAX_LOOP_PERIOD` tokens repeated at least
/// `MIN_LOOP_REPEATS` times back to back, covering at least `MIN_LOOP_TOKENS` tokens:
/// Whisper's decoding loop, which at temperature 0 never ends before the length limit.
pub(crate) fn ends_in_loop(text: &[u32]) -> bool {
    (1..=MAX_LOOP_PERIOD).any(|period| {
        let repeats = MIN_LOOP_REPEATS.max(MIN_LOOP_TOKENS.div_ceil(period));
        let span = period * repeats;
        span <= text.len() && {
            let tail = &text[text.len() - span..];
            tail[period..].iter().zip(tail).all(|(a, b)| a == b)
        }
    })
}

/// OpenAI's SuppressBlank, SuppressTokens and ApplyTimestampRules, in that order,
/// then the keyword bias on what they leave allowed.
pub(crate) fn apply_rules(rules: &RowRules, sampled: &[u32], logits: &mut [f32]) {
    apply_openai_rules(rules, sampled, logits);
    rules.keywords.apply(sampled, logits);
}

fn apply_openai_rules(rules: &RowRules, sampled: &[u32], logits: &mut [f32]) {
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
    // OpenAI compares log-probabilities; both sides share the log-softmax's normaliser.
    if logsumexp(&logits[begin..]) > max(&logits[..begin]) {
        logits[..begin].fill(neg);
    }
}

fn sample(logits: &[f32], temperature: f32, rng: &mut Rng) -> u32 {
    if temperature <= 0.0 {
        return argmax(logits) as u32;
    }
    let max = max(logits);
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
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    /// The `k`-th of several generators from one seed (best-of rows); the 0th is itself.
    fn fork(&self, k: u64) -> Self {
        Self(self.0 ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    // A made-up vocabulary of 20: text tokens 0..10 (" " is 3), then EOT, no-speech,
    // <|notimestamps|>, and timestamps <|0.00|> .. <|0.12|> at 13..20.
    const VOCAB: usize = 20;
    const BLANK: u32 = 3;
    const EOT: u32 = 10;
    const NO_SPEECH: u32 = 11;
    const NO_TIMESTAMPS: u32 = 12;
    const BEGIN: u32 = 13;
    const NEG: f32 = f32::NEG_INFINITY;

    fn ts(k: u32) -> u32 {
        BEGIN + k
    }

    fn rules(timestamps: Option<Option<u32>>) -> RowRules {
        RowRules {
            specials: SpecialTokens {
                eot: EOT,
                no_speech: Some(NO_SPEECH),
                no_timestamps: NO_TIMESTAMPS,
                timestamp_begin: BEGIN,
                blank: vec![BLANK],
            },
            suppress_blank: true,
            suppress_tokens: vec![NO_SPEECH],
            timestamps: timestamps.map(|cap| TimestampRules {
                max_initial_timestamp_index: cap,
            }),
            sample_len: 224,
            stop_degenerate: true,
            keywords: KeywordBias::default(),
        }
    }

    /// Plain text rules (no timestamps).
    fn text_rules() -> RowRules {
        rules(None)
    }

    /// Timestamp rules with OpenAI's default initial cap of 1.0 s (index 50: no
    /// effect on this small vocabulary).
    fn timestamp_rules() -> RowRules {
        rules(Some(Some(50)))
    }

    /// The tokens still allowed after the rules. Text is made far likelier than any
    /// timestamp so that the "timestamps beat text" rule stays out of the way (it has
    /// its own tests).
    fn allowed(rules: &RowRules, sampled: &[u32]) -> Vec<u32> {
        let mut logits: Vec<f32> = (0..VOCAB as u32)
            .map(|t| if t < BEGIN { 5.0 } else { 0.0 })
            .collect();
        apply_rules(rules, sampled, &mut logits);
        (0..VOCAB as u32)
            .filter(|&t| logits[t as usize] > NEG)
            .collect()
    }

    fn range(r: std::ops::Range<u32>) -> Vec<u32> {
        r.collect()
    }

    fn concat(parts: &[&[u32]]) -> Vec<u32> {
        parts.concat()
    }

    #[test]
    fn blank_and_eot_are_suppressed_only_at_the_start() {
        let rules = text_rules();
        // At the start: no " ", no EOT; no-speech is always suppressed.
        let start = concat(&[
            &[0, 1, 2],
            &range(4..10),
            &[NO_TIMESTAMPS],
            &range(BEGIN..20),
        ]);
        assert_eq!(allowed(&rules, &[]), start);
        // After a token both come back.
        let later = concat(&[&range(0..11), &range(12..20)]);
        assert_eq!(allowed(&rules, &[5]), later);
    }

    #[test]
    fn suppress_blank_can_be_turned_off() {
        let rules = RowRules {
            suppress_blank: false,
            ..text_rules()
        };
        assert_eq!(
            allowed(&rules, &[]),
            concat(&[&range(0..11), &range(12..20)])
        );
    }

    #[test]
    fn suppressed_tokens_never_come_back_and_out_of_range_ids_are_ignored() {
        let rules = RowRules {
            suppress_tokens: vec![2, 7, NO_SPEECH, 1_000_000],
            ..text_rules()
        };
        for sampled in [&[][..], &[5], &[5, 6, 8]] {
            let got = allowed(&rules, sampled);
            for t in [2, 7, NO_SPEECH] {
                assert!(!got.contains(&t), "{t} allowed after {sampled:?}");
            }
        }
    }

    #[test]
    fn without_timestamp_rules_timestamps_are_untouched() {
        let got = allowed(&text_rules(), &[5, ts(3)]);
        assert!(got.contains(&NO_TIMESTAMPS));
        assert_eq!(got[got.len() - 7..], range(BEGIN..20)[..]);
    }

    #[test]
    fn decoding_starts_with_a_timestamp() {
        assert_eq!(allowed(&timestamp_rules(), &[]), range(BEGIN..20));
    }

    #[test]
    fn the_initial_timestamp_is_capped() {
        // max_initial_timestamp 0.04 s: index 2, so <|0.00|> <|0.02|> <|0.04|>.
        assert_eq!(allowed(&rules(Some(Some(2))), &[]), range(BEGIN..BEGIN + 3));
        assert_eq!(allowed(&rules(Some(Some(0))), &[]), vec![BEGIN]);
        // No cap: every timestamp.
        assert_eq!(allowed(&rules(Some(None)), &[]), range(BEGIN..20));
        // The cap is for the first token only.
        let later = allowed(&rules(Some(Some(0))), &[ts(0), 5]);
        assert!(later.contains(&ts(6)), "{later:?}");
    }

    #[test]
    fn no_timestamps_token_is_suppressed_with_timestamps() {
        for sampled in [&[][..], &[ts(0)], &[ts(0), 5], &[ts(0), 5, ts(2)]] {
            assert!(!allowed(&timestamp_rules(), sampled).contains(&NO_TIMESTAMPS));
        }
    }

    #[test]
    fn text_follows_an_opening_timestamp() {
        // After one timestamp at the start (its penultimate counts as a timestamp),
        // timestamps are closed: text or EOT.
        let got = allowed(&timestamp_rules(), &[ts(0)]);
        assert_eq!(got, concat(&[&range(0..11)]));
    }

    #[test]
    fn a_closing_timestamp_is_followed_by_a_timestamp_or_eot() {
        // <|0.00|> text <|0.06|>: the segment is closed; the next token opens the next
        // segment at the same time or later, or ends the row.
        let got = allowed(&timestamp_rules(), &[ts(0), 5, ts(3)]);
        assert_eq!(got, concat(&[&[EOT], &range(ts(3)..20)]));
    }

    #[test]
    fn a_timestamp_pair_is_followed_by_text() {
        // <|0.00|> a <|0.04|><|0.04|>: a segment opened; timestamps wait for its text.
        let got = allowed(&timestamp_rules(), &[ts(0), 5, ts(2), ts(2)]);
        assert_eq!(got, range(0..11));
    }

    #[test]
    fn timestamps_never_decrease_and_segments_have_length() {
        // Inside a segment that opened at <|0.06|>, the closing timestamp is later.
        let got = allowed(&timestamp_rules(), &[ts(0), 5, ts(3), ts(3), 6]);
        assert_eq!(got, concat(&[&range(0..11), &range(ts(4)..20)]));
        // Ordering counts the last timestamp, not the largest index seen in text.
        let got = allowed(&timestamp_rules(), &[ts(1), 5, 6]);
        assert_eq!(got, concat(&[&range(0..11), &range(ts(2)..20)]));
    }

    #[test]
    fn likely_timestamps_beat_text() {
        // Text token 5 is the single likeliest token, but the timestamps together are
        // likelier (7 × e^0.5 > e^1): text is suppressed, EOT included.
        let mut logits = vec![0.0f32; VOCAB];
        logits[5] = 1.0;
        for t in BEGIN..20 {
            logits[t as usize] = 0.5;
        }
        apply_rules(&timestamp_rules(), &[ts(0), 4], &mut logits);
        assert!(logits[..BEGIN as usize].iter().all(|&l| l == NEG));
        assert!(logits[ts(1) as usize..].iter().all(|&l| l == 0.5));
    }

    #[test]
    fn even_odds_after_a_closing_timestamp_open_a_new_segment() {
        // All logits equal: EOT is the only text-side token left, and the four allowed
        // timestamps together outweigh it, so the row must open a new segment.
        let mut logits = vec![0.0f32; VOCAB];
        apply_rules(&timestamp_rules(), &[ts(0), 5, ts(3)], &mut logits);
        let allowed: Vec<u32> = (0..VOCAB as u32)
            .filter(|&t| logits[t as usize] > NEG)
            .collect();
        assert_eq!(allowed, range(ts(3)..20));
    }

    #[test]
    fn likely_text_keeps_its_place() {
        let mut logits = vec![0.0f32; VOCAB];
        logits[5] = 5.0;
        apply_rules(&timestamp_rules(), &[ts(0), 4], &mut logits);
        assert_eq!(logits[5], 5.0);
        assert_eq!(logits[ts(1) as usize], 0.0);
    }

    #[test]
    fn rules_keep_the_given_logits_where_allowed() {
        let mut logits: Vec<f32> = (0..VOCAB).map(|i| i as f32 / 10.0).collect();
        apply_rules(&text_rules(), &[4], &mut logits);
        for t in [0usize, 4, 9, EOT as usize, 19] {
            assert_eq!(logits[t], t as f32 / 10.0);
        }
        assert_eq!(logits[NO_SPEECH as usize], NEG);
    }

    #[test]
    fn greedy_sampling_takes_the_first_maximum() {
        let mut rng = Rng::new(0);
        assert_eq!(sample(&[0.1, 0.9, 0.3], 0.0, &mut rng), 1);
        assert_eq!(sample(&[0.5, 0.9, 0.9], 0.0, &mut rng), 1);
        assert_eq!(sample(&[NEG, NEG, 2.0], 0.0, &mut rng), 2);
    }

    #[test]
    fn sampling_never_picks_a_suppressed_token() {
        let mut rng = Rng::new(7);
        let logits = [NEG, 0.0, NEG, 0.0, NEG];
        for _ in 0..200 {
            let t = sample(&logits, 1.0, &mut rng);
            assert!(t == 1 || t == 3, "{t}");
        }
    }

    #[test]
    fn the_same_seed_samples_the_same_tokens() {
        let logits = [0.0f32, 0.1, 0.2, 0.3];
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..32)
                .map(|_| sample(&logits, 1.0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn log_softmax_and_logsumexp() {
        let lp = log_softmax(&[0.0, 0.0]);
        assert!((lp[0] - 0.5f32.ln()).abs() < 1e-6 && (lp[1] - lp[0]).abs() < 1e-6);
        assert!((logsumexp(&[0.0, 0.0]) - 2f32.ln()).abs() < 1e-6);
        assert_eq!(logsumexp(&[NEG, NEG]), NEG);
        assert!((softmax_at(&[0.0, 3f32.ln()], 1) - 0.75).abs() < 1e-6);
    }

    #[test]
    fn prefill_right_aligns_rows_and_masks_their_padding() {
        let initial: [&[u32]; 2] = [&[1, 2, 3], &[7]];
        let prefill = Prefill::new(&initial);
        assert_eq!(prefill.longest, 3);
        assert_eq!(prefill.tokens, vec![1, 2, 3, 7, 7, 7]);
        assert_eq!(prefill.positions, vec![0, 1, 2, 0, 0, 0]);
        let visible: Vec<Vec<usize>> = prefill
            .mask
            .chunks(3)
            .map(|q| (0..3).filter(|&k| q[k] == 0.0).collect())
            .collect();
        // Row 0 is causal; row 1's two padding queries see only themselves and its
        // one real token sees only itself.
        assert_eq!(
            visible,
            vec![
                vec![0],
                vec![0, 1],
                vec![0, 1, 2],
                vec![0],
                vec![1],
                vec![2]
            ]
        );
        // Sample from positions 2 and 5; <|startoftranscript|> at index 1 of row 0
        // and index 0 of row 1 (grid position 3 + 2).
        assert_eq!(prefill.logit_positions(&initial, &[1, 0]), vec![2, 5, 1, 5]);
    }

    fn row(sampled: &[u32], logprobs: &[f32], finished: Option<bool>) -> ActiveRow {
        let initial = [50u32, 51];
        ActiveRow {
            id: 9,
            rules: Arc::new(text_rules()),
            temperature: 0.0,
            rng: Rng::new(0),
            start: 0,
            tokens: [&initial[..], sampled].concat(),
            sample_begin: initial.len(),
            pending: sampled.last().copied().unwrap_or(0),
            sum_logprob: logprobs.iter().sum(),
            token_logprobs: logprobs.to_vec(),
            no_speech_prob: 0.25,
            max_tokens: 224,
            degenerate: false,
            finished,
        }
    }

    #[test]
    fn a_completed_row_drops_its_eot_but_counts_it_in_the_average() {
        let outcome = row(&[5, 6, EOT], &[-0.5, -1.0, -1.5], Some(true)).outcome();
        assert_eq!(outcome.tokens, vec![5, 6]);
        assert_eq!(outcome.token_logprobs, vec![-0.5, -1.0]);
        assert_eq!(outcome.sum_logprob, -3.0);
        // OpenAI: sum / (text tokens + 1).
        assert_eq!(outcome.avg_logprob, -1.0);
        assert!(outcome.completed);
        assert_eq!((outcome.id, outcome.no_speech_prob), (9, 0.25));
    }

    #[test]
    fn a_row_cut_by_the_length_limit_keeps_all_its_tokens() {
        let outcome = row(&[5, 6, 7], &[-0.5, -0.5, -0.5], Some(false)).outcome();
        assert_eq!(outcome.tokens, vec![5, 6, 7]);
        assert_eq!(outcome.avg_logprob, -1.5 / 4.0);
        assert!(!outcome.completed);
    }

    #[test]
    fn advance_samples_applies_rules_and_stops_at_eot_or_the_length_limit() {
        // The row has sampled 5; EOT is the likeliest token and ends it.
        let mut r = row(&[5], &[-0.1], None);
        let mut logits = vec![0.0f32; VOCAB];
        logits[EOT as usize] = 3.0;
        logits[NO_SPEECH as usize] = 9.0; // suppressed
        advance(&mut r, &mut logits);
        assert_eq!(r.sampled(), &[5, EOT]);
        assert_eq!(r.finished, Some(true));
        // A row at its length limit stops without EOT.
        let mut r = row(&[5], &[-0.1], None);
        r.rules = Arc::new(RowRules {
            sample_len: 2,
            ..text_rules()
        });
        let mut logits = vec![0.0f32; VOCAB];
        logits[7] = 3.0;
        advance(&mut r, &mut logits);
        assert_eq!(r.sampled(), &[5, 7]);
        assert_eq!(r.finished, Some(false));
        assert_eq!(r.pending, 7);
        assert_eq!(r.token_logprobs.len(), 2);
    }

    /// `phrase` repeated `times` times after the text `lead`.
    fn looping(lead: &[u32], phrase: &[u32], times: usize) -> Vec<u32> {
        let mut text = lead.to_vec();
        for _ in 0..times {
            text.extend(phrase);
        }
        text
    }

    #[test]
    fn a_loop_is_a_short_run_repeated_over_enough_tokens() {
        // One token 32 times; two tokens 16 times; a sentence of 9 four times.
        assert!(ends_in_loop(&looping(&[1, 2], &[7], 32)));
        assert!(ends_in_loop(&looping(&[1, 2], &[7, 8], 16)));
        assert!(ends_in_loop(&looping(
            &[1],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            4
        )));
        // Up to the longest period: 32 tokens four times.
        let long: Vec<u32> = (100..132).collect();
        assert!(ends_in_loop(&looping(&[], &long, 4)));
        // One repeat short, a period too long, or text after the loop: no loop.
        assert!(!ends_in_loop(&looping(&[1, 2], &[7], 31)));
        assert!(!ends_in_loop(&looping(&[1, 2], &[7, 8], 15)));
        assert!(!ends_in_loop(&looping(
            &[],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            3
        )));
        let longer: Vec<u32> = (100..133).collect();
        assert!(!ends_in_loop(&looping(&[], &longer, 4)));
        assert!(!ends_in_loop(&[looping(&[], &[7], 40), vec![8]].concat()));
        // Real text repeats words, not runs: "no, no, no" and an ordinary sentence.
        assert!(!ends_in_loop(&looping(&[5, 6], &[9, 2], 3)));
        assert!(!ends_in_loop(&(0..200).map(|i| i % 97).collect::<Vec<_>>()));
        assert!(!ends_in_loop(&[]));
    }

    #[test]
    fn degenerate_rows_loop_in_their_text_or_outgrow_their_audio() {
        // Timestamps between the repeats (ids ≥ EOT) do not hide a loop.
        let mut sampled = Vec::new();
        for k in 0..32 {
            sampled.extend([ts(k % 7), 4, 5, ts(k % 7 + 1)]);
        }
        assert!(is_degenerate(&sampled, EOT, 224));
        // Too many tokens for the window's audio, loop or not.
        // (These 40 distinct tokens are all text below an end token of 100.)
        let varied: Vec<u32> = (0..40).collect();
        assert!(!is_degenerate(&varied, 100, 224));
        assert!(is_degenerate(&varied, 100, 40));
        assert!(!is_degenerate(&varied, 100, 41));
    }

    #[test]
    fn advance_stops_a_degenerate_row_and_says_so() {
        // A row one token short of a loop samples that token: stopped, not completed.
        let text = looping(&[], &[4], MIN_LOOP_TOKENS - 1);
        let mut r = row(&text, &vec![-0.1; text.len()], None);
        let mut logits = vec![0.0f32; VOCAB];
        logits[4] = 3.0;
        advance(&mut r, &mut logits);
        assert_eq!(r.finished, Some(false));
        let outcome = r.outcome();
        assert!(outcome.degenerate && !outcome.completed);
        assert_eq!(outcome.tokens.len(), MIN_LOOP_TOKENS);
        // Over its token budget: stopped the same way; a normal row is not.
        let mut r = row(&[5, 6], &[-0.1, -0.1], None);
        r.max_tokens = 3;
        advance(&mut r, &mut [0.0f32; VOCAB]);
        assert!(r.degenerate && r.finished == Some(false));
        let mut r = row(&[5, 6], &[-0.1, -0.1], None);
        let mut logits = vec![0.0f32; VOCAB];
        logits[7] = 3.0;
        advance(&mut r, &mut logits);
        assert!(!r.degenerate && r.finished.is_none());
    }

    fn term(tokens: &[u32]) -> KeywordTerm {
        KeywordTerm {
            tokens: tokens.to_vec(),
            favour_start: true,
        }
    }

    fn keyword_rules(terms: &[&[u32]], bias: f32) -> RowRules {
        RowRules {
            keywords: KeywordBias {
                terms: terms.iter().map(|t| term(t)).collect(),
                bias,
            },
            ..text_rules()
        }
    }

    #[test]
    fn a_common_first_token_is_only_continued() {
        let mut rules = keyword_rules(&[], 2.0);
        rules.keywords.terms = vec![KeywordTerm {
            tokens: vec![4, 5, 6],
            favour_start: false,
        }];
        assert_eq!(ruled(&rules, &[1])[4], 1.0, "not started for the model");
        assert_eq!(ruled(&rules, &[1, 4])[5], 3.0, "continued once it starts");
    }

    /// The logits after the rules, from flat ones.
    fn ruled(rules: &RowRules, sampled: &[u32]) -> Vec<f32> {
        let mut logits = vec![1.0f32; VOCAB];
        apply_rules(rules, sampled, &mut logits);
        logits
    }

    #[test]
    fn keywords_favour_the_first_token_of_each_term_once() {
        // Terms [4, 5] and [4, 6] share their first token: it gets the bias once.
        let rules = keyword_rules(&[&[4, 5], &[4, 6], &[7]], 2.0);
        let logits = ruled(&rules, &[1]);
        assert_eq!(logits[4], 3.0);
        assert_eq!(logits[7], 3.0);
        assert_eq!((logits[5], logits[6], logits[1]), (1.0, 1.0, 1.0));
    }

    #[test]
    fn a_begun_keyword_is_continued() {
        let rules = keyword_rules(&[&[4, 5, 6]], 2.0);
        // After 4 the bias moves to 5, after 4 5 to 6; elsewhere back to 4.
        assert_eq!(ruled(&rules, &[1, 4])[5], 3.0);
        assert_eq!(ruled(&rules, &[1, 4])[4], 1.0);
        assert_eq!(ruled(&rules, &[4, 5])[6], 3.0);
        assert_eq!(ruled(&rules, &[4, 5, 6])[4], 3.0);
    }

    #[test]
    fn keyword_bias_is_bounded_and_never_lifts_a_suppression() {
        // A huge bias is clamped; a suppressed keyword (no-speech) stays suppressed,
        // as does the blank at the first position.
        let rules = keyword_rules(&[&[8], &[NO_SPEECH], &[BLANK]], 1e9);
        let logits = ruled(&rules, &[]);
        assert_eq!(logits[8], 1.0 + MAX_KEYWORD_BIAS);
        assert_eq!(logits[NO_SPEECH as usize], NEG);
        assert_eq!(logits[BLANK as usize], NEG);
        // No terms, or no bias: the logits are the rules' alone.
        assert_eq!(
            ruled(&keyword_rules(&[], 2.0), &[1]),
            ruled(&text_rules(), &[1])
        );
        assert_eq!(
            ruled(&keyword_rules(&[&[8]], 0.0), &[1]),
            ruled(&text_rules(), &[1])
        );
        // Out-of-range ids are ignored.
        assert_eq!(
            ruled(&keyword_rules(&[&[1_000_000]], 2.0), &[1]).len(),
            VOCAB
        );
    }

    #[test]
    fn keywords_do_not_turn_a_timestamp_into_text() {
        // Timestamps are likelier than any text token: text is suppressed by the
        // timestamp rule before the bias, which then has nothing to lift.
        let rules = RowRules {
            keywords: KeywordBias {
                terms: vec![term(&[4])],
                bias: MAX_KEYWORD_BIAS,
            },
            ..timestamp_rules()
        };
        let mut logits: Vec<f32> = (0..VOCAB as u32)
            .map(|t| if t >= BEGIN { 5.0 } else { 0.0 })
            .collect();
        apply_rules(&rules, &[ts(1), 2], &mut logits);
        assert_eq!(logits[4], NEG);
    }
}
