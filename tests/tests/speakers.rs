//! Who said what (#14), black-box: conversations joined from real voices of the test
//! assets (the LibriVox reader, an Asterisk prompt voice) with known turns, sent to the
//! real `steno serve` (tiny.en) and `steno transcribe`: `diarized_json` scored by DER
//! (0.25 s collar), known speakers named, the official OpenAI Python SDK reading
//! `diarized_json` and the streamed segment events, OpenAI's refusals for diarizing
//! models, the CLI's RTTM, `keywords[]` on names tiny.en mishears (espeak-ng), and
//! `languages[]` with the multilingual base model.
//!
//! One tiny.en server serves every case of [`speakers_over_one_server`] (the cases run
//! in order, each timed); `languages[]` needs base, so it has its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use steno_e2e::der::{self, Turn};
use steno_e2e::server::{Request, Response, Server};
use steno_e2e::{assets, cli, wer};

const API_KEY: &str = "sk-steno-speakers";
const TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";
const DIARIZE_MODEL: &str = "gpt-4o-transcribe-diarize";
/// The goal for conversations of real voices without overlap.
const MAX_DER: f64 = 0.10;
/// Silence between turns, seconds.
const GAP: f64 = 0.8;
const SAMPLE_RATE: f64 = 16_000.0;

/// A conversation file and who speaks when in it.
struct Conversation {
    path: PathBuf,
    turns: Vec<Turn>,
    /// The transcripts of its clips, in order.
    reference: String,
}

fn speech(relative: &str) -> PathBuf {
    assets::assets_dir().join("speech").join(relative)
}

fn reader(n: &str) -> PathBuf {
    speech(&format!(
        "librivox/sense_and_sensibility_01_austen_64kb-{n}.wav"
    ))
}

/// The reference text of an English clip of the manifest.
fn reference_text(path: &Path) -> String {
    assets::english_clips()
        .into_iter()
        .find(|c| c.path == path)
        .map(|c| c.reference)
        .unwrap_or_else(|| panic!("{} is not in the English manifest", path.display()))
}

/// The clips, `(speaker, file)`, joined with [`GAP`] of silence between them.
fn conversation(dir: &Path, name: &str, clips: &[(&str, PathBuf)]) -> Conversation {
    let gap = vec![0.0f32; (GAP * SAMPLE_RATE) as usize];
    let (mut samples, mut turns, mut texts) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (speaker, path)) in clips.iter().enumerate() {
        if i > 0 {
            samples.extend(&gap);
        }
        let start = samples.len() as f64 / SAMPLE_RATE;
        samples.extend(assets::samples(path));
        turns.push(Turn::new(
            start,
            samples.len() as f64 / SAMPLE_RATE,
            speaker,
        ));
        texts.push(reference_text(path));
    }
    let path = dir.join(format!("{name}.wav"));
    cli::write_wav(&path, &samples);
    Conversation {
        path,
        turns,
        reference: texts.join(" "),
    }
}

/// Reader, agent, reader, agent, reader: 28.7 s, two voices.
fn two_speakers(dir: &Path) -> Conversation {
    conversation(
        dir,
        "two-speakers",
        &[
            ("reader", reader("0870")),
            ("agent", speech("asterisk/agent-incorrect.wav")),
            ("reader", reader("0890")),
            ("agent", speech("asterisk/auth-incorrect.wav")),
            ("reader", reader("0930")),
        ],
    )
}

/// Each voice alone, from clips the conversation does not use (2–10 s).
fn known_clips() -> [(&'static str, PathBuf); 2] {
    [
        ("reader", reader("0920")),
        ("agent", speech("asterisk/agent-user.wav")),
    ]
}

/// A diarized_json body's segments as turns.
fn segment_turns(body: &Value) -> Vec<Turn> {
    body["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("no segments in {body}"))
        .iter()
        .map(|s| {
            assert_eq!(s["type"], "transcript.text.segment", "{s}");
            let time = |k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{k} in {s}"));
            let speaker = s["speaker"].as_str().unwrap_or_else(|| panic!("{s}"));
            Turn::new(time("start"), time("end"), speaker)
        })
        .collect()
}

fn speakers_of(turns: &[Turn]) -> Vec<String> {
    let mut names: Vec<String> = turns.iter().map(|t| t.speaker.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// Share of `segments` whose reference speaker (at their midpoint) is their label.
fn labelled_correctly(reference: &[Turn], segments: &[Turn]) -> f64 {
    let right = segments
        .iter()
        .filter(|s| {
            let mid = (s.start + s.end) / 2.0;
            reference
                .iter()
                .min_by(|a, b| distance(a, mid).total_cmp(&distance(b, mid)))
                .is_some_and(|r| r.speaker == s.speaker)
        })
        .count();
    right as f64 / segments.len().max(1) as f64
}

/// How far `t` lies outside `turn` (0 inside).
fn distance(turn: &Turn, t: f64) -> f64 {
    (turn.start - t).max(t - turn.end).max(0.0)
}

fn post(server: &Server, file: &Path, fields: &[(&str, &str)]) -> Response {
    Request::post(server.url(TRANSCRIPTIONS))
        .bearer(API_KEY)
        .file("file", file)
        .fields(fields)
        .max_time(Duration::from_secs(120))
        .send()
}

fn timed(name: &str, case: impl FnOnce()) {
    let started = Instant::now();
    case();
    eprintln!("{name}: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn speakers_over_one_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--api-key", API_KEY]);
    let talk = two_speakers(dir.path());
    timed("diarized_json", || {
        diarized_json_finds_both_voices(&server, &talk)
    });
    timed("known speakers", || {
        known_speakers_are_named(&server, &talk, dir.path())
    });
    timed("refusals", || {
        refusals_match_openai(&server, &talk, dir.path())
    });
    timed("python sdk", || {
        python_sdk_reads_diarization(&server, &talk, dir.path())
    });
    timed("cli rttm", || cli_writes_rttm(&talk));
    timed("keywords", || {
        keywords_fix_misheard_names(&server, dir.path())
    });
}

fn diarized_json_finds_both_voices(server: &Server, talk: &Conversation) {
    let response = post(
        server,
        &talk.path,
        &[("model", "whisper-1"), ("response_format", "diarized_json")],
    );
    response.expect_status(200);
    let body = response.json();
    assert_eq!(body["task"], "transcribe");
    assert_eq!(body["usage"]["type"], "duration", "{body}");
    let duration = body["duration"].as_f64().unwrap();
    let last = talk.turns.last().unwrap().end;
    assert!(
        (duration - last).abs() < 0.1,
        "duration {duration} vs {last}"
    );
    let text = body["text"].as_str().unwrap();
    let error = wer::wer(&talk.reference, text);
    assert!(error <= 0.3, "WER {error:.2}: {text:?}");
    let segments = segment_turns(&body);
    let rate = der::der(&talk.turns, &segments, der::COLLAR);
    eprintln!("two speakers: DER {:.1} % over {segments:?}", 100.0 * rate);
    assert_eq!(speakers_of(&segments), ["A", "B"], "{body}");
    assert!(rate <= MAX_DER, "DER {:.1} %", 100.0 * rate);
    // The segments' text is the whole text.
    let joined: Vec<&str> = body["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    assert_eq!(wer::normalize(&joined.join(" ")), wer::normalize(text));
}

fn known_speakers_are_named(server: &Server, talk: &Conversation, dir: &Path) {
    let mut request = Request::post(server.url(TRANSCRIPTIONS))
        .bearer(API_KEY)
        .file("file", &talk.path)
        .fields(&[
            ("model", DIARIZE_MODEL),
            ("response_format", "diarized_json"),
        ]);
    for (name, clip) in known_clips() {
        // Data URLs from files: a clip's base64 is longer than one argument may be.
        let url = dir.join(format!("{name}.dataurl"));
        std::fs::write(&url, data_url(&clip)).unwrap();
        request = request
            .field("known_speaker_names[]", name)
            .arg("-F")
            .arg(format!("known_speaker_references[]=<{}", url.display()));
    }
    let response = request.max_time(Duration::from_secs(120)).send();
    response.expect_status(200);
    let segments = segment_turns(&response.json());
    let accuracy = labelled_correctly(&talk.turns, &segments);
    eprintln!(
        "known speakers: {:.0} % of {} segments",
        100.0 * accuracy,
        segments.len()
    );
    assert_eq!(speakers_of(&segments), ["agent", "reader"]);
    assert!(accuracy >= 0.95, "{segments:?}");
}

fn data_url(path: &Path) -> String {
    use base64::Engine as _;
    let bytes = std::fs::read(path).unwrap();
    let payload = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("data:audio/wav;base64,{payload}")
}

/// `(status, param, code, message)` of an error response.
fn error_of(response: &Response) -> (u16, Value, Value, String) {
    let body = response.json();
    let error = &body["error"];
    assert_eq!(error["type"], "invalid_request_error", "{body}");
    let message = error["message"].as_str().unwrap_or_default().to_string();
    (
        response.status,
        error["param"].clone(),
        error["code"].clone(),
        message,
    )
}

/// Longer than 30 s: the conversation twice.
fn long_conversation(talk: &Conversation, dir: &Path) -> PathBuf {
    let mut samples = assets::samples(&talk.path);
    samples.extend(samples.clone());
    let path = dir.join("long.wav");
    cli::write_wav(&path, &samples);
    path
}

fn refusals_match_openai(server: &Server, talk: &Conversation, dir: &Path) {
    let diarize = |fields: &[(&str, &str)]| {
        let mut all = vec![("model", DIARIZE_MODEL)];
        all.extend(fields);
        error_of(&post(server, &talk.path, &all))
    };
    let (status, param, code, message) = diarize(&[("response_format", "verbose_json")]);
    assert_eq!(
        (status, param, code),
        (400, "response_format".into(), "unsupported_value".into())
    );
    assert_eq!(
        message,
        "response_format 'verbose_json' is not compatible with model \
         'gpt-4o-transcribe-diarize'. Use 'json' or 'text' instead."
    );
    for (field, value, param) in [
        ("prompt", "A phone call.", "prompt"),
        ("include[]", "logprobs", "include"),
        (
            "timestamp_granularities[]",
            "segment",
            "timestamp_granularities",
        ),
    ] {
        let (status, got, code, message) = diarize(&[(field, value)]);
        assert_eq!(
            (status, got, code),
            (400, param.into(), "unsupported_parameter".into())
        );
        assert!(message.contains(&format!("'{param}'")), "{message}");
    }
    // diarized_json diarizes on any model name, with the same rules.
    let (status, param, ..) = error_of(&post(
        server,
        &talk.path,
        &[
            ("model", "whisper-1"),
            ("response_format", "diarized_json"),
            ("prompt", "Hi"),
        ],
    ));
    assert_eq!((status, param), (400, "prompt".into()));
    let long = long_conversation(talk, dir);
    let (status, param, code, message) =
        error_of(&post(server, &long, &[("model", DIARIZE_MODEL)]));
    assert_eq!(
        (status, param, code),
        (400, "chunking_strategy".into(), "invalid_value".into())
    );
    assert_eq!(
        message,
        "chunking_strategy is required for diarization models"
    );
    // Known speakers' clips must be 2 to 10 s: the long conversation is not.
    let too_long = Request::post(server.url(TRANSCRIPTIONS))
        .bearer(API_KEY)
        .file("file", &talk.path)
        .fields(&[("model", DIARIZE_MODEL), ("known_speaker_names[]", "x")])
        .arg("-F")
        .arg(format!("known_speaker_references[]=<{}", {
            let url = dir.join("long.dataurl");
            std::fs::write(&url, data_url(&talk.path)).unwrap();
            url.display().to_string()
        }))
        .send();
    let (status, param, _, message) = error_of(&too_long);
    assert_eq!(
        (status, param),
        (400, "known_speaker_references".into()),
        "{message}"
    );
}

fn python_sdk_reads_diarization(server: &Server, talk: &Conversation, dir: &Path) {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv-clients/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/speakers_client.py");
    let long = long_conversation(talk, dir);
    let mut command = Command::new(&python);
    command
        .arg(script)
        .args(["--base-url", &server.url("/v1"), "--api-key", API_KEY])
        .arg("--audio")
        .arg(&talk.path)
        .arg("--long")
        .arg(&long);
    let out = run_client(command);
    let diarized = &out["diarized"];
    let segments = segment_turns(diarized);
    assert!(
        der::der(&talk.turns, &segments, der::COLLAR) <= MAX_DER,
        "{diarized}"
    );
    check_stream(out["stream"].as_array().unwrap(), diarized);
    let refusals = out["refusals"].as_object().unwrap();
    assert_eq!(refusals.len(), 5, "{out}");
    for (case, refusal) in refusals {
        assert_eq!(refusal["status"], 400, "{case}: {refusal}");
    }
    assert_eq!(refusals["unchunked"]["param"], "chunking_strategy");
}

/// Deltas carry the segment ids of the segment events that follow them, they join to
/// the done event's text, and the done event carries usage and languages.
fn check_stream(events: &[Value], diarized: &Value) {
    let (done, rest) = events.split_last().expect("events");
    assert_eq!(done["type"], "transcript.text.done");
    assert_eq!(done["usage"]["type"], "duration", "{done}");
    assert_eq!(done["languages"][0]["code"], "en", "{done}");
    let mut text = String::new();
    let mut ids = Vec::new();
    for pair in rest.chunks(2) {
        let [delta, segment] = pair else {
            panic!("a delta without its segment: {pair:?}")
        };
        assert_eq!(delta["type"], "transcript.text.delta");
        assert_eq!(segment["type"], "transcript.text.segment");
        assert_eq!(delta["segment_id"], segment["id"]);
        text.push_str(delta["delta"].as_str().unwrap());
        ids.push(segment["id"].clone());
    }
    assert_eq!(text, done["text"].as_str().unwrap());
    let expected: Vec<Value> = diarized["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, expected, "the stream's segments are the json's");
}

fn run_client(mut command: Command) -> Value {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("target/venv-clients (make setup)");
    let output = child.wait_with_output().expect("speakers_client.py");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "speakers_client.py failed:\n{stderr}"
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}:\n{stderr}"))
}

fn cli_writes_rttm(talk: &Conversation) {
    let output = Command::new(cli::steno_binary())
        .args(["transcribe", "--diarize", "--format", "rttm"])
        .arg(&talk.path)
        .env("NO_COLOR", "1")
        .output()
        .expect("steno transcribe");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rttm = String::from_utf8(output.stdout).unwrap();
    assert!(
        rttm.lines()
            .all(|l| l.starts_with("SPEAKER two-speakers 1 ")),
        "{rttm}"
    );
    let turns = der::parse_rttm(&rttm);
    let rate = der::der(&talk.turns, &turns, der::COLLAR);
    eprintln!("CLI RTTM: DER {:.1} %", 100.0 * rate);
    assert!(rate <= MAX_DER, "{rttm}");
}

/// Sentences with names tiny.en mishears from espeak-ng's voice, and the names.
const NAMES: [(&str, &[&str]); 8] = [
    (
        "Please send the report to Siobhan Nguyen before Friday.",
        &["Siobhan", "Nguyen"],
    ),
    ("Doctor Okonkwo will see you at noon.", &["Okonkwo"]),
    (
        "The meeting with Mister Szczepanski is cancelled.",
        &["Szczepanski"],
    ),
    ("Professor Nakamura gave the keynote.", &["Nakamura"]),
    (
        "Our new manager is Aoife Kowalczyk.",
        &["Aoife", "Kowalczyk"],
    ),
    (
        "Call Dmitri Volkov about the invoice.",
        &["Dmitri", "Volkov"],
    ),
    (
        "The package was signed for by Ngozi Adeyemi.",
        &["Ngozi", "Adeyemi"],
    ),
    (
        "Saoirse Brennan wrote the Kubernetes guide.",
        &["Saoirse", "Kubernetes"],
    ),
];

/// English clips on which a prompt of the names above used to change tiny.en's words
/// ("envelope" became "on Volkov", "to lock" "Tiwlak"), and jfk.
const UNRELATED: [&str; 6] = [
    "asterisk/vm-tohearenv.wav",
    "asterisk/confbridge-lock-in.wav",
    "asterisk/letters/asterisk.wav",
    "asterisk/vm-tocancel.wav",
    "asterisk/spy-iax.wav",
    "jfk.wav",
];

fn text_with_keywords(server: &Server, path: &Path, keywords: &[&str]) -> String {
    let mut fields = vec![("model", "gpt-transcribe")];
    fields.extend(keywords.iter().map(|k| ("keywords[]", *k)));
    let response = post(server, path, &fields);
    response.expect_status(200);
    response.json()["text"].as_str().unwrap().to_string()
}

/// Keywords fix at least half of the names tiny.en mishears, lose none it hears, and
/// leave speech that names none of them exactly as it was.
fn keywords_fix_misheard_names(server: &Server, dir: &Path) {
    let (mut misheard, mut fixed, mut lost) = (0, 0, 0);
    for (i, (sentence, names)) in NAMES.iter().enumerate() {
        let path = dir.join(format!("names-{i}.wav"));
        let status = Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "150", "-w"])
            .arg(&path)
            .arg(sentence)
            .status()
            .expect("espeak-ng is installed by `make setup`");
        assert!(status.success());
        let text = |keywords: &[&str]| text_with_keywords(server, &path, keywords);
        let (plain, favoured) = (text(&[]), text(names));
        eprintln!("{plain:?} -> {favoured:?}");
        for name in names.iter() {
            if !plain.contains(name) {
                misheard += 1;
                fixed += usize::from(favoured.contains(name));
            } else {
                lost += usize::from(!favoured.contains(name));
            }
        }
    }
    eprintln!("keywords fixed {fixed} of {misheard} misheard names, lost {lost}");
    assert_eq!(lost, 0, "a name heard without keywords was lost with them");
    assert!(misheard >= 4, "tiny.en heard the names without help");
    assert!(
        2 * fixed >= misheard,
        "keywords fixed {fixed} of {misheard}"
    );
    let names: Vec<&str> = NAMES.iter().flat_map(|(_, n)| n.iter().copied()).collect();
    for clip in UNRELATED {
        let path = speech(clip);
        let (plain, favoured) = (
            text_with_keywords(server, &path, &[]),
            text_with_keywords(server, &path, &names),
        );
        assert_eq!(plain, favoured, "{clip}: keywords changed unrelated speech");
    }
}

/// `languages[]` restricts detection: Spanish speech, restricted to French and German,
/// is transcribed as one of those; restricted to Spanish, as Spanish.
#[test]
fn languages_restrict_detection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("es.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "es", "-w"])
        .arg(&path)
        .arg("Buenos días. Me llamo Carlos y vivo en Madrid.")
        .status()
        .expect("espeak-ng is installed by `make setup`");
    assert!(status.success());
    let server = Server::start_model(&assets::model_dir(assets::BASE), &[]);
    let language = |languages: &[&str]| {
        let mut fields = vec![("model", "gpt-transcribe")];
        fields.extend(languages.iter().map(|l| ("languages[]", *l)));
        let response = server.transcribe(&path, &fields);
        response.expect_status(200);
        let body = response.json();
        body["languages"][0]["code"].as_str().unwrap().to_string()
    };
    assert_eq!(language(&[]), "es");
    assert_eq!(language(&["es", "en"]), "es");
    let forced = language(&["fr", "de"]);
    assert!(["fr", "de"].contains(&forced.as_str()), "{forced}");
    let refused = server.transcribe(&path, &[("languages[]", "klingon")]);
    refused.expect_status(400);
    assert_eq!(refused.json()["error"]["param"], "languages");
}
