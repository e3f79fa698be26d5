//! The shapes of the realtime endpoints for the OpenAPI document only: the handlers build
//! these bodies as JSON ([`super::protocol::Settings::render`], `routes::realtime`), and
//! a WebSocket's events are not HTTP bodies, so OpenAPI names them as schemas beside
//! `GET /v1/realtime`.
#![allow(dead_code)]

use utoipa::ToSchema;

/// `POST /v1/realtime/client_secrets`.
#[derive(ToSchema)]
pub struct ClientSecretRequest {
    pub expires_after: Option<ExpiresAfter>,
    /// The settings sessions opened with the secret start with.
    pub session: Option<TranscriptionSessionConfig>,
}

#[derive(ToSchema)]
pub struct ExpiresAfter {
    /// `created_at` (the only anchor).
    pub anchor: Option<String>,
    /// Lifetime, 10 to 7200 s (default `realtime.client_secret_ttl_seconds`).
    pub seconds: Option<u64>,
}

/// A transcription session's settings (`session.update`'s `session`, the GA shape).
#[derive(ToSchema)]
pub struct TranscriptionSessionConfig {
    /// `transcription`.
    #[schema(rename = "type")]
    pub kind: String,
    pub audio: Option<AudioSettings>,
    /// `["item.input_audio_transcription.logprobs"]` adds token logprobs to deltas and
    /// completed transcripts.
    pub include: Option<Vec<String>>,
}

#[derive(ToSchema)]
pub struct AudioSettings {
    pub input: Option<AudioInput>,
}

#[derive(ToSchema)]
pub struct AudioInput {
    pub format: Option<AudioFormat>,
    pub transcription: Option<TranscriptionSettings>,
    /// `null` turns server VAD off: the client commits each turn.
    pub turn_detection: Option<TurnDetection>,
    /// Accepted and echoed; the audio is not filtered.
    #[schema(value_type = Option<Object>)]
    pub noise_reduction: Option<()>,
}

#[derive(ToSchema)]
pub struct AudioFormat {
    /// `audio/pcm` (16-bit little-endian mono), `audio/pcmu` or `audio/pcma` (G.711, 8 kHz).
    #[schema(rename = "type")]
    pub kind: String,
    /// `audio/pcm` only: 24000.
    pub rate: Option<u32>,
}

#[derive(ToSchema)]
pub struct TranscriptionSettings {
    /// A configured model id or alias (`whisper-1`).
    pub model: Option<String>,
    /// ISO-639-1 code; absent: detected.
    pub language: Option<String>,
    /// Text to condition every turn on.
    pub prompt: Option<String>,
}

#[derive(ToSchema)]
pub struct TurnDetection {
    /// `server_vad`.
    #[schema(rename = "type")]
    pub kind: String,
    /// 0 to 1 (0.5): how far above the noise floor speech must be.
    pub threshold: Option<f64>,
    /// Audio kept before the speech found (300).
    pub prefix_padding_ms: Option<u64>,
    /// Silence that ends a turn (500).
    pub silence_duration_ms: Option<u64>,
}

/// A minted client secret, with the session it opens.
#[derive(ToSchema)]
pub struct ClientSecret {
    /// `ek_…`: send it as the Bearer key (or in the subprotocol) to `/v1/realtime` only.
    pub value: String,
    /// Unix seconds.
    pub expires_at: u64,
    pub session: TranscriptionSession,
}

/// The session object of `session.created` / `session.updated` (GA shape).
#[derive(ToSchema)]
pub struct TranscriptionSession {
    pub id: String,
    /// `realtime.transcription_session`.
    pub object: String,
    /// `transcription`.
    #[schema(rename = "type")]
    pub kind: String,
    pub expires_at: u64,
    pub audio: AudioSettings,
    pub include: Vec<String>,
}

/// `POST /v1/realtime/transcription_sessions` (the beta): settings in the beta's shape;
/// the answer is the same object with its `client_secret`.
#[derive(ToSchema)]
pub struct BetaTranscriptionSession {
    /// `pcm16` (24 kHz), `g711_ulaw`, `g711_alaw`.
    pub input_audio_format: Option<String>,
    pub input_audio_transcription: Option<TranscriptionSettings>,
    pub turn_detection: Option<TurnDetection>,
    #[schema(value_type = Option<Object>)]
    pub input_audio_noise_reduction: Option<()>,
    pub include: Option<Vec<String>>,
    /// In the answer: `{value, expires_at}`; in a request, `expires_at.seconds` sets the
    /// lifetime.
    #[schema(value_type = Option<Object>)]
    pub client_secret: Option<()>,
}

/// An event a client sends on `/v1/realtime` (one JSON text message each).
#[derive(ToSchema)]
pub struct RealtimeClientEvent {
    /// `session.update` (`session`: [`TranscriptionSessionConfig`]),
    /// `transcription_session.update` (`session`: [`BetaTranscriptionSession`]),
    /// `input_audio_buffer.append` (`audio`: base64, at most 15 MiB), `input_audio_buffer.commit`,
    /// `input_audio_buffer.clear`.
    #[schema(rename = "type")]
    pub kind: String,
    /// Echoed in the `error` event this event causes.
    pub event_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub session: Option<()>,
    pub audio: Option<String>,
}

/// An event the server sends on `/v1/realtime`; every one has `event_id` and `type`.
#[derive(ToSchema)]
pub struct RealtimeServerEvent {
    /// `session.created`, `session.updated` (beta: `transcription_session.created` /
    /// `.updated`; `session`), `input_audio_buffer.speech_started` (`audio_start_ms`,
    /// `item_id`), `input_audio_buffer.speech_stopped` (`audio_end_ms`),
    /// `input_audio_buffer.committed` (`previous_item_id`), `input_audio_buffer.cleared`,
    /// `conversation.item.input_audio_transcription.delta` (`delta`, `logprobs`),
    /// `conversation.item.input_audio_transcription.completed` (`transcript`, `usage`,
    /// `logprobs`), `conversation.item.input_audio_transcription.failed` (`error`),
    /// `error` (`error`: OpenAI's error object with the offending `event_id`).
    #[schema(rename = "type")]
    pub kind: String,
    pub event_id: String,
    pub item_id: Option<String>,
    pub delta: Option<String>,
    pub transcript: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<()>,
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    #[test]
    fn the_document_has_the_realtime_endpoints_and_events() {
        let doc = serde_json::to_value(crate::routes::openapi::ApiDoc::openapi()).unwrap();
        let connect = &doc["paths"]["/v1/realtime"]["get"];
        assert!(connect["responses"]["101"].is_object(), "{connect}");
        assert_eq!(connect["parameters"][0]["name"], "intent");
        for path in [
            "/v1/realtime/client_secrets",
            "/v1/realtime/transcription_sessions",
        ] {
            let post = &doc["paths"][path]["post"];
            assert!(post["requestBody"].is_object(), "{path}: {post}");
            assert!(post["responses"]["200"].is_object(), "{path}: {post}");
        }
        let schemas = &doc["components"]["schemas"];
        for name in [
            "ClientSecret",
            "TranscriptionSessionConfig",
            "BetaTranscriptionSession",
            "RealtimeClientEvent",
            "RealtimeServerEvent",
        ] {
            assert!(schemas[name].is_object(), "no schema {name}");
        }
        assert!(schemas["TurnDetection"]["properties"]["type"].is_object());
    }
}
