//! One table from failures to HTTP status and OpenAI's error envelope
//! `{"error":{"message","type","param","code"}}` (the status table is in
//! `docs/ARCHITECTURE.md`, section "Errors").

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use steno_audio::AudioError;
use steno_engine::EngineError;

use crate::api::{ErrorDetail, ErrorResponse};

const INVALID: &str = "invalid_request_error";
const SERVER: &str = "server_error";

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// 400: a missing or invalid field.
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            param,
            ..Self::new(StatusCode::BAD_REQUEST, INVALID, message)
        }
    }

    /// The same error with OpenAI's `code` (such as `unsupported_value`).
    pub fn with_code(self, code: &'static str) -> Self {
        Self {
            code: Some(code),
            ..self
        }
    }

    /// 404: no such model.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            param: Some("model"),
            code: Some("model_not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                INVALID,
                format!("The model `{model}` does not exist."),
            )
        }
    }

    /// 404: no such route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, INVALID, message)
    }

    /// 405: the route exists with another method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, INVALID, message)
    }

    /// 413: the upload is larger than the configured limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            param: Some("file"),
            ..Self::new(StatusCode::PAYLOAD_TOO_LARGE, INVALID, message)
        }
    }

    /// 408: the upload fell behind the minimum rate; the connection closes after the
    /// answer (see [`IntoResponse`]).
    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self {
            code: Some("request_timeout"),
            ..Self::new(StatusCode::REQUEST_TIMEOUT, INVALID, message)
        }
    }

    /// 401: no key or a wrong one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            code: Some("invalid_api_key"),
            ..Self::new(StatusCode::UNAUTHORIZED, INVALID, message)
        }
    }

    /// 429: too many requests at once.
    pub fn overloaded() -> Self {
        Self::from(EngineError::Overloaded)
    }

    /// 500 with a fixed message; the detail goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            SERVER,
            "The server had an error while processing your request.",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> ErrorResponse {
        ErrorResponse {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        }
    }
}

impl From<AudioError> for ApiError {
    fn from(e: AudioError) -> Self {
        match e {
            AudioError::TooLarge { .. } | AudioError::TooLong { .. } => {
                Self::too_large(e.to_string())
            }
            _ => Self::invalid(e.to_string(), Some("file")),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::Overloaded => Self {
                code: Some("rate_limit_exceeded"),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    message,
                )
            },
            EngineError::Unavailable | EngineError::ModelUnavailable(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, SERVER, message)
            }
            EngineError::InvalidRequest(_) => Self::invalid(message, None),
            EngineError::DeadlineExceeded => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, SERVER, message)
            }
            EngineError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of a slow upload is not worth waiting for: hyper closes the
            // connection after this answer, and nothing discards the unread body.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_and_type(e: ApiError) -> (u16, &'static str) {
        (e.status.as_u16(), e.kind)
    }

    #[test]
    fn the_error_table() {
        assert_eq!(
            status_and_type(ApiError::invalid("x", None)),
            (400, INVALID)
        );
        assert_eq!(
            status_and_type(ApiError::model_not_found("m")),
            (404, INVALID)
        );
        assert_eq!(status_and_type(ApiError::unauthorized("k")), (401, INVALID));
        let slow = ApiError::request_timeout("slow");
        assert_eq!(
            (slow.status.as_u16(), slow.kind, slow.code),
            (408, INVALID, Some("request_timeout"))
        );
        assert_eq!(slow.into_response().headers()[header::CONNECTION], "close");
        assert_eq!(status_and_type(AudioError::Empty.into()), (400, INVALID));
        assert_eq!(
            status_and_type(EngineError::Overloaded.into()),
            (429, "rate_limit_exceeded")
        );
        assert_eq!(
            status_and_type(EngineError::Unavailable.into()),
            (503, SERVER)
        );
        assert_eq!(
            status_and_type(EngineError::DeadlineExceeded.into()),
            (504, SERVER)
        );
        // The model's own words, 400 without a param (the form checks fields first).
        let refused = ApiError::from(EngineError::InvalidRequest(
            steno_whisper::WhisperError::UnsupportedLanguage("xx".into()),
        ));
        assert_eq!(
            (refused.status.as_u16(), refused.kind, refused.param),
            (400, INVALID, None)
        );
        assert_eq!(refused.message, "unsupported language `xx`");
        let internal = ApiError::from(EngineError::Internal("MLX: out of memory at 0x1".into()));
        assert_eq!(internal.status.as_u16(), 500);
        assert!(
            !internal.message.contains("0x1"),
            "internals stay in the log"
        );
    }

    #[test]
    fn overload_and_unavailable_carry_retry_after() {
        for e in [EngineError::Overloaded, EngineError::Unavailable] {
            let response = ApiError::from(e).into_response();
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }
    }
}
