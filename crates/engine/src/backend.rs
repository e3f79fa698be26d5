//! The small synchronous interface between the worker loop and the model, so that
//! scheduling is testable with a scripted backend. [`WhisperBackend`] is the real one.

use steno_whisper::{
    JobEvent, JobId, Scheduler, Segment, StageTimings, TokenLogprob, TranscribeOptions, Whisper,
    WhisperError,
};

/// What one scheduling round did.
#[derive(Debug, Default)]
pub struct StepReport {
    pub events: Vec<(JobId, JobEvent)>,
    /// Rows advanced together by this round's decoder call (0 when none ran).
    pub rows: usize,
    /// Seconds this round spent per stage.
    pub stages: StageTimings,
}

/// One loaded model and the rows it is decoding. Lives on the worker thread only.
pub trait Backend {
    /// Adds a job, which keeps its samples (not a copy). An error is the request's
    /// fault (bad language, option, ...).
    fn submit(
        &mut self,
        id: JobId,
        samples: Vec<f32>,
        options: TranscribeOptions,
    ) -> Result<(), WhisperError>;
    /// Forgets a job and frees its rows before the next step.
    fn cancel(&mut self, id: JobId);
    /// Admits waiting windows and advances every active row by one token. Failures
    /// of a batch come back as `JobEvent::Failed` for the jobs in it.
    fn step(&mut self) -> StepReport;
    /// Forgets every job and its rows, keeping the weights. The worker calls it after
    /// a panic inside the backend: the jobs' state is unknown then, the weights are
    /// read-only and safe to keep.
    fn reset(&mut self);
    fn is_idle(&self) -> bool;
    /// Windows waiting for a decoder row.
    fn waiting_windows(&self) -> usize;
    fn token_logprobs(&self, segments: &[Segment]) -> Vec<TokenLogprob>;
}

pub struct WhisperBackend {
    whisper: Whisper,
    scheduler: Scheduler,
}

impl WhisperBackend {
    pub fn new(whisper: Whisper, max_batch_rows: usize) -> Self {
        Self {
            whisper,
            scheduler: Scheduler::new(max_batch_rows),
        }
    }
}

impl Backend for WhisperBackend {
    fn submit(
        &mut self,
        id: JobId,
        samples: Vec<f32>,
        options: TranscribeOptions,
    ) -> Result<(), WhisperError> {
        self.scheduler.submit(&self.whisper, id, samples, options)
    }

    fn cancel(&mut self, id: JobId) {
        if let Err(e) = self.scheduler.cancel(id) {
            tracing::error!(error = %e, job = id, "freeing the rows of a job failed");
        }
    }

    fn step(&mut self) -> StepReport {
        match self.scheduler.step(&self.whisper) {
            Ok(events) => StepReport {
                events,
                rows: self.scheduler.last_step_rows(),
                stages: self.scheduler.last_step_timings(),
            },
            // Bookkeeping broke for the whole batch: fail every job it holds,
            // start afresh, keep serving.
            Err(e) => {
                tracing::error!(error = %e, "scheduler step failed; failing its jobs");
                let ids = self.scheduler.job_ids();
                self.reset();
                StepReport {
                    events: ids
                        .into_iter()
                        .map(|id| {
                            let error = steno_whisper::WhisperError::Mlx(e.to_string());
                            (id, JobEvent::Failed(error))
                        })
                        .collect(),
                    rows: 0,
                    stages: StageTimings::default(),
                }
            }
        }
    }

    fn reset(&mut self) {
        self.scheduler = Scheduler::new(self.scheduler.max_rows());
    }

    fn is_idle(&self) -> bool {
        self.scheduler.is_idle()
    }

    fn waiting_windows(&self) -> usize {
        self.scheduler.waiting_windows()
    }

    fn token_logprobs(&self, segments: &[Segment]) -> Vec<TokenLogprob> {
        self.whisper.token_logprobs(segments)
    }
}
