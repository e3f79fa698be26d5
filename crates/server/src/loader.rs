//! The engine's [`Loader`] for `steno serve`: reads a configured model's weights with
//! `steno_whisper` on the worker thread, and wraps them in a [`WhisperBackend`].

use std::time::Instant;

use steno_engine::{Backend, LoadError, Loader, WhisperBackend};
use steno_whisper::{LoadOptions, Whisper};

use crate::config::{embedded_model_dir, Config};

/// Loads configured models on the worker: the default (or the embedded tiny.en),
/// and extra ones on first use. Sets the MLX CPU lanes for the process now and the
/// cache limit on the worker (before its first load).
pub fn loader(config: &Config) -> Loader {
    let config = config.clone();
    let cache_limit = config.engine.mlx_cache_limit_bytes;
    let max_rows = config.engine.max_batch_rows;
    steno_whisper::runtime::set_cpu_lanes(config.engine.cpu_lanes);
    config.decoding.compiled_step.apply();
    Box::new(move |id: &str| {
        if cache_limit > 0 {
            steno_whisper::runtime::set_cache_limit(cache_limit)
                .map_err(|e| LoadError::Runtime(Box::new(e)))?;
        }
        let source = config
            .model_source(id)
            .map(str::to_string)
            .unwrap_or_else(|| embedded_model_dir().display().to_string());
        let started = Instant::now();
        let hub = steno_whisper::hub::HubOptions::from_env();
        let whisper =
            Whisper::load_source(&source, &hub, &LoadOptions::default()).map_err(|error| {
                LoadError::Model {
                    model: id.to_string(),
                    location: source.clone(),
                    error: Box::new(error),
                }
            })?;
        tracing::info!(model = id, %source, seconds = started.elapsed().as_secs_f64(), "weights read");
        Ok(Box::new(WhisperBackend::new(whisper, max_rows)) as Box<dyn Backend>)
    })
}
