//! The HTTP routes: `POST /v1/audio/transcriptions`, `POST /v1/audio/translations`,
//! `GET /v1/models`, `GET /health`.

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use steno_engine::Engine;
use steno_whisper::{Task, TranscribeOptions};

use crate::error::ApiError;
use crate::formats::{render, Format};

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// Model ids this server answers to (`whisper-1` and the configured name).
    pub model_ids: Vec<String>,
    pub limits: steno_audio::Limits,
}

pub fn app(state: AppState) -> Router {
    let body_limit = state.limits.max_bytes + 1024 * 1024;
    Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/translations", post(translations))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> Response {
    if state.engine.is_healthy() {
        (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable" })),
        )
            .into_response()
    }
}

async fn models(State(state): State<AppState>) -> Json<serde_json::Value> {
    let data: Vec<_> = state
        .model_ids
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "steno" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn transcriptions(state: State<AppState>, form: Multipart) -> Result<Response, ApiError> {
    handle(state, form, Task::Transcribe).await
}

async fn translations(state: State<AppState>, form: Multipart) -> Result<Response, ApiError> {
    handle(state, form, Task::Translate).await
}

struct Upload {
    bytes: Vec<u8>,
    filename: Option<String>,
}

async fn handle(
    State(state): State<AppState>,
    mut form: Multipart,
    task: Task,
) -> Result<Response, ApiError> {
    let mut file: Option<Upload> = None;
    let mut model: Option<String> = None;
    let mut format = Format::Json;
    let mut options = TranscribeOptions {
        task,
        ..TranscribeOptions::default()
    };
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::invalid(format!("malformed multipart body: {e}"), None))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            if file.is_some() {
                return Err(ApiError::invalid(
                    "only one file may be uploaded",
                    Some("file"),
                ));
            }
            let filename = field.file_name().map(str::to_string);
            let bytes = field.bytes().await.map_err(|e| {
                ApiError::invalid(format!("cannot read the file: {e}"), Some("file"))
            })?;
            file = Some(Upload {
                bytes: bytes.to_vec(),
                filename,
            });
            continue;
        }
        let value = field
            .text()
            .await
            .map_err(|e| ApiError::invalid(format!("cannot read field {name}: {e}"), None))?;
        match name.as_str() {
            "model" => model = Some(value),
            "language" if !value.is_empty() => options.language = Some(value),
            "prompt" if !value.is_empty() => options.initial_prompt = Some(value),
            "response_format" => {
                format = match value.as_str() {
                    "json" | "text" | "srt" | "vtt" | "verbose_json" => value.parse().map_err(|e: String| ApiError::invalid(e, Some("response_format")))?,
                    other => {
                        return Err(ApiError::invalid(
                            format!("response_format must be json, text, srt, verbose_json or vtt, not {other:?}"),
                            Some("response_format"),
                        ))
                    }
                }
            }
            "temperature" => {
                let t: f32 = value
                    .parse()
                    .ok()
                    .filter(|t: &f32| (0.0..=1.0).contains(t))
                    .ok_or_else(|| ApiError::invalid("temperature must be a number from 0 to 1", Some("temperature")))?;
                if t > 0.0 {
                    options.temperatures = vec![t];
                }
            }
            "timestamp_granularities[]" | "timestamp_granularities" => match value.as_str() {
                "word" => options.word_timestamps = true,
                "segment" => {}
                other => {
                    return Err(ApiError::invalid(
                        format!("timestamp_granularities must be word or segment, not {other:?}"),
                        Some("timestamp_granularities[]"),
                    ))
                }
            },
            _ => {} // unknown fields are ignored, as OpenAI does for forward compatibility
        }
    }
    let file = file.ok_or_else(|| ApiError::invalid("a file is required", Some("file")))?;
    let model = model.ok_or_else(|| ApiError::invalid("model is required", Some("model")))?;
    if !state.model_ids.iter().any(|id| id == &model) {
        return Err(ApiError::not_found(
            format!("the model `{model}` does not exist"),
            Some("model"),
        ));
    }
    if let Some(language) = &options.language {
        if steno_whisper::tokenizer::language_code(language).is_none() {
            return Err(ApiError::invalid(
                format!("unsupported language {language:?}"),
                Some("language"),
            ));
        }
    }
    let limits = state.limits.clone();
    let audio = tokio::task::spawn_blocking(move || {
        let hint = file
            .filename
            .as_deref()
            .and_then(|f| f.rsplit('.').next().map(str::to_string));
        steno_audio::decode_owned(file.bytes, hint.as_deref(), &limits)
    })
    .await
    .map_err(|_| ApiError::invalid("the audio decoder failed", Some("file")))??;
    let receiver = state.engine.submit(audio.samples, options)?;
    let transcript = receiver
        .await
        .map_err(|_| ApiError::from(steno_engine::EngineError::Unavailable))??;
    let body = render(&transcript, format, task);
    let content_type = match format {
        Format::Json | Format::VerboseJson => "application/json",
        _ => "text/plain; charset=utf-8",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
