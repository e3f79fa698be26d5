//! Live transcription: OpenAI's Realtime API in its transcription mode, over WebSocket
//! (`GET /v1/realtime?intent=transcription`, `routes::realtime`).
//!
//! * [`protocol`] — the client and server events of both protocol shapes;
//! * [`session`] — one connection's state machine and its writer;
//! * [`turn`] — server VAD: where turns start and stop;
//! * [`interim`] — the stable-prefix rule for text before a turn ends;
//! * [`secrets`] — short-lived client secrets for browsers;
//! * [`schema`] — the endpoints' and events' shapes for the OpenAPI document.

pub mod interim;
pub mod protocol;
pub mod schema;
pub mod secrets;
pub mod session;
pub mod turn;

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::RealtimeConfig;

/// The largest WebSocket message a session reads: an append at OpenAI's cap, its JSON
/// around it, and room to answer one a little over the cap with an `error` event.
pub const MAX_MESSAGE_BYTES: usize = protocol::MAX_APPEND_BASE64_BYTES + 1024 * 1024;

/// What the socket reads of one message before it gives up: twice the limit, so that a
/// message a little over [`MAX_MESSAGE_BYTES`] is read whole and refused with its error and
/// close frame. A socket that stops reading mid-message cannot deliver those: the client,
/// still writing, has its connection reset by the unread bytes.
pub const READ_LIMIT_BYTES: usize = 2 * MAX_MESSAGE_BYTES;

/// What all sessions share: the session slots and the minted client secrets.
#[derive(Clone)]
pub struct Live {
    /// One per open session (`realtime.max_sessions`).
    pub sessions: Arc<Semaphore>,
    pub secrets: secrets::ClientSecrets,
}

impl Live {
    pub fn new(config: &RealtimeConfig) -> Self {
        Self {
            sessions: Arc::new(Semaphore::new(config.max_sessions)),
            secrets: secrets::ClientSecrets::new(config.max_client_secrets),
        }
    }
}
