//! One live **session**: a WebSocket speaking OpenAI's Realtime transcription protocol.
//!
//! One task reads client events and runs the state machine ([`Session`]); a writer task
//! sends what the session queues ([`Outbox`], bounded: a client that stops reading is
//! closed). Audio is decoded to 16 kHz as it is appended; turns are found by
//! [`TurnDetector`] (server VAD) or committed by the client. While a turn is open, an
//! interim pass re-decodes it every `realtime.interim_interval_ms` and the words two
//! passes agree on go out as deltas ([`StablePrefix`]); a committed turn is one more
//! engine job whose text completes the item. Every pass is an [`Engine::submit`] job,
//! batched with file requests; dropping the session drops its jobs' receivers, which
//! frees their rows before the worker's next step.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use steno_audio::live::LiveDecoder;
use steno_engine::{Engine, EngineError, Reply, Request};
use steno_whisper::{Mode, Task};
use tokio::sync::mpsc;

use super::interim::{self, StablePrefix};
use super::protocol::{
    self, error_event, event, session_event, ClientEvent, Incoming, ProtocolError, Settings, Shape,
};
use super::turn::{TurnDetector, TurnEvent};
use crate::config::Config;
use crate::metrics::Metrics;

/// How often the session looks at its clock (idle, drain, interim passes due).
const TICK: Duration = Duration::from_millis(50);
/// One frame to a client may take this long; past it the client is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most server events one client event or job causes (a commit: speech_stopped,
/// committed; a final: delta, completed).
const EVENTS_PER_MESSAGE: usize = 4;
/// After the session ends, its last events and close frame may take this long.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The shortest turn transcribed (OpenAI refuses commits under 100 ms).
const MIN_COMMIT_MS: usize = 100;
/// The shortest turn audio an interim pass is worth.
const MIN_INTERIM_MS: usize = 500;
/// How long a final pass waits for room in a full engine before it fails.
const FINAL_RETRY_FOR: Duration = Duration::from_secs(10);

const RATE: usize = steno_audio::SAMPLE_RATE as usize;

fn ms(samples: usize) -> usize {
    samples * 1000 / RATE
}

/// What a session needs from the server.
#[derive(Clone)]
pub struct Context {
    pub engine: Engine,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
}

/// Why a session ended: the close frame's code, and the `error` event before it.
#[derive(Debug)]
pub enum End {
    /// The client closed or the socket failed: nothing more to say.
    ClientGone,
    /// The client stopped reading: a close is tried, nothing waits for it.
    SlowReader,
    /// An error event, then a close with this code.
    Error(ProtocolError, u16),
}

impl End {
    fn reason(&self) -> &'static str {
        match self {
            End::ClientGone => "client_closed",
            End::SlowReader => "slow_reader",
            End::Error(e, _) => e.code,
        }
    }
}

/// Server events on their way to the writer task.
pub struct Outbox {
    tx: mpsc::Sender<Message>,
    next: u64,
    /// The client stopped reading (the queue filled).
    pub overflowed: bool,
}

impl Outbox {
    /// Numbers `event` and queues it; a full queue marks the client a slow reader.
    pub fn send(&mut self, mut event: Value) {
        self.next += 1;
        if let Value::Object(map) = &mut event {
            map.insert("event_id".into(), json!(format!("event_{:06}", self.next)));
        }
        let text = event.to_string();
        if self.tx.try_send(Message::Text(text.into())).is_err() {
            self.overflowed = true;
        }
    }

    /// Waits (up to [`WRITE_TIMEOUT`]) until the queue has room for what one client
    /// event can cause, so that a burst only slows the reading; `false` when the client
    /// is not reading.
    async fn room(&self) -> bool {
        if self.tx.capacity() >= EVENTS_PER_MESSAGE {
            return true;
        }
        let reserved =
            tokio::time::timeout(WRITE_TIMEOUT, self.tx.reserve_many(EVENTS_PER_MESSAGE));
        matches!(reserved.await, Ok(Ok(_)))
    }

    fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.tx.try_send(Message::Close(Some(frame)));
    }
}

/// Writes queued messages until a close frame or a write that fails or stalls.
async fn write(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::Receiver<Message>) {
    while let Some(message) = rx.recv().await {
        let close = matches!(message, Message::Close(_));
        match tokio::time::timeout(WRITE_TIMEOUT, sink.send(message)).await {
            Ok(Ok(())) if !close => {}
            _ => break,
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.close()).await;
}

/// Serves one upgraded socket until it ends; `refusal` ends it at once (the session
/// limit) with that error.
pub async fn run(
    socket: WebSocket,
    context: Context,
    shape: Shape,
    initial: protocol::SessionUpdate,
    refusal: Option<End>,
) {
    let (sink, stream) = socket.split();
    let (tx, rx) = mpsc::channel(context.config.realtime.send_buffer_events);
    let mut writer = tokio::spawn(write(sink, rx));
    let mut outbox = Outbox {
        tx,
        next: 0,
        overflowed: false,
    };
    let metrics = context.metrics.clone();
    let end = match refusal {
        Some(end) => end,
        None => {
            metrics.live.sessions_open.inc();
            let mut session = Session::new(context, shape, &initial);
            let end = session.serve(stream, &mut outbox).await;
            metrics.live.sessions_open.dec();
            end
        }
    };
    metrics
        .live
        .sessions
        .with_label_values(&[end.reason()])
        .inc();
    match &end {
        End::ClientGone => {}
        End::SlowReader => outbox.close(1008, "not reading"),
        End::Error(e, code) => {
            outbox.send(error_event(e));
            outbox.close(*code, e.code);
        }
    }
    drop(outbox);
    if tokio::time::timeout(CLOSE_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

type JobFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The open turn: audio from `start` (absolute) to the buffer's end.
struct Turn {
    item_id: String,
    start: usize,
    prefix: StablePrefix,
    /// When the last interim pass started, and the turn's length then.
    last_pass: Option<(Instant, usize)>,
}

/// A committed turn's final pass.
struct FinalDone {
    item_id: String,
    prefix: StablePrefix,
    ended: Instant,
    seconds: f64,
    reply: Result<Reply, EngineError>,
}

/// The interim pass in flight (at most one per session, for the open turn).
struct InterimPass {
    item_id: String,
    reply: JobFuture<Result<Reply, EngineError>>,
}

pub struct Session {
    context: Context,
    id: String,
    shape: Shape,
    settings: Settings,
    /// The configured model the transcription settings name.
    model: String,
    decoder: LiveDecoder,
    detector: Option<TurnDetector>,
    /// Uncommitted 16 kHz audio; `buffer[0]` is absolute sample `origin`.
    buffer: Vec<f32>,
    origin: usize,
    turn: Option<Turn>,
    previous_item: Option<String>,
    items: u64,
    /// The last client event, or the last moment a job of the session was in flight.
    last_client_event: Instant,
    interim: Option<InterimPass>,
    finals: FuturesUnordered<JobFuture<FinalDone>>,
}

impl Session {
    fn new(context: Context, shape: Shape, initial: &protocol::SessionUpdate) -> Self {
        let settings = Settings::default().updated(initial);
        let model = context.config.models.model_id.clone();
        let decoder = LiveDecoder::new(settings.format).expect("OpenAI's rates are valid");
        let mut session = Self {
            id: format!("sess_{}", unique()),
            shape,
            model,
            decoder,
            detector: None,
            buffer: Vec::new(),
            origin: 0,
            turn: None,
            previous_item: None,
            items: 0,
            last_client_event: Instant::now(),
            interim: None,
            finals: FuturesUnordered::new(),
            settings,
            context,
        };
        if let Some(model) = session.settings.transcription.model.clone() {
            if let Some(id) = session.context.config.resolve_model(&model) {
                session.model = id.to_string();
            }
        }
        session.detector = session.new_detector();
        session
    }

    fn new_detector(&self) -> Option<TurnDetector> {
        let max_turn = self.context.config.realtime.max_turn_seconds;
        let from = self.origin + self.buffer.len();
        self.settings
            .turn_detection
            .map(|vad| TurnDetector::new(vad, max_turn, from))
    }

    /// The session's event loop; returns why it ended.
    async fn serve(&mut self, mut stream: SplitStream<WebSocket>, out: &mut Outbox) -> End {
        out.send(session_event(self.shape, true, self.render()));
        let mut tick = tokio::time::interval(TICK);
        let idle = Duration::from_secs(self.context.config.realtime.session_idle_timeout_seconds);
        loop {
            if out.overflowed || !out.room().await {
                return End::SlowReader;
            }
            tokio::select! {
                message = stream.next() => {
                    let Some(Ok(message)) = message else {
                        return message.map_or(End::ClientGone, |m| read_failure(m.err()));
                    };
                    self.last_client_event = Instant::now();
                    if message_len(&message) > super::MAX_MESSAGE_BYTES {
                        return message_too_large();
                    }
                    if !self.on_message(message, out) {
                        return End::ClientGone;
                    }
                }
                Some(done) = self.finals.next(), if !self.finals.is_empty() => {
                    self.on_final(done, out);
                }
                (item_id, reply) = wait_interim(&mut self.interim) => {
                    self.on_interim(&item_id, reply, out);
                }
                _ = tick.tick() => {
                    // Idle: nothing from the client and nothing of its own in flight.
                    let busy = !self.finals.is_empty() || self.interim.is_some();
                    if busy {
                        self.last_client_event = Instant::now();
                    } else if self.last_client_event.elapsed() >= idle {
                        return End::Error(ProtocolError::invalid(
                            "session_idle_timeout",
                            format!("The session was closed after {} s without a client event.", idle.as_secs()),
                        ), 1000);
                    }
                    if !self.context.engine.is_healthy() {
                        return End::Error(ProtocolError::server(
                            "server_shutting_down",
                            "The server is shutting down; reconnect to continue.",
                        ), 1012);
                    }
                    self.maybe_interim();
                }
            }
        }
    }

    fn render(&self) -> Value {
        let default_model = self.context.config.models.model_id.as_str();
        self.settings.render(self.shape, &self.id, default_model)
    }

    /// Handles one frame; `false` when the client closed.
    fn on_message(&mut self, message: Message, out: &mut Outbox) -> bool {
        match message {
            Message::Text(text) => match protocol::parse(text.as_str()) {
                Ok(incoming) => self.on_event(incoming, out),
                Err(e) => out.send(error_event(&e)),
            },
            Message::Binary(_) => out.send(error_event(&ProtocolError::invalid(
                "invalid_message_type",
                "Binary messages are not supported: send each event as a JSON text message \
                 (audio base64-encoded in input_audio_buffer.append).",
            ))),
            // Pings are answered by the socket itself.
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => return false,
        }
        true
    }

    fn on_event(&mut self, incoming: Incoming, out: &mut Outbox) {
        let Incoming {
            event_id,
            event: client_event,
        } = incoming;
        let result = match client_event {
            ClientEvent::Update(shape, update) => self.update(shape, &update, out),
            ClientEvent::Append(bytes) => self.append(&bytes, out),
            ClientEvent::Commit => self.commit_by_hand(out),
            ClientEvent::Clear => {
                self.clear();
                out.send(event("input_audio_buffer.cleared", json!({})));
                Ok(())
            }
        };
        if let Err(e) = result {
            out.send(error_event(&e.event(event_id)));
        }
    }

    fn update(
        &mut self,
        shape: Shape,
        update: &protocol::SessionUpdate,
        out: &mut Outbox,
    ) -> Result<(), ProtocolError> {
        let next = self.settings.updated(update);
        let model = match &next.transcription.model {
            None => self.context.config.models.model_id.clone(),
            Some(name) => self
                .context
                .config
                .resolve_model(name)
                .ok_or_else(|| {
                    ProtocolError::invalid(
                        "model_not_found",
                        format!("The model `{name}` does not exist."),
                    )
                    .param(transcription_param(shape, "model"))
                })?
                .to_string(),
        };
        if let Some(language) = &next.transcription.language {
            if steno_whisper::tokenizer::language_code(language).is_none() {
                return Err(ProtocolError::invalid(
                    "invalid_value",
                    format!("Unsupported language '{language}'."),
                )
                .param(transcription_param(shape, "language")));
            }
        }
        let format_changed = next.format != self.settings.format;
        let vad_changed = next.turn_detection != self.settings.turn_detection;
        self.shape = shape;
        self.model = model;
        self.settings = next;
        if format_changed {
            self.decoder = LiveDecoder::new(self.settings.format).expect("OpenAI's rates");
        }
        if vad_changed {
            self.detector = self.new_detector();
        }
        out.send(session_event(self.shape, false, self.render()));
        Ok(())
    }

    fn append(&mut self, bytes: &[u8], out: &mut Outbox) -> Result<(), ProtocolError> {
        let before = self.buffer.len();
        self.decoder.push(bytes, &mut self.buffer).map_err(|e| {
            ProtocolError::invalid("invalid_value", format!("Invalid 'audio': {e}.")).param("audio")
        })?;
        if self.detector.is_none() {
            let max = self.max_turn_samples();
            if self.buffer.len() > max {
                self.buffer.truncate(before);
                return Err(ProtocolError::invalid(
                    "input_audio_buffer_full",
                    format!(
                        "The input audio buffer holds at most {} s of audio \
                         (realtime.max_turn_seconds): commit or clear it.",
                        self.context.config.realtime.max_turn_seconds
                    ),
                ));
            }
            if self.turn.is_none() && !bytes.is_empty() {
                self.open_turn(self.origin);
            }
            return Ok(());
        }
        self.detect_turns(out);
        Ok(())
    }

    fn max_turn_samples(&self) -> usize {
        (self.context.config.realtime.max_turn_seconds * RATE as f64) as usize
    }

    /// Runs server VAD over the new audio and acts on what it finds.
    fn detect_turns(&mut self, out: &mut Outbox) {
        while let Some(found) = self
            .detector
            .as_mut()
            .and_then(|d| d.advance(&self.buffer, self.origin))
        {
            match found {
                TurnEvent::Started { at } => {
                    let item_id = self.open_turn(at);
                    out.send(event(
                        "input_audio_buffer.speech_started",
                        json!({"audio_start_ms": ms(at), "item_id": item_id}),
                    ));
                }
                TurnEvent::Stopped { at } => {
                    if let Some(turn) = &self.turn {
                        out.send(event(
                            "input_audio_buffer.speech_stopped",
                            json!({"audio_end_ms": ms(at), "item_id": turn.item_id}),
                        ));
                    }
                    self.commit(at, out);
                }
            }
        }
        // Without an open turn, only what the detector may still need is kept.
        if self.turn.is_none() {
            if let Some(keep) = self.detector.as_ref().map(TurnDetector::keep_from) {
                self.drop_before(keep);
            }
        }
    }

    fn open_turn(&mut self, start: usize) -> String {
        self.items += 1;
        let item_id = format!("item_{}_{:04}", &self.id[5..], self.items);
        self.turn = Some(Turn {
            item_id: item_id.clone(),
            start,
            prefix: StablePrefix::default(),
            last_pass: None,
        });
        item_id
    }

    fn drop_before(&mut self, at: usize) {
        let n = at.saturating_sub(self.origin).min(self.buffer.len());
        self.buffer.drain(..n);
        self.origin += n;
    }

    fn commit_by_hand(&mut self, out: &mut Outbox) -> Result<(), ProtocolError> {
        let start = self.turn.as_ref().map_or(self.origin, |t| t.start);
        let end = self.origin + self.buffer.len();
        let held = ms(end.saturating_sub(start));
        if held < MIN_COMMIT_MS {
            return Err(ProtocolError::invalid(
                "input_audio_buffer_commit_empty",
                format!(
                    "Error committing input audio buffer: buffer too small. Expected at least \
                     {MIN_COMMIT_MS}ms of audio, but buffer only has {held}.00ms of audio."
                ),
            ));
        }
        if self.turn.is_none() {
            self.open_turn(start);
        }
        self.commit(end, out);
        if let Some(detector) = &mut self.detector {
            detector.reset(end);
        }
        Ok(())
    }

    /// Commits the open turn's audio up to `end` and starts its final pass.
    fn commit(&mut self, end: usize, out: &mut Outbox) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        // The turn's interim pass is no longer wanted: dropping it frees its rows.
        if self.interim.take().is_some() {
            self.count_interim("dropped");
        }
        let from = turn
            .start
            .saturating_sub(self.origin)
            .min(self.buffer.len());
        let to = end.saturating_sub(self.origin).min(self.buffer.len());
        let samples = self.buffer[from..to].to_vec();
        self.drop_before(end);
        out.send(event(
            "input_audio_buffer.committed",
            json!({"item_id": turn.item_id, "previous_item_id": self.previous_item}),
        ));
        self.previous_item = Some(turn.item_id.clone());
        let job = FinalJob {
            engine: self.context.engine.clone(),
            request: self.request_parts(false),
            seconds: steno_audio::seconds(samples.len()),
            samples,
            item_id: turn.item_id,
            prefix: turn.prefix,
            ended: Instant::now(),
        };
        self.finals
            .push(Box::pin(job.run(self.context.config.clone())));
    }

    fn clear(&mut self) {
        self.turn = None;
        if self.interim.take().is_some() {
            self.count_interim("dropped");
        }
        let end = self.origin + self.buffer.len();
        self.drop_before(end);
        if let Some(detector) = &mut self.detector {
            detector.reset(end);
        }
    }

    /// The parts of an engine request every pass of this session shares.
    fn request_parts(&self, interim: bool) -> RequestParts {
        let t = &self.settings.transcription;
        let mut options = crate::options::transcribe_options(
            Task::Transcribe,
            t.language.clone(),
            t.prompt.clone().filter(|p| !p.is_empty()),
            0.0,
            Mode::Sequential,
            false,
        );
        if interim {
            // An interim pass is a guess about to be replaced: greedy only, no fallback.
            options.temperatures = vec![0.0];
        }
        RequestParts {
            model: self.model.clone(),
            options,
            logprobs: self.settings.logprobs,
        }
    }

    /// Starts an interim pass over the open turn when one is due.
    fn maybe_interim(&mut self) {
        let interval = Duration::from_millis(self.context.config.realtime.interim_interval_ms);
        let end = self.origin + self.buffer.len();
        let Some(turn) = &self.turn else { return };
        let held = end.saturating_sub(turn.start);
        let due = turn
            .last_pass
            .is_none_or(|(at, len)| at.elapsed() >= interval && held > len);
        if self.interim.is_some() || !due || ms(held) < MIN_INTERIM_MS {
            return;
        }
        if !self.context.engine.has_spare_room() {
            // Interim text is optional: a busy engine keeps its room for files and turns.
            self.count_interim("skipped");
            return;
        }
        let from = turn.start.saturating_sub(self.origin);
        let samples = self.buffer[from..].to_vec();
        let item_id = turn.item_id.clone();
        let parts = self.request_parts(true);
        let request = parts.request(samples, &self.context.config);
        if let Some(turn) = &mut self.turn {
            turn.last_pass = Some((Instant::now(), held));
        }
        match self.context.engine.submit(request) {
            Ok(receiver) => {
                self.interim = Some(InterimPass {
                    item_id,
                    reply: Box::pin(receiver.recv()),
                });
            }
            // A full engine skips the pass: the text comes with the next one or the commit.
            Err(_) => self.count_interim("skipped"),
        }
    }

    fn count_interim(&self, outcome: &str) {
        self.context
            .metrics
            .live
            .interim_passes
            .with_label_values(&[outcome])
            .inc();
    }

    fn on_interim(&mut self, item_id: &str, reply: Result<Reply, EngineError>, out: &mut Outbox) {
        let Ok(reply) = reply else {
            self.count_interim("failed");
            return;
        };
        self.count_interim("decoded");
        tracing::debug!(
            queue = reply.queue_seconds,
            inference = reply.inference_seconds,
            seconds = reply.transcript.duration,
            text = %reply.transcript.text,
            "interim pass"
        );
        let Some(turn) = self.turn.as_mut().filter(|t| t.item_id == item_id) else {
            return;
        };
        let logprobs = reply.logprobs.as_deref();
        if let Some(delta) = turn.prefix.interim(&reply.transcript.text, logprobs) {
            out.send(delta_event(item_id, delta));
        }
    }

    fn on_final(&mut self, done: FinalDone, out: &mut Outbox) {
        let live = &self.context.metrics.live;
        let FinalDone {
            item_id,
            mut prefix,
            ended,
            seconds,
            reply,
        } = done;
        match reply {
            Ok(reply) => {
                let end = prefix.finish(&reply.transcript.text, reply.logprobs.as_deref());
                if let Some(delta) = end.delta {
                    out.send(delta_event(&item_id, delta));
                }
                let mut completed = json!({
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": end.transcript,
                    "usage": crate::api::Usage::duration(seconds),
                });
                if let Some(logprobs) = crate::api::Logprob::list(end.logprobs) {
                    completed["logprobs"] = json!(logprobs);
                }
                out.send(event(
                    "conversation.item.input_audio_transcription.completed",
                    completed,
                ));
                live.turns.with_label_values(&["completed"]).inc();
                if end.revised {
                    live.revised_turns.inc();
                }
                live.turn_latency.observe(ended.elapsed().as_secs_f64());
            }
            Err(e) => {
                let api = crate::error::ApiError::from(e).body().error;
                out.send(event(
                    "conversation.item.input_audio_transcription.failed",
                    json!({"item_id": item_id, "content_index": 0, "error": api}),
                ));
                live.turns.with_label_values(&["failed"]).inc();
            }
        }
    }
}

fn delta_event(item_id: &str, delta: interim::Delta) -> Value {
    let mut fields = json!({"item_id": item_id, "content_index": 0, "delta": delta.text});
    if let Some(logprobs) = crate::api::Logprob::list(delta.logprobs) {
        fields["logprobs"] = json!(logprobs);
    }
    event("conversation.item.input_audio_transcription.delta", fields)
}

fn transcription_param(shape: Shape, field: &str) -> String {
    match shape {
        Shape::Current => format!("session.audio.input.transcription.{field}"),
        Shape::Beta => format!("session.input_audio_transcription.{field}"),
    }
}

/// A socket read that failed: a message over the socket's read limit gets its error and
/// 1009 (the client may not read them: see [`super::READ_LIMIT_BYTES`]).
fn read_failure(error: Option<axum::Error>) -> End {
    let too_big = error.as_ref().is_some_and(|e| {
        let text = e.to_string();
        text.contains("too long") || text.contains("too big") || text.contains("Space limit")
    });
    if too_big {
        return message_too_large();
    }
    End::ClientGone
}

fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
        Message::Close(_) => 0,
    }
}

/// A message over [`super::MAX_MESSAGE_BYTES`]: its error event, then close 1009.
fn message_too_large() -> End {
    End::Error(
        ProtocolError::invalid(
            "message_too_large",
            format!(
                "A message was over the limit of {} bytes (an append may carry at most \
                 {} bytes of base64).",
                super::MAX_MESSAGE_BYTES,
                protocol::MAX_APPEND_BASE64_BYTES
            ),
        ),
        1009,
    )
}

async fn wait_interim(slot: &mut Option<InterimPass>) -> (String, Result<Reply, EngineError>) {
    match slot {
        Some(pass) => {
            let reply = pass.reply.as_mut().await;
            let item_id = std::mem::take(&mut pass.item_id);
            *slot = None;
            (item_id, reply)
        }
        None => std::future::pending().await,
    }
}

/// What every engine request of a session shares.
struct RequestParts {
    model: String,
    options: steno_whisper::TranscribeOptions,
    logprobs: bool,
}

impl RequestParts {
    fn request(&self, samples: Vec<f32>, config: &Config) -> Request {
        Request {
            model: self.model.clone(),
            deadline: Some(config.limits.deadline(steno_audio::seconds(samples.len()))),
            samples,
            options: self.options.clone(),
            logprobs: self.logprobs,
            deltas: None,
            diarize: None,
            span: tracing::Span::current(),
        }
    }
}

/// A committed turn on its way through the engine.
struct FinalJob {
    engine: Engine,
    request: RequestParts,
    samples: Vec<f32>,
    seconds: f64,
    item_id: String,
    prefix: StablePrefix,
    ended: Instant,
}

impl FinalJob {
    /// Submits the turn, waiting for room while the engine is full (a committed turn is
    /// never skipped), up to [`FINAL_RETRY_FOR`].
    async fn run(self, config: Arc<Config>) -> FinalDone {
        let give_up = Instant::now() + FINAL_RETRY_FOR;
        let reply = loop {
            let request = self.request.request(self.samples.clone(), &config);
            match self.engine.submit(request) {
                Ok(receiver) => break receiver.recv().await,
                Err(EngineError::Overloaded) if Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => break Err(e),
            }
        };
        FinalDone {
            item_id: self.item_id,
            prefix: self.prefix,
            ended: self.ended,
            seconds: self.seconds,
            reply,
        }
    }
}

/// A process-unique id: the time of the first call and a counter.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    format!("{base:x}{:06x}", NEXT.fetch_add(1, Ordering::Relaxed))
}
