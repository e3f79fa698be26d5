//! `POST /v1/audio/transcriptions` and `POST /v1/audio/translations`.
//!
//! Admission (a permit, else 429) → form → model → decode on the blocking pool →
//! the engine's queue → the rendered reply, or server-sent events when `stream`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use steno_engine::{Delta, Metrics, Reply, ReplyReceiver, Request};
use steno_whisper::{Task, TranscribeOptions};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::AppState;
use crate::api::{Logprob, TextDeltaEvent, TextDoneEvent};
use crate::error::ApiError;
use crate::form::{self, AudioForm};
use crate::formats::{render, Rendering};

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
    // Draining (or a dead worker): refuse before reading the upload.
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
    let permit = Permit::new(permit, state.metrics().clone());
    let limits = &state.config.limits;
    let mut form = form::read(&mut multipart, task, limits.max_upload_bytes).await?;
    let model = state
        .config
        .resolve_model(&form.model)
        .ok_or_else(|| ApiError::model_not_found(&form.model))?
        .to_string();

    let decode_started = Instant::now();
    let audio_limits = steno_audio::Limits {
        max_bytes: limits.max_upload_bytes,
        max_duration_seconds: limits.max_audio_seconds,
        ..steno_audio::Limits::default()
    };
    let upload_is_pcm = form.file.is_raw_pcm();
    let hint = form.file.extension();
    let sample_rate = form.sample_rate;
    let bytes = std::mem::take(&mut form.file.bytes);
    let samples = if upload_is_pcm {
        tokio::task::spawn_blocking(move || {
            steno_audio::decode_raw_pcm_s16le(&bytes, sample_rate, None, &audio_limits)
        })
        .await
        .map_err(ApiError::internal)??
    } else {
        let timeout = Duration::from_secs_f64(limits.request_timeout_seconds);
        state
            .decoder
            .decode(bytes, hint, audio_limits, timeout)
            .await?
    }
    .samples;
    let decode_seconds = decode_started.elapsed().as_secs_f64();

    let audio_seconds = samples.len() as f64 / 16_000.0;
    let timeout =
        limits.request_timeout_seconds + limits.request_timeout_per_audio_second * audio_seconds;
    let (deltas, delta_receiver) = if form.stream {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let request = Request {
        model,
        samples,
        options: options(&form, task),
        logprobs: form.logprobs,
        deadline: Some(Instant::now() + Duration::from_secs_f64(timeout)),
        deltas,
        span: tracing::Span::current(),
    };
    let receiver = state.engine.submit(request)?;
    let rendering = Rendering {
        format: form.format,
        task,
        segments: form.segment_timestamps || !form.granularities_given,
        words: form.word_timestamps,
        logprobs: None,
    };
    if let Some(deltas) = delta_receiver {
        return Ok(stream_events(deltas, receiver, permit).into_response());
    }
    let reply = receiver.recv().await?;
    drop(permit);
    let timing = server_timing(decode_seconds, &reply);
    let body = render(
        &reply.transcript,
        &Rendering {
            logprobs: Logprob::list(reply.logprobs),
            ..rendering
        },
    );
    let mut response = ([(header::CONTENT_TYPE, form.format.content_type())], body).into_response();
    if let Ok(timing) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert("server-timing", timing);
    }
    Ok(response)
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

fn options(form: &AudioForm, task: Task) -> TranscribeOptions {
    let defaults = TranscribeOptions::default();
    TranscribeOptions {
        task,
        language: form.language.clone(),
        initial_prompt: form.prompt.clone(),
        temperatures: form
            .temperature
            .map_or(defaults.temperatures.clone(), |t| vec![t]),
        word_timestamps: form.word_timestamps,
        mode: form.mode.unwrap_or(defaults.mode),
        ..defaults
    }
}

/// `Server-Timing` with the request's stages in milliseconds.
fn server_timing(decode_seconds: f64, reply: &Reply) -> String {
    format!(
        "decode;dur={:.1}, queue;dur={:.1}, inference;dur={:.1}",
        decode_seconds * 1000.0,
        reply.queue_seconds * 1000.0,
        reply.inference_seconds * 1000.0
    )
}

fn event<T: serde::Serialize>(body: &T) -> Event {
    Event::default().data(serde_json::to_string(body).unwrap_or_default())
}

/// Deltas as they come, then `transcript.text.done` (or the error envelope). The
/// stream owns the permit and the reply receiver: a client that goes away drops
/// both, which frees its rows in the worker.
fn stream_events(
    deltas: mpsc::UnboundedReceiver<Delta>,
    reply: ReplyReceiver,
    permit: Permit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // After the drain deadline the worker may still be inside a step: the deltas end
    // and the error event goes out at once.
    let aborted = reply.aborted();
    let delta_events = stream::unfold(deltas, |mut deltas| async move {
        let delta = deltas.recv().await?;
        let body = TextDeltaEvent {
            kind: "transcript.text.delta",
            delta: delta.text,
            logprobs: Logprob::list(delta.logprobs),
        };
        Some((Ok(event(&body)), deltas))
    })
    .take_until(aborted);
    // The engine drops the delta sender when the job ends, so the final event follows
    // the last delta.
    let done = stream::once(async move {
        let _permit = permit;
        let body = match reply.recv().await {
            Ok(reply) => event(&TextDoneEvent {
                kind: "transcript.text.done",
                text: reply.transcript.text.trim().to_string(),
                logprobs: Logprob::list(reply.logprobs),
            }),
            Err(e) => event(&ApiError::from(e).body()),
        };
        Ok(body)
    });
    Sse::new(delta_events.chain(done))
}
