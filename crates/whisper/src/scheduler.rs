//! The [`Scheduler`]: many jobs decoded together, one batch of rows shared by all.
//!
//! Glossary, used the same way across the crate:
//! * *job*: one request or file ([`JobId`]);
//! * *window*: at most 30 s of one job's audio, `(seek, frames)` in mel frames;
//! * *row*: a window being decoded, one row of the decoder batch ([`RowId`]);
//! * *batch*: the rows advanced together by one decoder step ([`Batch`]);
//! * *step*: one decoder forward pass for all rows; [`Scheduler::step`] is one
//!   scheduling round around it.
//!
//! Each [`Scheduler::step`] admits waiting windows as rows (one batched encoder call,
//! language detection where needed), advances every row by one decoder step, and turns
//! finished rows into segments with the rules of [`crate::longform`]:
//! * [`Mode::Sequential`]: OpenAI's algorithm, one row per job at a time, the next
//!   window starting where the last one's text ended; many jobs still share every step.
//! * [`Mode::Parallel`]: the audio is cut up front at pauses into windows, decoded as
//!   parallel rows without conditioning on each other; the fastest way through one
//!   long file.
//!
//! Production drives a scheduler from the engine's `steno-mlx` worker thread, which
//! owns MLX; [`Whisper::transcribe_many`] drives one for tests and benchmarks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::decoding::{AudioFeatures, Batch, RowId, RowOutcome, RowRules, RowSpec};
use crate::error::{Result, WhisperError};
use crate::longform::{self, RowQuality, Span, Verdict};
use crate::mel::{frames_to_seconds, WindowedMel, N_FRAMES};
use crate::timing;
use crate::tokenizer::Task;
use crate::transcribe::{Mode, TranscribeOptions};
use crate::transcript::{Segment, Transcript};
use crate::Whisper;

pub type JobId = u64;

/// What a step tells the caller about a job.
#[derive(Debug)]
pub enum JobEvent {
    /// Segments finished, in order (sequential mode streams them as they come).
    Segments(Vec<Segment>),
    Done(Transcript),
    Failed(WhisperError),
}

/// Wall seconds one [`Scheduler::step`] spent per stage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimings {
    /// Admitting windows: log-mel slices, the encoder, language detection.
    pub encode: f64,
    /// The decoder step (forward pass, logit rules, sampling).
    pub decode: f64,
    /// Finishing rows: segments, fallback decisions, word alignment.
    pub finish: f64,
}

/// A window waiting for a row, or decoded by one.
struct PendingWindow {
    job: JobId,
    /// Index of the window within the job (parallel mode) or 0 (sequential).
    window: usize,
    /// First mel frame of the window and its number of content frames.
    seek: usize,
    frames: usize,
    /// Set on a temperature fallback: reuse the encoder output.
    features: Option<AudioFeatures>,
    /// Index into the job's temperatures.
    attempt: usize,
    /// Tokens the window's attempts sampled so far, against its fallback budget.
    spent_tokens: usize,
    prompt: Vec<u32>,
    /// Set while the window waits for its keyword pass: its plain pass, kept unless
    /// the keyword pass wins ([`crate::keywords`]).
    plain_pass: Option<Box<FinishedPass>>,
}

/// A finished row of a window, with what the fallback verdict reads from it.
struct FinishedPass {
    outcome: RowOutcome,
    quality: RowQuality,
    text: String,
}

struct Job {
    options: TranscribeOptions,
    /// The job's samples, freed with the job; each window's log-mel comes from them.
    mel: WindowedMel,
    content_frames: usize,
    language: Option<String>,
    language_probs: Option<Vec<(String, f32)>>,
    /// Known once the language is.
    rules: Option<Arc<RowRules>>,
    initial_prompt: Vec<u32>,
    /// What a keyword pass adds to its window's prompt; empty without keywords.
    keyword_prompt: Vec<u32>,
    // Sequential state: every token so far, the end of the last word, and where the
    // prompt of the next window starts in `all_tokens`.
    all_tokens: Vec<u32>,
    last_speech_timestamp: f64,
    prompt_reset_since: usize,
    // Parallel state: segments per window, windows not yet finished.
    window_segments: BTreeMap<usize, Vec<Segment>>,
    windows_left: usize,
    segments: Vec<Segment>,
    /// Rows of this job now in the batch, with the windows they decode.
    running: HashMap<RowId, PendingWindow>,
}

pub struct Scheduler {
    batch: Option<Batch>,
    jobs: HashMap<JobId, Job>,
    /// The job of every row in `batch` (each also in that job's `running`).
    row_jobs: HashMap<RowId, JobId>,
    waiting: VecDeque<PendingWindow>,
    max_rows: usize,
    next_row: RowId,
    last_step_rows: usize,
    last_step_timings: StageTimings,
    /// How long the last encoder pass took, and how long decoder steps have run since.
    encoder_share: EncoderShare,
}

/// Time-sharing between the encoder and the decoder steps. While rows are decoding, new
/// windows are encoded only once the decoder steps since the last encoder pass have run as
/// long as that pass did. Without it a stream of short jobs (a live session's interim passes)
/// puts an encoder pass before every decoder step, and the rows already running advance one
/// token per encoder pass: their replies would all wait until the stream stops.
#[derive(Debug, Default, Clone, Copy)]
struct EncoderShare {
    last_pass: f64,
    decoding_since: f64,
}

impl EncoderShare {
    fn may_encode(&self, rows_decoding: usize) -> bool {
        rows_decoding == 0 || self.decoding_since >= self.last_pass
    }
}

fn internal(what: &str) -> WhisperError {
    WhisperError::Internal(what.to_string())
}

impl Scheduler {
    /// A scheduler whose batch holds at most `max_rows` rows (at least one).
    pub fn new(max_rows: usize) -> Self {
        Self {
            batch: None,
            jobs: HashMap::new(),
            row_jobs: HashMap::new(),
            waiting: VecDeque::new(),
            max_rows: max_rows.max(1),
            next_row: 0,
            last_step_rows: 0,
            last_step_timings: StageTimings::default(),
            encoder_share: EncoderShare::default(),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Windows waiting for a row.
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

    /// Rows the last [`Scheduler::step`] advanced in its decoder step (0: none ran).
    pub fn last_step_rows(&self) -> usize {
        self.last_step_rows
    }

    /// Adds a job: 16 kHz mono samples (kept until the job ends) and options.
    pub fn submit(
        &mut self,
        whisper: &Whisper,
        id: JobId,
        samples: Vec<f32>,
        options: TranscribeOptions,
    ) -> Result<()> {
        let job = Job::new(whisper, samples, options)?;
        let windows =
            longform::initial_windows(job.mel.samples(), job.options.mode, job.content_frames);
        let prompt = job.initial_prompt.clone();
        let content_frames = job.content_frames;
        self.jobs.insert(
            id,
            Job {
                windows_left: windows.len(),
                ..job
            },
        );
        if content_frames == 0 {
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
                spent_tokens: 0,
                prompt: prompt.clone(),
                plain_pass: None,
            });
        }
        Ok(())
    }

    /// Forgets a job and frees its rows.
    pub fn cancel(&mut self, id: JobId) -> Result<()> {
        if let Some(job) = self.jobs.remove(&id) {
            for row in job.running.keys() {
                self.row_jobs.remove(row);
            }
            if let Some(batch) = &mut self.batch {
                for row in job.running.keys() {
                    batch.cancel(*row)?;
                }
            }
        }
        self.waiting.retain(|w| w.job != id);
        Ok(())
    }

    /// One scheduling round: finishes jobs with nothing left to decode (those with no
    /// audio too), admits waiting windows, runs one decoder step and finishes the rows
    /// that ended. A failure of the encoder or the decoder fails the jobs involved (as
    /// events), not the round; an `Err` means the scheduler's own state broke.
    pub fn step(&mut self, whisper: &Whisper) -> Result<Vec<(JobId, JobEvent)>> {
        let mut events = Vec::new();
        self.finish_idle_jobs(whisper, &mut events);
        let started = Instant::now();
        let mut finished = self.admit_waiting(whisper, &mut events)?;
        let admitted_at = Instant::now();
        finished.extend(self.decode_step(whisper, &mut events)?);
        let decoded_at = Instant::now();
        self.encoder_share.decoding_since += (decoded_at - admitted_at).as_secs_f64();
        for outcome in finished {
            self.finish_row(whisper, outcome, &mut events)?;
        }
        self.last_step_timings = StageTimings {
            encode: (admitted_at - started).as_secs_f64(),
            decode: (decoded_at - admitted_at).as_secs_f64(),
            finish: decoded_at.elapsed().as_secs_f64(),
        };
        Ok(events)
    }

    /// Jobs with no audio, or whose windows all finished.
    fn finish_idle_jobs(&mut self, whisper: &Whisper, events: &mut Vec<(JobId, JobEvent)>) {
        let idle: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.content_frames == 0 || (j.windows_left == 0 && j.running.is_empty()))
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            if let Some(job) = self.jobs.remove(&id) {
                events.push((id, JobEvent::Done(job.finish(whisper))));
            }
        }
    }

    /// Admits as many waiting windows as the batch has room for. Returns the rows
    /// that finished at once (EOT first).
    fn admit_waiting(
        &mut self,
        whisper: &Whisper,
        events: &mut Vec<(JobId, JobEvent)>,
    ) -> Result<Vec<RowOutcome>> {
        let rows = self
            .batch
            .get_or_insert_with(|| Batch::new(&whisper.model))
            .len();
        let n = self.windows_fitting(self.max_rows.saturating_sub(rows));
        if n == 0 || !self.encoder_share.may_encode(rows) {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let windows: Vec<PendingWindow> = self.waiting.drain(..n).collect();
        let jobs = distinct(windows.iter().map(|w| w.job));
        let admitted = self.admit(whisper, windows);
        self.encoder_share = EncoderShare {
            last_pass: started.elapsed().as_secs_f64(),
            decoding_since: 0.0,
        };
        match admitted {
            Ok(outcomes) => Ok(outcomes),
            Err(error) => self.fail_jobs(&jobs, &error, events),
        }
    }

    /// How many of the first waiting windows fit in `room` rows, a window taking its
    /// search's rows (a beam search one per beam).
    fn windows_fitting(&self, room: usize) -> usize {
        let mut used = 0;
        self.waiting
            .iter()
            .take_while(|w| {
                used += self.window_rows(w);
                used <= room
            })
            .count()
    }

    /// Rows a waiting window's attempt takes (1 for a window of no known job).
    fn window_rows(&self, window: &PendingWindow) -> usize {
        self.jobs
            .get(&window.job)
            .and_then(|job| {
                let t = job.options.temperatures.get(window.attempt)?;
                Some(job.options.search(*t).narrowed(self.max_rows).rows())
            })
            .unwrap_or(1)
    }

    /// One decoder step for every row in the batch. Returns the rows that finished.
    fn decode_step(
        &mut self,
        whisper: &Whisper,
        events: &mut Vec<(JobId, JobEvent)>,
    ) -> Result<Vec<RowOutcome>> {
        let batch = self.batch.get_or_insert_with(|| Batch::new(&whisper.model));
        self.last_step_rows = batch.len();
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        match batch.step(&whisper.model) {
            Ok(outcomes) => Ok(outcomes),
            Err(error) => {
                // A failed decoder step fails the jobs of the rows in the batch, not the
                // worker; the batch's caches are gone with it.
                let rows: Vec<RowId> = batch.ids().collect();
                self.batch = None;
                let jobs = distinct(rows.iter().filter_map(|r| self.row_jobs.get(r).copied()));
                self.fail_jobs(&jobs, &error, events)
            }
        }
    }

    /// Cancels `jobs` with a `Failed` event each. Returns no finished rows, for the
    /// callers' convenience.
    fn fail_jobs(
        &mut self,
        jobs: &[JobId],
        error: &WhisperError,
        events: &mut Vec<(JobId, JobEvent)>,
    ) -> Result<Vec<RowOutcome>> {
        for &id in jobs {
            self.cancel(id)?;
            events.push((id, JobEvent::Failed(WhisperError::Mlx(error.to_string()))));
        }
        Ok(Vec::new())
    }

    /// Encodes the windows that need it in one call, detects languages where needed,
    /// and adds the rows to the batch.
    fn admit(
        &mut self,
        whisper: &Whisper,
        mut windows: Vec<PendingWindow>,
    ) -> Result<Vec<RowOutcome>> {
        self.encode_windows(whisper, &mut windows)?;
        self.detect_languages(whisper, &windows)?;
        let mut specs = Vec::with_capacity(windows.len());
        for window in windows {
            specs.push(self.start_row(whisper, window)?);
        }
        let batch = self.batch.get_or_insert_with(|| Batch::new(&whisper.model));
        batch.admit(&whisper.model, specs)
    }

    /// Encoder output for the windows without one (all but temperature fallbacks).
    fn encode_windows(&self, whisper: &Whisper, windows: &mut [PendingWindow]) -> Result<()> {
        let mut mels = Vec::new();
        for w in windows.iter().filter(|w| w.features.is_none()) {
            let job = self.job(w.job)?;
            let mut frames = job.mel.window(w.seek, w.frames);
            frames.resize(N_FRAMES * job.mel.n_mels(), 0.0);
            mels.push(frames);
        }
        if mels.is_empty() {
            return Ok(());
        }
        let mut features = whisper.encode(&mels)?.into_iter();
        for w in windows.iter_mut().filter(|w| w.features.is_none()) {
            w.features = features.next();
        }
        Ok(())
    }

    /// Language detection on the first window of the jobs that need it; sets their
    /// language and logit rules.
    fn detect_languages(&mut self, whisper: &Whisper, windows: &[PendingWindow]) -> Result<()> {
        let mut detect = Vec::new();
        for w in windows {
            if self.job(w.job)?.language.is_none() {
                detect.push(w);
            }
        }
        if detect.is_empty() {
            return Ok(());
        }
        let features = detect
            .iter()
            .map(|w| {
                w.features
                    .as_ref()
                    .ok_or_else(|| internal("a window not encoded"))
            })
            .collect::<Result<Vec<&AudioFeatures>>>()?;
        let probs = whisper.detect_language(&features)?;
        for (w, probs) in detect.iter().zip(probs) {
            let job = self.job_mut(w.job)?;
            // Two windows of one job may be detected together: the first one decides.
            if job.language.is_none() {
                let probs = crate::transcribe::expected_languages(probs, &job.options.languages);
                let (code, _) = probs
                    .first()
                    .ok_or_else(|| internal("language detection without languages"))?;
                job.language = Some(code.clone());
                job.language_probs = Some(probs);
                job.rules = Some(Arc::new(whisper.row_rules(&job.options)?));
            }
        }
        Ok(())
    }

    /// Gives an encoded window a row: its initial tokens, temperature, seed and rules.
    fn start_row(&mut self, whisper: &Whisper, window: PendingWindow) -> Result<RowSpec> {
        let job = self
            .jobs
            .get_mut(&window.job)
            .ok_or_else(|| internal("a window of no job"))?;
        let temperature = *job
            .options
            .temperatures
            .get(window.attempt)
            .ok_or_else(|| internal("an attempt past the last temperature"))?;
        let tk = &whisper.tokenizer;
        let sot_sequence = tk.sot_sequence(job.language.as_deref(), job.options.task)?;
        let keyword_pass = window.plain_pass.is_some();
        let prompt = match keyword_pass {
            true => [window.prompt.as_slice(), &job.keyword_prompt].concat(),
            false => window.prompt.clone(),
        };
        let (initial_tokens, sot_index) = longform::row_initial_tokens(
            &prompt,
            tk.sot_prev(),
            &sot_sequence,
            job.options.without_timestamps.then(|| tk.no_timestamps()),
            whisper.model.dims.n_text_ctx,
        );
        let rules = job
            .rules
            .clone()
            .ok_or_else(|| internal("a row before its job's language is known"))?;
        let rules = pass_rules(rules, keyword_pass);
        let features = window
            .features
            .clone()
            .ok_or_else(|| internal("a row of a window not encoded"))?;
        let id = self.next_row;
        self.next_row += 1;
        let max_tokens = longform::row_token_budget(window.frames, rules.sample_len);
        let spec = RowSpec {
            id,
            initial_tokens,
            sot_index,
            temperature,
            seed: longform::row_seed(job.options.seed, window.seek, window.attempt),
            rules,
            features,
            max_tokens,
            search: job.options.search(temperature).narrowed(self.max_rows),
        };
        self.row_jobs.insert(id, window.job);
        job.running.insert(id, window);
        Ok(spec)
    }

    /// Turns a finished row into segments, or queues its window again at the next
    /// temperature; queues the job's next window and finishes the job when it has
    /// nothing left.
    fn finish_row(
        &mut self,
        whisper: &Whisper,
        mut outcome: RowOutcome,
        events: &mut Vec<(JobId, JobEvent)>,
    ) -> Result<()> {
        let Some(job_id) = self.row_jobs.remove(&outcome.id) else {
            return Ok(()); // its job was cancelled or failed meanwhile
        };
        let job = self.job_mut(job_id)?;
        let mut window = job
            .running
            .remove(&outcome.id)
            .ok_or_else(|| internal("a finished row its job does not run"))?;
        let text = whisper
            .tokenizer
            .decode(&text_tokens(whisper, &outcome.tokens));
        let quality = RowQuality {
            compression_ratio: longform::compression_ratio(&text),
            avg_logprob: outcome.avg_logprob,
            no_speech_prob: outcome.no_speech_prob,
            degenerate: outcome.degenerate,
        };
        window.spent_tokens += outcome.tokens.len();
        let budget_spent = longform::window_budget_spent(window.frames, window.spent_tokens);
        let mut verdict = longform::verdict(&job.options, quality, window.attempt, budget_spent);
        let mut quality = quality;
        let pass = FinishedPass {
            outcome,
            quality,
            text,
        };
        match choose_pass(whisper, job, &mut window, pass, verdict) {
            None => {
                self.waiting.push_front(window);
                return Ok(());
            }
            Some((pass, chosen)) => {
                (outcome, quality, verdict) = (pass.outcome, pass.quality, chosen)
            }
        }
        tracing::debug!(
            job = job_id,
            seek = window.seek,
            attempt = window.attempt,
            tokens = outcome.tokens.len(),
            completed = outcome.completed,
            ?quality,
            ?verdict,
            "row finished"
        );
        let (segments, advance) = match verdict {
            Verdict::Retry => {
                window.attempt += 1;
                self.waiting.push_front(window);
                return Ok(());
            }
            Verdict::Skip => (Vec::new(), window.frames),
            Verdict::Keep => job.window_segments(whisper, &window, &outcome, quality)?,
        };
        let next = match job.options.mode {
            Mode::Sequential => {
                job.after_sequential_window(job_id, &window, segments, advance, &outcome, events)
            }
            Mode::Parallel => job.after_region_window(job_id, &window, segments, advance, &outcome),
        };
        self.waiting.extend(next);
        self.finish_job_if_done(whisper, job_id, events);
        Ok(())
    }

    fn finish_job_if_done(
        &mut self,
        whisper: &Whisper,
        id: JobId,
        events: &mut Vec<(JobId, JobEvent)>,
    ) {
        let done = self
            .jobs
            .get(&id)
            .is_some_and(|j| j.windows_left == 0 && j.running.is_empty())
            && !self.waiting.iter().any(|w| w.job == id);
        if done {
            if let Some(job) = self.jobs.remove(&id) {
                events.push((id, JobEvent::Done(job.finish(whisper))));
            }
        }
    }

    fn job(&self, id: JobId) -> Result<&Job> {
        self.jobs
            .get(&id)
            .ok_or_else(|| internal("a window of no job"))
    }

    fn job_mut(&mut self, id: JobId) -> Result<&mut Job> {
        self.jobs
            .get_mut(&id)
            .ok_or_else(|| internal("a window of no job"))
    }
}

/// `ids` without repeats, in first-seen order.
/// A job with keywords: a kept plain pass that names no term sends its window back for
/// a keyword pass (`None`); a keyword pass is kept where it wins, else the plain pass is
/// ([`crate::keywords`]). Any other row goes on as it is.
fn choose_pass(
    whisper: &Whisper,
    job: &Job,
    window: &mut PendingWindow,
    pass: FinishedPass,
    verdict: Verdict,
) -> Option<(FinishedPass, Verdict)> {
    let keywords = &job.options.keywords;
    match window.plain_pass.take() {
        Some(plain) => {
            let wins = verdict == Verdict::Keep
                && crate::keywords::keyword_pass_wins(
                    keywords,
                    &weighed_words(whisper, &plain.outcome),
                    &pass.text,
                );
            Some(if wins {
                (pass, verdict)
            } else {
                (*plain, Verdict::Keep)
            })
        }
        None if verdict == Verdict::Keep
            && !job.keyword_prompt.is_empty()
            && !crate::keywords::mentions_any(keywords, &pass.text) =>
        {
            window.plain_pass = Some(Box::new(pass));
            None
        }
        None => Some((pass, verdict)),
    }
}

/// A row's words, each with the lowest log-probability of its tokens.
fn weighed_words(whisper: &Whisper, outcome: &RowOutcome) -> Vec<(String, f32)> {
    let eot = whisper.tokenizer.eot();
    let pieces: Vec<(String, f32)> = outcome
        .tokens
        .iter()
        .zip(&outcome.token_logprobs)
        .filter(|(&t, _)| t < eot)
        .map(|(&t, &logprob)| (whisper.tokenizer.decode(&[t]), logprob))
        .collect();
    crate::keywords::weighed_words(&pieces)
}

/// The rules of a row: a keyword pass's favour the job's keywords, a plain pass's are
/// those of a job without them.
fn pass_rules(rules: Arc<RowRules>, keyword_pass: bool) -> Arc<RowRules> {
    if keyword_pass || rules.keywords.terms.is_empty() {
        return rules;
    }
    Arc::new(RowRules {
        keywords: Default::default(),
        ..(*rules).clone()
    })
}

fn distinct(ids: impl IntoIterator<Item = JobId>) -> Vec<JobId> {
    let mut seen = Vec::new();
    for id in ids {
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    seen
}

/// The text tokens among `tokens` (timestamps and special tokens left out).
fn text_tokens(whisper: &Whisper, tokens: &[u32]) -> Vec<u32> {
    let eot = whisper.tokenizer.eot();
    tokens.iter().copied().filter(|&t| t < eot).collect()
}

impl Job {
    /// A job's state before its first window: the language (given, or English on an
    /// English-only model, else detected later), its logit rules once that is known, the
    /// samples its windows' log-mel comes from and the encoded initial prompt.
    fn new(whisper: &Whisper, samples: Vec<f32>, mut options: TranscribeOptions) -> Result<Self> {
        if options.temperatures.is_empty() {
            return Err(WhisperError::InvalidOption(
                "at least one temperature is required".into(),
            ));
        }
        options.check_search()?;
        options.languages = options
            .languages
            .iter()
            .map(|l| whisper.resolve_language(l))
            .collect::<Result<_>>()?;
        let language = match (&options.language, options.languages.as_slice()) {
            (Some(l), _) => Some(whisper.resolve_language(l)?),
            (None, _) if !whisper.tokenizer.is_multilingual() => Some("en".to_string()),
            // One language to expect needs no detection.
            (None, [only]) => Some(only.clone()),
            (None, _) => None,
        };
        // An English-only model has no translate token and writes only English:
        // translating to English is what its transcription already does.
        if options.task == Task::Translate && !whisper.tokenizer.is_multilingual() {
            options.task = Task::Transcribe;
        }
        let mel = whisper.windowed_mel(samples);
        let content_frames = mel.n_frames().saturating_sub(N_FRAMES);
        let initial_prompt = match options.conditioning_prompt() {
            Some(p) => whisper.tokenizer.encode(&format!(" {p}"))?,
            None => Vec::new(),
        };
        let keyword_prompt = match crate::keywords::keyword_prompt(&options.keywords) {
            Some(p) => whisper.tokenizer.encode(&format!(" {p}"))?,
            None => Vec::new(),
        };
        let rules = match language {
            Some(_) => Some(Arc::new(whisper.row_rules(&options)?)),
            None => None,
        };
        Ok(Job {
            options,
            mel,
            content_frames,
            language,
            language_probs: None,
            rules,
            all_tokens: initial_prompt.clone(),
            last_speech_timestamp: 0.0,
            initial_prompt,
            keyword_prompt,
            prompt_reset_since: 0,
            window_segments: BTreeMap::new(),
            windows_left: 0,
            segments: Vec::new(),
            running: HashMap::new(),
        })
    }

    /// The segments of a kept row and how far its window's `seek` advances: split at
    /// timestamps, clamped to the window, with word timings when asked for.
    fn window_segments(
        &mut self,
        whisper: &Whisper,
        window: &PendingWindow,
        outcome: &RowOutcome,
        quality: RowQuality,
    ) -> Result<(Vec<Segment>, usize)> {
        let timestamp_begin = whisper.tokenizer.timestamp_begin();
        let time_offset = frames_to_seconds(window.seek);
        let window_end = time_offset + frames_to_seconds(window.frames);
        let split = longform::split_at_timestamps(
            &outcome.tokens,
            timestamp_begin,
            window.frames,
            time_offset,
        );
        let mut spans = split.spans;
        longform::clamp_to_window(&mut spans, time_offset, window_end);
        let mut segments: Vec<Segment> = spans
            .iter()
            .map(|span| {
                segment(
                    whisper,
                    outcome,
                    span,
                    window.seek,
                    quality.compression_ratio,
                )
            })
            .collect();
        let mut advance = split.advance;
        if self.options.word_timestamps && !segments.is_empty() {
            let last_word_end = self.add_words(whisper, window, &mut segments, time_offset)?;
            let single_ending =
                longform::ends_on_single_timestamp(&outcome.tokens, timestamp_begin);
            if let Some(resume) = longform::word_resume_advance(
                last_word_end,
                single_ending,
                time_offset,
                window.frames,
            ) {
                advance = resume;
            }
        }
        longform::blank_empty_segments(&mut segments);
        Ok((segments, advance))
    }

    /// Word timings for a window's segments (and segment times moved to their words).
    /// Returns the end of the last word.
    fn add_words(
        &mut self,
        whisper: &Whisper,
        window: &PendingWindow,
        segments: &mut [Segment],
        time_offset: f64,
    ) -> Result<Option<f64>> {
        let features = window
            .features
            .as_ref()
            .ok_or_else(|| internal("a decoded window not encoded"))?;
        let sot_sequence = whisper
            .tokenizer
            .sot_sequence(self.language.as_deref(), self.options.task)?;
        // Parallel windows finish out of order: each starts from its own offset.
        let mut window_last_speech = time_offset;
        let last_speech = match self.options.mode {
            Mode::Sequential => &mut self.last_speech_timestamp,
            Mode::Parallel => &mut window_last_speech,
        };
        let words = timing::add_word_timestamps(
            whisper,
            segments,
            features,
            &sot_sequence,
            time_offset,
            window.frames,
            last_speech,
        )?;
        for (segment, words) in segments.iter_mut().zip(words) {
            segment.words = Some(words);
        }
        Ok(segments
            .iter()
            .rev()
            .flat_map(|s| s.words.iter().flatten().map(|w| w.end))
            .next())
    }

    /// Sequential mode: records a window's segments (streamed as an event) and returns
    /// the next window, conditioned on the text so far unless the row was sampled hot.
    fn after_sequential_window(
        &mut self,
        job_id: JobId,
        window: &PendingWindow,
        mut segments: Vec<Segment>,
        advance: usize,
        outcome: &RowOutcome,
        events: &mut Vec<(JobId, JobEvent)>,
    ) -> Option<PendingWindow> {
        self.all_tokens
            .extend(segments.iter().flat_map(|s| s.tokens.iter().copied()));
        if !longform::conditions_next_window(&self.options, outcome.temperature) {
            self.prompt_reset_since = self.all_tokens.len();
        }
        let first_id = self.segments.len();
        for (i, s) in segments.iter_mut().enumerate() {
            s.id = first_id + i;
        }
        self.segments.extend(segments.iter().cloned());
        if !segments.is_empty() {
            events.push((job_id, JobEvent::Segments(segments)));
        }
        let Some((seek, frames)) =
            longform::next_sequential_window(window.seek, advance, self.content_frames)
        else {
            self.windows_left = 0;
            return None;
        };
        Some(PendingWindow {
            job: job_id,
            window: 0,
            seek,
            frames,
            features: None,
            attempt: 0,
            spent_tokens: 0,
            prompt: self.all_tokens[self.prompt_reset_since..].to_vec(),
            plain_pass: None,
        })
    }

    /// Parallel mode: records a window's segments and returns the continuation of its
    /// region, conditioned on what the region said so far, if enough is left.
    fn after_region_window(
        &mut self,
        job_id: JobId,
        window: &PendingWindow,
        segments: Vec<Segment>,
        advance: usize,
        outcome: &RowOutcome,
    ) -> Option<PendingWindow> {
        let said: Vec<u32> = segments
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        self.window_segments
            .entry(window.window)
            .or_default()
            .extend(segments);
        let Some((seek, frames)) =
            longform::region_continuation(window.seek, window.frames, advance)
        else {
            self.windows_left = self.windows_left.saturating_sub(1);
            return None;
        };
        let mut prompt = window.prompt.clone();
        if longform::conditions_next_window(&self.options, outcome.temperature) {
            prompt.extend(said);
        }
        Some(PendingWindow {
            job: job_id,
            window: window.window,
            seek,
            frames,
            features: None,
            attempt: 0,
            spent_tokens: 0,
            prompt,
            plain_pass: None,
        })
    }

    fn finish(mut self, whisper: &Whisper) -> Transcript {
        if self.options.mode == Mode::Parallel {
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
        Transcript {
            text: whisper.tokenizer.decode(&text_tokens(whisper, &tokens)),
            language: self.language.unwrap_or_else(|| "en".into()),
            language_probs: self.language_probs,
            duration: frames_to_seconds(self.content_frames),
            segments: self.segments,
        }
    }
}

/// A segment of a row's tokens.
fn segment(
    whisper: &Whisper,
    outcome: &RowOutcome,
    span: &Span,
    seek: usize,
    compression_ratio: f32,
) -> Segment {
    let tokens = outcome.tokens[span.tokens.clone()].to_vec();
    Segment {
        id: 0,
        seek,
        start: span.start,
        end: span.end,
        text: whisper.tokenizer.decode(&text_tokens(whisper, &tokens)),
        tokens,
        temperature: outcome.temperature,
        avg_logprob: outcome.avg_logprob,
        compression_ratio,
        no_speech_prob: outcome.no_speech_prob,
        token_logprobs: outcome.token_logprobs[span.tokens.clone()].to_vec(),
        words: None,
    }
}

#[cfg(test)]
mod tests {
    use super::EncoderShare;

    #[test]
    fn the_encoder_waits_until_decoding_has_had_its_share() {
        let share = EncoderShare {
            last_pass: 1.5,
            decoding_since: 0.4,
        };
        assert!(share.may_encode(0), "an empty batch never waits");
        assert!(
            !share.may_encode(3),
            "running rows get as long as the last encoder pass"
        );
        let even = EncoderShare {
            decoding_since: 1.5,
            ..share
        };
        assert!(even.may_encode(3));
    }
}
