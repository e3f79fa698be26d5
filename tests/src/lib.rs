//! steno-e2e: black-box tests and benchmarks against the real `steno` binary, a real
//! Whisper model and real speech, with word error rate against reference transcripts.

pub mod assets;
pub mod cli;
pub mod nginx;
pub mod prometheus;
pub mod server;
pub mod wer;
