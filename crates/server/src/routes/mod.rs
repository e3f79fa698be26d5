//! The axum application: one route per file, plus the layers every request
//! passes (request id, tracing, metrics, authentication, body limit, discarding
//! unread uploads).

mod audio;
mod health;
mod metrics;
mod models;
pub(crate) mod openapi;
mod unread_body;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use steno_engine::Engine;
use tokio::sync::Semaphore;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::audio_budget::AudioBudget;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;

pub use openapi::ApiDoc;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub config: Arc<Config>,
    /// Requests transcribed at once (taken once the upload is in); past it, 429.
    pub permits: Arc<Semaphore>,
    /// Uploads being read at once (`server.max_uploads_in_progress`); past it, 429.
    pub uploads: Arc<Semaphore>,
    /// Unix seconds at start (`created` of the model objects).
    pub started: u64,
    /// Decodes uploads, in a child process per upload.
    pub decoder: crate::decoder::Decoder,
    /// Every metric `/metrics` renders (the engine's among them).
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// `metrics` must be the ones whose engine part `engine` was started with.
    pub fn new(engine: Engine, config: Config, metrics: Arc<Metrics>) -> Self {
        let permits = Arc::new(Semaphore::new(config.server.max_concurrent_requests));
        let uploads = Arc::new(Semaphore::new(config.server.max_uploads_in_progress));
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            engine,
        let keys = ApiKeys::new(&config.server.api_keys);
        let budget = AudioBudget::new(config.limits.max_audio_bytes_in_flight);
            config: Arc::new(config),
            permits,
            uploads,
            started,
            decoder: crate::decoder::Decoder::this_executable(budget),
            metrics,
        }
    }

    fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

pub fn app(state: AppState) -> Router {
    // The file part is bounded by the form reader; leave room for the other fields.
    let body_limit = state.config.limits.max_upload_bytes + 1024 * 1024;
    Router::new()
        .route("/v1/audio/transcriptions", post(audio::transcriptions))
        .route("/v1/audio/translations", post(audio::translations))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::retrieve))
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::document))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        // Outside authentication: a 401 must reach a client still uploading too.
        .layer(middleware::from_fn_with_state(
            body_limit,
            unread_body::discard_unread_body,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "Invalid URL ({} {}).",
        request.method(),
        request.uri().path()
    ))
}

async fn wrong_method(request: Request) -> ApiError {
    ApiError::method_not_allowed(format!(
        "Method {} is not allowed for {}.",
        request.method(),
        request.uri().path()
    ))
}

/// Counts every request by route and status and times it.
async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = state.metrics();
    metrics
        .requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `Authorization: Bearer KEY` when keys are configured; /health and /metrics may
/// stay open (`server.public_health`), the OpenAPI document always is.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let keys = &state.config.server.api_keys;
    let path = request.uri().path();
    let public = path == "/openapi.json"
        || (state.config.server.public_health && (path == "/health" || path == "/metrics"));
    if keys.is_empty() || public {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(key)
            if keys
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes())) =>
        {
            next.run(request).await
        }
        Some(_) => ApiError::unauthorized("Incorrect API key provided.").into_response(),
        None => ApiError::unauthorized(
            "You didn't provide an API key. Send it as `Authorization: Bearer KEY`.",
        )
        .into_response(),
    }
}

/// Compares keys without leaking how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
