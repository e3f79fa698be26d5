//! `GET /v1/realtime?intent=transcription` (the WebSocket upgrade into a live session,
//! `crate::realtime::session`) and `POST /v1/realtime/client_secrets` (short-lived
//! keys for browsers; the beta's `POST /v1/realtime/transcription_sessions` too).

use std::time::Duration;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::error::ApiError;
use crate::realtime::protocol::{self, ProtocolError, SessionUpdate, Settings, Shape};
use crate::realtime::secrets::MintError;
use crate::realtime::session::{self, Context, End};
use crate::realtime::READ_LIMIT_BYTES;

/// The subprotocol OpenAI's browser clients offer (and expect echoed).
const SUBPROTOCOL: &str = "realtime";
/// The subprotocol with which beta clients mark themselves.
const BETA_SUBPROTOCOL: &str = "openai-beta.realtime-v1";
/// Lifetimes a client may ask of a client secret (OpenAI's range).
const SECRET_SECONDS: std::ops::RangeInclusive<u64> = 10..=7200;

/// The session settings a client secret was minted with (set by `auth::authenticate`).
#[derive(Clone)]
pub struct SecretSession(pub SessionUpdate);

#[derive(Deserialize)]
pub struct ConnectQuery {
    intent: Option<String>,
}

/// Upgrades to a live transcription session. Past `realtime.max_sessions` the upgrade
/// still happens, so that the client gets an `error` event and a close frame (1013) it
/// can act on rather than a bare HTTP status its WebSocket library may hide.
#[utoipa::path(get, path = "/v1/realtime", tag = "realtime",
    params(
        ("intent" = Option<String>, Query, description = "`transcription` (the only kind of session served; absent is taken as it)"),
        ("model" = Option<String>, Query, description = "Sent by the beta SDKs; the session's model is set by `session.update`"),
    ),
    responses(
        (status = 101, description = "A WebSocket speaking OpenAI's Realtime transcription protocol: \
            one JSON text message per event, the client's RealtimeClientEvent and the server's \
            RealtimeServerEvent. The key goes as `Authorization: Bearer` or, from browsers, as the \
            subprotocol `openai-insecure-api-key.KEY` (a client secret works here only). Past \
            realtime.max_sessions the upgrade happens and an `error` event (session_limit_reached) \
            and close 1013 follow"),
        (status = 400, description = "Not a WebSocket upgrade, or an intent other than transcription", body = crate::api::ErrorResponse),
        (status = 401, body = crate::api::ErrorResponse)))]
pub async fn connect(
    State(state): State<AppState>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
    secret: Option<Extension<SecretSession>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(e) => {
            return ApiError::invalid(
                format!("This endpoint speaks WebSocket (OpenAI's Realtime API): {e}."),
                None,
            )
            .into_response()
        }
    };
    if let Some(intent) = query.intent.filter(|i| i != "transcription") {
        return ApiError::invalid(
            format!(
                "Unsupported intent '{}': this server runs transcription sessions only \
                 (intent=transcription).",
                intent.chars().take(64).collect::<String>()
            ),
            Some("intent"),
        )
        .into_response();
    }
    let shape = shape_of(&headers, &upgrade);
    let permit = state.live.sessions.clone().try_acquire_owned().ok();
    let refusal = permit.is_none().then(|| {
        End::Error(
            ProtocolError::server(
                "session_limit_reached",
                "Too many live sessions are open (realtime.max_sessions); try again later.",
            ),
            1013,
        )
    });
    let context = Context {
        engine: state.engine.clone(),
        config: state.config.clone(),
        metrics: state.metrics.clone(),
    };
    let initial = secret.map(|Extension(s)| s.0).unwrap_or_default();
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(READ_LIMIT_BYTES)
        .max_frame_size(READ_LIMIT_BYTES)
        .on_upgrade(move |socket| async move {
            session::run(socket, context, shape, initial, refusal).await;
            drop(permit);
        })
}

/// Beta clients say so in a header (`OpenAI-Beta: realtime=v1`) or a subprotocol.
fn shape_of(headers: &HeaderMap, upgrade: &WebSocketUpgrade) -> Shape {
    let header = headers
        .get_all("openai-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("realtime=v1"));
    let subprotocol = upgrade
        .requested_protocols()
        .any(|p| p.as_bytes() == BETA_SUBPROTOCOL.as_bytes());
    if header || subprotocol {
        Shape::Beta
    } else {
        Shape::Current
    }
}

#[derive(Deserialize, Default)]
pub struct SecretRequest {
    expires_after: Option<ExpiresAfter>,
    session: Option<Value>,
}

#[derive(Deserialize)]
struct ExpiresAfter {
    seconds: Option<u64>,
}

/// `POST /v1/realtime/client_secrets`: a key for one browser, for live sessions only.
#[utoipa::path(post, path = "/v1/realtime/client_secrets", tag = "realtime",
    request_body(content = crate::realtime::schema::ClientSecretRequest, description = "Optional"),
    responses(
        (status = 200, body = crate::realtime::schema::ClientSecret),
        (status = 400, body = crate::api::ErrorResponse), (status = 401, body = crate::api::ErrorResponse),
        (status = 404, description = "Unknown model", body = crate::api::ErrorResponse),
        (status = 429, description = "realtime.max_client_secrets unexpired secrets exist", body = crate::api::ErrorResponse)))]
pub async fn client_secrets(
    State(state): State<AppState>,
    body: Option<Json<SecretRequest>>,
) -> Result<Json<Value>, ApiError> {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    let (update, minted) = mint(&state, Shape::Current, request)?;
    let settings = Settings::default().updated(&update);
    let session = settings.render(Shape::Current, "", &state.config.models.model_id);
    Ok(Json(json!({
        "value": minted.value,
        "expires_at": minted.expires_at,
        "session": session,
    })))
}

/// `POST /v1/realtime/transcription_sessions` (the beta): the session object with its
/// `client_secret`.
#[utoipa::path(post, path = "/v1/realtime/transcription_sessions", tag = "realtime",
    request_body(content = crate::realtime::schema::BetaTranscriptionSession, description = "Optional"),
    responses(
        (status = 200, description = "The session with its `client_secret`", body = crate::realtime::schema::BetaTranscriptionSession),
        (status = 400, body = crate::api::ErrorResponse), (status = 401, body = crate::api::ErrorResponse),
        (status = 404, description = "Unknown model", body = crate::api::ErrorResponse),
        (status = 429, body = crate::api::ErrorResponse)))]
pub async fn transcription_sessions(
    State(state): State<AppState>,
    body: Option<Json<Value>>,
) -> Result<Json<Value>, ApiError> {
    let session = body.map(|Json(b)| b).unwrap_or_else(|| json!({}));
    let seconds = session
        .pointer("/client_secret/expires_at/seconds")
        .and_then(Value::as_u64);
    let request = SecretRequest {
        expires_after: Some(ExpiresAfter { seconds }),
        session: Some(session),
    };
    let (update, minted) = mint(&state, Shape::Beta, request)?;
    let mut rendered =
        Settings::default()
            .updated(&update)
            .render(Shape::Beta, "", &state.config.models.model_id);
    rendered["client_secret"] = json!({"value": minted.value, "expires_at": minted.expires_at});
    Ok(Json(rendered))
}

fn mint(
    state: &AppState,
    shape: Shape,
    request: SecretRequest,
) -> Result<(SessionUpdate, crate::realtime::secrets::Minted), ApiError> {
    let seconds = request
        .expires_after
        .and_then(|e| e.seconds)
        .unwrap_or(state.config.realtime.client_secret_ttl_seconds);
    if !SECRET_SECONDS.contains(&seconds) {
        return Err(ApiError::invalid(
            format!("expires_after.seconds must be from 10 to 7200, got {seconds}."),
            Some("expires_after.seconds"),
        ));
    }
    let update = match request.session {
        None => SessionUpdate::default(),
        Some(session) => protocol::session_config(shape, session).map_err(refused)?,
    };
    if let Some(model) = update
        .transcription
        .as_ref()
        .and_then(|t| t.as_ref()?.model.as_deref())
    {
        if state.config.resolve_model(model).is_none() {
            return Err(ApiError::model_not_found(model));
        }
    }
    let minted = state
        .live
        .secrets
        .mint(Duration::from_secs(seconds), update.clone())
        .map_err(|e| match e {
            MintError::Full => ApiError::overloaded(),
            MintError::Random => ApiError::internal("the system's random source failed"),
        })?;
    Ok((update, minted))
}

fn refused(e: ProtocolError) -> ApiError {
    let message = match e.param {
        Some(param) => format!("{} (param: {param})", e.message),
        None => e.message,
    };
    ApiError::invalid(message, None)
}
