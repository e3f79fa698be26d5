//! One table from failures to HTTP status and OpenAI's error envelope
//! `{"error":{"message","type","param","code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use steno_audio::AudioError;
use steno_engine::EngineError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param,
            code: None,
        }
    }

    pub fn not_found(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: Some("model_not_found"),
            ..Self::invalid(message, param)
        }
    }
}

impl From<AudioError> for ApiError {
    fn from(e: AudioError) -> Self {
        let status = match e {
            AudioError::TooLarge { .. } | AudioError::TooLong { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            ..Self::invalid(e.to_string(), Some("file"))
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Overloaded => Self {
                status: StatusCode::TOO_MANY_REQUESTS,
                kind: "rate_limit_exceeded",
                message: e.to_string(),
                param: None,
                code: Some("rate_limit_exceeded"),
            },
            EngineError::Unavailable => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "server_error",
                message: e.to_string(),
                param: None,
                code: None,
            },
            EngineError::InvalidRequest(m) => Self::invalid(m, None),
            EngineError::Internal(m) => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "server_error",
                message: m,
                param: None,
                code: None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code,
        }});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
