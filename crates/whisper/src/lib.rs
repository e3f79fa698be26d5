//! steno-whisper: Whisper on MLX, synchronous and HTTP-free.
//!
//! Turns 16 kHz mono audio into transcripts: model dimensions and weights (CTranslate2,
//! mlx-community and Hugging Face layouts), the tokenizer, the log-mel front end, the
//! encoder/decoder on mlx-rs, and OpenAI's decoding algorithm with batched decoding of
//! many windows at once. Everything that touches MLX must run on the one thread that
//! owns it (the engine's worker); nothing here names tokio or HTTP.

pub mod beam;
pub mod config;
pub mod cpu;
pub mod ct2;
pub mod decoding;
mod encode;
pub mod error;
pub mod host_logits;
pub mod hub;
pub mod keywords;
pub mod load;
pub mod longform;
pub mod mel;
pub mod model;
pub mod runtime;
pub mod scheduler;
pub mod timing;
pub mod tokenizer;
pub mod transcribe;
pub mod transcript;

pub use error::{Result, WhisperError};
pub use load::LoadOptions;
pub use scheduler::{JobEvent, JobId, Scheduler, StageTimings};
pub use tokenizer::Task;
pub use transcribe::{Mode, TranscribeOptions};
pub use transcript::{Segment, TokenLogprob, Transcript};

/// A loaded model with everything needed to transcribe with it.
pub struct Whisper {
    pub model: model::WhisperModel,
    pub tokenizer: tokenizer::Tokenizer,
    pub mel_filters: mel::MelFilters,
    /// (decoder layer, head) pairs whose cross-attention aligns words with audio.
    pub alignment_heads: Vec<(usize, usize)>,
}
