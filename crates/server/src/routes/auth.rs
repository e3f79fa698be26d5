//! Authentication (`Authorization: Bearer KEY`) and the request id, the two things
//! decided about a request before anything reads its body.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::realtime::SecretSession;
use super::unread_body::discard_refused_body;
use super::AppState;
use crate::error::ApiError;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client request id kept (see [`keep_safe_request_id`]).
const MAX_REQUEST_ID_CHARS: usize = 128;

/// The configured API keys as SHA-256 digests, hashed once at start.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    digests: Arc<[[u8; 32]]>,
}

impl ApiKeys {
    pub fn new(keys: &[String]) -> Self {
        Self {
            digests: keys.iter().map(|k| digest(k)).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the keys. Its digest is compared with every
    /// configured digest, every byte of each: digests have one length whatever the key's,
    /// and nothing returns early, so the time taken tells a guesser neither a key's
    /// length nor how much of it matched nor which key it was.
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = digest(presented);
        let matches = self.digests.iter().fold(0u8, |found, key| {
            let difference = key
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found | u8::from(std::hint::black_box(difference) == 0)
        });
        matches != 0
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `Authorization: Bearer KEY` when keys are configured; /health and /metrics may
/// stay open (`server.public_health`), the OpenAPI document always is.
///
/// Runs before the unread body is discarded (`unread_body`): a refused client gets its
/// 401 with `Connection: close` once at most 1 MiB of its upload
/// were discarded, never the whole upload (a client still writing past that may see
/// its connection reset; one that reads gets the 401).
///
/// A live session (`GET /v1/realtime`) may also present its key the way browsers must,
/// as the subprotocol `openai-insecure-api-key.KEY`, and may use a client secret
/// (`ek_…`, minted by `POST /v1/realtime/client_secrets`) instead of an API key; the
/// secret's session settings go to the route as a [`SecretSession`].
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let public = path == "/openapi.json"
        || (state.config.server.public_health && (path == "/health" || path == "/metrics"));
    let live = path == LIVE_PATH;
    let presented = presented_key(request.headers(), live);
    if let Some(settings) = presented
        .as_deref()
        .filter(|_| live)
        .and_then(|key| state.live.secrets.accept(key))
    {
        request.extensions_mut().insert(SecretSession(settings));
        return next.run(request).await;
    }
    if state.keys.is_empty() || public {
        return next.run(request).await;
    }
    let message = match presented {
        Some(key) if state.keys.accepts(&key) => return next.run(request).await,
        Some(_) => "Incorrect API key provided.",
        None => "You didn't provide an API key. Send it as `Authorization: Bearer KEY`.",
    };
    discard_refused_body(request).await;
    let mut response = ApiError::unauthorized(message).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The path of live sessions, the one route that takes a key in a subprotocol.
const LIVE_PATH: &str = "/v1/realtime";
/// How OpenAI's browser clients send a key: `Sec-WebSocket-Protocol: realtime,
/// openai-insecure-api-key.KEY`.
const KEY_SUBPROTOCOL: &str = "openai-insecure-api-key.";

/// The key of `Authorization: Bearer KEY`, or for a live session the one in its
/// offered subprotocols.
fn presented_key(headers: &HeaderMap, live: bool) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_string());
    if bearer.is_some() || !live {
        return bearer;
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(KEY_SUBPROTOCOL))
        .map(str::to_string)
}

/// Removes a client's `x-request-id` unless it is one value of 1 to 128 characters of
/// `[A-Za-z0-9._-]`, so that the request gets a fresh one: the id is logged and sent
/// back, where spaces, `=` or quotes would let a client forge log fields.
pub async fn keep_safe_request_id(mut request: Request) -> Request {
    let mut ids = request.headers().get_all(&REQUEST_ID).iter();
    let keep = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => is_safe_request_id(id.as_bytes()),
        // Several: which one is logged and which sent back would differ.
        (Some(_), Some(_)) => false,
    };
    if !keep {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_CHARS).contains(&id.len())
        && id
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_whole_and_exact() {
        let keys = ApiKeys::new(&["sk-a".into(), "sk-bb".into()]);
        assert!(keys.accepts("sk-a") && keys.accepts("sk-bb"));
        for wrong in ["", "sk-", "sk-b", "sk-a ", "sk-bbb", "SK-A"] {
            assert!(!keys.accepts(wrong), "{wrong:?}");
        }
        assert!(ApiKeys::new(&[]).is_empty());
        assert!(!ApiKeys::new(&[]).accepts(""));
        // The same key twice still matches (the fold counts no more than one).
        assert!(ApiKeys::new(&["k".into(), "k".into()]).accepts("k"));
    }

    #[test]
    fn live_sessions_may_send_their_key_as_a_subprotocol() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(
                "realtime, openai-insecure-api-key.sk-x, openai-beta.realtime-v1",
            ),
        );
        assert_eq!(presented_key(&headers, true).as_deref(), Some("sk-x"));
        assert_eq!(
            presented_key(&headers, false),
            None,
            "only on the live route"
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-y"),
        );
        assert_eq!(presented_key(&headers, true).as_deref(), Some("sk-y"));
    }

    #[test]
    fn request_ids_are_kept_only_when_safe() {
        for good in ["abc", "A-1_b.c", &"x".repeat(128)] {
            assert!(is_safe_request_id(good.as_bytes()), "{good}");
        }
        for bad in ["", "a b", "a=b", "id\"", "é", &"x".repeat(129)] {
            assert!(!is_safe_request_id(bad.as_bytes()), "{bad}");
        }
    }
}
