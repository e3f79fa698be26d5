//! steno-e2e: black-box tests and benchmarks against the real `steno` binary, a real
//! Whisper model and real speech, with word error rate against reference transcripts.

pub mod assets;
pub mod bench;
pub mod browser;
pub mod cli;
pub mod der;
pub mod live;
pub mod nginx;
pub mod pcm24;
pub mod prometheus;
pub mod rawhttp;
pub mod server;
pub mod stress;
pub mod wer;
