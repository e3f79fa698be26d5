//! Errors of the Whisper library.

use std::path::PathBuf;

pub type Result<T, E = WhisperError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model file is malformed: names the file and, where known, the tensor.
    #[error("invalid model file {path}: {detail}")]
    InvalidModel { path: PathBuf, detail: String },
    #[error("missing tensor `{name}` in {path}")]
    MissingTensor { path: PathBuf, name: String },
    #[error("tensor `{name}` in {path} has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("invalid model config {path}: {detail}")]
    InvalidConfig { path: PathBuf, detail: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("unsupported language `{0}`")]
    UnsupportedLanguage(String),
    #[error("invalid decoding option: {0}")]
    InvalidOption(String),
    #[error("MLX: {0}")]
    Mlx(String),
    /// The scheduler's own bookkeeping broke (a bug): the jobs involved fail instead
    /// of the worker thread panicking.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<mlx_rs::error::Exception> for WhisperError {
    fn from(e: mlx_rs::error::Exception) -> Self {
        WhisperError::Mlx(e.to_string())
    }
}
