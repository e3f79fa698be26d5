//! `GET /health`: 200 while the worker serves, 503 while loading, draining or dead.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::AppState;
use crate::api::Health;

#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    if state.engine.is_healthy() {
        (StatusCode::OK, Json(Health { status: "ok" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
            }),
        )
    }
}
