//! The loop on the `steno-mlx` thread: intake, cancellation, one batched step per
//! busy model, replies, model residency.

use std::any::Any;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use steno_whisper::{JobEvent, JobId, Transcript};

use crate::speakers::Speakers;
use crate::{
    Backend, Delta, EngineConfig, EngineError, Job, LoadError, Loader, Metrics, Reply, Shared,
    StepReport,
};

/// How long an idle worker sleeps before checking timers and flags.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// After a model fails to load, requests for it fail at once for this long instead of
/// reading its weights again: a load runs on this thread and stalls every other request,
/// and clients told to retry would otherwise repeat it once a second.
pub(crate) const RETRY_FAILED_LOAD_AFTER: Duration = Duration::from_secs(30);

struct Model {
    backend: Box<dyn Backend>,
    last_used: Instant,
    /// MLX memory the model took when it loaded.
    bytes: u64,
}

/// A job on the worker.
struct Running {
    job: Job,
    model: String,
    started: Instant,
    audio_seconds: f64,
    /// Segments already sent as deltas.
    streamed: usize,
    /// Its diarization, while windows are left to embed (taken when the job answers).
    diarization: Option<steno_speaker::Diarization>,
}

struct Worker {
    config: EngineConfig,
    loader: Loader,
    shared: Arc<Shared>,
    models: HashMap<String, Model>,
    jobs: HashMap<JobId, Running>,
    next_id: JobId,
    /// When each model that failed to load last failed.
    failed_loads: HashMap<String, Instant>,
    /// The voice encoder, for jobs that diarize.
    speakers: Speakers,
}

pub(crate) fn run(
    config: EngineConfig,
    loader: Loader,
    receiver: Receiver<Job>,
    shared: Arc<Shared>,
    ready: Sender<Result<(), LoadError>>,
) {
    let _exit = Exit(shared.clone());
    let speakers = Speakers::new(config.speaker_encoder.clone());
    let mut worker = Worker {
        config,
        loader,
        shared,
        models: HashMap::new(),
        jobs: HashMap::new(),
        next_id: 0,
        failed_loads: HashMap::new(),
        speakers,
    };
    let default = worker.config.default_model.clone();
    if let Err(e) = worker.load(&default) {
        let _ = ready.send(Err(e));
        return;
    }
    worker.set_healthy(true);
    let _ = ready.send(Ok(()));
    worker.serve(&receiver);
}

/// Runs when the worker thread leaves [`run`], returning or unwinding: the engine is
/// unhealthy from then on, and a worker that was not told to stop has died.
struct Exit(Arc<Shared>);

impl Drop for Exit {
    fn drop(&mut self) {
        self.0.healthy.store(false, Ordering::SeqCst);
        self.0.metrics.worker_healthy.set(0);
        if !*self.0.aborted.borrow() {
            tracing::error!("the worker thread ended unexpectedly; the engine is unavailable");
            self.0.died.send_replace(true);
        }
    }
}

/// The text of a caught panic, for the log.
fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

impl Worker {
    fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
        self.shared.metrics.worker_healthy.set(i64::from(healthy));
    }

    fn serve(&mut self, receiver: &Receiver<Job>) {
        loop {
            if *self.shared.aborted.borrow() {
                self.fail_all("shutdown");
                while let Ok(job) = receiver.try_recv() {
                    let _ = job.reply.send(Err(EngineError::Unavailable));
                }
                return;
            }
            // Busy: take whatever arrived without waiting. Idle: wait a little.
            let first = if self.jobs.is_empty() {
                match receiver.recv_timeout(IDLE_POLL) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                receiver.try_recv().ok()
            };
            for job in first
                .into_iter()
                .chain(std::iter::from_fn(|| receiver.try_recv().ok()))
            {
                self.intake(job);
            }
            self.drop_abandoned();
            self.step_models();
            self.advance_diarizations();
            self.unload_idle();
            self.update_gauges();
        }
    }

    /// Resolves the job's model (loading it if needed) and hands it to the backend.
    fn intake(&mut self, mut job: Job) {
        self.shared
            .metrics
            .queue_duration
            .observe(job.admitted.elapsed().as_secs_f64());
        if job.reply.is_closed() {
            // Its client left while it queued: its samples are freed here, not held
            // (or a model loaded) for a transcript nobody reads.
            self.count_cancellation("client_gone");
            return;
        }
        let model = job.request.model.clone();
        if let Err(e) = self.ensure_loaded(&model) {
            tracing::error!(model, error = %e, "loading a model failed");
            let _ = job.reply.send(Err(EngineError::ModelUnavailable(model)));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let span = job.request.span.clone();
        let _entered = span.enter();
        // The backend keeps the samples (each window's log-mel is computed from them)
        // and frees them with the job.
        let samples = std::mem::take(&mut job.request.samples);
        let diarization = match self.start_diarization(&mut job, &samples) {
            Ok(diarization) => diarization,
            Err(e) => {
                let _ = job.reply.send(Err(e));
                return;
            }
        };
        let options = std::mem::take(&mut job.request.options);
        let audio_seconds = steno_audio::seconds(samples.len());
        let entry = self.models.get_mut(&model).expect("model loaded above");
        entry.last_used = Instant::now();
        let submitted = catch_unwind(AssertUnwindSafe(|| {
            entry.backend.submit(id, samples, options)
        }));
        let submitted = match submitted {
            Ok(result) => result,
            Err(panic) => {
                // Only this job was being added: free whatever part of it the backend
                // kept, and fail it alone.
                let _ = catch_unwind(AssertUnwindSafe(|| entry.backend.cancel(id)));
                self.count_panic("submit", &*panic);
                let _ = job.reply.send(Err(internal()));
                return;
            }
        };
        match submitted {
            Ok(()) => {
                tracing::debug!(job = id, audio_seconds, "job admitted to the decoder");
                self.jobs.insert(
                    id,
                    Running {
                        job,
                        model,
                        started: Instant::now(),
                        audio_seconds,
                        streamed: 0,
                        diarization,
                    },
                );
            }
            Err(e) => {
                let _ = job.reply.send(Err(EngineError::InvalidRequest(e)));
            }
        }
    }

    /// The job's diarization (VAD, windows, known speakers embedded), if it asked for
    /// one; an error answers the job.
    fn start_diarization(
        &mut self,
        job: &mut Job,
        samples: &[f32],
    ) -> Result<Option<steno_speaker::Diarization>, EngineError> {
        let Some(request) = job.request.diarize.take() else {
            return Ok(None);
        };
        let started = Instant::now();
        let started_job = catch_unwind(AssertUnwindSafe(|| self.speakers.start(request, samples)));
        self.record_diarize(started);
        match started_job {
            Ok(result) => result.map(Some),
            Err(panic) => {
                self.count_panic("diarize", &*panic);
                Err(internal())
            }
        }
    }

    /// One pass of window embeddings for the first job whose diarization has windows
    /// left: diarization advances between decoder steps, a pass per round.
    fn advance_diarizations(&mut self) {
        let Some((&id, running)) = self
            .jobs
            .iter_mut()
            .find(|(_, r)| r.diarization.as_ref().is_some_and(|d| d.remaining() > 0))
        else {
            return;
        };
        let started = Instant::now();
        let job = running.diarization.as_mut().expect("found above");
        let speakers = &mut self.speakers;
        let advanced = catch_unwind(AssertUnwindSafe(|| speakers.advance(job)));
        self.record_diarize(started);
        let error = match advanced {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e,
            Err(panic) => {
                self.count_panic("diarize", &*panic);
                internal()
            }
        };
        if let Some(running) = self.jobs.remove(&id) {
            self.stop(id, &running, "diarization_failed");
            let _ = running.job.reply.send(Err(error));
        }
    }

    /// Counts diarization's seconds as its own stage.
    fn record_diarize(&self, started: Instant) {
        self.shared
            .metrics
            .stage_seconds
            .with_label_values(&["diarize"])
            .inc_by(started.elapsed().as_secs_f64());
    }

    /// Loads `model` unless it is resident, or failed to load less than
    /// [`RETRY_FAILED_LOAD_AFTER`] ago.
    fn ensure_loaded(&mut self, model: &str) -> Result<(), LoadError> {
        if self.models.contains_key(model) {
            return Ok(());
        }
        let failed_recently = self
            .failed_loads
            .get(model)
            .is_some_and(|at| at.elapsed() < RETRY_FAILED_LOAD_AFTER);
        if failed_recently {
            return Err(LoadError::FailedRecently);
        }
        match self.load(model) {
            Ok(()) => {
                self.failed_loads.remove(model);
                Ok(())
            }
            Err(e) => {
                self.failed_loads.insert(model.to_string(), Instant::now());
                Err(e)
            }
        }
    }

    /// Frees the rows of jobs whose client went away or whose deadline passed.
    fn drop_abandoned(&mut self) {
        let now = Instant::now();
        let stopped: Vec<(JobId, &'static str)> = self
            .jobs
            .iter()
            .filter_map(|(id, r)| {
                if r.job.reply.is_closed() {
                    Some((*id, "client_gone"))
                } else if r.job.request.deadline.is_some_and(|d| now >= d) {
                    Some((*id, "deadline"))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in stopped {
            if let Some(running) = self.jobs.remove(&id) {
                self.stop(id, &running, reason);
                tracing::info!(job = id, reason, "job stopped before its end");
                if reason == "deadline" {
                    let _ = running.job.reply.send(Err(EngineError::DeadlineExceeded));
                }
            }
        }
    }

    /// One scheduling round on every model that has work.
    fn step_models(&mut self) {
        let busy: Vec<String> = self
            .models
            .iter()
            .filter(|(_, m)| !m.backend.is_idle())
            .map(|(id, _)| id.clone())
            .collect();
        for model_id in busy {
            let Some(model) = self.models.get_mut(&model_id) else {
                continue;
            };
            model.last_used = Instant::now();
            let report = match catch_unwind(AssertUnwindSafe(|| model.backend.step())) {
                Ok(report) => report,
                Err(panic) => {
                    self.count_panic("step", &*panic);
                    self.reset_model(&model_id);
                    continue;
                }
            };
            self.record_step(&report);
            for (id, event) in report.events {
                let delivered =
                    catch_unwind(AssertUnwindSafe(|| self.deliver(&model_id, id, event)));
                if let Err(panic) = delivered {
                    // The job left `self.jobs` before its answer was built; dropping
                    // its reply during the unwind answered it 503.
                    self.count_panic("deliver", &*panic);
                }
            }
        }
    }

    /// Logs and counts a panic caught in a backend call.
    fn count_panic(&self, call: &str, payload: &(dyn Any + Send)) {
        tracing::error!(
            call,
            panic = panic_text(payload),
            "the model panicked; failing the jobs it held"
        );
        self.shared
            .metrics
            .worker_panics
            .with_label_values(&[call])
            .inc();
    }

    /// After a panic inside `model_id`'s backend: its jobs' rows are in an unknown
    /// state, so every job of that model fails (500) and the backend forgets them.
    /// A backend that cannot even reset is unloaded (it loads again on next use).
    fn reset_model(&mut self, model_id: &str) {
        let ids: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, r)| r.model == model_id)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(running) = self.jobs.remove(&id) {
                let _ = running.job.reply.send(Err(internal()));
            }
        }
        let Some(model) = self.models.get_mut(model_id) else {
            return;
        };
        if catch_unwind(AssertUnwindSafe(|| model.backend.reset())).is_err() {
            tracing::error!(
                model = model_id,
                "resetting the model panicked; unloading it"
            );
            self.models.remove(model_id);
        }
    }

    /// Counts a scheduling round: its decoder step (if any) and its stage seconds.
    fn record_step(&self, report: &StepReport) {
        let metrics = &self.shared.metrics;
        if report.rows > 0 {
            metrics.decoder_steps.inc();
            metrics.batch_rows.observe(report.rows as f64);
        }
        // The label `decode` is public (dashboards): it means the decoder's token
        // steps, not decoding the uploaded audio.
        let stages = [
            ("encode", report.stages.encode),
            ("decode", report.stages.decode),
            ("finish", report.stages.finish),
        ];
        for (stage, seconds) in stages {
            metrics
                .stage_seconds
                .with_label_values(&[stage])
                .inc_by(seconds.max(0.0));
        }
    }

    fn deliver(&mut self, model_id: &str, id: JobId, event: JobEvent) {
        let Some(backend) = self.models.get(model_id).map(|m| &m.backend) else {
            return;
        };
        match event {
            JobEvent::Segments(segments) => {
                if let Some(running) = self.jobs.get_mut(&id) {
                    send_deltas(backend.as_ref(), running, &segments);
                }
            }
            JobEvent::Done(transcript) => {
                let Some(mut running) = self.jobs.remove(&id) else {
                    return;
                };
                let started = Instant::now();
                let speakers = running
                    .diarization
                    .take()
                    .map(|d| self.speakers.finish(d))
                    .transpose();
                self.record_diarize(started);
                match speakers {
                    Ok(speakers) => {
                        let done = (transcript, speakers);
                        answer(backend.as_ref(), running, done, &self.shared.metrics);
                    }
                    Err(e) => {
                        let _ = running.job.reply.send(Err(e));
                    }
                }
            }
            JobEvent::Failed(e) => {
                let Some(running) = self.jobs.remove(&id) else {
                    return;
                };
                let span = running.job.request.span.clone();
                let _entered = span.enter();
                tracing::error!(job = id, error = %e, "job failed");
                let _ = running.job.reply.send(Err(internal()));
            }
        }
    }

    /// Fails every job on the worker with [`EngineError::Unavailable`].
    fn fail_all(&mut self, reason: &str) {
        let jobs: Vec<(JobId, Running)> = self.jobs.drain().collect();
        for (id, running) in jobs {
            self.stop(id, &running, reason);
            let _ = running.job.reply.send(Err(EngineError::Unavailable));
        }
    }

    /// Frees a job's rows in its model and counts why it stopped.
    fn stop(&mut self, id: JobId, running: &Running, reason: &str) {
        if let Some(model) = self.models.get_mut(&running.model) {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| model.backend.cancel(id))) {
                self.count_panic("cancel", &*panic);
                self.reset_model(&running.model);
            }
        }
        self.count_cancellation(reason);
    }

    fn count_cancellation(&self, reason: &str) {
        self.shared
            .metrics
            .cancellations
            .with_label_values(&[reason])
            .inc();
    }

    fn load(&mut self, model: &str) -> Result<(), LoadError> {
        let started = Instant::now();
        let before = self.active_memory();
        let result = (self.loader)(model);
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.shared
            .metrics
            .model_loads
            .with_label_values(&[model, outcome])
            .inc();
        let backend = result?;
        let bytes = self.active_memory().saturating_sub(before);
        tracing::info!(
            model,
            seconds = started.elapsed().as_secs_f64(),
            mib = bytes / (1 << 20),
            "model loaded"
        );
        self.models.insert(
            model.to_string(),
            Model {
                backend,
                last_used: Instant::now(),
                bytes,
            },
        );
        self.evict_over_budget(model);
        Ok(())
    }

    fn active_memory(&self) -> u64 {
        (self.config.read_memory)().active_bytes
    }

    /// Unloads idle models other than the default and `keep`, least recently used
    /// first, while the resident models exceed the memory budget.
    fn evict_over_budget(&mut self, keep: &str) {
        let Some(budget) = self.config.max_model_bytes else {
            return;
        };
        while self.models.values().map(|m| m.bytes).sum::<u64>() > budget {
            let victim = self
                .models
                .iter()
                .filter(|(id, m)| {
                    id.as_str() != keep && **id != self.config.default_model && m.backend.is_idle()
                })
                .min_by_key(|(_, m)| m.last_used)
                .map(|(id, _)| id.clone());
            match victim {
                Some(id) => {
                    tracing::info!(
                        model = id,
                        "unloading a model to stay under the memory budget"
                    );
                    self.models.remove(&id);
                }
                None => {
                    tracing::warn!(
                        "resident models exceed max_model_bytes; nothing idle to unload"
                    );
                    break;
                }
            }
        }
    }

    fn unload_idle(&mut self) {
        let Some(ttl) = self.config.idle_unload_after else {
            return;
        };
        let default = &self.config.default_model;
        self.models.retain(|id, m| {
            let keep = id == default || !m.backend.is_idle() || m.last_used.elapsed() < ttl;
            if !keep {
                tracing::info!(model = id, "unloading an idle model");
            }
            keep
        });
    }

    fn update_gauges(&self) {
        let metrics = &self.shared.metrics;
        let windows_waiting: usize = self
            .models
            .values()
            .map(|m| m.backend.waiting_windows())
            .sum();
        let in_flight = self.shared.in_flight.load(Ordering::SeqCst);
        // Admitted jobs the worker has not taken: the slot is held from admission,
        // the job is in `self.jobs` from intake.
        let jobs_queued = in_flight.saturating_sub(self.jobs.len());
        metrics.jobs_queued.set(jobs_queued as i64);
        metrics.windows_waiting.set(windows_waiting as i64);
        metrics
            .queue_depth
            .set((windows_waiting + jobs_queued) as i64);
        metrics.jobs_in_flight.set(in_flight as i64);
        metrics.models_loaded.set(self.models.len() as i64);
        let memory = (self.config.read_memory)();
        metrics.mlx_active_memory.set(memory.active_bytes as i64);
        metrics.mlx_peak_memory.set(memory.peak_bytes as i64);
        metrics.mlx_cache_memory.set(memory.cache_bytes as i64);
    }
}

/// What a job hit by a model failure is answered (500; the detail is in the log).
fn internal() -> EngineError {
    EngineError::Internal("the model failed on this request".into())
}

/// Answers a finished job: the segments not streamed yet, its log-probabilities
/// if asked, its timings; counts its audio and speed.
fn answer(
    backend: &dyn Backend,
    mut running: Running,
    (transcript, speakers): (Transcript, Option<Vec<steno_speaker::SpeakerTurn>>),
    metrics: &Metrics,
) {
    let remaining = transcript.segments.get(running.streamed..).unwrap_or(&[]);
    send_deltas(backend, &mut running, remaining);
    let logprobs = running
        .job
        .request
        .logprobs
        .then(|| backend.token_logprobs(&transcript.segments));
    let inference_seconds = running.started.elapsed().as_secs_f64();
    metrics.inference_duration.observe(inference_seconds);
    metrics.audio_seconds.inc_by(running.audio_seconds);
    if running.audio_seconds > 0.0 {
        metrics
            .real_time_factor
            .observe(inference_seconds / running.audio_seconds);
    }
    let queue_seconds = (running.started - running.job.admitted).as_secs_f64();
    let _ = running.job.reply.send(Ok(Reply {
        transcript,
        logprobs,
        speakers,
        queue_seconds,
        inference_seconds,
    }));
}

/// Sends `segments` as one delta to a streaming client.
fn send_deltas(backend: &dyn Backend, running: &mut Running, segments: &[steno_whisper::Segment]) {
    running.streamed += segments.len();
    let Some(deltas) = &running.job.request.deltas else {
        return;
    };
    let text: String = segments.iter().map(|s| s.text.as_str()).collect();
    if text.is_empty() {
        return;
    }
    let logprobs = running
        .job
        .request
        .logprobs
        .then(|| backend.token_logprobs(segments));
    let _ = deltas.send(Delta { text, logprobs });
}
