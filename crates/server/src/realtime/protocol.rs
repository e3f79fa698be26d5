//! OpenAI's Realtime transcription events on the wire, in both shapes clients speak:
//! the current one (`session.update` with `session.type = "transcription"` and
//! `session.audio.input`) and the earlier beta one (`transcription_session.update` with
//! `input_audio_format`, `input_audio_transcription`, `turn_detection`).
//!
//! Client events are parsed into [`ClientEvent`] (a session update of either shape
//! becomes one [`SessionUpdate`]); a bad one becomes a [`ProtocolError`] that carries
//! the event's `event_id` for the `error` event. Server events are built here as JSON,
//! each in the shape the client last spoke ([`Shape`]).

use serde::Deserialize;
use serde_json::{json, Value};
use steno_audio::live::{LiveFormat, REALTIME_PCM_RATE};

/// OpenAI's cap on one `input_audio_buffer.append`: 15 MiB of base64.
pub const MAX_APPEND_BASE64_BYTES: usize = 15 * 1024 * 1024;

/// The `include` item that asks for token log-probabilities.
pub const INCLUDE_LOGPROBS: &str = "item.input_audio_transcription.logprobs";

/// Which generation of the protocol a client speaks; server events answer in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `session.update` / `session.updated` (the GA Realtime API).
    Current,
    /// `transcription_session.update` / `transcription_session.updated` (the beta).
    Beta,
}

/// A client event that parsed.
#[derive(Debug)]
pub enum ClientEvent {
    Update(Shape, SessionUpdate),
    /// Audio bytes in the session's format (already base64-decoded).
    Append(Vec<u8>),
    Commit,
    Clear,
}

/// A client event with the id it came with (for the `error` event of a failure later).
#[derive(Debug)]
pub struct Incoming {
    pub event_id: Option<String>,
    pub event: ClientEvent,
}

/// A refused client event: becomes an `error` event with OpenAI's error object.
#[derive(Clone, Debug, PartialEq)]
pub struct ProtocolError {
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub event_id: Option<String>,
}

impl ProtocolError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: None,
            event_id: None,
        }
    }

    pub fn server(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: "server_error",
            ..Self::invalid(code, message)
        }
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn event(mut self, event_id: Option<String>) -> Self {
        self.event_id = event_id;
        self
    }
}

/// The transcription settings of a session (`audio.input.transcription` or
/// `input_audio_transcription`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Transcription {
    pub model: Option<String>,
    pub language: Option<String>,
    pub prompt: Option<String>,
}

/// `server_vad` turn detection; the numbers OpenAI leaves out take its defaults.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ServerVad {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub threshold: Option<f64>,
    pub prefix_padding_ms: Option<u64>,
    pub silence_duration_ms: Option<u64>,
}

/// The fields one update sets; `None` leaves a setting as it was, `Some(None)` is an
/// explicit `null` (turn detection off, no transcription settings, no noise reduction).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionUpdate {
    pub format: Option<LiveFormat>,
    pub transcription: Option<Option<Transcription>>,
    pub turn_detection: Option<Option<ServerVad>>,
    pub noise_reduction: Option<Option<Value>>,
    pub include: Option<Vec<String>>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Incoming, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ProtocolError::invalid(
            "invalid_json",
            format!("The event is not valid JSON: {e}. Send one JSON object per message."),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err(ProtocolError::invalid(
            "invalid_json",
            "The event must be a JSON object.",
        ));
    };
    let event_id = match object.get("event_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(_) => {
            return Err(ProtocolError::invalid(
                "invalid_type",
                "Invalid type for 'event_id': expected a string.",
            )
            .param("event_id"))
        }
    };
    let kind = match object.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => {
            return Err(ProtocolError::invalid(
                "missing_required_parameter",
                "Missing required parameter: 'type'.",
            )
            .param("type")
            .event(event_id))
        }
    };
    let event = match kind.as_str() {
        "session.update" => session_update(Shape::Current, object.remove("session")),
        "transcription_session.update" => session_update(Shape::Beta, object.remove("session")),
        "input_audio_buffer.append" => append(object.remove("audio")),
        "input_audio_buffer.commit" => Ok(ClientEvent::Commit),
        "input_audio_buffer.clear" => Ok(ClientEvent::Clear),
        other => Err(ProtocolError::invalid(
            "invalid_value",
            format!(
                "Invalid value: '{}'. A transcription session accepts session.update, \
                 transcription_session.update, input_audio_buffer.append, \
                 input_audio_buffer.commit and input_audio_buffer.clear.",
                clip(other)
            ),
        )
        .param("type")),
    };
    match event {
        Ok(event) => Ok(Incoming { event_id, event }),
        Err(e) => Err(e.event(event_id)),
    }
}

/// At most 64 characters of a client's string, for an error message.
fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

fn append(audio: Option<Value>) -> Result<ClientEvent, ProtocolError> {
    use base64::Engine as _;
    let Some(Value::String(audio)) = audio else {
        return Err(ProtocolError::invalid(
            "missing_required_parameter",
            "Missing required parameter: 'audio' (base64-encoded audio bytes).",
        )
        .param("audio"));
    };
    if audio.len() > MAX_APPEND_BASE64_BYTES {
        return Err(ProtocolError::invalid(
            "string_above_max_length",
            format!(
                "Invalid 'audio': string too long. Expected a string with maximum length \
                 {MAX_APPEND_BASE64_BYTES}, but got a string with length {}.",
                audio.len()
            ),
        )
        .param("audio"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(audio.as_bytes())
        .map(ClientEvent::Append)
        .map_err(|e| {
            ProtocolError::invalid(
                "invalid_value",
                format!("Invalid 'audio': not base64 ({e})."),
            )
            .param("audio")
        })
}

/// The GA `session` object of a transcription session (the fields Steno reads).
#[derive(Deserialize)]
struct CurrentSession {
    #[serde(rename = "type")]
    kind: Option<String>,
    audio: Option<CurrentAudio>,
    include: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct CurrentAudio {
    input: Option<CurrentInput>,
}

#[derive(Deserialize)]
struct CurrentInput {
    format: Option<CurrentFormat>,
    #[serde(default, deserialize_with = "nullable")]
    transcription: Option<Option<Transcription>>,
    #[serde(default, deserialize_with = "nullable")]
    turn_detection: Option<Option<ServerVad>>,
    #[serde(default, deserialize_with = "nullable")]
    noise_reduction: Option<Option<Value>>,
}

#[derive(Deserialize)]
struct CurrentFormat {
    #[serde(rename = "type")]
    kind: String,
    rate: Option<u32>,
}

/// The beta `session` object of `transcription_session.update`.
#[derive(Deserialize)]
struct BetaSession {
    input_audio_format: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    input_audio_transcription: Option<Option<Transcription>>,
    #[serde(default, deserialize_with = "nullable")]
    turn_detection: Option<Option<ServerVad>>,
    #[serde(default, deserialize_with = "nullable")]
    input_audio_noise_reduction: Option<Option<Value>>,
    include: Option<Vec<String>>,
}

/// A present field as `Some(value or null)`; an absent one stays `None` (by `default`).
fn nullable<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

fn session_update(shape: Shape, session: Option<Value>) -> Result<ClientEvent, ProtocolError> {
    let Some(session) = session.filter(Value::is_object) else {
        return Err(ProtocolError::invalid(
            "missing_required_parameter",
            "Missing required parameter: 'session' (an object).",
        )
        .param("session"));
    };
    session_config(shape, session).map(|update| ClientEvent::Update(shape, update))
}

/// A `session` object of either shape (also the body's `session` of a client secret).
pub fn session_config(shape: Shape, session: Value) -> Result<SessionUpdate, ProtocolError> {
    let bad = |e: serde_json::Error| {
        ProtocolError::invalid("invalid_value", format!("Invalid 'session': {e}.")).param("session")
    };
    let update = match shape {
        Shape::Current => current_update(serde_json::from_value(session).map_err(bad)?)?,
        Shape::Beta => beta_update(serde_json::from_value(session).map_err(bad)?)?,
    };
    check_update(&update, shape)?;
    Ok(update)
}

fn current_update(session: CurrentSession) -> Result<SessionUpdate, ProtocolError> {
    match session.kind.as_deref() {
        Some("transcription") | None => {}
        Some(other) => {
            return Err(ProtocolError::invalid(
                "invalid_value",
                format!(
                    "Invalid value: '{}'. This server supports transcription sessions only \
                     (session.type = \"transcription\", at /v1/realtime?intent=transcription).",
                    clip(other)
                ),
            )
            .param("session.type"))
        }
    }
    let input = session.audio.and_then(|a| a.input);
    let mut update = SessionUpdate {
        include: session.include,
        ..SessionUpdate::default()
    };
    if let Some(input) = input {
        update.format = input.format.map(current_format).transpose()?;
        update.transcription = input.transcription;
        update.turn_detection = input.turn_detection;
        update.noise_reduction = input.noise_reduction;
    }
    Ok(update)
}

fn current_format(format: CurrentFormat) -> Result<LiveFormat, ProtocolError> {
    let param = "session.audio.input.format";
    match (format.kind.as_str(), format.rate) {
        ("audio/pcm", None | Some(REALTIME_PCM_RATE)) => Ok(LiveFormat::Pcm16 {
            rate: REALTIME_PCM_RATE,
        }),
        ("audio/pcm", Some(rate)) => Err(ProtocolError::invalid(
            "invalid_value",
            format!("Invalid 'rate': {rate}. audio/pcm is supported at 24000 Hz only."),
        )
        .param(format!("{param}.rate"))),
        ("audio/pcmu", _) => Ok(LiveFormat::Mulaw),
        ("audio/pcma", _) => Ok(LiveFormat::Alaw),
        (other, _) => Err(ProtocolError::invalid(
            "invalid_value",
            format!(
                "Invalid value: '{}'. Supported values are: 'audio/pcm', 'audio/pcmu' and \
                 'audio/pcma'.",
                clip(other)
            ),
        )
        .param(format!("{param}.type"))),
    }
}

fn beta_update(session: BetaSession) -> Result<SessionUpdate, ProtocolError> {
    let format = session
        .input_audio_format
        .map(|f| match f.as_str() {
            "pcm16" => Ok(LiveFormat::Pcm16 {
                rate: REALTIME_PCM_RATE,
            }),
            "g711_ulaw" => Ok(LiveFormat::Mulaw),
            "g711_alaw" => Ok(LiveFormat::Alaw),
            other => Err(ProtocolError::invalid(
                "invalid_value",
                format!(
                    "Invalid value: '{}'. Supported values are: 'pcm16', 'g711_ulaw' and \
                     'g711_alaw'.",
                    clip(other)
                ),
            )
            .param("session.input_audio_format")),
        })
        .transpose()?;
    Ok(SessionUpdate {
        format,
        transcription: session.input_audio_transcription,
        turn_detection: session.turn_detection,
        noise_reduction: session.input_audio_noise_reduction,
        include: session.include,
    })
}

/// The checks both shapes share: turn detection Steno can do, numbers in range, known
/// `include` items.
fn check_update(update: &SessionUpdate, shape: Shape) -> Result<(), ProtocolError> {
    let prefix = match shape {
        Shape::Current => "session.audio.input.turn_detection",
        Shape::Beta => "session.turn_detection",
    };
    if let Some(Some(vad)) = &update.turn_detection {
        if !matches!(vad.kind.as_deref(), Some("server_vad") | None) {
            return Err(ProtocolError::invalid(
                "invalid_value",
                format!(
                    "Invalid value: '{}'. Supported turn detection: 'server_vad' (or null \
                     to commit by hand).",
                    clip(vad.kind.as_deref().unwrap_or_default())
                ),
            )
            .param(format!("{prefix}.type")));
        }
        if vad.threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return Err(ProtocolError::invalid(
                "decimal_out_of_range",
                "Invalid 'threshold': expected a number from 0.0 to 1.0.",
            )
            .param(format!("{prefix}.threshold")));
        }
        for (name, value) in [
            ("prefix_padding_ms", vad.prefix_padding_ms),
            ("silence_duration_ms", vad.silence_duration_ms),
        ] {
            if value.is_some_and(|v| v > 10_000) {
                return Err(ProtocolError::invalid(
                    "integer_above_max_value",
                    format!("Invalid '{name}': at most 10000 milliseconds."),
                )
                .param(format!("{prefix}.{name}")));
            }
        }
    }
    if let Some(unknown) = update
        .include
        .iter()
        .flatten()
        .find(|i| *i != INCLUDE_LOGPROBS)
    {
        return Err(ProtocolError::invalid(
            "invalid_value",
            format!(
                "Invalid value: '{}'. Supported values are: '{INCLUDE_LOGPROBS}'.",
                clip(unknown)
            ),
        )
        .param("session.include"));
    }
    Ok(())
}

/// The effective settings of a session, rendered into `session.created` / `.updated`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub format: LiveFormat,
    /// The model as the client named it (for the echo); [`Settings::model`] resolves it.
    pub transcription: Transcription,
    pub turn_detection: Option<Vad>,
    pub noise_reduction: Option<Value>,
    pub logprobs: bool,
}

/// Server VAD settings with OpenAI's defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Vad {
    pub threshold: f64,
    pub prefix_padding_ms: u64,
    pub silence_duration_ms: u64,
}

impl Default for Vad {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            format: LiveFormat::Pcm16 {
                rate: REALTIME_PCM_RATE,
            },
            transcription: Transcription::default(),
            turn_detection: Some(Vad::default()),
            noise_reduction: None,
            logprobs: false,
        }
    }
}

impl Settings {
    /// These settings with `update` applied.
    pub fn updated(&self, update: &SessionUpdate) -> Settings {
        let mut next = self.clone();
        if let Some(format) = update.format {
            next.format = format;
        }
        if let Some(transcription) = &update.transcription {
            next.transcription = transcription.clone().unwrap_or_default();
        }
        if let Some(turn_detection) = &update.turn_detection {
            next.turn_detection = turn_detection.as_ref().map(|v| {
                let d = Vad::default();
                Vad {
                    threshold: v.threshold.unwrap_or(d.threshold),
                    prefix_padding_ms: v.prefix_padding_ms.unwrap_or(d.prefix_padding_ms),
                    silence_duration_ms: v.silence_duration_ms.unwrap_or(d.silence_duration_ms),
                }
            });
        }
        if let Some(noise_reduction) = &update.noise_reduction {
            next.noise_reduction = noise_reduction.clone();
        }
        if let Some(include) = &update.include {
            next.logprobs = include.iter().any(|i| i == INCLUDE_LOGPROBS);
        }
        next
    }

    fn include(&self) -> Vec<&'static str> {
        if self.logprobs {
            vec![INCLUDE_LOGPROBS]
        } else {
            Vec::new()
        }
    }

    fn turn_detection_json(&self) -> Value {
        self.turn_detection.map_or(Value::Null, |v| {
            json!({
                "type": "server_vad",
                "threshold": v.threshold,
                "prefix_padding_ms": v.prefix_padding_ms,
                "silence_duration_ms": v.silence_duration_ms,
            })
        })
    }

    fn transcription_json(&self, default_model: &str) -> Value {
        let t = &self.transcription;
        json!({
            "model": t.model.as_deref().unwrap_or(default_model),
            "language": t.language,
            "prompt": t.prompt.as_deref().unwrap_or(""),
        })
    }

    /// The session object in `shape`.
    pub fn render(&self, shape: Shape, id: &str, default_model: &str) -> Value {
        match shape {
            Shape::Current => json!({
                "id": id,
                "object": "realtime.transcription_session",
                "type": "transcription",
                "expires_at": 0,
                "audio": {"input": {
                    "format": current_format_json(self.format),
                    "transcription": self.transcription_json(default_model),
                    "turn_detection": self.turn_detection_json(),
                    "noise_reduction": self.noise_reduction,
                }},
                "include": self.include(),
            }),
            Shape::Beta => json!({
                "id": id,
                "object": "realtime.transcription_session",
                "expires_at": 0,
                "modalities": ["text"],
                "input_audio_format": beta_format_name(self.format),
                "input_audio_transcription": self.transcription_json(default_model),
                "turn_detection": self.turn_detection_json(),
                "input_audio_noise_reduction": self.noise_reduction,
                "include": self.include(),
                "client_secret": null,
            }),
        }
    }
}

fn current_format_json(format: LiveFormat) -> Value {
    match format {
        LiveFormat::Pcm16 { rate } => json!({"type": "audio/pcm", "rate": rate}),
        LiveFormat::Mulaw => json!({"type": "audio/pcmu"}),
        LiveFormat::Alaw => json!({"type": "audio/pcma"}),
    }
}

fn beta_format_name(format: LiveFormat) -> &'static str {
    match format {
        LiveFormat::Pcm16 { .. } => "pcm16",
        LiveFormat::Mulaw => "g711_ulaw",
        LiveFormat::Alaw => "g711_alaw",
    }
}

/// A server event without its `event_id` (the sender numbers them).
pub fn event(kind: &str, mut fields: Value) -> Value {
    if let Value::Object(map) = &mut fields {
        map.insert("type".into(), Value::String(kind.into()));
    }
    fields
}

/// `session.created` / `session.updated`, or the beta `transcription_session.*` pair.
pub fn session_event(shape: Shape, created: bool, session: Value) -> Value {
    let kind = match (shape, created) {
        (Shape::Current, true) => "session.created",
        (Shape::Current, false) => "session.updated",
        (Shape::Beta, true) => "transcription_session.created",
        (Shape::Beta, false) => "transcription_session.updated",
    };
    event(kind, json!({ "session": session }))
}

/// The `error` event for `e`.
pub fn error_event(e: &ProtocolError) -> Value {
    event(
        "error",
        json!({"error": {
            "type": e.kind,
            "code": e.code,
            "message": e.message,
            "param": e.param,
            "event_id": e.event_id,
        }}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> ProtocolError {
        parse(text).expect_err(text)
    }

    #[test]
    fn both_shapes_of_session_update_become_one_update() {
        let ga = r#"{"type":"session.update","event_id":"e1","session":{"type":"transcription",
            "audio":{"input":{"format":{"type":"audio/pcmu"},
            "transcription":{"model":"whisper-1","language":"en","prompt":"JFK"},
            "turn_detection":{"type":"server_vad","threshold":0.6,"prefix_padding_ms":200,
            "silence_duration_ms":400},"noise_reduction":{"type":"near_field"}}},
            "include":["item.input_audio_transcription.logprobs"]}}"#;
        let beta = r#"{"type":"transcription_session.update","session":{
            "input_audio_format":"g711_ulaw",
            "input_audio_transcription":{"model":"whisper-1","language":"en","prompt":"JFK"},
            "turn_detection":{"type":"server_vad","threshold":0.6,"prefix_padding_ms":200,
            "silence_duration_ms":400},"input_audio_noise_reduction":{"type":"near_field"},
            "include":["item.input_audio_transcription.logprobs"]}}"#;
        let (Ok(a), Ok(b)) = (parse(ga), parse(beta)) else {
            panic!("both parse")
        };
        assert_eq!(a.event_id.as_deref(), Some("e1"));
        let (ClientEvent::Update(Shape::Current, a), ClientEvent::Update(Shape::Beta, b)) =
            (a.event, b.event)
        else {
            panic!("updates of their shapes")
        };
        assert_eq!(a, b);
        let settings = Settings::default().updated(&a);
        assert_eq!(settings.format, LiveFormat::Mulaw);
        assert!(settings.logprobs);
        assert_eq!(
            settings.turn_detection,
            Some(Vad {
                threshold: 0.6,
                prefix_padding_ms: 200,
                silence_duration_ms: 400
            })
        );
        let rendered = settings.render(Shape::Current, "sess_1", "whisper-1");
        assert_eq!(rendered["audio"]["input"]["format"]["type"], "audio/pcmu");
        let rendered = settings.render(Shape::Beta, "sess_1", "whisper-1");
        assert_eq!(rendered["input_audio_format"], "g711_ulaw");
    }

    #[test]
    fn null_turn_detection_turns_it_off_and_absent_keeps_it() {
        let off = parse(r#"{"type":"session.update","session":{"type":"transcription","audio":{"input":{"turn_detection":null}}}}"#).unwrap();
        let ClientEvent::Update(_, off) = off.event else {
            panic!()
        };
        assert_eq!(off.turn_detection, Some(None));
        assert_eq!(Settings::default().updated(&off).turn_detection, None);
        let keep =
            parse(r#"{"type":"session.update","session":{"type":"transcription"}}"#).unwrap();
        let ClientEvent::Update(_, keep) = keep.event else {
            panic!()
        };
        assert!(Settings::default().updated(&keep).turn_detection.is_some());
    }

    #[test]
    fn bad_events_are_refused_with_their_event_id() {
        assert_eq!(error_of("{nope").code, "invalid_json");
        assert_eq!(error_of("[1]").code, "invalid_json");
        let unknown = error_of(r#"{"type":"response.create","event_id":"x9"}"#);
        assert_eq!(
            (unknown.param.as_deref(), unknown.event_id.as_deref()),
            (Some("type"), Some("x9"))
        );
        let format = error_of(
            r#"{"type":"session.update","event_id":"f","session":{"type":"transcription","audio":{"input":{"format":{"type":"audio/pcm","rate":16000}}}}}"#,
        );
        assert_eq!(
            format.param.as_deref(),
            Some("session.audio.input.format.rate")
        );
        assert_eq!(format.event_id.as_deref(), Some("f"));
        let beta = error_of(
            r#"{"type":"transcription_session.update","session":{"input_audio_format":"mp3"}}"#,
        );
        assert_eq!(beta.param.as_deref(), Some("session.input_audio_format"));
        let realtime = error_of(r#"{"type":"session.update","session":{"type":"realtime"}}"#);
        assert_eq!(realtime.param.as_deref(), Some("session.type"));
        let semantic = error_of(
            r#"{"type":"transcription_session.update","session":{"turn_detection":{"type":"semantic_vad"}}}"#,
        );
        assert_eq!(
            semantic.param.as_deref(),
            Some("session.turn_detection.type")
        );
        assert_eq!(
            error_of(r#"{"type":"input_audio_buffer.append","audio":"***"}"#)
                .param
                .as_deref(),
            Some("audio")
        );
        assert_eq!(
            error_of(r#"{"type":"input_audio_buffer.append"}"#).code,
            "missing_required_parameter"
        );
        let include = error_of(r#"{"type":"session.update","session":{"include":["x"]}}"#);
        assert_eq!(include.param.as_deref(), Some("session.include"));
    }

    #[test]
    fn appends_decode_base64_and_oversized_ones_are_refused() {
        let ok = parse(r#"{"type":"input_audio_buffer.append","audio":"AAEC"}"#).unwrap();
        assert!(matches!(ok.event, ClientEvent::Append(ref b) if b == &[0, 1, 2]));
        let huge = format!(
            r#"{{"type":"input_audio_buffer.append","audio":"{}"}}"#,
            "A".repeat(MAX_APPEND_BASE64_BYTES + 4)
        );
        assert_eq!(error_of(&huge).code, "string_above_max_length");
    }

    #[test]
    fn error_events_carry_openais_error_object() {
        let e = ProtocolError::invalid("invalid_value", "bad")
            .param("type")
            .event(Some("ev".into()));
        let v = error_event(&e);
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["event_id"], "ev");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "type");
    }
}
