//! steno-server: the OpenAI-compatible HTTP API over the engine — request and
//! response types, form parsing, formats, errors, configuration, metrics and the
//! OpenAPI document. The `steno` binary is `src/main.rs`.

pub mod api;
pub mod config;
pub mod decoder;
pub mod error;
pub mod form;
pub mod formats;
pub mod routes;
