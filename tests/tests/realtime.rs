//! Live transcription (`GET /v1/realtime?intent=transcription`, OpenAI's Realtime API)
//! against the real `steno serve` with tiny.en, over raw WebSockets (`steno_e2e::live`):
//! real speech streamed as 24 kHz PCM16 and as G.711 in both protocol shapes, WER-checked;
//! manual commits; deltas before the turn ends that add up to its transcript; the abuse
//! suite (bad events, oversized and odd appends, binary frames, pings, a client that
//! stops reading, 100 sessions dropped mid-turn) while the server keeps serving; and
//! authentication (Bearer, subprotocol key, client secrets).
//!
//! The tests share one server while they run at once; with `RUST_TEST_THREADS=1` each
//! starts its own (tiny.en loads in about a second).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use steno_e2e::assets;
use steno_e2e::live::{
    self, block_on, Audio, Auth, ConnectError, Event, LiveClient, SessionOptions,
};
use steno_e2e::prometheus;
use steno_e2e::server::{Request, Server};
use steno_e2e::wer;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "sk-live-test";
const COMPLETED: &str = "conversation.item.input_audio_transcription.completed";
const DELTA: &str = "conversation.item.input_audio_transcription.delta";
/// Word error rate allowed on jfk.wav (22 words: two edits), as in the HTTP tests.
const JFK_WER: f64 = 0.1;
/// The longest any one wait for an event may take.
const WAIT: Duration = Duration::from_secs(30);

/// The server the tests running at the same time share.
fn server() -> Arc<Server> {
    static SHARED: Mutex<Weak<Server>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(server) = shared.upgrade() {
        return server;
    }
    let server = Arc::new(Server::start_with_env(
        &["--api-key", KEY],
        &[("STENO_INTERIM_INTERVAL_MS", "400")],
    ));
    *shared = Arc::downgrade(&server);
    server
}

fn bearer() -> Auth {
    Auth::Bearer(KEY.into())
}

async fn connect(server: &Server) -> LiveClient {
    let mut client = LiveClient::connect(&live::url(server.base_url()), &bearer(), false)
        .await
        .expect("connects");
    let created = client.wait_for("session.created", WAIT).await;
    assert!(created.is_some(), "no session.created: {:?}", client.seen);
    client
}

/// Silence as 16 kHz samples.
fn silence(seconds: f64) -> Vec<f32> {
    vec![0.0; (seconds * 16_000.0) as usize]
}

/// jfk.wav with a second of silence after it (so that server VAD ends the turn).
fn jfk_then_silence() -> Vec<f32> {
    let mut samples = assets::samples(&assets::jfk().path);
    samples.extend(silence(1.5));
    samples
}

/// Waits until `client` has a completed (or failed) event for every committed item;
/// returns the transcripts in commit order.
async fn transcripts(client: &mut LiveClient) -> Vec<String> {
    let until = Instant::now() + WAIT;
    loop {
        client.drain();
        let committed: Vec<String> = client
            .seen_of("input_audio_buffer.committed")
            .iter()
            .map(|e| e.value["item_id"].as_str().unwrap().to_string())
            .collect();
        let done = |id: &str| {
            client.seen.iter().find(|e| {
                (e.kind == COMPLETED || e.kind.ends_with(".failed")) && e.value["item_id"] == id
            })
        };
        if !committed.is_empty() && committed.iter().all(|id| done(id).is_some()) {
            return committed
                .iter()
                .map(|id| {
                    done(id).unwrap().value["transcript"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect();
        }
        assert!(
            Instant::now() < until,
            "turns unfinished: {:#?}",
            kinds(&client.seen)
        );
        client.next(Duration::from_millis(200)).await;
    }
}

fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{:.2} {} {}", e.at.as_secs_f64(), e.kind, short(&e.value)))
        .collect()
}

fn short(value: &Value) -> String {
    value.to_string().chars().take(160).collect()
}

/// Streams `audio` in a session with `options` and returns the turns' transcripts.
async fn transcribe_live(
    server: &Server,
    audio: &Audio,
    options: SessionOptions,
    pace: f64,
) -> (Vec<String>, LiveClient) {
    let mut client = connect(server).await;
    client.configure(&options).await.expect("session updated");
    client.stream(audio, 100, pace).await;
    if options.vad.is_none() {
        client
            .send(&json!({"type": "input_audio_buffer.commit", "event_id": "commit-1"}))
            .await
            .unwrap();
    }
    (transcripts(&mut client).await, client)
}

#[test]
fn jfk_streamed_in_every_format_and_shape_is_transcribed() {
    let server = server();
    let speech = jfk_then_silence();
    let reference = assets::jfk().reference;
    for (audio, beta) in [
        (Audio::pcm(&speech), false),
        (Audio::pcm(&speech), true),
        (Audio::mulaw(&speech), false),
        (Audio::alaw(&speech), true),
    ] {
        let options = SessionOptions {
            beta,
            format: audio.names(),
            vad: Some((0.5, 300, 1_200)),
            ..SessionOptions::default()
        };
        let started = Instant::now();
        let (texts, client) = block_on(transcribe_live(&server, &audio, options, 0.0));
        let what = format!("{:?} beta={beta}", audio.names());
        wer::assert_wer(&reference, &texts.join(" "), JFK_WER, &what);
        // Answered in the shape it was asked in.
        let updated = if beta {
            "transcription_session.updated"
        } else {
            "session.updated"
        };
        assert_eq!(client.seen_of(updated).len(), 1, "{what}");
        // Every turn: speech_started → speech_stopped → committed, with audio times.
        let started_ms: Vec<u64> = client
            .seen_of("input_audio_buffer.speech_started")
            .iter()
            .map(|e| e.value["audio_start_ms"].as_u64().unwrap())
            .collect();
        let stopped_ms: Vec<u64> = client
            .seen_of("input_audio_buffer.speech_stopped")
            .iter()
            .map(|e| e.value["audio_end_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(started_ms.len(), texts.len(), "{what}");
        assert_eq!(stopped_ms.len(), texts.len(), "{what}");
        assert!(
            started_ms.iter().zip(&stopped_ms).all(|(a, b)| a < b),
            "{what}"
        );
        assert!(
            *stopped_ms.last().unwrap() <= 12_500,
            "{what}: {stopped_ms:?}"
        );
        eprintln!(
            "{what}: {} turn(s) in {:.1} s: {texts:?}",
            texts.len(),
            started.elapsed().as_secs_f64()
        );
        eprintln!("{:#?}", kinds(&client.seen));
    }
}

#[test]
fn english_clips_live_score_like_the_same_clips_as_files() {
    let server = server();
    let clips: Vec<_> = assets::english_clips()
        .into_iter()
        .step_by(60)
        .take(8)
        .collect();
    let mut live_pairs = Vec::new();
    let mut file_pairs = Vec::new();
    for clip in &clips {
        let mut samples = assets::samples(&clip.path);
        samples.extend(silence(1.5));
        let options = SessionOptions {
            vad: Some((0.5, 300, 800)),
            ..SessionOptions::default()
        };
        let (texts, _) = block_on(transcribe_live(
            &server,
            &Audio::pcm(&samples),
            options,
            0.0,
        ));
        live_pairs.push((clip.reference.clone(), texts.join(" ")));
        let file = Request::post(server.url("/v1/audio/transcriptions"))
            .bearer(KEY)
            .file("file", &clip.path)
            .fields(&[("model", "whisper-1"), ("language", "en")])
            .send();
        file.expect_status(200);
        file_pairs.push((
            clip.reference.clone(),
            file.json()["text"].as_str().unwrap().to_string(),
        ));
    }
    let live_wer = wer::corpus_wer(live_pairs.iter().map(|(r, h)| (r.as_str(), h.as_str())));
    let file_wer = wer::corpus_wer(file_pairs.iter().map(|(r, h)| (r.as_str(), h.as_str())));
    eprintln!(
        "{} clips: live WER {live_wer:.3}, files {file_wer:.3}",
        clips.len()
    );
    assert!(
        live_wer <= file_wer + 0.05,
        "live {live_wer:.3} vs files {file_wer:.3}: {live_pairs:#?}"
    );
}

#[test]
fn manual_commit_without_turn_detection() {
    let server = server();
    block_on(async {
        let speech = assets::samples(&assets::jfk().path);
        let options = SessionOptions {
            vad: None,
            logprobs: true,
            ..SessionOptions::default()
        };
        let (texts, client) = transcribe_live(&server, &Audio::pcm(&speech), options, 0.0).await;
        assert_eq!(texts.len(), 1, "{:#?}", kinds(&client.seen));
        wer::assert_wer(
            &assets::jfk().reference,
            &texts[0],
            JFK_WER,
            "manual commit",
        );
        assert!(client
            .seen_of("input_audio_buffer.speech_started")
            .is_empty());
        let committed = &client.seen_of("input_audio_buffer.committed")[0].value;
        assert_eq!(committed["previous_item_id"], Value::Null);
        let completed = &client.seen_of(COMPLETED)[0].value;
        assert_eq!(completed["item_id"], committed["item_id"]);
        assert_eq!(completed["content_index"], 0);
        assert_eq!(completed["usage"]["type"], "duration");
        let logprobs = completed["logprobs"].as_array().expect("logprobs included");
        assert!(!logprobs.is_empty());
        assert!(logprobs.iter().all(|t| t["token"].is_string()
            && t["logprob"].as_f64().unwrap() <= 0.0
            && t["bytes"].is_array()));

        // An empty buffer cannot be committed; the error names the event.
        let mut client = client;
        client
            .send(&json!({"type": "input_audio_buffer.commit", "event_id": "empty-1"}))
            .await
            .unwrap();
        let error = client.wait_for("error", WAIT).await.expect("an error");
        assert_eq!(
            error.value["error"]["code"],
            "input_audio_buffer_commit_empty"
        );
        assert_eq!(error.value["error"]["event_id"], "empty-1");
        // Cleared audio is not transcribed.
        client.append(&vec![0u8; 48_000]).await.unwrap();
        client
            .send(&json!({"type": "input_audio_buffer.clear"}))
            .await
            .unwrap();
        assert!(client
            .wait_for("input_audio_buffer.cleared", WAIT)
            .await
            .is_some());
        client
            .send(&json!({"type": "input_audio_buffer.commit"}))
            .await
            .unwrap();
        let error = client.wait_for("error", WAIT).await.expect("an error");
        assert_eq!(
            error.value["error"]["code"],
            "input_audio_buffer_commit_empty"
        );
        client.close().await;
    });
}

#[test]
fn deltas_arrive_while_speaking_and_add_up_to_the_transcript() {
    let server = server();
    block_on(async {
        let speech = jfk_then_silence();
        let options = SessionOptions {
            // One turn for the whole clip: a long silence ends it.
            vad: Some((0.5, 300, 1_500)),
            logprobs: true,
            ..SessionOptions::default()
        };
        let mut samples = speech;
        samples.extend(silence(1.0));
        let (texts, client) = transcribe_live(&server, &Audio::pcm(&samples), options, 1.0).await;
        let mut early = 0;
        for committed in client.seen_of("input_audio_buffer.committed") {
            let id = &committed.value["item_id"];
            let deltas: Vec<&Event> = client
                .seen
                .iter()
                .filter(|e| e.kind == DELTA && &e.value["item_id"] == id)
                .collect();
            let joined: String = deltas
                .iter()
                .map(|e| e.value["delta"].as_str().unwrap())
                .collect();
            let completed = client
                .seen
                .iter()
                .find(|e| e.kind == COMPLETED && &e.value["item_id"] == id)
                .unwrap();
            let transcript = completed.value["transcript"].as_str().unwrap();
            assert_eq!(
                joined,
                transcript,
                "deltas add up to the transcript: {:#?}",
                kinds(&client.seen)
            );
            early += deltas.iter().filter(|d| d.at < committed.at).count();
            assert!(deltas.iter().all(|d| d.value["logprobs"].is_array()));
        }
        let passes: Vec<String> = server
            .metrics()
            .lines()
            .filter(|l| l.starts_with("steno_live_interim"))
            .map(str::to_string)
            .collect();
        eprintln!("{early} delta(s) before their turn ended; turns {texts:?}; {passes:?}");
        assert!(
            early >= 1,
            "no text before the end of a turn: {:#?}",
            kinds(&client.seen)
        );
    });
}

/// A raw client's next event of `kind`, or a panic with what it saw.
async fn expect(client: &mut LiveClient, kind: &str) -> Event {
    match client.wait_for(kind, WAIT).await {
        Some(event) => event,
        None => panic!("no {kind}: {:#?}", kinds(&client.seen)),
    }
}

async fn expect_error(
    client: &mut LiveClient,
    send: Message,
    code: &str,
    event_id: Option<&str>,
) -> Value {
    client.send_message(send).await.unwrap();
    let error = expect(client, "error").await.value["error"].clone();
    assert_eq!(error["code"], code, "{error}");
    assert_eq!(error["type"], "invalid_request_error", "{error}");
    assert_eq!(error["event_id"].as_str(), event_id, "{error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    error
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

#[test]
fn bad_client_events_get_errors_and_the_session_goes_on() {
    let server = server();
    block_on(async {
        let mut client = connect(&server).await;
        // Audio before any session update is fine: the defaults apply (pcm16 24 kHz, VAD).
        client.append(&vec![0u8; 4_800]).await.unwrap();
        expect_error(
            &mut client,
            Message::Text("{not json".into()),
            "invalid_json",
            None,
        )
        .await;
        let e = expect_error(
            &mut client,
            text(json!({"type": "response.create", "event_id": "u1"})),
            "invalid_value",
            Some("u1"),
        )
        .await;
        assert_eq!(e["param"], "type");
        expect_error(
            &mut client,
            text(json!({"event_id": "u2"})),
            "missing_required_parameter",
            Some("u2"),
        )
        .await;
        let e = expect_error(
            &mut client,
            text(json!({"type": "session.update", "event_id": "f1", "session": {"type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 44_100}}}}})),
            "invalid_value",
            Some("f1"),
        )
        .await;
        assert_eq!(e["param"], "session.audio.input.format.rate");
        let e = expect_error(
            &mut client,
            text(json!({"type": "transcription_session.update", "event_id": "f2", "session": {"input_audio_format": "mp3"}})),
            "invalid_value",
            Some("f2"),
        )
        .await;
        assert_eq!(e["param"], "session.input_audio_format");
        expect_error(
            &mut client,
            text(json!({"type": "session.update", "event_id": "m1", "session": {"type": "transcription",
                "audio": {"input": {"transcription": {"model": "no-such-model"}}}}})),
            "model_not_found",
            Some("m1"),
        )
        .await;
        expect_error(
            &mut client,
            text(json!({"type": "input_audio_buffer.append", "event_id": "o1", "audio": "AAEC"})),
            "invalid_value",
            Some("o1"),
        )
        .await;
        expect_error(
            &mut client,
            text(json!({"type": "input_audio_buffer.append", "event_id": "b1", "audio": "%%%"})),
            "invalid_value",
            Some("b1"),
        )
        .await;
        expect_error(
            &mut client,
            Message::Binary(vec![0u8; 64].into()),
            "invalid_message_type",
            None,
        )
        .await;
        // Over OpenAI's 15 MiB of base64 in one append.
        let huge = format!(
            r#"{{"type":"input_audio_buffer.append","event_id":"big","audio":"{}"}}"#,
            "A".repeat(15 * 1024 * 1024 + 4)
        );
        expect_error(
            &mut client,
            Message::Text(huge.into()),
            "string_above_max_length",
            Some("big"),
        )
        .await;
        // Pings are answered.
        client
            .send_message(Message::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        expect(&mut client, "pong").await;
        // And the session still works.
        let options = SessionOptions {
            vad: None,
            ..SessionOptions::default()
        };
        client
            .configure(&options)
            .await
            .expect("updated after all that");
        client
            .stream(&Audio::pcm(&assets::samples(&assets::jfk().path)), 200, 0.0)
            .await;
        client
            .send(&json!({"type": "input_audio_buffer.commit"}))
            .await
            .unwrap();
        let texts = transcripts(&mut client).await;
        wer::assert_wer(
            &assets::jfk().reference,
            &texts.join(" "),
            JFK_WER,
            "after the abuse",
        );

        // A message over the socket's limit: an error event, then close 1009.
        let over = format!(
            r#"{{"type":"input_audio_buffer.append","audio":"{}"}}"#,
            "A".repeat(17 * 1024 * 1024)
        );
        let _ = client.send_message(Message::Text(over.into())).await;
        let error = expect(&mut client, "error").await;
        assert_eq!(error.value["error"]["code"], "message_too_large");
        let close = expect(&mut client, "close").await;
        assert_eq!(close.value["code"], 1009);
    });
}

/// Polls `/metrics` until `check` holds for `name`'s sum, up to `within`.
fn metric_settles(
    server: &Server,
    name: &str,
    within: Duration,
    check: impl Fn(f64) -> bool,
) -> f64 {
    let until = Instant::now() + within;
    loop {
        let value = prometheus::sum(&server.metrics(), name).unwrap_or(0.0);
        if check(value) || Instant::now() > until {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_client_that_stops_reading_is_closed() {
    let server = server();
    let before = prometheus::samples(&server.metrics(), "steno_live_sessions_total")
        .iter()
        .filter(|s| s.label("reason") == Some("slow_reader"))
        .map(|s| s.value)
        .sum::<f64>();
    block_on(async {
        let socket = live::open(&live::url(server.base_url()), &bearer(), false)
            .await
            .unwrap();
        // Never read: every bad event makes an error event the server must queue.
        let (mut sink, _unread) = futures_util::StreamExt::split(socket);
        let started = Instant::now();
        let mut sent = 0;
        while started.elapsed() < Duration::from_secs(60) {
            let event = Message::Text(r#"{"type":"nope","event_id":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#.into());
            if futures_util::SinkExt::send(&mut sink, event).await.is_err() {
                break;
            }
            sent += 1;
            if sent % 1000 == 0 {
                let ended = prometheus::samples(&server.metrics(), "steno_live_sessions_total")
                    .iter()
                    .filter(|s| s.label("reason") == Some("slow_reader"))
                    .map(|s| s.value)
                    .sum::<f64>();
                if ended > before {
                    break;
                }
            }
        }
        eprintln!(
            "sent {sent} events in {:.1} s before the close",
            started.elapsed().as_secs_f64()
        );
    });
    let ended = metric_settles(
        &server,
        "steno_live_sessions_total",
        Duration::from_secs(20),
        |_| {
            prometheus::samples(&server.metrics(), "steno_live_sessions_total")
                .iter()
                .any(|s| s.label("reason") == Some("slow_reader") && s.value > before)
        },
    );
    assert!(ended > 0.0);
    assert_eq!(
        metric_settles(
            &server,
            "steno_live_sessions_open",
            Duration::from_secs(20),
            |v| v == 0.0
        ),
        0.0
    );
}

#[test]
fn hundred_sessions_dropped_mid_turn_leave_nothing_behind() {
    let server = server();
    let speech = Audio::pcm(&assets::samples(&assets::jfk().path)[..16_000 * 4]);
    // A file request while the sessions come and go.
    let file = Request::post(server.url("/v1/audio/transcriptions"))
        .bearer(KEY)
        .file("file", &assets::jfk().path)
        .field("model", "whisper-1")
        .spawn();
    // Admitted before the sessions arrive: sessions at the limit may fill the engine's
    // `max_jobs` with committed turns, and a file sent then would rightly get 429.
    let admitted = metric_settles(
        &server,
        "steno_jobs_in_flight",
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    assert!(admitted >= 1.0, "the file request never reached the engine");
    let url = live::url(server.base_url());
    let outcomes = block_on(async {
        let tasks: Vec<_> = (0..100)
            .map(|n| {
                let (url, speech) = (url.clone(), speech.clone());
                tokio::spawn(async move {
                    let mut client =
                        LiveClient::connect(&url, &Auth::Bearer(KEY.into()), n % 2 == 1)
                            .await
                            .expect("connects");
                    let first = client
                        .wait_any(
                            &["session.created", "transcription_session.created", "error"],
                            WAIT,
                        )
                        .await;
                    let first = first.map(|e| e.kind).unwrap_or_default();
                    if first == "error" {
                        // Refused: the close frame follows the error.
                        let close = client.wait_for("close", WAIT).await;
                        return format!(
                            "refused {}",
                            close
                                .map(|c| c.value["code"].to_string())
                                .unwrap_or_default()
                        );
                    }
                    client.stream(&speech, 100, 0.0).await;
                    // Mid-turn: drop the socket without a close frame.
                    drop(client);
                    first
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.expect("client task"));
        }
        outcomes
    });
    let served = outcomes.iter().filter(|o| o.ends_with("created")).count();
    let refused = outcomes
        .iter()
        .filter(|o| o.as_str() == "refused 1013")
        .count();
    eprintln!("{served} sessions served, {refused} refused at the limit");
    assert_eq!(served + refused, 100, "{outcomes:?}");
    let answer = file.wait();
    answer.expect_status(200);
    wer::assert_wer(
        &assets::jfk().reference,
        answer.json()["text"].as_str().unwrap(),
        JFK_WER,
        "file beside 100 sessions",
    );
    assert_eq!(
        metric_settles(
            &server,
            "steno_live_sessions_open",
            Duration::from_secs(30),
            |v| v == 0.0
        ),
        0.0
    );
    assert_eq!(
        metric_settles(
            &server,
            "steno_jobs_in_flight",
            Duration::from_secs(30),
            |v| v == 0.0
        ),
        0.0
    );
    // And a new session still works.
    let options = SessionOptions {
        vad: None,
        ..SessionOptions::default()
    };
    let (texts, _) = block_on(transcribe_live(
        &server,
        &Audio::pcm(&assets::samples(&assets::jfk().path)),
        options,
        0.0,
    ));
    wer::assert_wer(
        &assets::jfk().reference,
        &texts.join(" "),
        JFK_WER,
        "after 100 dropped sessions",
    );
}

#[test]
fn keys_are_checked_before_the_upgrade() {
    let server = server();
    let url = live::url(server.base_url());
    block_on(async {
        for auth in [
            Auth::None,
            Auth::Bearer("sk-wrong".into()),
            Auth::Subprotocol("sk-wrong".into()),
        ] {
            match LiveClient::connect(&url, &auth, false).await {
                Err(ConnectError::Refused { status, body }) => {
                    assert_eq!(status, 401, "{auth:?}");
                    assert!(body.contains("invalid_api_key"), "{body}");
                }
                Err(other) => panic!("{auth:?}: {other:?}"),
                Ok(_) => panic!("{auth:?} was let in"),
            }
        }
        // The browser way: the key as a subprotocol.
        let mut client = LiveClient::connect(&url, &Auth::Subprotocol(KEY.into()), false)
            .await
            .expect("subprotocol key");
        expect(&mut client, "session.created").await;
        client.close().await;
    });
    // A minted client secret opens sessions (with its settings) but nothing else.
    let minted = Request::post(server.url("/v1/realtime/client_secrets"))
        .bearer(KEY)
        .body(
            "application/json",
            json!({"expires_after": {"anchor": "created_at", "seconds": 60},
                   "session": {"type": "transcription", "audio": {"input": {"turn_detection": null,
                               "transcription": {"model": "whisper-1", "language": "en"}}}}})
            .to_string()
            .as_bytes(),
        )
        .send();
    minted.expect_status(200);
    let minted = minted.json();
    let secret = minted["value"].as_str().expect("a value").to_string();
    assert!(secret.starts_with("ek_"));
    assert!(minted["expires_at"].as_u64().unwrap() > 0);
    assert_eq!(
        minted["session"]["audio"]["input"]["turn_detection"],
        Value::Null
    );
    block_on(async {
        for auth in [
            Auth::Bearer(secret.clone()),
            Auth::Subprotocol(secret.clone()),
        ] {
            let mut client = LiveClient::connect(&url, &auth, false)
                .await
                .expect("the secret opens a session");
            let created = expect(&mut client, "session.created").await;
            assert_eq!(
                created.value["session"]["audio"]["input"]["turn_detection"],
                Value::Null,
                "the secret's settings"
            );
            client.close().await;
        }
    });
    let refused = Request::post(server.url("/v1/audio/transcriptions"))
        .bearer(&secret)
        .file("file", &assets::jfk().path)
        .field("model", "whisper-1")
        .send();
    refused.expect_error(401);
    // Only a real key mints.
    Request::post(server.url("/v1/realtime/client_secrets"))
        .bearer(&secret)
        .body("application/json", b"{}")
        .send()
        .expect_error(401);
    Request::post(server.url("/v1/realtime/client_secrets"))
        .bearer(KEY)
        .body("application/json", br#"{"expires_after":{"seconds":5}}"#)
        .send()
        .expect_error(400);
}

#[test]
fn sessions_past_the_limit_and_idle_ones_are_closed_with_an_error() {
    let server = Server::start_with_env(
        &[],
        &[
            ("STENO_MAX_SESSIONS", "1"),
            ("STENO_SESSION_IDLE_TIMEOUT_SECONDS", "2"),
        ],
    );
    let url = live::url(server.base_url());
    block_on(async {
        let mut first = LiveClient::connect(&url, &Auth::None, false).await.unwrap();
        expect(&mut first, "session.created").await;
        let mut second = LiveClient::connect(&url, &Auth::None, false).await.unwrap();
        let error = expect(&mut second, "error").await;
        assert_eq!(error.value["error"]["code"], "session_limit_reached");
        assert_eq!(expect(&mut second, "close").await.value["code"], 1013);
        // The first, silent, is closed for idleness: an error, then a close frame.
        let error = expect(&mut first, "error").await;
        assert_eq!(error.value["error"]["code"], "session_idle_timeout");
        let close = expect(&mut first, "close").await;
        assert!(close.at.as_secs_f64() < 5.0, "{close:?}");
        // Its slot is free again.
        let mut third = LiveClient::connect(&url, &Auth::None, false).await.unwrap();
        expect(&mut third, "session.created").await;
        third.close().await;
    });
}
