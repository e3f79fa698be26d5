//! steno-whisper: Whisper on MLX, synchronous and HTTP-free.
//!
//! Turns 16 kHz mono audio into transcripts: model dimensions and weights (CTranslate2,
//! mlx-community and Hugging Face layouts), the tokenizer, the log-mel front end, the
//! encoder/decoder on mlx-rs, and OpenAI's decoding algorithm with batched decoding of
//! many windows at once. Everything that touches MLX must run on the one thread that
//! owns it (the engine's worker); nothing here names tokio or HTTP.

pub mod config;
pub mod ct2;
pub mod error;
pub mod mel;
pub mod tokenizer;

pub use error::{Result, WhisperError};
