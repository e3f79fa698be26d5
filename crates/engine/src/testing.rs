//! A scripted [`Backend`] for tests of the engine and of the server's lifecycle: no
//! model, no MLX. Enabled by the `test-support` feature (and in this crate's tests).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steno_whisper::runtime::MemoryStats;
use steno_whisper::{
    JobEvent, JobId, Segment, TokenLogprob, TranscribeOptions, Transcript, WhisperError,
};

use crate::{Backend, LoadError, Loader, StepReport};

/// What the scripted backends did, for assertions.
#[derive(Default, Debug)]
pub struct Log {
    /// Job ids advanced by each step.
    pub steps: Vec<Vec<JobId>>,
    pub cancelled: Vec<JobId>,
    pub loads: Vec<String>,
    /// Times a backend was reset after a panic.
    pub resets: usize,
}

/// How the scripted backends behave.
#[derive(Clone, Copy, Debug)]
pub struct Script {
    /// Rows one step advances.
    pub max_rows: usize,
    /// How long each step sleeps.
    pub step_time: Duration,
    /// A job needs one step per this many samples (at least one step).
    pub samples_per_step: usize,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            max_rows: 8,
            step_time: Duration::from_millis(1),
            samples_per_step: 1,
        }
    }
}

/// A job whose first sample is this makes [`Backend::submit`] panic.
pub const PANIC_IN_SUBMIT: f32 = 2.0;
/// A job whose first sample is this makes the first step it is in panic.
pub const PANIC_IN_STEP: f32 = 3.0;
/// A job whose first sample is this makes [`Backend::is_idle`] panic (from the round
/// after its submission), a call the worker does not guard: the worker thread dies.
pub const KILL_THE_WORKER: f32 = 4.0;

/// What a scripted job does, from its first sample.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Finish,
    /// Its batch fails (`JobEvent::Failed`): a negative first sample.
    FailBatch,
    PanicInStep,
    KillTheWorker,
}

impl Fate {
    fn of(samples: &[f32]) -> Self {
        match samples.first() {
            Some(&s) if s < 0.0 => Fate::FailBatch,
            Some(&PANIC_IN_STEP) => Fate::PanicInStep,
            Some(&KILL_THE_WORKER) => Fate::KillTheWorker,
            _ => Fate::Finish,
        }
    }
}

/// One row per job; a job needs `samples.len() / samples_per_step` steps; a job
/// whose first sample is negative makes the batch it is in fail, and the samples
/// [`PANIC_IN_SUBMIT`], [`PANIC_IN_STEP`] and [`KILL_THE_WORKER`] panic; the
/// language `xx` is refused at submission.
pub struct Scripted {
    script: Script,
    /// Jobs in arrival order with the steps each still needs and its fate.
    jobs: Vec<(JobId, usize, Fate)>,
    log: Arc<Mutex<Log>>,
}

impl Scripted {
    pub fn new(script: Script, log: Arc<Mutex<Log>>) -> Self {
        Self {
            script,
            jobs: Vec::new(),
            log,
        }
    }
}

/// A loader of scripted backends; the model id `broken` fails to load.
pub fn loader(script: Script) -> (Loader, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let loader_log = log.clone();
    let loader: Loader = Box::new(move |model: &str| {
        lock(&loader_log).loads.push(model.to_string());
        if model == "broken" {
            return Err(LoadError::Model {
                model: model.into(),
                location: "/nowhere".into(),
                error: Box::new(WhisperError::Tokenizer("corrupt weights".into())),
            });
        }
        Ok(Box::new(Scripted::new(script, loader_log.clone())) as Box<dyn Backend>)
    });
    (loader, log)
}

/// A memory reader that grows by 100 bytes per read, so every load "takes" memory.
pub fn growing_memory() -> MemoryStats {
    static ACTIVE: AtomicU64 = AtomicU64::new(0);
    MemoryStats {
        active_bytes: ACTIVE.fetch_add(100, Ordering::SeqCst) + 100,
        ..MemoryStats::default()
    }
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

impl Backend for Scripted {
    fn submit(
        &mut self,
        id: JobId,
        samples: Vec<f32>,
        options: TranscribeOptions,
    ) -> Result<(), WhisperError> {
        if let Some(language @ "xx") = options.language.as_deref() {
            return Err(WhisperError::UnsupportedLanguage(language.into()));
        }
        if samples.first() == Some(&PANIC_IN_SUBMIT) {
            panic!("scripted panic in submit");
        }
        let steps = (samples.len() / self.script.samples_per_step.max(1)).max(1);
        self.jobs.push((id, steps, Fate::of(&samples)));
        Ok(())
    }

    fn cancel(&mut self, id: JobId) {
        self.jobs.retain(|(j, _, _)| *j != id);
        lock(&self.log).cancelled.push(id);
    }

    fn step(&mut self) -> StepReport {
        std::thread::sleep(self.script.step_time);
        let rows = self.jobs.len().min(self.script.max_rows);
        let batch: Vec<JobId> = self.jobs[..rows].iter().map(|(id, _, _)| *id).collect();
        lock(&self.log).steps.push(batch.clone());
        let mut events = Vec::new();
        let fates: Vec<Fate> = self.jobs[..rows].iter().map(|(_, _, f)| *f).collect();
        if fates.contains(&Fate::PanicInStep) {
            panic!("scripted panic in step");
        }
        if fates.contains(&Fate::FailBatch) {
            for id in &batch {
                let error = WhisperError::Mlx("scripted failure".into());
                events.push((*id, JobEvent::Failed(error)));
            }
            self.jobs.drain(..rows);
            return StepReport {
                events,
                rows,
                ..StepReport::default()
            };
        }
        for job in &mut self.jobs[..rows] {
            job.1 = job.1.saturating_sub(1);
        }
        let (done, left): (Vec<_>, Vec<_>) = self.jobs.drain(..).partition(|(_, n, _)| *n == 0);
        self.jobs = left;
        for (id, _, _) in done {
            events.push((id, JobEvent::Segments(vec![segment(id, 0)])));
            events.push((id, JobEvent::Done(transcript(id))));
        }
        StepReport {
            events,
            rows,
            ..StepReport::default()
        }
    }

    fn reset(&mut self) {
        self.jobs.clear();
        lock(&self.log).resets += 1;
    }

    fn is_idle(&self) -> bool {
        if self.jobs.iter().any(|(_, _, f)| *f == Fate::KillTheWorker) {
            panic!("scripted panic outside the worker's guards");
        }
        self.jobs.is_empty()
    }

    fn waiting_windows(&self) -> usize {
        self.jobs.len().saturating_sub(self.script.max_rows)
    }

    fn token_logprobs(&self, segments: &[Segment]) -> Vec<TokenLogprob> {
        segments
            .iter()
            .map(|s| TokenLogprob {
                token: s.text.clone(),
                logprob: -0.5,
                bytes: s.text.clone().into_bytes(),
            })
            .collect()
    }
}

/// The one segment of job `job`: its text is ` job {job}`.
pub fn segment(job: JobId, id: usize) -> Segment {
    Segment {
        id,
        end: 1.0,
        text: format!(" job {job}"),
        ..Segment::default()
    }
}

pub fn transcript(job: JobId) -> Transcript {
    Transcript {
        text: format!(" job {job}"),
        language: "en".into(),
        language_probs: None,
        duration: 1.0,
        segments: vec![segment(job, 0)],
    }
}
