//! `GET /v1/models` and `GET /v1/models/{id}`: every id clients may use.

use axum::extract::{Path, State};
use axum::Json;

use super::AppState;
use crate::api::{Model, ModelList};
use crate::error::ApiError;

fn model(state: &AppState, id: String) -> Model {
    Model {
        id,
        object: "model",
        created: state.started,
        owned_by: "steno",
    }
}

#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, body = ModelList)))]
pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    let data = state
        .config
        .model_ids()
        .into_iter()
        .map(|id| model(&state, id))
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

#[utoipa::path(get, path = "/v1/models/{id}", tag = "models",
    params(("id" = String, Path, description = "A model id or alias")),
    responses((status = 200, body = Model), (status = 404, body = crate::api::ErrorResponse)))]
pub async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Model>, ApiError> {
    if state.config.resolve_model(&id).is_none() {
        return Err(ApiError::model_not_found(&id));
    }
    Ok(Json(model(&state, id)))
}
