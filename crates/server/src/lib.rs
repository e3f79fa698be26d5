//! steno-server: the OpenAI-compatible HTTP API (axum) and the `steno` binary.
//!
//! Multipart parsing and limits, OpenAI request/response types and formats (json,
//! text, srt, vtt, verbose_json, SSE), auth, configuration, metrics and the OpenAPI
//! document; `steno serve` and `steno transcribe`.

pub mod error;
pub mod formats;
pub mod routes;
