//! steno-engine: the one worker thread that owns MLX and the loaded model.
//!
//! [`Engine::start`] spawns the thread `steno-mlx`, which loads the model itself and
//! reports readiness. Requests become [`Job`]s on a bounded queue (`try_send`: a
//! full queue is an overload error, never a wait without bound). The worker feeds
//! them to the Whisper [`Scheduler`], whose every step advances the rows of all jobs
//! together, and answers each job on its own oneshot channel. A dropped receiver
//! (the client went away) cancels the job's rows before the next step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use steno_whisper::{JobEvent, JobId, Scheduler, TranscribeOptions, Transcript, Whisper};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the server is overloaded; retry later")]
    Overloaded,
    #[error("the engine is shutting down")]
    Unavailable,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("transcription failed: {0}")]
    Internal(String),
}

pub struct Job {
    pub samples: Vec<f32>,
    pub options: TranscribeOptions,
    pub reply: oneshot::Sender<Result<Transcript, EngineError>>,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Jobs waiting for the worker beyond those it is running.
    pub queue_capacity: usize,
    /// Rows (30 s windows) decoded together.
    pub max_batch_rows: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 64,
            max_batch_rows: 16,
        }
    }
}

/// Handle to the worker; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    healthy: Arc<AtomicBool>,
    worker: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Engine {
    /// Starts the worker; `load` runs on it and must succeed before this returns.
    pub fn start<F>(config: EngineConfig, load: F) -> Result<Self, String>
    where
        F: FnOnce() -> Result<Whisper, String> + Send + 'static,
    {
        let (jobs, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let (ready, ready_rx) = std::sync::mpsc::channel();
        let healthy = Arc::new(AtomicBool::new(false));
        let worker_healthy = healthy.clone();
        let worker = std::thread::Builder::new()
            .name("steno-mlx".into())
            .spawn(move || match load() {
                Ok(whisper) => {
                    worker_healthy.store(true, Ordering::SeqCst);
                    let _ = ready.send(Ok(()));
                    run(whisper, receiver, config.max_batch_rows);
                    worker_healthy.store(false, Ordering::SeqCst);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })
            .map_err(|e| format!("cannot start the worker thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the worker thread died while loading".to_string())??;
        Ok(Self {
            jobs,
            healthy,
            worker: Arc::new(std::sync::Mutex::new(Some(worker))),
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Queues a job; never waits for room.
    pub fn submit(
        &self,
        samples: Vec<f32>,
        options: TranscribeOptions,
    ) -> Result<oneshot::Receiver<Result<Transcript, EngineError>>, EngineError> {
        let (reply, receiver) = oneshot::channel();
        let job = Job {
            samples,
            options,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(receiver),
            Err(mpsc::error::TrySendError::Full(_)) => Err(EngineError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(EngineError::Unavailable),
        }
    }

    /// Stops accepting, lets the worker finish what it holds, and joins it.
    pub fn shutdown(self) {
        let handle = self.worker.lock().ok().and_then(|mut w| w.take());
        drop(self.jobs);
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn run(whisper: Whisper, mut receiver: mpsc::Receiver<Job>, max_rows: usize) {
    let mut scheduler = Scheduler::new(max_rows);
    let mut replies: std::collections::HashMap<
        JobId,
        oneshot::Sender<Result<Transcript, EngineError>>,
    > = std::collections::HashMap::new();
    let mut next_id: JobId = 0;
    let mut open = true;
    loop {
        // Idle: block for work. Busy: take whatever arrived without waiting.
        let incoming = if scheduler.is_idle() {
            if !open {
                return;
            }
            match receiver.blocking_recv() {
                Some(job) => Some(job),
                None => return,
            }
        } else {
            match receiver.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    None
                }
            }
        };
        if let Some(job) = incoming {
            let id = next_id;
            next_id += 1;
            match scheduler.submit(&whisper, id, &job.samples, job.options) {
                Ok(()) => {
                    replies.insert(id, job.reply);
                }
                Err(e) => {
                    let _ = job
                        .reply
                        .send(Err(EngineError::InvalidRequest(e.to_string())));
                }
            }
            continue; // admit everything that is waiting before stepping
        }
        // Cancellation: a client that went away frees its rows now.
        let gone: Vec<JobId> = replies
            .iter()
            .filter(|(_, r)| r.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            replies.remove(&id);
            if let Err(e) = scheduler.cancel(id) {
                tracing::error!(error = %e, "cancelling a job failed");
            }
        }
        match scheduler.step(&whisper) {
            Ok(events) => {
                for (id, event) in events {
                    let result = match event {
                        JobEvent::Done(t) => Ok(t),
                        JobEvent::Failed(e) => {
                            tracing::error!(error = %e, "job failed");
                            Err(EngineError::Internal(
                                "the model failed on this request".into(),
                            ))
                        }
                        JobEvent::Segments(_) => continue,
                    };
                    if let Some(reply) = replies.remove(&id) {
                        let _ = reply.send(result);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "scheduler step failed; failing its jobs");
                for (id, reply) in replies.drain() {
                    let _ = scheduler.cancel(id);
                    let _ = reply.send(Err(EngineError::Internal(
                        "the model failed on this request".into(),
                    )));
                }
            }
        }
    }
}
