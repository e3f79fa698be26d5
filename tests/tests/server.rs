//! The real `steno serve` with the tiny.en model, driven over HTTP by the real `curl`:
//! OpenAI's transcription and translation API (every response format, streaming,
//! logprobs, options), models, health, metrics, OpenAPI, the error envelope, request
//! ids, API keys, batching under concurrency, cancellation and overload.
//!
//! Every test starts its own server (tiny.en loads in about a second), so tests are
//! independent; run them one at a time on small machines (`RUST_TEST_THREADS=1`).

use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use steno_e2e::assets::{self, Clip};
use steno_e2e::server::{Request, Response, Server};
use steno_e2e::wer::{self, assert_wer};
use steno_e2e::{cli, prometheus};

/// Word error rate allowed on the 11-second JFK clip (22 words: two edits).
const JFK_WER: f64 = 0.1;
/// Length of `speech/jfk.wav` in seconds.
const JFK_SECONDS: f64 = 11.0;

const TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";

fn assert_jfk_text(text: &str, what: &str) {
    assert_wer(&assets::jfk().reference, text, JFK_WER, what);
}

/// Transcribes jfk.wav with `fields` on a fresh server and expects 200.
fn transcribe_jfk(server: &Server, fields: &[(&str, &str)]) -> Response {
    let response = server.transcribe(&assets::jfk().path, fields);
    response.expect_status(200);
    response
}

/// A `json` transcription of jfk.wav with `fields` is 200 with the right text.
fn assert_jfk_json_with(fields: &[(&str, &str)]) {
    let server = Server::start(&[]);
    let response = transcribe_jfk(&server, fields);
    assert_eq!(response.content_type(), "application/json");
    let json = response.json();
    let text = json["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text: {json}"));
    assert_jfk_text(text, &format!("{fields:?}"));
}

fn object<'a>(value: &'a Value, what: &str) -> &'a Map<String, Value> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {value}"))
}

fn number(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {value}"))
}

fn string<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string in {value}"))
}

fn sorted_keys(map: &Map<String, Value>) -> Vec<&str> {
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

// ---------------------------------------------------------------------------------------
// Response formats

#[test]
fn json_has_text_and_duration_usage() {
    let server = Server::start(&[]);
    let response = transcribe_jfk(&server, &[("response_format", "json")]);
    assert_eq!(response.content_type(), "application/json");
    let json = response.json();
    assert_eq!(
        sorted_keys(object(&json, "body")),
        ["languages", "text", "usage"],
        "{json}"
    );
    assert_eq!(json["languages"], serde_json::json!([{"code": "en"}]));
    assert_jfk_text(string(&json, "text"), "json text");
    let usage = &json["usage"];
    assert_eq!(sorted_keys(object(usage, "usage")), ["seconds", "type"]);
    assert_eq!(usage["type"], "duration", "{usage}");
    let seconds = number(usage, "seconds");
    assert!(
        (seconds - JFK_SECONDS).abs() <= 1.0,
        "usage.seconds {seconds} for an 11 s clip"
    );
}

#[test]
fn json_is_the_default_format() {
    assert_jfk_json_with(&[]);
}

#[test]
fn text_format_is_plain_text() {
    let server = Server::start(&[]);
    let response = transcribe_jfk(&server, &[("response_format", "text")]);
    assert_eq!(response.content_type(), "text/plain");
    assert!(
        serde_json::from_str::<Value>(&response.body).is_err(),
        "text body is JSON: {}",
        response.body
    );
    assert!(!response.body.trim().is_empty());
    assert!(!response.body.contains("-->"), "{}", response.body);
    assert_jfk_text(&response.body, "text body");
}

/// One subtitle cue.
#[derive(Debug)]
struct Cue {
    start: f64,
    end: f64,
    text: String,
}

/// `HH:MM:SS<separator>mmm` in seconds; panics on anything else.
fn subtitle_time(s: &str, separator: char) -> f64 {
    let bad = || panic!("bad timestamp {s:?} (expected HH:MM:SS{separator}mmm)");
    let bytes = s.as_bytes();
    if bytes.len() != 12
        || bytes[2] != b':'
        || bytes[5] != b':'
        || bytes[8] != separator as u8
        || ![0, 1, 3, 4, 6, 7, 9, 10, 11]
            .iter()
            .all(|&i| bytes[i].is_ascii_digit())
    {
        bad();
    }
    let field = |range: std::ops::Range<usize>| s[range].parse::<u64>().unwrap();
    let (h, m, sec, ms) = (field(0..2), field(3..5), field(6..8), field(9..12));
    if m >= 60 || sec >= 60 {
        bad();
    }
    (h * 3600 + m * 60 + sec) as f64 + ms as f64 / 1000.0
}

/// `start --> end` (VTT cue settings after `end` are allowed).
fn cue_timing(line: &str, separator: char) -> (f64, f64) {
    let (start, rest) = line
        .split_once(" --> ")
        .unwrap_or_else(|| panic!("not a cue timing line: {line:?}"));
    let end = rest.split_whitespace().next().unwrap_or_default();
    (
        subtitle_time(start, separator),
        subtitle_time(end, separator),
    )
}

/// Blocks separated by blank lines, `\r\n` tolerated.
fn blocks(body: &str) -> Vec<Vec<&str>> {
    let mut blocks = vec![Vec::new()];
    for line in body.lines().map(|l| l.trim_end_matches('\r')) {
        if line.trim().is_empty() {
            if !blocks.last().unwrap().is_empty() {
                blocks.push(Vec::new());
            }
        } else {
            blocks.last_mut().unwrap().push(line);
        }
    }
    blocks.retain(|b| !b.is_empty());
    blocks
}

fn parse_srt(body: &str) -> Vec<Cue> {
    blocks(body)
        .iter()
        .enumerate()
        .map(|(i, block)| {
            assert!(
                block.len() >= 3,
                "SRT cue needs number, timing, text: {block:?}"
            );
            assert_eq!(block[0], (i + 1).to_string(), "SRT cue number in {block:?}");
            let (start, end) = cue_timing(block[1], ',');
            Cue {
                start,
                end,
                text: block[2..].join(" "),
            }
        })
        .collect()
}

fn parse_vtt(body: &str) -> Vec<Cue> {
    assert!(
        body.starts_with("WEBVTT"),
        "VTT must start with WEBVTT: {body:?}"
    );
    let blocks = blocks(body);
    assert!(blocks[0][0].starts_with("WEBVTT"));
    blocks[1..]
        .iter()
        .filter(|b| !b[0].starts_with("NOTE"))
        .map(|block| {
            // An optional cue identifier precedes the timing line.
            let timing = block
                .iter()
                .position(|l| l.contains("-->"))
                .unwrap_or_else(|| panic!("VTT cue without timing: {block:?}"));
            assert!(timing <= 1, "VTT cue: {block:?}");
            assert!(block.len() > timing + 1, "VTT cue without text: {block:?}");
            let (start, end) = cue_timing(block[timing], '.');
            Cue {
                start,
                end,
                text: block[timing + 1..].join(" "),
            }
        })
        .collect()
}

/// Cues exist, are ordered and non-overlapping, lie inside the clip, and say JFK's words.
fn assert_jfk_cues(cues: &[Cue], what: &str) {
    assert!(!cues.is_empty(), "{what}: no cues");
    let mut previous_end = 0.0;
    for cue in cues {
        assert!(
            cue.start <= cue.end,
            "{what}: cue ends before it starts: {cue:?}"
        );
        assert!(
            cue.start >= previous_end,
            "{what}: cue starts before the previous one ended ({previous_end}): {cue:?}"
        );
        assert!(
            cue.end <= JFK_SECONDS + 1.0,
            "{what}: cue outside 0..12 s: {cue:?}"
        );
        assert!(!cue.text.trim().is_empty(), "{what}: empty cue {cue:?}");
        previous_end = cue.end;
    }
    let text: Vec<&str> = cues.iter().map(|c| c.text.as_str()).collect();
    assert_jfk_text(&text.join(" "), what);
}

#[test]
fn srt_has_numbered_ordered_cues() {
    let server = Server::start(&[]);
    let response = transcribe_jfk(&server, &[("response_format", "srt")]);
    assert_eq!(response.content_type(), "text/plain");
    assert_jfk_cues(&parse_srt(&response.body), "srt");
}

#[test]
fn vtt_has_webvtt_cues_with_dot_millis() {
    let server = Server::start(&[]);
    let response = transcribe_jfk(&server, &[("response_format", "vtt")]);
    assert!(
        ["text/plain", "text/vtt"].contains(&response.content_type().as_str()),
        "content-type {:?}",
        response.header("content-type")
    );
    assert_jfk_cues(&parse_vtt(&response.body), "vtt");
}

/// Checks the verbose_json body common to all granularities and returns it.
fn assert_verbose_json(response: &Response) -> Value {
    assert_eq!(response.content_type(), "application/json");
    let json = response.json();
    assert_eq!(json["task"], "transcribe", "{json}");
    assert_eq!(json["language"], "english", "{json}");
    let duration = number(&json, "duration");
    assert!(
        (duration - JFK_SECONDS).abs() < 0.05,
        "duration {duration} for an 11 s clip"
    );
    assert_jfk_text(string(&json, "text"), "verbose_json text");
    let segments = json["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("no segments array: {json}"));
    assert!(!segments.is_empty(), "no segments: {json}");
    let mut previous_end = 0.0;
    for (i, segment) in segments.iter().enumerate() {
        assert_eq!(
            sorted_keys(object(segment, "segment")),
            [
                "avg_logprob",
                "compression_ratio",
                "end",
                "id",
                "no_speech_prob",
                "seek",
                "start",
                "temperature",
                "text",
                "tokens"
            ],
            "segment {i}: {segment}"
        );
        assert_eq!(segment["id"].as_u64(), Some(i as u64), "{segment}");
        assert!(segment["seek"].is_u64(), "seek: {segment}");
        let (start, end) = (number(segment, "start"), number(segment, "end"));
        assert!(
            previous_end <= start && start <= end && end <= duration + 0.01,
            "segment times {start}..{end} after {previous_end} in {duration} s"
        );
        previous_end = end;
        string(segment, "text");
        let tokens = segment["tokens"]
            .as_array()
            .unwrap_or_else(|| panic!("tokens: {segment}"));
        assert!(
            !tokens.is_empty() && tokens.iter().all(Value::is_u64),
            "{segment}"
        );
        let temperature = number(segment, "temperature");
        assert!((0.0..=1.0).contains(&temperature), "{segment}");
        assert!(number(segment, "avg_logprob") <= 0.0, "{segment}");
        assert!(number(segment, "compression_ratio") > 0.0, "{segment}");
        let no_speech = number(segment, "no_speech_prob");
        assert!((0.0..=1.0).contains(&no_speech), "{segment}");
    }
    let joined: String = segments
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    assert_jfk_text(&joined, "verbose_json segments");
    json
}

/// Checks the top-level `words` array: `{word,start,end}` objects, in order, saying JFK's words.
fn assert_words(json: &Value) {
    let words = json["words"]
        .as_array()
        .unwrap_or_else(|| panic!("no top-level words array: {json}"));
    assert!(!words.is_empty(), "empty words");
    let mut previous_start = 0.0;
    for word in words {
        assert_eq!(
            sorted_keys(object(word, "word")),
            ["end", "start", "word"],
            "{word}"
        );
        string(word, "word");
        let (start, end) = (number(word, "start"), number(word, "end"));
        assert!(
            previous_start <= start && start <= end && end <= JFK_SECONDS + 0.01,
            "word times {start}..{end} after {previous_start}: {word}"
        );
        previous_start = start;
    }
    let joined: Vec<&str> = words.iter().map(|w| w["word"].as_str().unwrap()).collect();
    assert_jfk_text(&joined.join(" "), "verbose_json words");
}

#[test]
fn verbose_json_segments_have_openai_fields() {
    let server = Server::start(&[]);
    let response = transcribe_jfk(&server, &[("response_format", "verbose_json")]);
    assert_verbose_json(&response);
}

#[test]
fn verbose_json_word_and_segment_granularities() {
    let server = Server::start(&[]);
    let response = transcribe_jfk(
        &server,
        &[
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
            ("timestamp_granularities[]", "segment"),
        ],
    );
    let json = assert_verbose_json(&response);
    assert_words(&json);
}

#[test]
fn verbose_json_word_granularity_alone() {
    let server = Server::start(&[]);
    let response = transcribe_jfk(
        &server,
        &[
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
        ],
    );
    assert_words(&response.json());
}

#[test]
fn unbracketed_timestamp_granularities_is_accepted() {
    let server = Server::start(&[]);
    let response = transcribe_jfk(
        &server,
        &[
            ("response_format", "verbose_json"),
            ("timestamp_granularities", "word"),
        ],
    );
    assert_words(&response.json());
}

#[test]
fn logprobs_concatenate_to_the_text() {
    let server = Server::start(&[]);
    let response = transcribe_jfk(
        &server,
        &[("response_format", "json"), ("include[]", "logprobs")],
    );
    let json = response.json();
    let text = string(&json, "text");
    assert_jfk_text(text, "json text with logprobs");
    let logprobs = json["logprobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no logprobs array: {json}"));
    assert!(!logprobs.is_empty(), "empty logprobs");
    let (mut tokens, mut bytes) = (String::new(), Vec::new());
    for entry in logprobs {
        assert_eq!(
            sorted_keys(object(entry, "logprob")),
            ["bytes", "logprob", "token"],
            "{entry}"
        );
        tokens.push_str(string(entry, "token"));
        let logprob = number(entry, "logprob");
        assert!(logprob <= 0.0 && logprob.is_finite(), "{entry}");
        let entry_bytes = entry["bytes"]
            .as_array()
            .unwrap_or_else(|| panic!("bytes: {entry}"));
        for b in entry_bytes {
            let b = b
                .as_u64()
                .filter(|&b| b <= 255)
                .unwrap_or_else(|| panic!("byte {b} in {entry}"));
            bytes.push(b as u8);
        }
    }
    assert_eq!(tokens.trim(), text.trim(), "tokens joined vs text");
    assert_eq!(
        String::from_utf8(bytes).expect("bytes are UTF-8"),
        tokens,
        "bytes joined vs tokens joined"
    );
}

#[test]
fn stream_sends_text_deltas_then_done() {
    let server = Server::start(&[]);
    let response = transcribe_jfk(&server, &[("stream", "true")]);
    assert_eq!(response.content_type(), "text/event-stream");
    let events = response.sse_events();
    let (last, deltas) = events
        .split_last()
        .unwrap_or_else(|| panic!("no events:\n{}", response.body));
    assert!(!deltas.is_empty(), "no delta events:\n{}", response.body);
    let mut joined = String::new();
    for event in deltas {
        assert_eq!(event["type"], "transcript.text.delta", "{event}");
        joined.push_str(string(event, "delta"));
    }
    assert_eq!(last["type"], "transcript.text.done", "last event: {last}");
    let done = string(last, "text");
    assert_eq!(joined.trim(), done.trim(), "deltas joined vs done text");
    assert_jfk_text(done, "stream done text");
}

// ---------------------------------------------------------------------------------------
// Options

#[test]
fn language_en() {
    assert_jfk_json_with(&[("language", "en")]);
}

#[test]
fn prompt() {
    assert_jfk_json_with(&[(
        "prompt",
        "President Kennedy's inaugural address, January 1961.",
    )]);
}

#[test]
fn temperature_0_2() {
    assert_jfk_json_with(&[("temperature", "0.2")]);
}

#[test]
fn mode_parallel() {
    assert_jfk_json_with(&[("mode", "parallel")]);
}

/// `batched`, the parallel mode's former name, is still accepted.
#[test]
fn mode_batched() {
    assert_jfk_json_with(&[("mode", "batched")]);
}

#[test]
fn mode_sequential() {
    assert_jfk_json_with(&[("mode", "sequential")]);
}

/// Steno's extension `beam_size`: beam search with five beams gives jfk's text, and a
/// beam count outside 1..=16 is refused naming the field.
#[test]
fn beam_size_extension() {
    let server = Server::start(&[]);
    let json = transcribe_jfk(&server, &[("beam_size", "5")]).json();
    assert_jfk_text(json["text"].as_str().unwrap_or_default(), "beam_size 5");
    for bad in ["0", "17", "five"] {
        let error = assert_rejected(&server, &[("beam_size", bad)]);
        assert_eq!(
            error.param.as_deref(),
            Some("beam_size"),
            "{bad}: {error:?}"
        );
    }
}

#[test]
fn chunking_strategy_auto() {
    assert_jfk_json_with(&[("chunking_strategy", "auto")]);
}

#[test]
fn chunking_strategy_server_vad() {
    assert_jfk_json_with(&[("chunking_strategy", r#"{"type":"server_vad"}"#)]);
}

#[test]
fn translation_of_english_is_the_english_text() {
    let server = Server::start(&[]);
    let response = server.translation(&assets::jfk().path).send();
    response.expect_status(200);
    assert_eq!(response.content_type(), "application/json");
    assert_jfk_text(string(&response.json(), "text"), "translation");
}

// ---------------------------------------------------------------------------------------
// Models, health, metrics, OpenAPI

fn assert_model_object(model: &Value) {
    assert_eq!(
        sorted_keys(object(model, "model")),
        ["created", "id", "object", "owned_by"],
        "{model}"
    );
    string(model, "id");
    assert_eq!(model["object"], "model", "{model}");
    assert!(model["created"].is_u64(), "created: {model}");
    string(model, "owned_by");
}

#[test]
fn models_list_and_lookup() {
    let server = Server::start(&[]);
    let list = server.get("/v1/models");
    list.expect_status(200);
    assert_eq!(list.content_type(), "application/json");
    let list = list.json();
    assert_eq!(list["object"], "list", "{list}");
    let data = list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {list}"));
    data.iter().for_each(assert_model_object);
    let whisper = data
        .iter()
        .find(|m| m["id"] == "whisper-1")
        .unwrap_or_else(|| panic!("no whisper-1 in {list}"));

    let one = server.get("/v1/models/whisper-1");
    one.expect_status(200);
    let one = one.json();
    assert_model_object(&one);
    assert_eq!(&one, whisper);

    let missing = server.get("/v1/models/nope");
    missing.expect_error(404);
}

#[test]
fn health_is_ok() {
    let server = Server::start(&[]);
    server.get("/health").expect_status(200);
}

#[test]
fn metrics_expose_the_documented_series() {
    let server = Server::start(&[]);
    transcribe_jfk(&server, &[]);
    let response = server.get("/metrics");
    response.expect_status(200);
    assert_eq!(response.content_type(), "text/plain");
    let text = &response.body;
    for name in [
        "steno_requests_total",
        "steno_audio_seconds_total",
        "steno_batch_rows",
        "steno_decoder_steps_total",
        "steno_queue_depth",
        "steno_worker_healthy",
        "steno_mlx_active_memory_bytes",
    ] {
        assert!(text.contains(name), "no {name} in /metrics:\n{text}");
    }
    let value = |name: &str| {
        prometheus::sum(text, name).unwrap_or_else(|| panic!("no sample {name}:\n{text}"))
    };
    assert!(
        text.lines().any(|l| l.trim() == "steno_worker_healthy 1"),
        "no `steno_worker_healthy 1` line:\n{text}"
    );
    assert!(value("steno_requests_total") >= 1.0);
    let audio = value("steno_audio_seconds_total");
    assert!(
        (audio - JFK_SECONDS).abs() < 0.5,
        "steno_audio_seconds_total {audio} after one 11 s clip"
    );
    assert!(value("steno_decoder_steps_total") > 0.0);
    assert!(value("steno_batch_rows_count") >= 1.0);
    assert!(value("steno_queue_depth") >= 0.0);
    assert!(value("steno_mlx_active_memory_bytes") >= 0.0);
}

#[test]
fn openapi_document_lists_the_routes() {
    let server = Server::start(&[]);
    let response = server.get("/openapi.json");
    response.expect_status(200);
    let json = response.json();
    assert!(
        string(&json, "openapi").starts_with('3'),
        "openapi version: {}",
        json["openapi"]
    );
    let paths = object(&json["paths"], "paths");
    assert!(
        paths.contains_key(TRANSCRIPTIONS),
        "paths: {:?}",
        sorted_keys(paths)
    );
}

// ---------------------------------------------------------------------------------------
// Errors: status and OpenAI's envelope

/// A transcription form with jfk.wav but without `model`.
fn jfk_form(server: &Server) -> Request {
    Request::post(server.url(TRANSCRIPTIONS)).file("file", &assets::jfk().path)
}

#[test]
fn missing_file_is_400_on_file() {
    let server = Server::start(&[]);
    let response = Request::post(server.url(TRANSCRIPTIONS))
        .field("model", "whisper-1")
        .send();
    let error = response.expect_error(400);
    assert_eq!(error.param.as_deref(), Some("file"), "{error:?}");
    assert_eq!(error.kind, "invalid_request_error", "{error:?}");
}

#[test]
fn missing_model_is_400() {
    let server = Server::start(&[]);
    let error = jfk_form(&server).send().expect_error(400);
    assert_eq!(error.kind, "invalid_request_error", "{error:?}");
}

#[test]
fn unknown_model_is_404_model_not_found() {
    let server = Server::start(&[]);
    let response = jfk_form(&server).field("model", "nope").send();
    let error = response.expect_error(404);
    assert_eq!(error.code.as_deref(), Some("model_not_found"), "{error:?}");
}

/// Uploads `bytes` as `file.wav` (a real file for curl) and returns the response.
fn upload_bytes(server: &Server, bytes: &[u8]) -> Response {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upload.bin");
    std::fs::write(&path, bytes).unwrap();
    Request::post(server.url(TRANSCRIPTIONS))
        .file_as("file", &path, "file.wav")
        .field("model", "whisper-1")
        .send()
}

#[test]
fn garbage_audio_is_400() {
    let server = Server::start(&[]);
    // Deterministic noise that is no audio container (xorshift).
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let garbage: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let error = upload_bytes(&server, &garbage).expect_error(400);
    assert_eq!(error.kind, "invalid_request_error", "{error:?}");
}

#[test]
fn empty_file_is_400() {
    let server = Server::start(&[]);
    upload_bytes(&server, &[]).expect_error(400);
}

/// A transcription of jfk.wav with `fields` fails with 400; returns the error.
fn assert_rejected(server: &Server, fields: &[(&str, &str)]) -> steno_e2e::server::ApiError {
    let response = server.transcribe(&assets::jfk().path, fields);
    let error = response.expect_error(400);
    assert_eq!(error.kind, "invalid_request_error", "{fields:?}: {error:?}");
    error
}

#[test]
fn bad_response_format_is_400() {
    let server = Server::start(&[]);
    let error = assert_rejected(&server, &[("response_format", "xml")]);
    assert_eq!(error.param.as_deref(), Some("response_format"), "{error:?}");
}

#[test]
fn bad_temperature_is_400() {
    let server = Server::start(&[]);
    assert_rejected(&server, &[("temperature", "hot")]);
    assert_rejected(&server, &[("temperature", "3")]);
}

#[test]
fn unknown_language_is_400() {
    let server = Server::start(&[]);
    assert_rejected(&server, &[("language", "xx")]);
}

#[test]
fn unknown_timestamp_granularity_is_400() {
    let server = Server::start(&[]);
    assert_rejected(
        &server,
        &[
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "line"),
        ],
    );
}

#[test]
fn upload_over_the_limit_is_413() {
    let server = Server::start(&["--max-upload-bytes", "100000"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.wav");
    // 100 000 samples of a quiet tone: a 200 044-byte WAV.
    let tone: Vec<f32> = (0..100_000)
        .map(|i| 0.1 * (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin())
        .collect();
    cli::write_wav(&path, &tone);
    assert!(std::fs::metadata(&path).unwrap().len() > 200_000);
    let response = server.transcription(&path).send();
    response.expect_error(413);
}

#[test]
fn malformed_multipart_is_400() {
    let server = Server::start(&[]);
    let part = "Content-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n";
    let cases = [
        // The body's boundary is not the declared one.
        (
            "multipart/form-data; boundary=declared",
            format!("--actual\r\n{part}--actual--\r\n"),
        ),
        // A part that never ends.
        (
            "multipart/form-data; boundary=declared",
            "--declared\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"a.wav\"\r\n\r\nRIFF"
                .to_string(),
        ),
        // No boundary at all.
        ("multipart/form-data", format!("--x\r\n{part}--x--\r\n")),
    ];
    for (content_type, body) in cases {
        let response = Request::post(server.url(TRANSCRIPTIONS))
            .body(content_type, body.as_bytes())
            .send();
        assert_eq!(
            response.status, 400,
            "{content_type} {body:?}: {}",
            response.body
        );
        response.api_error();
    }
}

// ---------------------------------------------------------------------------------------
// Request ids and API keys

#[test]
fn request_id_is_echoed_or_generated() {
    let server = Server::start(&[]);
    let echoed = Request::get(server.url("/v1/models"))
        .header("x-request-id: e2e-request-42")
        .send();
    assert_eq!(echoed.header("x-request-id"), Some("e2e-request-42"));
    let failed = Request::post(server.url(TRANSCRIPTIONS))
        .field("model", "whisper-1")
        .header("x-request-id: e2e-failed-7")
        .send();
    failed.expect_error(400);
    assert_eq!(failed.header("x-request-id"), Some("e2e-failed-7"));

    let generated: Vec<String> = (0..2)
        .map(|_| {
            let response = server.get("/v1/models");
            let id = response
                .header("x-request-id")
                .unwrap_or_else(|| panic!("no x-request-id in {:?}", response.headers));
            assert!(!id.trim().is_empty());
            id.to_string()
        })
        .collect();
    assert_ne!(generated[0], generated[1], "two requests got the same id");
}

fn assert_unauthorized(response: &Response) {
    let error = response.expect_error(401);
    assert_eq!(error.code.as_deref(), Some("invalid_api_key"), "{error:?}");
}

#[test]
fn api_keys_guard_the_api_but_not_health() {
    let server = Server::start(&["--api-key", "sk-a", "--api-key", "sk-b"]);
    let jfk = assets::jfk();
    assert_unauthorized(&server.transcription(&jfk.path).send());
    assert_unauthorized(&server.get("/v1/models"));
    assert_unauthorized(&server.transcription(&jfk.path).bearer("sk-c").send());
    assert_unauthorized(
        &Request::get(server.url("/v1/models"))
            .bearer("sk-a-but-longer")
            .send(),
    );
    server.get("/health").expect_status(200);
    Request::get(server.url("/v1/models"))
        .bearer("sk-a")
        .send()
        .expect_status(200);
    let response = server.transcription(&jfk.path).bearer("sk-b").send();
    response.expect_status(200);
    assert_jfk_text(string(&response.json(), "text"), "authorized transcription");
    a_refused_upload_is_not_read(&server);
}

/// A refused client's upload is not waited for: the client declares 20 MB and sends
/// none of it, yet gets its 401 with `Connection: close` within 5 s (the server gives a
/// refused upload 1 s and 1 MiB), and the server closes the connection (it used to wait
/// 10 s for the body, to discard up to the upload limit).
fn a_refused_upload_is_not_read(server: &Server) {
    use std::io::Read;
    use steno_e2e::rawhttp::{Multipart, RawRequest};
    let form =
        Multipart::new()
            .field("model", "whisper-1")
            .file("file", "big.wav", &vec![0; 20 << 20]);
    let request = RawRequest::post_form(TRANSCRIPTIONS, form)
        .header("Authorization", "Bearer sk-wrong")
        .without_expect();
    let mut stream = request
        .send_partial(server.address(), 0)
        .expect("send the head");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .expect("the 401 and the connection's end within 5 s");
    let reply = String::from_utf8_lossy(&reply).to_ascii_lowercase();
    assert!(reply.starts_with("http/1.1 401"), "{reply}");
    assert!(reply.contains("\r\nconnection: close\r\n"), "{reply}");
}

/// Secure by default: no API keys on a non-loopback address is refused at start, with
/// a message that names the keys to set. (The opt-out,
/// `server.allow_unauthenticated`, is unit-tested: a server that starts there is open
/// to the network.)
#[test]
fn no_keys_on_the_network_is_refused_at_start() {
    let model = assets::model_dir(assets::TINY_EN);
    let exited = steno_e2e::server::serve_until_exit(
        &model,
        &["--host", "0.0.0.0"],
        Duration::from_secs(30),
    );
    let status = exited.status.expect("steno serve exits by itself");
    assert!(!status.success(), "{status:?}:\n{}", exited.stderr);
    for key in ["server.api_keys", "server.allow_unauthenticated"] {
        assert!(
            exited.stderr.contains(key),
            "no {key} in:\n{}",
            exited.stderr
        );
    }
    assert!(
        !exited.stderr.contains("listening"),
        "it listened:\n{}",
        exited.stderr
    );
}

#[test]
fn api_keys_from_the_environment() {
    let server = Server::start_with_env(&[], &[("STENO_API_KEYS", "sk-a,sk-b")]);
    assert_unauthorized(&server.get("/v1/models"));
    for key in ["sk-a", "sk-b"] {
        Request::get(server.url("/v1/models"))
            .bearer(key)
            .send()
            .expect_status(200);
    }
    server.get("/health").expect_status(200);
}

// ---------------------------------------------------------------------------------------
// Concurrency, cancellation, overload

/// The first `n` English clips (besides jfk) of 3 to 8 seconds with at least 8 reference
/// words that OpenAI's reference implementation transcribed without an error (when its
/// fixture is there): clips whose WER measures the server, not the model.
fn short_clips(n: usize) -> Vec<Clip> {
    let reference = assets::reference_hypotheses(assets::TINY_EN);
    let clips: Vec<Clip> = assets::english_clips()
        .into_iter()
        .filter(|c| c.path != assets::jfk().path)
        .filter(|c| c.reference.split_whitespace().count() >= 8)
        .filter(|c| match &reference {
            Some(reference) => reference
                .get(&c.speech_key())
                .is_some_and(|h| wer::wer(&c.reference, h) == 0.0),
            None => true,
        })
        .filter(|c| (3.0..=8.0).contains(&c.seconds()))
        .take(n)
        .collect();
    assert_eq!(clips.len(), n, "not enough short English clips");
    clips
}

#[test]
fn concurrent_requests_are_batched() {
    let clips = short_clips(8);
    let server = Server::start(&[]);
    let started = Instant::now();
    let pending: Vec<_> = clips
        .iter()
        .map(|c| server.transcription(&c.path).spawn())
        .collect();
    let responses: Vec<Response> = pending.into_iter().map(|p| p.wait()).collect();
    let wall = started.elapsed();
    let mut pairs = Vec::new();
    for (clip, response) in clips.iter().zip(&responses) {
        response.expect_status(200);
        let text = string(&response.json(), "text").to_string();
        assert_wer(&clip.reference, &text, 0.35, &clip.to_string());
        pairs.push((clip.reference.clone(), text));
    }
    let corpus = wer::corpus_wer(pairs);
    eprintln!(
        "8 concurrent clips in {:.1} s, corpus WER {:.1} %",
        wall.as_secs_f64(),
        100.0 * corpus
    );
    assert!(corpus <= 0.15, "corpus WER {:.1} %", 100.0 * corpus);

    let metrics = server.metrics();
    let (single, total) = prometheus::histogram_at_most(&metrics, "steno_batch_rows", 1.0)
        .unwrap_or_else(|| panic!("no steno_batch_rows histogram:\n{metrics}"));
    assert!(
        single < total,
        "no batch had more than one row ({single} of {total} observations ≤ 1)"
    );
}

fn cancellations(server: &Server) -> Option<f64> {
    prometheus::sum(&server.metrics(), "steno_cancellations_total")
}

#[test]
fn a_client_that_goes_away_cancels_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let long = steno_e2e::stress::long_wav(dir.path(), 60.0);
    let server = Server::start(&[]);
    let before = cancellations(&server).unwrap_or(0.0);

    let mut abandoned = server.transcription(&long).spawn();
    let normal = server.transcription(&assets::jfk().path).spawn();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        abandoned.is_running(),
        "60 s of audio transcribed within a second?"
    );
    abandoned.kill();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = cancellations(&server);
        if now.is_some_and(|n| n > before) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "steno_cancellations_total still {now:?} (was {before}) 10 s after the client left"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let response = normal.wait();
    response.expect_status(200);
    assert_jfk_text(
        string(&response.json(), "text"),
        "request beside a cancelled one",
    );
    server.get("/health").expect_status(200);
}

#[test]
fn overload_is_429_with_retry_after() {
    let server = Server::start(&["--queue-capacity", "1", "--max-concurrent-requests", "1"]);
    let jfk = assets::jfk();
    let started = Instant::now();
    let pending: Vec<_> = (0..10)
        .map(|_| {
            server
                .transcription(&jfk.path)
                .max_time(Duration::from_secs(180))
                .spawn()
        })
        .collect();
    let responses: Vec<Response> = pending.into_iter().map(|p| p.wait()).collect();
    let wall = started.elapsed();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    eprintln!("statuses {statuses:?} in {:.1} s", wall.as_secs_f64());
    assert!(
        statuses.iter().all(|s| [200, 429].contains(s)),
        "statuses {statuses:?}"
    );
    assert!(statuses.contains(&429), "no 429 among {statuses:?}");
    assert!(statuses.contains(&200), "no 200 among {statuses:?}");
    for response in &responses {
        match response.status {
            429 => {
                let retry = response
                    .header("retry-after")
                    .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", response.headers));
                assert!(retry.parse::<u64>().is_ok(), "Retry-After {retry:?}");
                let error = response.api_error();
                assert_eq!(error.kind, "rate_limit_exceeded", "{error:?}");
            }
            _ => assert_jfk_text(string(&response.json(), "text"), "admitted request"),
        }
    }
    assert!(wall < Duration::from_secs(150), "took {wall:?}");
}
