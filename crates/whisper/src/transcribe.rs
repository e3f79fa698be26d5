//! Long-form transcription on top of the batched decoder, following OpenAI's
//! `transcribe()`: temperature fallback, no-speech skipping, segments from timestamp
//! tokens and conditioning on previous text.
//!
//! A [`Scheduler`] holds any number of jobs and drives them together: each call to
//! [`Scheduler::step`] admits waiting windows (one batched encoder call), advances
//! every active row by one decoder step, and turns finished rows into segments.
//! * `Sequential`: OpenAI's algorithm: one row per job at a time, the next window
//!   starting at the last timestamp; many jobs still share every decoder step.
//! * `Batched`: the audio is cut up front at pauses into ≤ 30 s windows, decoded as
//!   parallel rows without conditioning; the fastest way through one long file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use mlx_rs::Array;
use serde::Serialize;

use crate::decoding::{
    AudioFeatures, Batch, RowId, RowOutcome, RowRules, RowSpec, SpecialTokens, TimestampRules,
};
use crate::error::{Result, WhisperError};
use crate::mel::{self, Mel, HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE};
use crate::timing::{self, Word};
use crate::tokenizer::Task;
use crate::Whisper;
use steno_audio::vad::{self, VadParams};

/// Seconds per timestamp token.
pub const TIME_PRECISION: f64 = 0.02;
/// Batched mode: the least audio (mel frames, 10 ms each) left in a window's region
/// after the model stopped that is worth decoding again.
const MIN_CONTINUATION_FRAMES: usize = 50;
/// Mel frames per audio-context position (the encoder's conv2 has stride 2).
const INPUT_STRIDE: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sequential,
    Batched,
}

impl std::str::FromStr for Mode {
    type Err = WhisperError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sequential" => Ok(Mode::Sequential),
            "batched" => Ok(Mode::Batched),
            other => Err(WhisperError::InvalidOption(format!(
                "mode must be sequential or batched, not {other:?}"
            ))),
        }
    }
}

/// OpenAI `transcribe()` options, with its defaults.
#[derive(Clone, Debug)]
pub struct TranscribeOptions {
    pub task: Task,
    /// A language code; `None` detects it on the first window (multilingual models).
    pub language: Option<String>,
    pub temperatures: Vec<f32>,
    pub compression_ratio_threshold: Option<f32>,
    pub logprob_threshold: Option<f32>,
    pub no_speech_threshold: Option<f32>,
    pub condition_on_previous_text: bool,
    pub initial_prompt: Option<String>,
    pub without_timestamps: bool,
    pub max_initial_timestamp: Option<f32>,
    pub suppress_blank: bool,
    /// Token ids to suppress; `-1` adds the non-speech symbols (the default).
    pub suppress_tokens: Vec<i64>,
    pub mode: Mode,
    pub seed: u64,
    /// Word-level timestamps from cross-attention alignment.
    pub word_timestamps: bool,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            task: Task::Transcribe,
            language: None,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            logprob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            initial_prompt: None,
            without_timestamps: false,
            max_initial_timestamp: Some(1.0),
            suppress_blank: true,
            suppress_tokens: vec![-1],
            mode: Mode::Sequential,
            seed: 0,
            word_timestamps: false,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Segment {
    pub id: usize,
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f32,
    pub compression_ratio: f32,
    pub no_speech_prob: f32,
    /// Log-probability of each of `tokens`.
    #[serde(skip)]
    pub token_logprobs: Vec<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Transcript {
    pub text: String,
    pub language: String,
    /// Detected language probabilities, when the language was detected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_probs: Option<Vec<(String, f32)>>,
    pub duration: f64,
    pub segments: Vec<Segment>,
}

/// One text token with its log-probability (OpenAI's `include[]=logprobs` entry).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

pub type JobId = u64;

/// What a step tells the caller about a job.
#[derive(Debug)]
pub enum JobEvent {
    /// Segments finished, in order (sequential mode streams them as they come).
    Segments(Vec<Segment>),
    Done(Transcript),
    Failed(WhisperError),
}

/// A window waiting for a decoder row.
struct PendingWindow {
    job: JobId,
    /// Index of the window within the job (batched mode) or 0 (sequential).
    window: usize,
    /// First mel frame of the window and its number of content frames.
    seek: usize,
    frames: usize,
    /// Set on a temperature fallback: reuse the encoder output.
    features: Option<AudioFeatures>,
    attempt: usize,
    prompt: Vec<u32>,
}

struct Job {
    options: TranscribeOptions,
    mel: Mel,
    content_frames: usize,
    language: Option<String>,
    language_probs: Option<Vec<(String, f32)>>,
    rules: Option<Arc<RowRules>>,
    initial_prompt: Vec<u32>,
    // Sequential state.
    all_tokens: Vec<u32>,
    last_speech_timestamp: f64,
    prompt_reset_since: usize,
    // Batched state: segments per window, windows still running.
    window_segments: BTreeMap<usize, Vec<Segment>>,
    windows_left: usize,
    segments: Vec<Segment>,
    /// Rows of this job now in the decoder, with what they decode.
    running: HashMap<RowId, PendingWindow>,
}

pub struct Scheduler {
    batch: Option<Batch>,
    jobs: HashMap<JobId, Job>,
    waiting: VecDeque<PendingWindow>,
    max_rows: usize,
    next_row: RowId,
    last_step_rows: usize,
    last_step_timings: StageTimings,
}

/// Wall seconds one [`Scheduler::step`] spent per stage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimings {
    /// Admitting windows: log-mel slices, the encoder, language detection.
    pub encode: f64,
    /// Batched decoder steps (forward pass, logit rules, sampling).
    pub decode: f64,
    /// Finishing windows: segments, fallback decisions, word alignment.
    pub finish: f64,
}

impl Scheduler {
    pub fn new(max_rows: usize) -> Self {
        Self {
            batch: None,
            jobs: HashMap::new(),
            waiting: VecDeque::new(),
            max_rows: max_rows.max(1),
            next_row: 0,
            last_step_rows: 0,
            last_step_timings: StageTimings::default(),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn active_rows(&self) -> usize {
        self.batch.as_ref().map_or(0, Batch::len)
    }

    pub fn waiting_windows(&self) -> usize {
        self.waiting.len()
    }

    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// Every job not yet finished.
    pub fn job_ids(&self) -> Vec<JobId> {
        self.jobs.keys().copied().collect()
    }

    /// Seconds the last [`Scheduler::step`] spent per stage.
    pub fn last_step_timings(&self) -> StageTimings {
        self.last_step_timings
    }

    /// Rows the last [`Scheduler::step`] advanced in its decoder call (0: none ran).
    pub fn last_step_rows(&self) -> usize {
        self.last_step_rows
    }

    /// Adds a job: 16 kHz mono samples and options.
    pub fn submit(
        &mut self,
        whisper: &Whisper,
        id: JobId,
        samples: &[f32],
        options: TranscribeOptions,
    ) -> Result<()> {
        if options.temperatures.is_empty() {
            return Err(WhisperError::InvalidOption(
                "at least one temperature is required".into(),
            ));
        }
        let language = match &options.language {
            Some(l) => Some(whisper.resolve_language(l)?),
            None if !whisper.tokenizer.is_multilingual() => Some("en".to_string()),
            None => None,
        };
        // An English-only model has no translate token and writes only English:
        // translating to English is what its transcription already does.
        let mut options = options;
        if options.task == Task::Translate && !whisper.tokenizer.is_multilingual() {
            options.task = Task::Transcribe;
        }
        let mel = whisper.mel(samples);
        let content_frames = mel.n_frames.saturating_sub(N_FRAMES);
        let initial_prompt = match &options.initial_prompt {
            Some(p) if !p.trim().is_empty() => {
                whisper.tokenizer.encode(&format!(" {}", p.trim()))?
            }
            _ => Vec::new(),
        };
        let windows: Vec<(usize, usize)> = match options.mode {
            // Audio with no speech at all gets no window (empty transcript).
            _ if vad::is_silent(samples) => Vec::new(),
            Mode::Sequential => vec![(0, content_frames.min(N_FRAMES))],
            Mode::Batched => batched_windows(samples, content_frames),
        };
        let mut job = Job {
            options,
            mel,
            content_frames,
            language,
            language_probs: None,
            rules: None,
            all_tokens: initial_prompt.clone(),
            last_speech_timestamp: 0.0,
            initial_prompt,
            prompt_reset_since: 0,
            window_segments: BTreeMap::new(),
            windows_left: windows.len(),
            segments: Vec::new(),
            running: HashMap::new(),
        };
        if job.language.is_some() {
            job.rules = Some(Arc::new(whisper.row_rules(&job.options)?));
        }
        let prompt = job.initial_prompt.clone();
        self.jobs.insert(id, job);
        if content_frames == 0 || windows.is_empty() {
            return Ok(());
        }
        for (window, (seek, frames)) in windows.into_iter().enumerate() {
            self.waiting.push_back(PendingWindow {
                job: id,
                window,
                seek,
                frames,
                features: None,
                attempt: 0,
                prompt: prompt.clone(),
            });
        }
        Ok(())
    }

    /// Forgets a job and frees its rows.
    pub fn cancel(&mut self, id: JobId) -> Result<()> {
        if let Some(job) = self.jobs.remove(&id) {
            if let Some(batch) = &mut self.batch {
                for row in job.running.keys() {
                    batch.cancel(*row)?;
                }
            }
        }
        self.waiting.retain(|w| w.job != id);
        Ok(())
    }

    /// One scheduling round. Jobs with no audio finish here too.
    pub fn step(&mut self, whisper: &Whisper) -> Result<Vec<(JobId, JobEvent)>> {
        let mut events = Vec::new();
        let empty: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.content_frames == 0 || (j.windows_left == 0 && j.running.is_empty()))
            .map(|(id, _)| *id)
            .collect();
        for id in empty {
            if let Some(job) = self.jobs.remove(&id) {
                events.push((id, JobEvent::Done(job.finish(whisper))));
            }
        }
        let batch = self.batch.get_or_insert_with(|| Batch::new(&whisper.model));
        let room = self.max_rows.saturating_sub(batch.len());
        let admitted: Vec<PendingWindow> = {
            let n = room.min(self.waiting.len());
            self.waiting.drain(..n).collect()
        };
        let mut finished = Vec::new();
        let started = Instant::now();
        if !admitted.is_empty() {
            match self.admit(whisper, admitted) {
                Ok(outcomes) => finished.extend(outcomes),
                Err((jobs, error)) => {
                    for job in jobs {
                        self.fail_job(job, &error, &mut events)?;
                    }
                }
            }
        }
        let admitted_at = Instant::now();
        self.last_step_timings.encode = (admitted_at - started).as_secs_f64();
        let batch = self.batch.get_or_insert_with(|| Batch::new(&whisper.model));
        self.last_step_rows = batch.len();
        if !batch.is_empty() {
            match batch.step(&whisper.model) {
                Ok(outcomes) => finished.extend(outcomes),
                Err(error) => {
                    // A failed decoder step fails the rows in the batch, not the worker.
                    let ids: Vec<RowId> = batch.ids().collect();
                    self.batch = None;
                    let jobs: Vec<JobId> = self
                        .jobs
                        .iter()
                        .filter(|(_, j)| ids.iter().any(|r| j.running.contains_key(r)))
                        .map(|(id, _)| *id)
                        .collect();
                    for job in jobs {
                        self.fail_job(job, &error, &mut events)?;
                    }
                }
            }
        }
        let decoded_at = Instant::now();
        self.last_step_timings.decode = (decoded_at - admitted_at).as_secs_f64();
        for outcome in finished {
            self.finish_row(whisper, outcome, &mut events)?;
        }
        self.last_step_timings.finish = decoded_at.elapsed().as_secs_f64();
        Ok(events)
    }

    fn fail_job(
        &mut self,
        id: JobId,
        error: &WhisperError,
        events: &mut Vec<(JobId, JobEvent)>,
    ) -> Result<()> {
        self.cancel(id)?;
        events.push((id, JobEvent::Failed(WhisperError::Mlx(error.to_string()))));
        Ok(())
    }

    /// Encodes new windows in one call, detects languages where needed, and adds
    /// the rows to the batch. On error, returns the jobs involved.
    fn admit(
        &mut self,
        whisper: &Whisper,
        windows: Vec<PendingWindow>,
    ) -> std::result::Result<Vec<RowOutcome>, (Vec<JobId>, WhisperError)> {
        let jobs: Vec<JobId> = windows.iter().map(|w| w.job).collect();
        self.try_admit(whisper, windows).map_err(|e| (jobs, e))
    }

    fn try_admit(
        &mut self,
        whisper: &Whisper,
        mut windows: Vec<PendingWindow>,
    ) -> Result<Vec<RowOutcome>> {
        let to_encode: Vec<usize> = (0..windows.len())
            .filter(|&i| windows[i].features.is_none())
            .collect();
        if !to_encode.is_empty() {
            let mels: Vec<Vec<f32>> = to_encode
                .iter()
                .map(|&i| {
                    let w = &windows[i];
                    let job = &self.jobs[&w.job];
                    let mut frames = job.mel.window(w.seek, w.frames);
                    frames.resize(N_FRAMES * job.mel.n_mels, 0.0);
                    frames
                })
                .collect();
            let features = whisper.encode(&mels)?;
            for (&i, f) in to_encode.iter().zip(features) {
                windows[i].features = Some(f);
            }
        }
        // Language detection on the first window of jobs that need it.
        let detect: Vec<usize> = (0..windows.len())
            .filter(|&i| self.jobs[&windows[i].job].language.is_none())
            .collect();
        if !detect.is_empty() {
            let features: Vec<&AudioFeatures> = detect
                .iter()
                .map(|&i| windows[i].features.as_ref().unwrap())
                .collect();
            let probs = whisper.detect_language(&features)?;
            for (&i, probs) in detect.iter().zip(probs) {
                let job = self.jobs.get_mut(&windows[i].job).expect("job of a window");
                if job.language.is_none() {
                    job.language = Some(probs[0].0.clone());
                    job.language_probs = Some(probs);
                    job.rules = Some(Arc::new(whisper.row_rules(&job.options)?));
                }
            }
        }
        let mut specs = Vec::with_capacity(windows.len());
        for window in windows {
            let job = self.jobs.get_mut(&window.job).expect("job of a window");
            let temperature = job.options.temperatures[window.attempt];
            let language = job.language.clone();
            let mut initial = Vec::new();
            if !window.prompt.is_empty() {
                let keep = whisper.model.dims.n_text_ctx / 2 - 1;
                initial.push(whisper.tokenizer.sot_prev());
                initial.extend(&window.prompt[window.prompt.len().saturating_sub(keep)..]);
            }
            let sot_index = initial.len();
            initial.extend(
                whisper
                    .tokenizer
                    .sot_sequence(language.as_deref(), job.options.task)?,
            );
            if job.options.without_timestamps {
                initial.push(whisper.tokenizer.no_timestamps());
            }
            let id = self.next_row;
            self.next_row += 1;
            specs.push(RowSpec {
                id,
                initial_tokens: initial,
                sot_index,
                temperature,
                seed: job.options.seed ^ (window.seek as u64) << 8 ^ window.attempt as u64,
                rules: job.rules.clone().expect("rules once the language is known"),
                features: window.features.clone().expect("encoded above"),
            });
            job.running.insert(id, window);
        }
        let batch = self.batch.get_or_insert_with(|| Batch::new(&whisper.model));
        batch.admit(&whisper.model, specs)
    }

    fn finish_row(
        &mut self,
        whisper: &Whisper,
        outcome: RowOutcome,
        events: &mut Vec<(JobId, JobEvent)>,
    ) -> Result<()> {
        let Some((&job_id, _)) = self
            .jobs
            .iter()
            .find(|(_, j)| j.running.contains_key(&outcome.id))
        else {
            return Ok(()); // cancelled meanwhile
        };
        let job = self.jobs.get_mut(&job_id).expect("found above");
        let mut window = job.running.remove(&outcome.id).expect("found above");
        let text_tokens: Vec<u32> = outcome
            .tokens
            .iter()
            .copied()
            .filter(|&t| t < whisper.tokenizer.eot())
            .collect();
        let text = whisper.tokenizer.decode(&text_tokens);
        let compression = compression_ratio(&text);
        let o = &job.options;
        let mut needs_fallback = o
            .compression_ratio_threshold
            .is_some_and(|t| compression > t)
            || o.logprob_threshold.is_some_and(|t| outcome.avg_logprob < t);
        let silent = o
            .no_speech_threshold
            .is_some_and(|t| outcome.no_speech_prob > t)
            && o.logprob_threshold.is_some_and(|t| outcome.avg_logprob < t);
        if silent {
            needs_fallback = false;
        }
        if needs_fallback && window.attempt + 1 < o.temperatures.len() {
            window.attempt += 1;
            self.waiting.push_front(window);
            return Ok(());
        }
        let should_skip = o
            .no_speech_threshold
            .is_some_and(|t| outcome.no_speech_prob > t)
            && !o.logprob_threshold.is_some_and(|t| outcome.avg_logprob > t);
        let time_offset = window.seek as f64 * HOP_LENGTH as f64 / SAMPLE_RATE as f64;
        let (mut segments, advance) = if should_skip {
            (Vec::new(), window.frames)
        } else {
            split_segments(
                whisper,
                &outcome,
                compression,
                window.seek,
                window.frames,
                time_offset,
            )
        };
        // Timestamps past the window's audio (the model may name a time beyond a
        // short final window) are clamped to it, so segments stay on the timeline.
        let window_end =
            time_offset + window.frames as f64 * HOP_LENGTH as f64 / SAMPLE_RATE as f64;
        for segment in &mut segments {
            segment.start = segment.start.clamp(time_offset, window_end);
            segment.end = segment.end.clamp(segment.start, window_end);
        }
        let mut advance = advance;
        if job.options.word_timestamps && !segments.is_empty() {
            let features = window
                .features
                .as_ref()
                .expect("decoded windows are encoded");
            let sot_sequence = whisper
                .tokenizer
                .sot_sequence(job.language.as_deref(), job.options.task)?;
            // Batched windows finish out of order: each starts from its own offset.
            let mut window_last_speech = time_offset;
            let last_speech = match job.options.mode {
                Mode::Sequential => &mut job.last_speech_timestamp,
                Mode::Batched => &mut window_last_speech,
            };
            let words = timing::add_word_timestamps(
                whisper,
                &mut segments,
                features,
                &sot_sequence,
                time_offset,
                window.frames,
                last_speech,
            )?;
            for (segment, words) in segments.iter_mut().zip(words) {
                segment.words = Some(words);
            }
            // OpenAI: unless the window ended on a lone timestamp, resume after the
            // last word rather than the last timestamp.
            let last_word_end = segments
                .iter()
                .rev()
                .flat_map(|s| s.words.iter().flatten().map(|w| w.end))
                .next();
            if let (Some(end), false) = (
                last_word_end,
                ends_on_single_timestamp(whisper, &outcome.tokens),
            ) {
                if end > time_offset {
                    let frames =
                        ((end - time_offset) * (SAMPLE_RATE / HOP_LENGTH) as f64).round() as usize;
                    advance = frames.min(window.frames).max(1);
                }
            }
        }
        for segment in &mut segments {
            if segment.start == segment.end || segment.text.trim().is_empty() {
                segment.text.clear();
                segment.tokens.clear();
                segment.token_logprobs.clear();
                segment.words = segment.words.as_ref().map(|_| Vec::new());
            }
        }
        match job.options.mode {
            Mode::Sequential => {
                job.all_tokens
                    .extend(segments.iter().flat_map(|s| s.tokens.iter().copied()));
                if !job.options.condition_on_previous_text || outcome.temperature > 0.5 {
                    job.prompt_reset_since = job.all_tokens.len();
                }
                let first_id = job.segments.len();
                for (i, s) in segments.iter_mut().enumerate() {
                    s.id = first_id + i;
                }
                job.segments.extend(segments.iter().cloned());
                if !segments.is_empty() {
                    events.push((job_id, JobEvent::Segments(segments)));
                }
                let seek = window.seek + advance.max(1);
                if seek < job.content_frames {
                    let frames = (job.content_frames - seek).min(N_FRAMES);
                    let prompt = job.all_tokens[job.prompt_reset_since..].to_vec();
                    self.waiting.push_back(PendingWindow {
                        job: job_id,
                        window: 0,
                        seek,
                        frames,
                        features: None,
                        attempt: 0,
                        prompt,
                    });
                } else {
                    job.windows_left = 0;
                }
            }
            Mode::Batched => {
                // A window decodes its VAD region like OpenAI's loop decodes a file:
                // when the model stops at a timestamp before the region's end (its
                // last segment was incomplete), the rest of the region is decoded
                // from there, conditioned on what the region said so far.
                let region_end = window.seek + window.frames;
                let next = window.seek + advance.max(1);
                let said: Vec<u32> = segments
                    .iter()
                    .flat_map(|s| s.tokens.iter().copied())
                    .collect();
                job.window_segments
                    .entry(window.window)
                    .or_default()
                    .extend(segments);
                if next + MIN_CONTINUATION_FRAMES <= region_end {
                    let mut prompt = window.prompt.clone();
                    if job.options.condition_on_previous_text && outcome.temperature <= 0.5 {
                        prompt.extend(said);
                    }
                    self.waiting.push_back(PendingWindow {
                        job: job_id,
                        window: window.window,
                        seek: next,
                        frames: region_end - next,
                        features: None,
                        attempt: 0,
                        prompt,
                    });
                } else {
                    job.windows_left -= 1;
                }
            }
        }
        if job.windows_left == 0
            && job.running.is_empty()
            && !self.waiting.iter().any(|w| w.job == job_id)
        {
            let job = self.jobs.remove(&job_id).expect("present");
            events.push((job_id, JobEvent::Done(job.finish(whisper))));
        }
        Ok(())
    }
}

impl Job {
    fn finish(mut self, whisper: &Whisper) -> Transcript {
        if self.options.mode == Mode::Batched {
            self.segments = std::mem::take(&mut self.window_segments)
                .into_values()
                .flatten()
                .collect();
            for (i, s) in self.segments.iter_mut().enumerate() {
                s.id = i;
            }
        }
        let tokens: Vec<u32> = self
            .segments
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let text_tokens: Vec<u32> = tokens
            .into_iter()
            .filter(|&t| t < whisper.tokenizer.eot())
            .collect();
        Transcript {
            text: whisper.tokenizer.decode(&text_tokens),
            language: self.language.unwrap_or_else(|| "en".into()),
            language_probs: self.language_probs,
            duration: self.mel.n_frames.saturating_sub(N_FRAMES) as f64 * HOP_LENGTH as f64
                / SAMPLE_RATE as f64,
            segments: self.segments,
        }
    }
}

/// OpenAI's segment splitting on consecutive timestamp tokens. Returns the
/// segments and how many mel frames to advance `seek` by.
fn split_segments(
    whisper: &Whisper,
    outcome: &RowOutcome,
    compression_ratio: f32,
    seek: usize,
    frames: usize,
    time_offset: f64,
) -> (Vec<Segment>, usize) {
    let begin = whisper.tokenizer.timestamp_begin();
    let tokens = &outcome.tokens;
    let is_ts: Vec<bool> = tokens.iter().map(|&t| t >= begin).collect();
    let n = tokens.len();
    let single_timestamp_ending = ends_on_single_timestamp(whisper, tokens);
    let mut consecutive: Vec<usize> = (1..n).filter(|&i| is_ts[i - 1] && is_ts[i]).collect();
    let make = |range: std::ops::Range<usize>, start: f64, end: f64| {
        let seg_tokens: Vec<u32> = tokens[range.clone()].to_vec();
        let text_tokens: Vec<u32> = seg_tokens
            .iter()
            .copied()
            .filter(|&t| t < whisper.tokenizer.eot())
            .collect();
        Segment {
            id: 0,
            seek,
            start,
            end,
            text: whisper.tokenizer.decode(&text_tokens),
            tokens: seg_tokens,
            temperature: outcome.temperature,
            avg_logprob: outcome.avg_logprob,
            compression_ratio,
            no_speech_prob: outcome.no_speech_prob,
            token_logprobs: outcome.token_logprobs[range].to_vec(),
            words: None,
        }
    };
    let ts_seconds = |t: u32| (t - begin) as f64 * TIME_PRECISION;
    if !consecutive.is_empty() {
        if single_timestamp_ending {
            consecutive.push(n);
        }
        let mut segments = Vec::new();
        let mut last = 0;
        for &slice in &consecutive {
            let start = time_offset + ts_seconds(tokens[last]);
            let end = time_offset + ts_seconds(tokens[slice - 1]);
            segments.push(make(last..slice, start, end));
            last = slice;
        }
        let advance = if single_timestamp_ending {
            frames
        } else {
            (tokens[last - 1] - begin) as usize * INPUT_STRIDE
        };
        (segments, advance)
    } else {
        let mut duration = frames as f64 * HOP_LENGTH as f64 / SAMPLE_RATE as f64;
        if let Some(&last_ts) = tokens.iter().rev().find(|&&t| t >= begin) {
            if last_ts != begin {
                duration = ts_seconds(last_ts);
            }
        }
        (
            vec![make(0..n, time_offset, time_offset + duration)],
            frames,
        )
    }
}

/// The window's tokens end with a timestamp not paired with another.
fn ends_on_single_timestamp(whisper: &Whisper, tokens: &[u32]) -> bool {
    let begin = whisper.tokenizer.timestamp_begin();
    match tokens {
        [.., a, b] => *a < begin && *b >= begin,
        [b] => *b >= begin,
        [] => false,
    }
}

/// Windows of at most 30 s cut at pauses, as (first frame, frames).
fn batched_windows(samples: &[f32], content_frames: usize) -> Vec<(usize, usize)> {
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

/// zlib compression ratio of the text, as OpenAI computes it.
pub fn compression_ratio(text: &str) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = encoder.write_all(text.as_bytes());
    let compressed = encoder.finish().map(|c| c.len()).unwrap_or(1).max(1);
    text.len() as f32 / compressed as f32
}

impl Whisper {
    pub fn mel(&self, samples: &[f32]) -> Mel {
        mel::log_mel_spectrogram(samples, &self.mel_filters, N_SAMPLES)
    }

    /// Encodes frame-major mel windows `[N_FRAMES × n_mels]` in one batched call.
    pub fn encode(&self, mels: &[Vec<f32>]) -> Result<Vec<AudioFeatures>> {
        let n_mels = self.model.dims.n_mels as i32;
        let mut out = Vec::with_capacity(mels.len());
        for chunk in mels.chunks(self.encoder_batch()) {
            let flat: Vec<f32> = chunk.iter().flat_map(|m| m.iter().copied()).collect();
            let input = Array::from_slice(&flat, &[chunk.len() as i32, N_FRAMES as i32, n_mels])
                .as_dtype(self.model.dtype)?;
            let features = self.model.encoder.forward(&input)?;
            features.eval()?;
            for i in 0..chunk.len() as i32 {
                let index = Array::from_slice(&[i], &[1]);
                out.push(AudioFeatures(features.take_axis(index, 0)?));
            }
        }
        Ok(out)
    }

    /// Windows per encoder call. MLX's CPU backend gains nothing from batching the
    /// encoder (its batched matmuls are slower than 2-D ones) and a batch's attention
    /// scores are `batch × heads × 1500²` floats, so the CPU encodes one at a time;
    /// GPUs take several.
    fn encoder_batch(&self) -> usize {
        match mlx_rs::Device::default().get_type() {
            Ok(mlx_rs::DeviceType::Gpu) => 8,
            _ => 1,
        }
    }

    /// Language probabilities for each window, most likely first.
    pub fn detect_language(&self, features: &[&AudioFeatures]) -> Result<Vec<Vec<(String, f32)>>> {
        let stacked: Vec<&Array> = features.iter().map(|f| &f.0).collect();
        let stacked = mlx_rs::ops::concatenate(&stacked, 0)?;
        let n = features.len() as i32;
        let mut caches = self.model.decoder.new_caches(&stacked)?;
        let tokens = Array::from_slice(&vec![self.tokenizer.sot() as i32; n as usize], &[n, 1]);
        let positions = Array::from_slice(&vec![0i32; n as usize], &[n, 1]);
        let mask = mlx_rs::ops::zeros_dtype(&[n, 1, 1, 1], self.model.dtype)?;
        let hidden = self
            .model
            .decoder
            .forward(&tokens, &positions, &mask, &mut caches)?;
        let state = hidden.shape()[2];
        let logits = self
            .model
            .decoder
            .logits(&hidden.reshape(&[n, state])?)?
            .as_dtype(mlx_rs::Dtype::Float32)?;
        logits.eval()?;
        let logits = logits.as_slice::<f32>();
        let vocab = logits.len() / n as usize;
        let codes = self.tokenizer.all_language_codes();
        let tokens = self.tokenizer.all_language_tokens();
        Ok((0..n as usize)
            .map(|i| {
                let row = &logits[i * vocab..(i + 1) * vocab];
                let max = tokens
                    .iter()
                    .map(|&t| row[t as usize])
                    .fold(f32::NEG_INFINITY, f32::max);
                let total: f32 = tokens.iter().map(|&t| (row[t as usize] - max).exp()).sum();
                let mut probs: Vec<(String, f32)> = codes
                    .iter()
                    .zip(tokens)
                    .map(|(c, &t)| (c.to_string(), (row[t as usize] - max).exp() / total))
                    .collect();
                probs.sort_by(|a, b| b.1.total_cmp(&a.1));
                probs
            })
            .collect())
    }

    fn resolve_language(&self, language: &str) -> Result<String> {
        let code = crate::tokenizer::language_code(language)
            .ok_or_else(|| WhisperError::UnsupportedLanguage(language.to_string()))?;
        if !self.tokenizer.is_multilingual() && code != "en" {
            return Err(WhisperError::UnsupportedLanguage(format!(
                "{language} (this model is English-only)"
            )));
        }
        self.tokenizer.language_token(code)?;
        Ok(code.to_string())
    }

    pub fn row_rules(&self, options: &TranscribeOptions) -> Result<RowRules> {
        let tk = &self.tokenizer;
        let mut suppress: Vec<u32> = options
            .suppress_tokens
            .iter()
            .filter(|&&t| t >= 0)
            .map(|&t| t as u32)
            .collect();
        if options.suppress_tokens.contains(&-1) {
            suppress.extend(tk.non_speech_tokens());
        }
        suppress.extend([
            tk.transcribe(),
            tk.translate(),
            tk.sot(),
            tk.sot_prev(),
            tk.sot_lm(),
            tk.no_speech(),
        ]);
        suppress.sort_unstable();
        suppress.dedup();
        let timestamps = (!options.without_timestamps).then(|| TimestampRules {
            max_initial_timestamp_index: options
                .max_initial_timestamp
                .map(|s| (s as f64 / TIME_PRECISION).round() as u32),
        });
        Ok(RowRules {
            specials: SpecialTokens {
                eot: tk.eot(),
                no_speech: Some(tk.no_speech()),
                no_timestamps: tk.no_timestamps(),
                timestamp_begin: tk.timestamp_begin(),
                blank: tk.encode(" ")?,
            },
            suppress_blank: options.suppress_blank,
            suppress_tokens: suppress,
            timestamps,
            sample_len: self.model.dims.n_text_ctx / 2,
        })
    }

    /// The text tokens of `segments` with their log-probabilities, in order
    /// (timestamps and special tokens left out).
    pub fn token_logprobs(&self, segments: &[Segment]) -> Vec<TokenLogprob> {
        segments
            .iter()
            .flat_map(|s| s.tokens.iter().zip(&s.token_logprobs))
            .filter_map(|(&token, &logprob)| {
                let bytes = self.tokenizer.token_bytes(token)?.to_vec();
                Some(TokenLogprob {
                    token: String::from_utf8_lossy(&bytes).into_owned(),
                    logprob,
                    bytes,
                })
            })
            .collect()
    }

    /// Transcribes several files together through one scheduler (the CLI's path).
    pub fn transcribe_many(
        &self,
        inputs: &[(&[f32], TranscribeOptions)],
        max_rows: usize,
    ) -> Vec<Result<Transcript>> {
        let mut scheduler = Scheduler::new(max_rows);
        let mut results: Vec<Option<Result<Transcript>>> =
            (0..inputs.len()).map(|_| None).collect();
        for (i, (samples, options)) in inputs.iter().enumerate() {
            if let Err(e) = scheduler.submit(self, i as JobId, samples, options.clone()) {
                results[i] = Some(Err(e));
            }
        }
        while !scheduler.is_idle() {
            match scheduler.step(self) {
                Ok(events) => {
                    for (id, event) in events {
                        match event {
                            JobEvent::Done(t) => results[id as usize] = Some(Ok(t)),
                            JobEvent::Failed(e) => results[id as usize] = Some(Err(e)),
                            JobEvent::Segments(_) => {}
                        }
                    }
                }
                Err(e) => {
                    for r in results.iter_mut().filter(|r| r.is_none()) {
                        *r = Some(Err(WhisperError::Mlx(e.to_string())));
                    }
                    break;
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(WhisperError::Mlx("job did not finish".into()))))
            .collect()
    }

    pub fn transcribe(&self, samples: &[f32], options: TranscribeOptions) -> Result<Transcript> {
        self.transcribe_many(&[(samples, options)], 16)
            .pop()
            .expect("one result")
    }
}
