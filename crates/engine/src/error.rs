//! The engine's errors: what a job's reply can be ([`EngineError`]), why a model
//! did not load ([`LoadError`]) and why the engine did not start ([`StartError`]).

use steno_whisper::WhisperError;

/// Why a job was refused or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Admission is full (`max_jobs` jobs in flight).
    #[error("the server is at capacity; retry later")]
    Overloaded,
    /// Draining, aborted or the worker is gone.
    #[error("the server is shutting down or not ready")]
    Unavailable,
    /// The request's own fault (unsupported language, invalid option, a prompt the
    /// tokenizer refuses): the model's error, as is, so callers map its variants.
    #[error(transparent)]
    InvalidRequest(WhisperError),
    /// The model the job names failed to load (now or less than 30 s ago).
    #[error("the model `{0}` is not available: it failed to load")]
    ModelUnavailable(String),
    /// The job's deadline passed before it finished.
    #[error("the request took longer than its deadline")]
    DeadlineExceeded,
    /// The model failed on the job; the detail is for the log.
    #[error("transcription failed: {0}")]
    Internal(String),
}

/// Why a model did not load. Loaders are given by the engine's user (the server's
/// reads weights with `steno_whisper`); the worker logs this and counts the outcome.
/// The whisper errors are boxed: they are large and this travels in every `Result`
/// of a load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading or building the model failed.
    #[error("loading model {model} from {location}: {error}")]
    Model {
        /// The configured id.
        model: String,
        /// Where its weights were read: a directory or a hub repo id.
        location: String,
        #[source]
        error: Box<WhisperError>,
    },
    /// An MLX runtime setting the loader applies first was refused.
    #[error(transparent)]
    Runtime(Box<WhisperError>),
    /// It failed to load a moment ago and is not read again yet.
    #[error("it failed to load less than {} s ago", crate::worker::RETRY_FAILED_LOAD_AFTER.as_secs())]
    FailedRecently,
}

/// Why [`crate::Engine::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the worker thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The default model did not load; the message is the loader's.
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the worker thread died while loading")]
    WorkerDied,
}
