//! `POST /v1/audio/transcriptions` and `POST /v1/audio/translations`.
//!
//! [`handle`]: admission ([`admit`]: a permit, else 429) → the form ([`form::read`]) →
//! the model → the audio ([`decode_audio`], in the decoder child) → the options
//! ([`options::from_form`]) → the engine's queue (`Engine::submit`) → the rendered reply
//! ([`respond`]), or server-sent events when `stream` ([`stream::events`]).

mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use steno_engine::{Reply, Request};
use steno_whisper::Task;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::AppState;
use crate::api::Logprob;
use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::form::{self, AudioForm};
use crate::formats::{render, Rendering};
use crate::metrics::Metrics;
use crate::options;

#[utoipa::path(post, path = "/v1/audio/transcriptions", tag = "audio",
    request_body(content = crate::api::TranscriptionForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The transcript as response_format asks: json or verbose_json \
            (application/json), text, srt or vtt (text/plain); with stream=true, server-sent events: \
            transcript.text.delta ... then one transcript.text.done",
            content((crate::api::TranscriptionResponse = "application/json"), (String = "text/plain"),
                (crate::api::TextDeltaEvent = "text/event-stream"))),
        (status = 400, body = crate::api::ErrorResponse), (status = 401, body = crate::api::ErrorResponse),
        (status = 404, body = crate::api::ErrorResponse), (status = 413, body = crate::api::ErrorResponse),
        (status = 429, body = crate::api::ErrorResponse), (status = 503, body = crate::api::ErrorResponse),
        (status = 504, body = crate::api::ErrorResponse)))]
pub async fn transcriptions(
    state: State<AppState>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    handle(state, form, Task::Transcribe).await
}

#[utoipa::path(post, path = "/v1/audio/translations", tag = "audio",
    request_body(content = crate::api::TranslationForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "English text as response_format asks",
            content((crate::api::TranscriptionResponse = "application/json"), (String = "text/plain"))),
        (status = 400, body = crate::api::ErrorResponse), (status = 404, body = crate::api::ErrorResponse),
        (status = 413, body = crate::api::ErrorResponse), (status = 429, body = crate::api::ErrorResponse)))]
pub async fn translations(
    state: State<AppState>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    handle(state, form, Task::Translate).await
}

/// Both routes: admit → read the form → decode the audio → submit to the engine →
/// the rendered reply, or server-sent events when `stream`.
async fn handle(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
    task: Task,
) -> Result<Response, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::invalid(
            format!("The body must be multipart/form-data: {}", e.body_text()),
            None,
        )
    })?;
    let permit = admit(&state)?;
    let limits = &state.config.limits;
    let mut form = form::read(&mut multipart, task, limits.max_upload_bytes).await?;
    let model = state
        .config
        .resolve_model(&form.model)
        .ok_or_else(|| ApiError::model_not_found(&form.model))?
        .to_string();

    let decode_started = Instant::now();
    let samples = decode_audio(&state, &mut form).await?;
    let decode_seconds = decode_started.elapsed().as_secs_f64();

    let (deltas, delta_receiver) = if form.stream {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let request = Request {
        model,
        deadline: Some(deadline(limits, steno_audio::seconds(samples.len()))),
        samples,
        options: options::from_form(&form, task),
        logprobs: form.logprobs,
        deltas,
        span: tracing::Span::current(),
    };
    let receiver = state.engine.submit(request)?;
    if let Some(deltas) = delta_receiver {
        return Ok(stream::events(deltas, receiver, permit).into_response());
    }
    let reply = receiver.recv().await?;
    drop(permit);
    Ok(respond(&form, task, reply, decode_seconds))
}

/// Refuses early: 503 while draining (or with a dead worker) and 429 past
/// `max_concurrent_requests`, before the upload is read.
fn admit(state: &AppState) -> Result<Permit, ApiError> {
    if !state.engine.is_healthy() {
        return Err(steno_engine::EngineError::Unavailable.into());
    }
    let permit = state.permits.clone().try_acquire_owned().map_err(|_| {
        state
            .metrics()
            .rejections
            .with_label_values(&["concurrency"])
            .inc();
        ApiError::overloaded()
    })?;
    Ok(Permit::new(permit, state.metrics().clone()))
}

/// The upload as 16 kHz mono samples: raw PCM converted on the blocking pool, any
/// container in the audio decoder child ([`crate::decoder::Decoder`]). Takes the bytes
/// out of the form.
async fn decode_audio(state: &AppState, form: &mut AudioForm) -> Result<Vec<f32>, ApiError> {
    let limits = &state.config.limits;
    let audio_limits = steno_audio::Limits {
        max_bytes: limits.max_upload_bytes,
        max_duration_seconds: limits.max_audio_seconds,
        ..steno_audio::Limits::default()
    };
    let bytes = std::mem::take(&mut form.file.bytes);
    let audio = if form.file.is_raw_pcm() {
        let sample_rate = form.sample_rate;
        tokio::task::spawn_blocking(move || {
            steno_audio::decode_raw_pcm_s16le(&bytes, sample_rate, None, &audio_limits)
        })
        .await
        .map_err(ApiError::internal)??
    } else {
        let timeout = Duration::from_secs_f64(limits.request_timeout_seconds);
        state
            .decoder
            .decode(bytes, form.file.extension(), audio_limits, timeout)
            .await?
    };
    Ok(audio.samples)
}

/// When the engine gives up on a request: a fixed allowance plus some per second of audio.
fn deadline(limits: &LimitsConfig, audio_seconds: f64) -> Instant {
    let timeout =
        limits.request_timeout_seconds + limits.request_timeout_per_audio_second * audio_seconds;
    Instant::now() + Duration::from_secs_f64(timeout)
}

/// The finished transcript in the form's `response_format`, with `Server-Timing`.
fn respond(form: &AudioForm, task: Task, reply: Reply, decode_seconds: f64) -> Response {
    let timing = server_timing(decode_seconds, &reply);
    let rendering = Rendering {
        format: form.format,
        task,
        segments: form.segment_timestamps || !form.granularities_given,
        words: form.word_timestamps,
        logprobs: Logprob::list(reply.logprobs),
    };
    let body = render(&reply.transcript, &rendering);
    let mut response = ([(header::CONTENT_TYPE, form.format.content_type())], body).into_response();
    if let Ok(timing) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert("server-timing", timing);
    }
    response
}

/// A request's concurrency permit, counted in `steno_requests_in_flight` while held.
struct Permit {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Permit {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.requests_in_flight.inc();
        Self {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.metrics.requests_in_flight.dec();
    }
}

/// `Server-Timing` with the request's stages in milliseconds (`decode` is the audio
/// decoding; the names are what clients already read).
fn server_timing(decode_seconds: f64, reply: &Reply) -> String {
    format!(
        "decode;dur={:.1}, queue;dur={:.1}, inference;dur={:.1}",
        decode_seconds * 1000.0,
        reply.queue_seconds * 1000.0,
        reply.inference_seconds * 1000.0
    )
}
