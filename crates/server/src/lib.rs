//! steno-server: the OpenAI-compatible HTTP API over the engine — request and
//! response types, form parsing, formats, errors, configuration, metrics, the
//! OpenAPI document, and the serving lifecycle ([`serve`]). The `steno` binary
//! (`src/main.rs`) only parses arguments and calls into this library.

pub mod api;
pub mod audio_budget;
pub mod config;
pub mod decoder;
pub mod error;
pub mod form;
pub mod formats;
pub mod loader;
pub mod metrics;
pub mod options;
pub mod realtime;
pub mod routes;
pub mod serve;
pub mod speakers;
