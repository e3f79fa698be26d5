//! Errors of the speaker crate.

use std::path::PathBuf;

pub type Result<T, E = SpeakerError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The weights file is not the legacy PyTorch pickle this crate reads, or holds
    /// something it does not expect: names the file and what was wrong.
    #[error("invalid voice encoder weights {path}: {detail}")]
    InvalidWeights { path: PathBuf, detail: String },
    /// A caller's argument is out of range (empty window, bad speaker bounds, ...).
    #[error("invalid speaker option: {0}")]
    InvalidOption(String),
    #[error("MLX: {0}")]
    Mlx(String),
}

impl From<mlx_rs::error::Exception> for SpeakerError {
    fn from(e: mlx_rs::error::Exception) -> Self {
        SpeakerError::Mlx(e.to_string())
    }
}
