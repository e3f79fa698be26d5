//! Real clients against the real `steno serve`: the official OpenAI Python SDK
//! (`tests/clients/python/`, installed by `make setup` into `target/venv-clients` from
//! `requirements/clients.txt`), the official OpenAI Node SDK (`tests/clients/node/`,
//! `npm ci`), and curl's multipart edge cases (no filename, odd content types, chunked
//! uploads, `Expect: 100-continue`, field order). The SDKs' realtime clients (Python's
//! `client.realtime` and `client.beta.realtime`, Node's `OpenAIRealtimeWS`) stream real
//! speech to `/v1/realtime` and are held to the same clips sent as files.
//!
//! The client scripts check the SDKs' own types and exceptions and print one JSON
//! object; this file checks the transcripts (word error rate against the reference),
//! the formats, the errors and the retry timing. One server per group of cases.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use steno_e2e::assets::{self, Clip};
use steno_e2e::bench::live::{clip_texts, Turn};
use steno_e2e::server::{Request, Response, Server};
use steno_e2e::{pcm24, wer};

/// Word error rate allowed on the 11-second JFK clip (22 words: two edits).
const JFK_WER: f64 = 0.1;
const JFK_SECONDS: f64 = 11.0;
/// The key the servers here require (`--api-key`).
const API_KEY: &str = "sk-steno-clients";
/// How long one client script may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn assert_jfk_text(text: &str, what: &str) {
    let reference = assets::jfk().reference;
    let rate = wer::wer(&reference, text);
    assert!(
        rate <= JFK_WER,
        "{what}: WER {:.1} % > {:.1} %\n  reference:  {reference:?}\n  hypothesis: {text:?}",
        100.0 * rate,
        100.0 * JFK_WER
    );
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

fn f64_at(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {value}"))
}

fn array_at<'a>(value: &'a Value, pointer: &str) -> &'a Vec<Value> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no array at {pointer} in {value}"))
}

/// Runs a client script to completion within [`CLIENT_TIMEOUT`]; its stdout as JSON.
/// Panics with its stderr when it fails, times out or prints something else.
fn run_client(mut command: Command, what: &str) -> Value {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what} ({command:?}): {e}; did `make setup` run?"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = steno_e2e::cli::wait_within(&mut child, CLIENT_TIMEOUT);
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let Some(status) = status else {
        panic!("{what} ran past {CLIENT_TIMEOUT:?}; stderr:\n{stderr}")
    };
    assert!(
        status.success(),
        "{what} failed ({status}); stderr:\n{stderr}\nstdout:\n{stdout}"
    );
    eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}):\n{stdout}\nstderr:\n{stderr}"))
}

/// The Python of `target/venv-clients`, where `make setup` installs the OpenAI SDK.
fn python_client(scenario: &str, server: &Server, extra: &[&str]) -> Value {
    let python = repo_root().join("target/venv-clients/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup` (scripts/setup.sh installs requirements/clients.txt)",
        python.display()
    );
    let mut command = Command::new(python);
    command
        .arg(repo_root().join("tests/clients/python/openai_client.py"))
        .arg(scenario)
        .args(["--base-url", &server.url("/v1"), "--api-key", API_KEY])
        .arg("--audio")
        .arg(&assets::jfk().path)
        .args(extra);
    run_client(command, &format!("openai_client.py {scenario}"))
}

// ---------------------------------------------------------------------------------------
// The official Python SDK

/// The text lines of SRT or VTT cues (not numbers, timings or the header), joined.
fn cue_text(body: &str) -> String {
    body.lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && *line != "WEBVTT"
                && !line.contains("-->")
                && line.parse::<u32>().is_err()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `HH:MM:SS<sep>mmm --> HH:MM:SS<sep>mmm` timing lines, as (start, end) seconds.
fn cue_timings(body: &str, separator: char) -> Vec<(f64, f64)> {
    let seconds = |s: &str| -> f64 {
        let (hms, millis) = s
            .trim()
            .split_once(separator)
            .unwrap_or_else(|| panic!("timestamp {s:?} without {separator:?}"));
        let parts: Vec<f64> = hms
            .split(':')
            .map(|p| p.parse().unwrap_or_else(|_| panic!("timestamp {s:?}")))
            .collect();
        assert_eq!(parts.len(), 3, "timestamp {s:?}");
        assert_eq!(millis.len(), 3, "timestamp {s:?}");
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2] + millis.parse::<f64>().unwrap() / 1000.0
    };
    body.lines()
        .filter_map(|line| line.split_once("-->"))
        .map(|(start, end)| (seconds(start), seconds(end)))
        .collect()
}

fn assert_cues(body: &str, separator: char, what: &str) {
    let timings = cue_timings(body, separator);
    assert!(!timings.is_empty(), "{what}: no cues:\n{body}");
    let mut previous_end = 0.0;
    for &(start, end) in &timings {
        assert!(
            start >= previous_end - 1e-6 && end > start && end <= JFK_SECONDS + 0.5,
            "{what}: cue {start}..{end} after {previous_end}:\n{body}"
        );
        previous_end = end;
    }
    assert_jfk_text(&cue_text(body), what);
}

fn assert_stream_events(events: &[Value], what: &str) {
    let (last, deltas) = events
        .split_last()
        .unwrap_or_else(|| panic!("{what}: no events"));
    assert!(!deltas.is_empty(), "{what}: no delta events: {events:?}");
    let mut joined = String::new();
    for event in deltas {
        assert_eq!(event["type"], "transcript.text.delta", "{what}: {event}");
        joined.push_str(str_at(event, "/delta"));
    }
    assert_eq!(last["type"], "transcript.text.done", "{what}: last {last}");
    let done = str_at(last, "/text");
    assert_eq!(joined.trim(), done.trim(), "{what}: deltas joined vs done");
    assert_jfk_text(done, what);
}

fn assert_verbose(verbose: &Value, what: &str) {
    assert_jfk_text(str_at(verbose, "/text"), what);
    assert_eq!(str_at(verbose, "/language"), "english", "{what}");
    let duration = f64_at(verbose, "/duration");
    assert!(
        (duration - JFK_SECONDS).abs() < 0.5,
        "{what}: duration {duration}"
    );
    let segments = array_at(verbose, "/segments");
    assert!(!segments.is_empty(), "{what}: no segments");
    let mut previous_end = 0.0;
    for segment in segments {
        let (start, end) = (f64_at(segment, "/start"), f64_at(segment, "/end"));
        assert!(
            start >= previous_end - 1e-6 && end > start && end <= duration + 0.5,
            "{what}: segment {segment}"
        );
        previous_end = end;
    }
    // Present with timestamp_granularities=word only.
    let Some(words) = verbose.pointer("/words").and_then(Value::as_array) else {
        return;
    };
    let mut previous_start = 0.0;
    for word in words {
        let (start, end) = (f64_at(word, "/start"), f64_at(word, "/end"));
        assert!(
            start >= previous_start && end >= start && end <= duration + 0.5,
            "{what}: word {word}"
        );
        previous_start = start;
    }
    let joined: Vec<&str> = words.iter().map(|w| str_at(w, "/word")).collect();
    assert_jfk_text(&joined.join(" "), &format!("{what}: words"));
}

fn assert_sdk_error(
    error: &Value,
    class: &str,
    status: u64,
    code: Option<&str>,
    param: Option<&str>,
) {
    assert_eq!(error["class"], class, "{error}");
    assert_eq!(error["status"], status, "{error}");
    assert_eq!(error["code"].as_str(), code, "{error}");
    assert_eq!(error["param"].as_str(), param, "{error}");
    assert!(
        !str_at(error, "/body/message").is_empty(),
        "empty message: {error}"
    );
}

#[test]
fn python_sdk_formats_streaming_models_and_errors() {
    let server = Server::start(&["--api-key", API_KEY]);
    let out = python_client("api", &server, &[]);
    eprintln!("openai (Python) {}", out["sdk_version"]);

    assert_jfk_text(str_at(&out, "/json/text"), "json");
    let usage = f64_at(&out, "/json/usage/seconds");
    assert!((usage - JFK_SECONDS).abs() < 0.5, "usage.seconds {usage}");
    assert_eq!(str_at(&out, "/json/usage/type"), "duration");

    let text = str_at(&out, "/text");
    assert_eq!(
        text.trim(),
        str_at(&out, "/json/text").trim(),
        "text vs json"
    );
    assert_cues(str_at(&out, "/srt"), ',', "srt");
    let vtt = str_at(&out, "/vtt");
    assert!(vtt.starts_with("WEBVTT"), "vtt header: {vtt:?}");
    assert_cues(vtt, '.', "vtt");

    let verbose = &out["verbose_json"];
    assert_verbose(verbose, "verbose_json");
    assert!(
        !array_at(verbose, "/words").is_empty(),
        "word granularity gave no words"
    );

    let logprobs = array_at(&out, "/logprobs/logprobs");
    let mut tokens = String::new();
    for entry in logprobs {
        tokens.push_str(str_at(entry, "/token"));
        let logprob = f64_at(entry, "/logprob");
        assert!(logprob <= 0.0 && logprob.is_finite(), "{entry}");
    }
    assert_eq!(
        tokens.trim(),
        str_at(&out, "/logprobs/text").trim(),
        "logprob tokens joined vs text"
    );

    let events = array_at(&out, "/stream");
    assert_stream_events(events, "Python SDK stream");

    assert_jfk_text(str_at(&out, "/options"), "language, prompt, temperature");
    assert_jfk_text(str_at(&out, "/translation"), "translation");

    let ids: Vec<&str> = array_at(&out, "/models")
        .iter()
        .map(|m| str_at(m, "/id"))
        .collect();
    assert!(
        ids.contains(&"whisper-1") && ids.contains(&"whisper-tiny.en"),
        "models {ids:?}"
    );
    assert_eq!(str_at(&out, "/model/id"), "whisper-1");
    assert_eq!(str_at(&out, "/model/object"), "model");

    let errors = &out["errors"];
    for key in ["bad_key", "bad_key_models"] {
        assert_sdk_error(
            &errors[key],
            "AuthenticationError",
            401,
            Some("invalid_api_key"),
            None,
        );
    }
    assert_sdk_error(
        &errors["garbage_audio"],
        "BadRequestError",
        400,
        None,
        Some("file"),
    );
    for key in ["unknown_model", "unknown_model_retrieve"] {
        assert_sdk_error(
            &errors[key],
            "NotFoundError",
            404,
            Some("model_not_found"),
            Some("model"),
        );
    }
}

/// One slow upload holds the only upload slot of a server with
/// `server.max_uploads_in_progress = 1` for `HOLD` seconds (then is transcribed);
/// meanwhile the SDK gets 429s. The SDK's retry
/// delay (`_calculate_retry_timeout` in openai/_base_client.py) is the `Retry-After`
/// value when the server sends one (0 < value <= 120), and otherwise 0.5 s × 2^n with
/// up to 25 % jitter taken off: the first retry would come after at most 0.5 s. So gaps
/// of a full `Retry-After` (1 s) between a 429 and the next attempt show the header
/// was honoured.
#[test]
fn python_sdk_rate_limit_error_and_retries_honouring_retry_after() {
    const HOLD: &str = "3";
    let server = Server::start_with_env(
        &[
            "--api-key",
            API_KEY,
            "--max-concurrent-requests",
            "1",
            "--max-jobs",
            "1",
        ],
        &[("STENO_MAX_UPLOADS_IN_PROGRESS", "1")],
    );
    let out = python_client(
        "overload",
        &server,
        &["--hold-seconds", HOLD, "--max-retries", "60"],
    );

    let limited = &out["rate_limited"];
    assert_sdk_error(
        limited,
        "RateLimitError",
        429,
        Some("rate_limit_exceeded"),
        None,
    );
    assert_eq!(limited["type"], "rate_limit_exceeded", "{limited}");
    let retry_after: f64 = str_at(limited, "/retry_after")
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {}", limited["retry_after"]));
    assert!(retry_after >= 1.0, "Retry-After {retry_after}");

    let attempts = array_at(&out, "/attempts");
    let (last, refused) = attempts.split_last().expect("no attempts recorded");
    assert_eq!(last["status"], 200, "last attempt: {last}");
    assert!(
        !refused.is_empty(),
        "the first attempt was admitted: the slow upload did not hold the slot"
    );
    let blocker_finished = f64_at(&out, "/blocker/finished");
    let mut previous: Option<&Value> = None;
    for attempt in attempts {
        if let Some(before) = previous {
            assert_eq!(before["status"], 429, "{before}");
            let wait: f64 = str_at(before, "/retry_after").parse().unwrap();
            let gap = f64_at(attempt, "/sent") - f64_at(before, "/answered");
            assert!(
                gap >= wait - 0.05 && gap <= wait + 1.5,
                "retry {gap:.3} s after a 429 with Retry-After: {wait}; attempts {attempts:?}"
            );
            assert!(
                f64_at(before, "/answered") <= blocker_finished + 0.5,
                "429 after the slot was free: {before}, blocker finished at {blocker_finished}"
            );
        }
        previous = Some(attempt);
    }
    let hold: f64 = HOLD.parse().unwrap();
    assert!(
        refused.len() as f64 >= hold - 1.0,
        "{} refusals in a {hold} s hold",
        refused.len()
    );
    eprintln!(
        "{} attempts, retried request done after {:.1} s",
        attempts.len(),
        f64_at(&out, "/retried/seconds")
    );
    assert_jfk_text(str_at(&out, "/retried/text"), "request retried by the SDK");
    assert_eq!(out["blocker"]["status"], 200, "{}", out["blocker"]);
    let blocker: Value = serde_json::from_str(str_at(&out, "/blocker/body")).unwrap();
    assert_jfk_text(str_at(&blocker, "/text"), "the slow upload");
}

// ---------------------------------------------------------------------------------------
// The official Node SDK

#[test]
fn node_sdk_json_verbose_json_stream_and_auth_error() {
    let dir = repo_root().join("tests/clients/node");
    assert!(
        dir.join("node_modules/openai").exists(),
        "{}/node_modules is missing: run `make setup` (npm ci)",
        dir.display()
    );
    let server = Server::start(&["--api-key", API_KEY]);
    let mut command = Command::new("node");
    command
        .current_dir(&dir)
        .arg("client.mjs")
        .args(["--base-url", &server.url("/v1"), "--api-key", API_KEY])
        .arg("--audio")
        .arg(&assets::jfk().path);
    let out = run_client(command, "node client.mjs");
    eprintln!(
        "openai (Node) {} on node {}",
        out["sdk_version"], out["node_version"]
    );
    assert_jfk_text(str_at(&out, "/json/text"), "Node json");
    assert_verbose(&out["verbose_json"], "Node verbose_json");
    assert!(
        !array_at(&out, "/verbose_json/words").is_empty(),
        "Node: word granularity gave no words"
    );
    assert_stream_events(array_at(&out, "/stream"), "Node stream");
    // The wrong key is refused before the upload is read; Node still writing it must
    // see the 401, not a reset connection.
    let bad_key = &out["bad_key"];
    assert_eq!(bad_key["status"], 401, "{bad_key}");
    assert_eq!(bad_key["code"], "invalid_api_key", "{bad_key}");
}

// ---------------------------------------------------------------------------------------
// curl: multipart edge cases

/// One part of a hand-built multipart body.
struct Part<'a> {
    name: &'a str,
    filename: Option<&'a str>,
    content_type: Option<&'a str>,
    data: &'a [u8],
}

impl<'a> Part<'a> {
    fn field(name: &'a str, value: &'a str) -> Part<'a> {
        Part {
            name,
            filename: None,
            content_type: None,
            data: value.as_bytes(),
        }
    }

    fn file(filename: Option<&'a str>, content_type: Option<&'a str>, data: &'a [u8]) -> Part<'a> {
        Part {
            name: "file",
            filename,
            content_type,
            data,
        }
    }
}

const BOUNDARY: &str = "steno-clients-boundary-7d1f";

fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", part.name);
        if let Some(filename) = part.filename {
            disposition.push_str(&format!("; filename=\"{filename}\""));
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(content_type) = part.content_type {
            body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(part.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post_multipart(server: &Server, parts: &[Part]) -> Response {
    Request::post(server.url("/v1/audio/transcriptions"))
        .bearer(API_KEY)
        .body(
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            &multipart(parts),
        )
        .send()
}

fn assert_jfk_json(response: &Response, what: &str) {
    assert_eq!(response.status, 200, "{what}: {}", response.body);
    assert_eq!(response.content_type(), "application/json", "{what}");
    assert_jfk_text(str_at(&response.json(), "/text"), what);
}

/// Steno finds the audio format from the bytes (the name and type are only hints), so
/// a file part is accepted whatever its filename or Content-Type say, as whisper.cpp's
/// server does. (OpenAI itself goes by the file name's extension.)
#[test]
fn curl_file_part_without_filename_or_with_odd_content_types() {
    let server = Server::start(&["--api-key", API_KEY]);
    let audio = std::fs::read(assets::jfk().path).expect("read jfk.wav");
    let cases: [(&str, Option<&str>, Option<&str>); 6] = [
        ("no filename", None, Some("audio/wav")),
        ("no filename, no content type", None, None),
        (
            "application/octet-stream",
            Some("jfk.wav"),
            Some("application/octet-stream"),
        ),
        ("text/plain", Some("jfk.wav"), Some("text/plain")),
        ("no content type", Some("jfk.wav"), None),
        (
            "a misleading name",
            Some("recording.bin"),
            Some("application/octet-stream"),
        ),
    ];
    for (what, filename, content_type) in cases {
        let response = post_multipart(
            &server,
            &[
                Part::field("model", "whisper-1"),
                Part::file(filename, content_type, &audio),
            ],
        );
        assert_jfk_json(&response, what);
    }
    // A text field named `file` is no audio: a clear 400 on `file`.
    let response = post_multipart(
        &server,
        &[
            Part::field("model", "whisper-1"),
            Part::field("file", "jfk.wav"),
        ],
    );
    let error = response.expect_error(400);
    assert_eq!(error.param.as_deref(), Some("file"), "{error:?}");
}

/// Fields may come before or after the file; those after it still count.
#[test]
fn curl_field_order_chunked_uploads_and_expect_100_continue() {
    let server = Server::start(&["--api-key", API_KEY]);
    let jfk = assets::jfk();
    let audio = std::fs::read(&jfk.path).expect("read jfk.wav");

    let file_first = post_multipart(
        &server,
        &[
            Part::file(Some("jfk.wav"), Some("audio/wav"), &audio),
            Part::field("model", "whisper-1"),
            Part::field("response_format", "text"),
        ],
    );
    assert_eq!(file_first.status, 200, "file first: {}", file_first.body);
    assert_eq!(file_first.content_type(), "text/plain", "file first");
    assert_jfk_text(
        &file_first.body,
        "file first, response_format=text after it",
    );

    let file_last = post_multipart(
        &server,
        &[
            Part::field("model", "whisper-1"),
            Part::field("response_format", "verbose_json"),
            Part::file(Some("jfk.wav"), Some("audio/wav"), &audio),
        ],
    );
    assert_eq!(file_last.status, 200, "file last: {}", file_last.body);
    assert_verbose(&file_last.json(), "file last, verbose_json");

    // curl -F with `Transfer-Encoding: chunked`: no Content-Length.
    let chunked = server
        .transcription(&jfk.path)
        .bearer(API_KEY)
        .header("Transfer-Encoding: chunked")
        .send();
    assert_jfk_json(&chunked, "chunked upload");

    let expect = server
        .transcription(&jfk.path)
        .bearer(API_KEY)
        .header("Expect: 100-continue")
        .send();
    assert_jfk_json(&expect, "Expect: 100-continue");

    // Refused before the upload: with Expect the client need not send it at all (curl
    // waits up to 1 s for 100 Continue), and a chunked upload still gets the answer.
    for (what, header) in [
        ("Expect: 100-continue", "Expect: 100-continue"),
        ("chunked", "Transfer-Encoding: chunked"),
    ] {
        let response = server
            .transcription(&jfk.path)
            .bearer("sk-wrong")
            .header(header)
            .max_time(Duration::from_secs(30))
            .send();
        let error = response.expect_error(401);
        assert_eq!(
            error.code.as_deref(),
            Some("invalid_api_key"),
            "{what}: {error:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The SDKs' realtime clients: `GET /v1/realtime` over WebSocket, live transcription

/// How much worse than the same clips sent as files the live transcripts may read: three
/// words of the ~45 these clips hold. The server's turn detection splits jfk at its pauses
/// into four turns, and a turn decoded alone loses the context before it (tiny.en then
/// hears "And so am I fellow Americans"). The English set's live-vs-file comparison is in
/// tests/tests/live_english.rs.
const LIVE_WER_MARGIN: f64 = 0.07;

/// What the realtime clients stream: jfk and the first two LibriVox sentences of 3–6 s.
fn realtime_clips() -> Vec<Clip> {
    let librivox = assets::english_clips()
        .into_iter()
        .filter(|c| c.speech_key().starts_with("librivox/"))
        .filter(|c| (3.0..=6.0).contains(&c.seconds()))
        .take(2);
    std::iter::once(assets::jfk()).chain(librivox).collect()
}

/// The clips as 24 kHz PCM16 files in `dir`, the Realtime API's `audio/pcm`.
fn write_pcm24(clips: &[Clip], dir: &Path) -> Vec<PathBuf> {
    clips
        .iter()
        .enumerate()
        .map(|(i, clip)| {
            let path = dir.join(format!("clip-{i}.pcm"));
            std::fs::write(&path, pcm24::from_file(&clip.path)).expect("write a PCM clip");
            path
        })
        .collect()
}

/// Each clip sent as a file to the same server, for the live transcripts to be held to.
fn file_texts(server: &Server, clips: &[Clip]) -> Vec<String> {
    clips
        .iter()
        .map(|clip| {
            let response = server
                .transcription(&clip.path)
                .bearer(API_KEY)
                .field("language", "en")
                .send();
            response.expect_status(200);
            str_at(&response.json(), "/text").to_owned()
        })
        .collect()
}

/// Each clip's live text from a realtime script's output: the turns the server found by
/// voice activity go to the clip their audio starts in (`offsets_ms`); manually committed
/// turns are the clips in order.
fn live_texts(out: &Value) -> Vec<String> {
    let offsets: Vec<u64> = array_at(out, "/offsets_ms")
        .iter()
        .map(|v| v.as_f64().expect("offset").round() as u64)
        .collect();
    let turns: Vec<Turn> = array_at(out, "/turns")
        .iter()
        .enumerate()
        .map(|(n, turn)| Turn {
            audio_start_ms: turn["audio_start_ms"]
                .as_u64()
                .or_else(|| offsets.get(n).copied()),
            transcript: turn["transcript"].as_str().map(str::to_owned),
            ..Turn::default()
        })
        .collect();
    clip_texts(&turns, &offsets)
}

/// The protocol as a client sees it: no error events, every turn completed, and the deltas
/// of each turn (never retracted) adding up to its completed transcript.
fn assert_turns(out: &Value, what: &str) {
    assert!(
        array_at(out, "/errors").is_empty(),
        "{what}: {}",
        out["errors"]
    );
    let turns = array_at(out, "/turns");
    assert!(
        !turns.is_empty(),
        "{what}: no turns; events {}",
        out["events"]
    );
    for turn in turns {
        assert!(turn["failed"].is_null(), "{what}: failed turn {turn}");
        let transcript = str_at(turn, "/transcript");
        let deltas: String = array_at(turn, "/deltas")
            .iter()
            .map(|d| d.as_str().expect("delta text"))
            .collect();
        assert_eq!(
            wer::normalize(&deltas),
            wer::normalize(transcript),
            "{what}: deltas joined vs completed transcript in {turn}"
        );
    }
}

/// Corpus WER of the live texts within [`LIVE_WER_MARGIN`] of the files'; jfk on its own
/// within [`JFK_WER`].
fn assert_live_wer(out: &Value, clips: &[Clip], files: &[String], what: &str) {
    let live = live_texts(out);
    let pairs = |texts: &[String]| -> Vec<(String, String)> {
        clips
            .iter()
            .map(|c| c.reference.clone())
            .zip(texts.iter().cloned())
            .collect()
    };
    let live_wer = wer::corpus_wer(pairs(&live));
    let file_wer = wer::corpus_wer(pairs(files));
    eprintln!(
        "{what}: live WER {:.1} %, files {:.1} %, {:.1} s; live {live:?}",
        100.0 * live_wer,
        100.0 * file_wer,
        f64_at(out, "/seconds")
    );
    assert!(
        live_wer <= file_wer + LIVE_WER_MARGIN,
        "{what}: live WER {:.1} % vs files {:.1} %\n  live:  {live:?}\n  files: {files:?}",
        100.0 * live_wer,
        100.0 * file_wer
    );
    assert_jfk_text(&live[0], &format!("{what}: jfk"));
}

/// A realtime script's command line: the server's URLs, the key, the pace and the clips.
fn realtime_args(command: &mut Command, server: &Server, speed: &str, pcm: &[PathBuf]) {
    command
        .args(["--base-url", &server.url("/v1"), "--api-key", API_KEY])
        .args(["--speed", speed])
        .args(pcm);
}

/// The Python SDK's GA client (`client.realtime.connect`, `session.update` with a
/// transcription session, server VAD, logprobs included) and its beta client
/// (`client.beta.realtime.connect`, `transcription_session.update`, manual commits), each
/// streaming jfk and two LibriVox sentences as 24 kHz PCM16.
#[test]
fn python_sdk_realtime_transcription_ga_and_beta() {
    let server = Server::start(&["--api-key", API_KEY]);
    let clips = realtime_clips();
    let dir = tempfile::tempdir().expect("temp dir");
    let pcm = write_pcm24(&clips, dir.path());
    let files = file_texts(&server, &clips);
    let python = repo_root().join("target/venv-clients/bin/python");
    let script = repo_root().join("tests/clients/python/realtime_client.py");
    // GA at four times real time (turns end by the server's VAD, which hears the pauses);
    // beta as fast as the socket takes it (the client commits each clip).
    for (api, speed) in [("ga", "4"), ("beta", "0")] {
        let mut command = Command::new(&python);
        command.arg(&script).arg(api);
        realtime_args(&mut command, &server, speed, &pcm);
        let out = run_client(command, &format!("realtime_client.py {api}"));
        let what = format!("Python SDK {} realtime ({api})", out["sdk_version"]);
        assert_turns(&out, &what);
        assert_live_wer(&out, &clips, &files, &what);
        if api == "ga" {
            assert_eq!(out["created"], "session.created", "{what}");
            assert_eq!(out["updated"]["type"], "session.updated", "{what}");
            let session = &out["updated"]["session"];
            assert_eq!(session["type"], "transcription", "{what}: {session}");
            assert_eq!(
                session["audio"]["input"]["format"]["rate"], 24_000,
                "{session}"
            );
            for turn in array_at(&out, "/turns") {
                let spoken = !str_at(turn, "/transcript").trim().is_empty();
                assert!(
                    !spoken || turn["logprobs"].as_u64() > Some(0),
                    "{what}: {turn}"
                );
            }
        } else {
            assert_eq!(out["created"], "transcription_session.created", "{what}");
            assert_eq!(out["updated"]["type"], "transcription_session.updated");
            assert_eq!(
                array_at(&out, "/turns").len(),
                clips.len(),
                "{what}: a turn per commit"
            );
        }
    }
}

/// The Node SDK's `OpenAIRealtimeWS` (beta protocol: `transcription_session.update`,
/// server VAD) streaming the same clips at four times real time.
#[test]
fn node_sdk_realtime_ws_transcription() {
    let dir = repo_root().join("tests/clients/node");
    assert!(
        dir.join("node_modules/ws").exists(),
        "{}/node_modules/ws is missing: run `make setup` (npm ci)",
        dir.display()
    );
    let server = Server::start(&["--api-key", API_KEY]);
    let clips = realtime_clips();
    let tmp = tempfile::tempdir().expect("temp dir");
    let pcm = write_pcm24(&clips, tmp.path());
    let files = file_texts(&server, &clips);
    let mut command = Command::new("node");
    command.current_dir(&dir).arg("realtime_client.mjs");
    realtime_args(&mut command, &server, "4", &pcm);
    let out = run_client(command, "node realtime_client.mjs");
    let what = format!("Node SDK {} OpenAIRealtimeWS", out["sdk_version"]);
    assert!(
        str_at(&out, "/url").ends_with("/v1/realtime?model=whisper-1"),
        "{what}: {}",
        out["url"]
    );
    assert_eq!(
        out["updated"]["type"], "transcription_session.updated",
        "{what}"
    );
    assert_turns(&out, &what);
    assert_live_wer(&out, &clips, &files, &what);
}
