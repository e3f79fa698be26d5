//! steno-engine: the one worker thread that owns MLX and the loaded models.
//!
//! [`Engine::start`] spawns the thread `steno-mlx`, which loads the default model
//! itself and reports readiness. Requests become jobs on a bounded queue: admission
//! counts jobs in flight and refuses past the limit (an overload error, never a wait
//! without bound). The worker feeds jobs to each model's [`Backend`], whose every
//! step advances the rows of all its jobs together, and answers each job on its own
//! oneshot (plus an optional channel of text deltas for streaming). A dropped
//! receiver (the client went away) or a passed deadline frees the job's rows before
//! the next step.

mod backend;
mod error;
pub mod metrics;
mod speakers;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use backend::{Backend, StepReport, WhisperBackend};
pub use error::{EngineError, LoadError, StartError};
pub use metrics::Metrics;
pub use speakers::DiarizeRequest;
pub use steno_speaker::SpeakerTurn;
use steno_whisper::runtime::MemoryStats;
use steno_whisper::{TokenLogprob, TranscribeOptions, Transcript};
use tokio::sync::{mpsc, oneshot, watch};

/// Loads a model by its configured id, on the worker thread.
pub type Loader = Box<dyn FnMut(&str) -> Result<Box<dyn Backend>, LoadError> + Send>;

/// Reads MLX's memory counters. They are process-wide (every model's arrays and the
/// cache together), so the engine reads them once, not through a model.
pub type MemoryReader = fn() -> MemoryStats;

/// A transcription request as the worker sees it: plain data, no MLX types.
pub struct Request {
    /// Configured model id (aliases already resolved).
    pub model: String,
    pub samples: Vec<f32>,
    pub options: TranscribeOptions,
    /// Compute per-token log-probabilities for the reply (and deltas).
    pub logprobs: bool,
    /// Stop and answer [`EngineError::DeadlineExceeded`] after this instant.
    pub deadline: Option<Instant>,
    /// Receives the text as segments finish (for SSE); the final reply still comes
    /// on the oneshot.
    pub deltas: Option<mpsc::UnboundedSender<Delta>>,
    /// Who speaks when, too: the turns come back in [`Reply::speakers`].
    pub diarize: Option<DiarizeRequest>,
    /// The request's span; the worker enters it while it works on the job.
    pub span: tracing::Span,
}

/// Text that finished since the last delta.
#[derive(Clone, Debug)]
pub struct Delta {
    pub text: String,
    pub logprobs: Option<Vec<TokenLogprob>>,
}

#[derive(Debug)]
pub struct Reply {
    pub transcript: Transcript,
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// The speaker turns, for a job that asked [`Request::diarize`].
    pub speakers: Option<Vec<SpeakerTurn>>,
    /// Seconds from admission until the worker took the job.
    pub queue_seconds: f64,
    /// Seconds on the worker.
    pub inference_seconds: f64,
}

/// A job's answer, still to come. Dropping it abandons the job (its rows are freed
/// before the worker's next step).
pub struct ReplyReceiver {
    reply: oneshot::Receiver<Result<Reply, EngineError>>,
    aborted: watch::Receiver<bool>,
}

impl ReplyReceiver {
    /// The worker's answer, or [`EngineError::Unavailable`] as soon as the engine is
    /// aborted (the drain deadline passed): that answer does not wait for the worker
    /// to finish the step it is in.
    pub async fn recv(self) -> Result<Reply, EngineError> {
        tokio::select! {
            biased;
            reply = self.reply => reply.unwrap_or(Err(EngineError::Unavailable)),
            () = wait_for_abort(self.aborted) => Err(EngineError::Unavailable),
        }
    }

    /// Resolves when the engine is aborted; a stream of deltas ends on it.
    pub fn aborted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        wait_for_abort(self.aborted.clone())
    }
}

async fn wait_for_abort(mut aborted: watch::Receiver<bool>) {
    if aborted.wait_for(|a| *a).await.is_err() {
        // The engine is gone without an abort: never resolve; the reply decides.
        std::future::pending::<()>().await;
    }
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The model loaded at start; must load for the engine to start.
    pub default_model: String,
    /// Jobs admitted (queued or running) before new ones get [`EngineError::Overloaded`].
    pub max_jobs: usize,
    /// Unload a model other than the default after this long without work.
    pub idle_unload_after: Option<Duration>,
    /// Bytes of MLX memory the resident models may take; idle non-default models
    /// are unloaded, least recently used first, to stay under it.
    pub max_model_bytes: Option<u64>,
    /// How the worker reads MLX memory (model sizes, the memory gauges); tests
    /// script it.
    pub read_memory: MemoryReader,
    /// Resemblyzer's `pretrained.pt`, read on the first diarizing job; `None`: such
    /// jobs fail with [`EngineError::ModelUnavailable`].
    pub speaker_encoder: Option<std::path::PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_model: String::new(),
            max_jobs: 64,
            idle_unload_after: None,
            max_model_bytes: None,
            read_memory: steno_whisper::runtime::memory,
            speaker_encoder: None,
        }
    }
}

/// A job's admission slot; freeing it (on drop) lets another job in.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Job {
    request: Request,
    reply: oneshot::Sender<Result<Reply, EngineError>>,
    admitted: Instant,
    _slot: Slot,
}

/// State the handle and the worker share.
struct Shared {
    healthy: AtomicBool,
    draining: AtomicBool,
    /// Set when the drain deadline passes: the worker fails what is left and exits,
    /// and the replies still awaited answer at once.
    aborted: watch::Sender<bool>,
    /// Set when the worker thread ends without an abort (a panic outside the guards
    /// around the backend): the engine can no longer answer anything.
    died: watch::Sender<bool>,
    in_flight: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

/// Handle to the worker; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    /// Unbounded: admission ([`Shared::in_flight`] against `max_jobs`) is the only
    /// bound, so a job admitted is never refused by a full channel.
    jobs: std_mpsc::Sender<Job>,
    shared: Arc<Shared>,
    max_jobs: usize,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Engine {
    /// Starts the worker, which loads `config.default_model` with `loader` before
    /// this returns (its error is returned as is).
    pub fn start(
        config: EngineConfig,
        metrics: Arc<Metrics>,
        loader: Loader,
    ) -> Result<Self, StartError> {
        let max_jobs = config.max_jobs.max(1);
        let (jobs, receiver) = std_mpsc::channel();
        let (ready, ready_rx) = std_mpsc::channel();
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            aborted: watch::Sender::new(false),
            died: watch::Sender::new(false),
            in_flight: Arc::new(AtomicUsize::new(0)),
            metrics,
        });
        let worker_shared = shared.clone();
        // MLX's default stream is per thread (its GPU queue on Metal, its CUDA stream on
        // NVIDIA): the worker creates it with its first MLX call, in `loader`, and is the
        // only thread that ever evaluates arrays, so it owns the device's stream.
        let worker = std::thread::Builder::new()
            .name("steno-mlx".into())
            .spawn(move || worker::run(config, loader, receiver, worker_shared, ready))
            .map_err(StartError::Spawn)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = worker.join();
                return Err(e.into());
            }
            Err(_) => return Err(StartError::WorkerDied),
        }
        Ok(Self {
            jobs,
            shared,
            max_jobs,
            worker: Arc::new(Mutex::new(Some(worker))),
        })
    }

    /// Serving: the worker runs and the engine is not draining.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst) && !self.shared.draining.load(Ordering::SeqCst)
    }

    /// Resolves when the worker thread has ended without being stopped: every job
    /// fails from then on, so the process should exit and let its supervisor restart
    /// it. Never resolves after [`Engine::abort`] or [`Engine::stop`].
    pub fn worker_died(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut died = self.shared.died.subscribe();
        async move {
            // The sender lives in `Shared`, which this future does not keep: a closed
            // channel means the engine itself is gone, which is no death to report.
            if died.wait_for(|d| *d).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Whether at most half of `max_jobs` is taken: optional work (a live session's
    /// interim pass) runs only then, so that it never takes the room files and committed
    /// turns need.
    pub fn has_spare_room(&self) -> bool {
        self.shared.in_flight.load(Ordering::SeqCst) * 2 < self.max_jobs
    }

    /// Queues a job; never waits for room.
    pub fn submit(&self, request: Request) -> Result<ReplyReceiver, EngineError> {
        if self.shared.draining.load(Ordering::SeqCst)
            || !self.shared.healthy.load(Ordering::SeqCst)
        {
            return Err(EngineError::Unavailable);
        }
        let admitted =
            self.shared
                .in_flight
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < self.max_jobs).then_some(n + 1)
                });
        if admitted.is_err() {
            self.shared
                .metrics
                .rejections
                .with_label_values(&["engine_full"])
                .inc();
            return Err(EngineError::Overloaded);
        }
        let slot = Slot(self.shared.in_flight.clone());
        let (reply, receiver) = oneshot::channel();
        let job = Job {
            request,
            reply,
            admitted: Instant::now(),
            _slot: slot,
        };
        // The channel has no bound of its own: the only refusal left is a worker gone.
        self.jobs.send(job).map_err(|_| EngineError::Unavailable)?;
        Ok(ReplyReceiver {
            reply: receiver,
            aborted: self.shared.aborted.subscribe(),
        })
    }

    /// Stops admitting (new jobs get [`EngineError::Unavailable`], health turns 503)
    /// while jobs already admitted finish.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// Stops without waiting: jobs still admitted fail with
    /// [`EngineError::Unavailable`] and the worker exits its loop.
    pub fn abort(&self) {
        self.begin_drain();
        self.shared.aborted.send_replace(true);
    }

    /// Aborts (see [`Engine::abort`]) and joins the worker if it leaves its loop
    /// within `join_within` (a step already under way cannot be interrupted).
    /// Returns whether the worker stopped; `false` means it is still inside an MLX
    /// evaluation, which the caller must not tear MLX down under.
    ///
    /// Graceful draining (wait for admitted work, then abort) is the server's
    /// `serve`; this is its last step.
    pub fn stop(&self, join_within: Duration) -> bool {
        self.abort();
        let Some(mut worker) = self.worker.lock().ok() else {
            return false;
        };
        let until = Instant::now() + join_within;
        while worker.as_ref().is_some_and(|h| !h.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        match worker.take_if(|h| h.is_finished()) {
            // A worker that died of a panic has stopped too (the panic was logged).
            Some(handle) => {
                let _ = handle.join();
                true
            }
            None => worker.is_none(),
        }
    }
}

#[cfg(test)]
mod tests;
