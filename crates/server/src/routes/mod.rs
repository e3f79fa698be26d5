//! The axum application: one route per file, plus the layers every request
//! passes (request id, tracing, metrics, authentication, discarding unread uploads,
//! body limit).

mod audio;
mod auth;
mod health;
mod metrics;
mod models;
pub(crate) mod openapi;
mod playground;
mod realtime;
mod unread_body;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
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

pub use auth::ApiKeys;
use auth::REQUEST_ID;
pub use openapi::ApiDoc;

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
    /// `server.api_keys`, hashed once.
    pub keys: ApiKeys,
    /// Live sessions' slots and client secrets (`crate::realtime`).
    pub live: crate::realtime::Live,
}

impl AppState {
    /// `metrics` must be the ones whose engine part `engine` was started with.
    pub fn new(engine: Engine, config: Config, metrics: Arc<Metrics>) -> Self {
        let permits = Arc::new(Semaphore::new(config.server.max_concurrent_requests));
        let uploads = Arc::new(Semaphore::new(config.server.max_uploads_in_progress));
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let keys = ApiKeys::new(&config.server.api_keys);
        let live = crate::realtime::Live::new(&config.realtime);
        let budget = AudioBudget::new(config.limits.max_audio_bytes_in_flight);
        let decoder_limits = crate::decoder::ChildLimits::from_config(&config.limits);
        Self {
            engine,
            keys,
            live,
            config: Arc::new(config),
            permits,
            uploads,
            started,
            decoder: crate::decoder::Decoder::this_executable(budget, decoder_limits),
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
        .route("/v1/realtime", get(realtime::connect))
        .route("/v1/realtime/client_secrets", post(realtime::client_secrets))
        .route(
            "/v1/realtime/transcription_sessions",
            post(realtime::transcription_sessions),
        )
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::retrieve))
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::document))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(body_limit))
        // Inside authentication: only an authenticated client makes the server read
        // the rest of an upload it did not need.
        .layer(middleware::from_fn_with_state(
            body_limit,
            unread_body::discard_unread_body,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // The playground page is public (it holds no key; it asks for one and sends it):
        // merged after authentication so that only the API routes above are behind it.
        .merge(playground::router())
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
        .layer(middleware::map_request(auth::keep_safe_request_id))
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
