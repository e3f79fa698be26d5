//! `POST /v1/audio/transcriptions` and `POST /v1/audio/translations`.
//!
//! [`handle`]: admission ([`admit`]: an upload slot, else 429) → the form within its
//! pace ([`read_form`], else 408) → a transcription permit ([`Admitted::transcribe`],
//! else 429) → the model → the audio ([`decode_audio`], in the decoder child) → the options
//! ([`options::from_form`]) → the engine's queue (`Engine::submit`) → the rendered reply
//! ([`respond`]), or server-sent events when `stream` ([`stream::events`]).

mod diarize;
mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{FromRequest, Multipart, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use steno_engine::{Reply, Request};
use steno_whisper::Task;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::AppState;
use crate::api::Logprob;
use crate::audio_budget::Reservation;
use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::form::{self, AudioForm};
use crate::formats::{render, Format, Rendering};
use crate::metrics::Metrics;
use crate::options;

#[utoipa::path(post, path = "/v1/audio/transcriptions", tag = "audio",
    request_body(content = crate::api::TranscriptionForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The transcript as response_format asks: json, verbose_json or \
            diarized_json (application/json), text, srt or vtt (text/plain); with stream=true, \
            server-sent events: transcript.text.delta ... then one transcript.text.done (diarizing: \
            each delta with its segment_id, then with diarized_json its transcript.text.segment)",
            content((crate::api::TranscriptionResponse = "application/json"), (String = "text/plain"),
                (crate::api::TextDeltaEvent = "text/event-stream"))),
        (status = 400, body = crate::api::ErrorResponse), (status = 401, body = crate::api::ErrorResponse),
        (status = 404, body = crate::api::ErrorResponse), (status = 408, body = crate::api::ErrorResponse),
        (status = 413, body = crate::api::ErrorResponse), (status = 429, body = crate::api::ErrorResponse),
        (status = 503, body = crate::api::ErrorResponse), (status = 504, body = crate::api::ErrorResponse)))]
pub async fn transcriptions(
    state: State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    handle(state, request, Task::Transcribe).await
}

#[utoipa::path(post, path = "/v1/audio/translations", tag = "audio",
    request_body(content = crate::api::TranslationForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "English text as response_format asks",
            content((crate::api::TranscriptionResponse = "application/json"), (String = "text/plain"))),
        (status = 400, body = crate::api::ErrorResponse), (status = 404, body = crate::api::ErrorResponse),
        (status = 408, body = crate::api::ErrorResponse), (status = 413, body = crate::api::ErrorResponse),
        (status = 429, body = crate::api::ErrorResponse)))]
pub async fn translations(
    state: State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    handle(state, request, Task::Translate).await
}

/// Both routes: admit → read the form → a transcription permit → decode the audio →
/// submit to the engine → the rendered reply, or server-sent events when `stream`.
async fn handle(
    State(state): State<AppState>,
    request: axum::extract::Request,
    task: Task,
) -> Result<Response, ApiError> {
    let received = Arc::new(AtomicU64::new(0));
    let mut multipart = Multipart::from_request(counted(request, received.clone()), &())
        .await
        .map_err(not_multipart)?;
    let admitted = admit(&state)?;
    let limits = &state.config.limits;
    let mut form = read_form(&mut multipart, task, limits, &received).await?;
    let permit = admitted.transcribe(&state)?;
    let model = state
        .config
        .resolve_model(&form.model)
        .ok_or_else(|| ApiError::model_not_found(&form.model))?
        .to_string();

    let diarizing = diarize::requested(&state.config, &form, task)?;

    let decode_started = Instant::now();
    let (samples, reservation) = decode_audio(&state, &mut form).await?;
    let mut permit = permit.holding(reservation);
    let diarize = if diarizing {
        Some(diarize::prepare(&state, &mut form, &samples, &mut permit).await?)
    } else {
        None
    };
    let decode_seconds = decode_started.elapsed().as_secs_f64();

    let (deltas, delta_receiver) = if form.stream && diarize.is_none() {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let mut options = options::from_form(&form, task, &state.config.decoding);
    // Diarization splits segments at the word where the speaker changes.
    options.word_timestamps |= diarize.is_some();
    let request = Request {
        model,
        deadline: Some(limits.deadline(steno_audio::seconds(samples.len()))),
        samples,
        options,
        logprobs: form.logprobs,
        deltas,
        diarize,
        span: tracing::Span::current(),
    };
    let receiver = state.engine.submit(request)?;
    if let Some(deltas) = delta_receiver {
        return Ok(stream::events(deltas, receiver, permit).into_response());
    }
    if form.stream {
        let segment_events = form.format == Format::DiarizedJson;
        return Ok(stream::diarized_events(receiver, permit, segment_events).into_response());
    }
    let reply = receiver.recv().await?;
    drop(permit);
    Ok(respond(&form, task, reply, decode_seconds))
}

fn not_multipart(e: MultipartRejection) -> ApiError {
    ApiError::invalid(
        format!("The body must be multipart/form-data: {}", e.body_text()),
        None,
    )
}

/// The request with its body's bytes counted into `received` as they arrive.
fn counted(request: axum::extract::Request, received: Arc<AtomicU64>) -> axum::extract::Request {
    request.map(|body| {
        Body::from_stream(body.into_data_stream().inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        }))
    })
}

/// Refuses early, before the upload is read: 503 while draining (or with a dead
/// worker); 429 when every transcription permit is taken (the client need not upload
/// for nothing) or past `max_uploads_in_progress`.
fn admit(state: &AppState) -> Result<Admitted, ApiError> {
    if !state.engine.is_healthy() {
        return Err(steno_engine::EngineError::Unavailable.into());
    }
    if state.permits.available_permits() == 0 {
        return Err(overloaded(state, "concurrency"));
    }
    let upload = take(&state.uploads).ok_or_else(|| overloaded(state, "uploads"))?;
    Ok(Admitted::new(upload, state.metrics().clone()))
}

/// A 429, counted in `steno_rejections_total` under `reason`.
fn overloaded(state: &AppState, reason: &str) -> ApiError {
    count_rejection(state, reason);
    ApiError::overloaded()
}

fn count_rejection(state: &AppState, reason: &str) {
    state
        .metrics()
        .rejections
        .with_label_values(&[reason])
        .inc();
}

fn take(slots: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    slots.clone().try_acquire_owned().ok()
}

/// [`form::read`], unless the upload falls behind its pace first: 408.
async fn read_form(
    multipart: &mut Multipart,
    task: Task,
    limits: &LimitsConfig,
    received: &AtomicU64,
) -> Result<AudioForm, ApiError> {
    let pace = Pace {
        started: Instant::now(),
        grace: Duration::from_secs(limits.upload_grace_seconds),
        bytes_per_second: limits.upload_min_bytes_per_second,
    };
    tokio::select! {
        form = form::read(multipart, task, limits.max_upload_bytes) => form,
        () = pace.falls_behind(received) => Err(ApiError::request_timeout(format!(
            "The upload was too slow: after the first {} s it must arrive at {} bytes per second or faster.",
            limits.upload_grace_seconds, limits.upload_min_bytes_per_second
        ))),
    }
}

/// The slowest an upload may arrive: `bytes_per_second` for every second past `grace`,
/// so N bytes have `grace + N / bytes_per_second` seconds in all.
struct Pace {
    started: Instant,
    grace: Duration,
    bytes_per_second: u64,
}

impl Pace {
    /// Resolves once fewer than `received` bytes arrived than the pace asks.
    async fn falls_behind(&self, received: &AtomicU64) {
        loop {
            let due = self.due(received.load(Ordering::Relaxed));
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }

    /// When `bytes` stop being enough.
    fn due(&self, bytes: u64) -> Instant {
        let earned = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second.max(1) as f64);
        self.started + self.grace + earned
    }
}

/// The upload as 16 kHz mono samples: raw PCM converted on the blocking pool, any
/// container in the audio decoder child ([`crate::decoder::Decoder`]). Takes the bytes
/// out of the form. The samples' reservation in the audio budget comes with them (429
/// past it, counted under `audio_budget`).
async fn decode_audio(
    state: &AppState,
    form: &mut AudioForm,
) -> Result<(Vec<f32>, Reservation), ApiError> {
    let limits = &state.config.limits;
    let audio_limits = steno_audio::Limits {
        max_bytes: limits.max_upload_bytes,
        max_duration_seconds: limits.max_audio_seconds,
        ..steno_audio::Limits::default()
    };
    decode_upload(state, &mut form.file, form.sample_rate, audio_limits).await
}

/// [`decode_audio`] for any upload (the file, a known speaker's clip) within
/// `audio_limits`; `sample_rate` is a raw PCM upload's.
async fn decode_upload(
    state: &AppState,
    upload: &mut form::Upload,
    sample_rate: u32,
    audio_limits: steno_audio::Limits,
) -> Result<(Vec<f32>, Reservation), ApiError> {
    let limits = &state.config.limits;
    let bytes = std::mem::take(&mut upload.bytes);
    let audio: Result<_, ApiError> = if upload.is_raw_pcm() {
        let audio = tokio::task::spawn_blocking(move || {
            steno_audio::decode_raw_pcm_s16le(&bytes, sample_rate, None, &audio_limits)
        })
        .await
        .map_err(ApiError::internal)??;
        // At most twice the upload limit: reserved once converted.
        let reservation = state.decoder.budget().reserve_samples(audio.samples.len());
        reservation.map(|r| (audio, r))
    } else {
        let timeout = Duration::from_secs_f64(limits.request_timeout_seconds);
        state
            .decoder
            .decode(bytes, upload.extension(), audio_limits, timeout)
            .await
    };
    let (audio, reservation) = audio.inspect_err(|e| {
        if e.status() == StatusCode::TOO_MANY_REQUESTS {
            count_rejection(state, "audio_budget");
        }
    })?;
    Ok((audio.samples, reservation))
}

/// The finished transcript in the form's `response_format`, with `Server-Timing`.
fn respond(form: &AudioForm, task: Task, reply: Reply, decode_seconds: f64) -> Response {
    let timing = server_timing(decode_seconds, &reply);
    let rendering = Rendering {
        format: form.format,
        task,
        segments: form.segment_timestamps || !form.granularities_given,
        words: form.word_timestamps,
        speakers: reply.speakers,
        logprobs: Logprob::list(reply.logprobs),
        ..Rendering::new(form.format, task)
    };
    let body = render(&reply.transcript, &rendering);
    let mut response = ([(header::CONTENT_TYPE, form.format.content_type())], body).into_response();
    if let Ok(timing) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert("server-timing", timing);
    }
    response
}

/// An admitted request, counted in `steno_requests_in_flight` from its admission to
/// its answer: it holds an upload slot while its upload is read, then a transcription
/// permit.
struct Admitted {
    _slot: OwnedSemaphorePermit,
    /// The decoded samples' share of the audio budget (the upload's, and the known
    /// speakers' clips'), given back with the answer.
    audio: Vec<Reservation>,
    metrics: Arc<Metrics>,
}

/// An admitted request holding its transcription permit.
type Permit = Admitted;

impl Admitted {
    fn new(slot: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.requests_in_flight.inc();
        Self {
            _slot: slot,
            audio: Vec::new(),
            metrics,
        }
    }

    /// Trades the upload slot for a transcription permit, else 429.
    fn transcribe(mut self, state: &AppState) -> Result<Permit, ApiError> {
        self._slot = take(&state.permits).ok_or_else(|| overloaded(state, "concurrency"))?;
        Ok(self)
    }

    /// Holds `reservation` until the answer (or until the client leaves): by then the
    /// worker has dropped the samples, or drops the job as its client is gone.
    fn holding(mut self, reservation: Reservation) -> Self {
        self.hold(reservation);
        self
    }

    /// [`Self::holding`] in place.
    fn hold(&mut self, reservation: Reservation) {
        self.audio.push(reservation);
    }
}

impl Drop for Admitted {
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
