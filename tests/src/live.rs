//! A live client for Steno's Realtime transcription endpoint (`/v1/realtime`), on a raw
//! WebSocket (tokio-tungstenite): connect with a key as a header or a subprotocol, send
//! a session update in either protocol shape, stream speech at a chosen pace, and
//! collect the server's events, each stamped with when it arrived.
//!
//! ```no_run
//! # async fn demo() {
//! use steno_e2e::live::{Auth, Audio, LiveClient, SessionOptions};
//! let mut client = LiveClient::connect("ws://127.0.0.1:8000/v1/realtime?intent=transcription",
//!     &Auth::None, false).await.unwrap();
//! client.configure(&SessionOptions::default()).await.unwrap();
//! let speech = Audio::Pcm24k(vec![0; 48_000]);
//! client.stream(&speech, 100, 1.0).await;
//! let done = client.wait_for("conversation.item.input_audio_transcription.completed",
//!     std::time::Duration::from_secs(10)).await;
//! # }
//! ```
//!
//! Tests are synchronous: [`block_on`] runs one of these futures to its end.

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::pcm24;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Runs `future` on a fresh single-threaded runtime (tests are synchronous).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// How the client presents its key.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    /// `Authorization: Bearer KEY`.
    Bearer(String),
    /// `Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.KEY` (browsers).
    Subprotocol(String),
}

/// Audio in one of the session formats, ready to append.
#[derive(Clone, Debug)]
pub enum Audio {
    /// 16-bit little-endian PCM at 24 kHz (`audio/pcm`, `pcm16`).
    Pcm24k(Vec<u8>),
    /// G.711 μ-law at 8 kHz (`audio/pcmu`, `g711_ulaw`).
    Mulaw(Vec<u8>),
    /// G.711 A-law at 8 kHz (`audio/pcma`, `g711_alaw`).
    Alaw(Vec<u8>),
}

impl Audio {
    /// 16 kHz samples as 24 kHz PCM16.
    pub fn pcm(samples_16k: &[f32]) -> Audio {
        Audio::Pcm24k(pcm24::to_bytes(&pcm24::upsample_16k(samples_16k)))
    }

    /// 16 kHz samples as 8 kHz G.711 μ-law.
    pub fn mulaw(samples_16k: &[f32]) -> Audio {
        Audio::Mulaw(
            downsample_8k(samples_16k)
                .iter()
                .map(|&s| encode_mulaw(s))
                .collect(),
        )
    }

    /// 16 kHz samples as 8 kHz G.711 A-law.
    pub fn alaw(samples_16k: &[f32]) -> Audio {
        Audio::Alaw(
            downsample_8k(samples_16k)
                .iter()
                .map(|&s| encode_alaw(s))
                .collect(),
        )
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Audio::Pcm24k(b) | Audio::Mulaw(b) | Audio::Alaw(b) => b,
        }
    }

    /// Bytes per second of audio.
    pub fn rate_bytes(&self) -> usize {
        match self {
            Audio::Pcm24k(_) => pcm24::BYTES_PER_SECOND,
            Audio::Mulaw(_) | Audio::Alaw(_) => 8_000,
        }
    }

    /// The format's name in the current shape (`audio.input.format.type`) and the beta's.
    pub fn names(&self) -> (&'static str, &'static str) {
        match self {
            Audio::Pcm24k(_) => ("audio/pcm", "pcm16"),
            Audio::Mulaw(_) => ("audio/pcmu", "g711_ulaw"),
            Audio::Alaw(_) => ("audio/pcma", "g711_alaw"),
        }
    }
}

/// 16 kHz → 8 kHz: a windowed-sinc low-pass at 3.6 kHz, then every other sample.
fn downsample_8k(samples: &[f32]) -> Vec<f32> {
    const HALF: i64 = 24;
    let cutoff = 3_600.0 / 16_000.0;
    let taps: Vec<f64> = (-HALF..=HALF)
        .map(|k| {
            let x = k as f64;
            let sinc = if k == 0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * x).sin() / (std::f64::consts::PI * x)
            };
            let window = 0.5 + 0.5 * (std::f64::consts::PI * x / (HALF as f64 + 1.0)).cos();
            sinc * window
        })
        .collect();
    (0..samples.len() / 2)
        .map(|n| {
            let centre = 2 * n as i64;
            let acc: f64 = taps
                .iter()
                .zip(-HALF..=HALF)
                .filter_map(|(t, k)| {
                    let i = usize::try_from(centre + k).ok()?;
                    samples.get(i).map(|&s| f64::from(s) * t)
                })
                .sum();
            acc as f32
        })
        .collect()
}

/// Linear sample → G.711 μ-law (the encoder side of ITU-T G.711, bias 0x84).
pub fn encode_mulaw(sample: f32) -> u8 {
    let linear = (sample.clamp(-1.0, 1.0) * 32767.0) as i32;
    let sign = if linear < 0 { 0x80 } else { 0 };
    let magnitude = (linear.abs() + 0x84).min(0x7fff);
    let segment = (0..8)
        .rev()
        .find(|&s| magnitude & (0x80 << s) != 0)
        .unwrap_or(0);
    let step = (magnitude >> (segment + 3)) & 0x0f;
    !(sign | (segment << 4) as u8 | step as u8)
}

/// Linear sample → G.711 A-law.
pub fn encode_alaw(sample: f32) -> u8 {
    let linear = (sample.clamp(-1.0, 1.0) * 32767.0) as i32;
    let sign = if linear >= 0 { 0x80 } else { 0 };
    let magnitude = linear.abs().min(0x7fff);
    let code = if magnitude < 256 {
        (magnitude >> 4) as u8
    } else {
        let segment = (1..8)
            .rev()
            .find(|&s| magnitude >= (0x100 << (s - 1)))
            .unwrap_or(1);
        ((segment as u8) << 4) | ((magnitude >> (segment + 3)) & 0x0f) as u8
    };
    (sign | code) ^ 0x55
}

/// What a session update asks for.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// The beta shape (`transcription_session.update`) instead of the current one.
    pub beta: bool,
    /// `(current name, beta name)` of the format, from [`Audio::names`].
    pub format: (&'static str, &'static str),
    /// `server_vad` with (threshold, prefix_padding_ms, silence_duration_ms); `None`:
    /// turn detection off (`null`), the client commits.
    pub vad: Option<(f64, u64, u64)>,
    pub model: Option<String>,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub logprobs: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            beta: false,
            format: ("audio/pcm", "pcm16"),
            vad: Some((0.5, 300, 500)),
            model: None,
            language: Some("en".into()),
            prompt: None,
            logprobs: false,
        }
    }
}

impl SessionOptions {
    /// The session update event for these options.
    pub fn event(&self) -> Value {
        let vad = self
            .vad
            .map_or(Value::Null, |(threshold, prefix, silence)| {
                json!({"type": "server_vad", "threshold": threshold,
                   "prefix_padding_ms": prefix, "silence_duration_ms": silence})
            });
        let mut transcription = json!({});
        for (key, value) in [
            ("model", &self.model),
            ("language", &self.language),
            ("prompt", &self.prompt),
        ] {
            if let Some(value) = value {
                transcription[key] = json!(value);
            }
        }
        let include: Vec<&str> = if self.logprobs {
            vec!["item.input_audio_transcription.logprobs"]
        } else {
            Vec::new()
        };
        if self.beta {
            json!({"type": "transcription_session.update", "session": {
                "input_audio_format": self.format.1,
                "input_audio_transcription": transcription,
                "turn_detection": vad,
                "include": include,
            }})
        } else {
            let mut format = json!({"type": self.format.0});
            if self.format.0 == "audio/pcm" {
                format["rate"] = json!(24_000);
            }
            json!({"type": "session.update", "session": {
                "type": "transcription",
                "audio": {"input": {"format": format, "transcription": transcription,
                                    "turn_detection": vad}},
                "include": include,
            }})
        }
    }
}

/// One server event (or `close` / `pong` / `end` for the socket's own), with when it
/// arrived.
#[derive(Clone, Debug)]
pub struct Event {
    /// Since the client connected.
    pub at: Duration,
    /// The event's `type`; `close` (value `{code, reason}`), `pong`, `binary`, or `end`
    /// when the socket ended without a close frame.
    pub kind: String,
    pub value: Value,
}

/// Why a connection was not made.
#[derive(Debug)]
pub enum ConnectError {
    /// The server answered the upgrade with this HTTP status and body.
    Refused {
        status: u16,
        body: String,
    },
    Other(String),
}

pub struct LiveClient {
    sink: SplitSink<Socket, Message>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Every event received so far, in order.
    pub seen: Vec<Event>,
    /// How many of `seen` [`LiveClient::next`] has returned.
    read: usize,
    pub started: Instant,
}

impl LiveClient {
    /// Connects to `url` (`ws://…/v1/realtime?intent=transcription`); `beta` adds the
    /// `OpenAI-Beta: realtime=v1` header beta clients send.
    pub async fn connect(url: &str, auth: &Auth, beta: bool) -> Result<LiveClient, ConnectError> {
        let socket = open(url, auth, beta).await?;
        Ok(LiveClient::over(socket))
    }

    /// A client over a socket opened with [`open`].
    pub fn over(socket: Socket) -> LiveClient {
        let started = Instant::now();
        let (sink, mut stream) = socket.split();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (kind, value) = match stream.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        let kind = value["type"].as_str().unwrap_or("?").to_string();
                        (kind, value)
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        });
                        ("close".into(), json!({"code": code, "reason": reason}))
                    }
                    Some(Ok(Message::Pong(data))) => ("pong".into(), json!(data.len())),
                    Some(Ok(Message::Binary(data))) => ("binary".into(), json!(data.len())),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => ("end".into(), json!(e.to_string())),
                    None => ("end".into(), Value::Null),
                };
                let last = kind == "end";
                let event = Event {
                    at: started.elapsed(),
                    kind,
                    value,
                };
                if tx.send(event).is_err() || last {
                    return;
                }
            }
        });
        LiveClient {
            sink,
            events,
            seen: Vec::new(),
            read: 0,
            started,
        }
    }

    pub async fn send(&mut self, event: &Value) -> Result<(), tungstenite::Error> {
        self.send_message(Message::Text(event.to_string().into()))
            .await
    }

    pub async fn send_message(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.sink.send(message).await
    }

    /// Sends the session update for `options` and waits for its answer
    /// (`session.updated` / `transcription_session.updated`, or an `error`).
    pub async fn configure(&mut self, options: &SessionOptions) -> Result<Event, String> {
        self.send(&options.event())
            .await
            .map_err(|e| e.to_string())?;
        let answer = self
            .wait_any(
                &["session.updated", "transcription_session.updated", "error"],
                Duration::from_secs(10),
            )
            .await
            .ok_or("no answer to the session update")?;
        if answer.kind == "error" {
            return Err(answer.value.to_string());
        }
        Ok(answer)
    }

    /// Appends `bytes` (base64-encoded into `input_audio_buffer.append`).
    pub async fn append(&mut self, bytes: &[u8]) -> Result<(), tungstenite::Error> {
        let audio = base64::engine::general_purpose::STANDARD.encode(bytes);
        self.send(&json!({"type": "input_audio_buffer.append", "audio": audio}))
            .await
    }

    /// Streams `audio` in appends of `chunk_ms`, at `pace` times real time (0: as fast
    /// as the socket takes it), collecting events meanwhile.
    pub async fn stream(&mut self, audio: &Audio, chunk_ms: usize, pace: f64) {
        let chunk = (audio.rate_bytes() * chunk_ms / 1000).max(2) & !1;
        let start = Instant::now();
        for (n, piece) in audio.bytes().chunks(chunk).enumerate() {
            if pace > 0.0 {
                let due = Duration::from_secs_f64(n as f64 * chunk_ms as f64 / 1000.0 / pace);
                tokio::time::sleep_until((start + due).into()).await;
            }
            if self.append(piece).await.is_err() {
                return;
            }
            self.drain();
        }
    }

    /// Moves the events already received into [`LiveClient::seen`] (still unread by
    /// [`LiveClient::next`] and the waits).
    pub fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
    }

    /// The next event not yet returned, waiting up to `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Event> {
        self.drain();
        if self.read == self.seen.len() {
            let event = tokio::time::timeout(timeout, self.events.recv())
                .await
                .ok()??;
            self.seen.push(event);
        }
        self.read += 1;
        Some(self.seen[self.read - 1].clone())
    }

    /// Waits up to `timeout` for the next event of `kind`, passing over others (they
    /// stay in [`LiveClient::seen`]); `None` if the socket ends first.
    pub async fn wait_for(&mut self, kind: &str, timeout: Duration) -> Option<Event> {
        self.wait_any(&[kind], timeout).await
    }

    /// As [`LiveClient::wait_for`], for any of `kinds`.
    pub async fn wait_any(&mut self, kinds: &[&str], timeout: Duration) -> Option<Event> {
        let until = Instant::now() + timeout;
        loop {
            let left = until.checked_duration_since(Instant::now())?;
            let event = self.next(left).await?;
            if kinds.contains(&event.kind.as_str()) {
                return Some(event);
            }
            if event.kind == "end" {
                return None;
            }
        }
    }

    /// Every event of `kind` seen so far.
    pub fn seen_of(&self, kind: &str) -> Vec<&Event> {
        self.seen.iter().filter(|e| e.kind == kind).collect()
    }

    /// Closes the socket with a normal close frame.
    pub async fn close(mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.events.recv()).await;
    }
}

/// Opens the WebSocket (the handshake only).
pub async fn open(url: &str, auth: &Auth, beta: bool) -> Result<Socket, ConnectError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::Other(e.to_string()))?;
    let headers = request.headers_mut();
    let header = |v: String| HeaderValue::from_str(&v).expect("a header value");
    match auth {
        Auth::None => {}
        Auth::Bearer(key) => {
            headers.insert("authorization", header(format!("Bearer {key}")));
        }
        Auth::Subprotocol(key) => {
            headers.insert(
                "sec-websocket-protocol",
                header(format!("realtime, openai-insecure-api-key.{key}")),
            );
        }
    }
    if beta {
        headers.insert("openai-beta", header("realtime=v1".into()));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(ConnectError::Refused {
            status: response.status().as_u16(),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned(),
        }),
        Err(e) => Err(ConnectError::Other(e.to_string())),
    }
}

/// The `ws://` URL of a server's live endpoint, from its `http://` base.
pub fn url(base_http: &str) -> String {
    format!(
        "{}/v1/realtime?intent=transcription",
        base_http
            .replacen("http://", "ws://", 1)
            .trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_encoders_hit_the_codes_for_silence_and_full_scale() {
        assert_eq!(encode_mulaw(0.0), 0xff);
        assert_eq!(encode_mulaw(1.0), 0x80);
        assert_eq!(encode_mulaw(-1.0), 0x00);
        assert_eq!(encode_alaw(0.0), 0xd5);
        assert_eq!(encode_alaw(1.0), 0xaa);
        assert_eq!(encode_alaw(-1.0), 0x2a);
    }
}
