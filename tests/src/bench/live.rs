//! `steno-bench live` (`make bench-live`): live transcription sessions over the Realtime
//! API (`GET /v1/realtime?intent=transcription`, through [`crate::live::LiveClient`]) while
//! file requests run on the same server.
//!
//! **Latency levels.** Each level opens N sessions at once; each streams English clips of
//! at most 10 s (one turn each, a pause after each) as 24 kHz PCM16 at real-time pace in
//! 100 ms appends, with the server's turn detection, while `file_clients` threads send file
//! requests one after another. Per level:
//! * **turn latency**: `input_audio_buffer.speech_stopped` → `…transcription.completed`,
//!   both as the client received them (the server's own measure is
//!   `steno_live_turn_latency_seconds`);
//! * **first delta**: from when the turn's first audio (`audio_start_ms`, which includes
//!   the 300 ms prefix padding) was sent to the turn's first `…transcription.delta`;
//! * the live turns' WER, and the file requests' count and p50 latency beside them.
//!
//! **The English set through sessions** ([`english_through_sessions`]): every clip fed to
//! one of a few sessions as fast as the socket takes it, the next clip once the last one's
//! turns are transcribed, against the same clips sent as files ([`english_as_files`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::assets::{self, Clip};
use crate::live::{self, Audio, Event, LiveClient, SessionOptions};
use crate::server::Server;
use crate::{pcm24, prometheus, wer};

/// Audio per append: OpenAI's examples stream 100 ms chunks.
const CHUNK_MS: usize = 100;
/// Silence after each clip: past the session's 500 ms of silence that ends a turn.
const PAUSE_MS: usize = 1_500;
/// How long a session waits for its last transcripts after its audio is sent.
const SETTLE: Duration = Duration::from_secs(120);
/// Longest clip the latency levels use (the goal is for turns up to 10 s).
const MAX_TURN_SECONDS: f64 = 10.0;
/// How long a file request of the load may take before it counts as failed.
const FILE_TIMEOUT: Duration = Duration::from_secs(600);
/// A turn may start this long before its clip (prefix padding, the VAD's own lead).
const TURN_LEAD_MS: u64 = 1_000;

const SPEECH_STARTED: &str = "input_audio_buffer.speech_started";
const SPEECH_STOPPED: &str = "input_audio_buffer.speech_stopped";
const DELTA: &str = "conversation.item.input_audio_transcription.delta";
const COMPLETED: &str = "conversation.item.input_audio_transcription.completed";
const FAILED: &str = "conversation.item.input_audio_transcription.failed";

/// What `steno-bench live` measures (its command line: see `steno-bench`'s header).
pub struct Options {
    pub model: PathBuf,
    /// Concurrent sessions per level.
    pub sessions: Vec<usize>,
    /// Turns (clips) each session streams per level.
    pub turns: usize,
    /// Threads sending file requests one after another while the sessions run.
    pub file_clients: usize,
    /// Every n-th English clip goes through sessions and as files (0: skip that part).
    pub wer_stride: usize,
    /// Sessions the English set is spread over.
    pub wer_sessions: usize,
    /// The server's `engine.max_batch_rows`.
    pub batch_rows: usize,
    pub out: PathBuf,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            model: assets::model_dir(assets::TINY_EN),
            sessions: vec![1, 4, 8],
            turns: 6,
            file_clients: 2,
            wer_stride: 1,
            wer_sessions: 4,
            batch_rows: 16,
            out: PathBuf::from("target/bench/live.md"),
        }
    }
}

/// One turn as its client saw it; times in seconds.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    pub audio_start_ms: Option<u64>,
    /// speech_stopped → completed, as received.
    pub latency: Option<f64>,
    /// The turn's first audio sent → its first delta received.
    pub first_delta: Option<f64>,
    pub transcript: Option<String>,
    pub failed: bool,
}

/// The turns in `events` (a session's, in arrival order), in the order they started.
/// `sent_at(ms)` is when the audio at `ms` into the stream was sent, since connecting.
pub fn turns(events: &[Event], sent_at: impl Fn(u64) -> Duration) -> Vec<Turn> {
    let mut order: Vec<String> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    let mut stopped: Vec<Option<Duration>> = Vec::new();
    for event in events {
        let Some(id) = event.value["item_id"].as_str() else {
            continue;
        };
        let i = order.iter().position(|o| o == id).unwrap_or_else(|| {
            order.push(id.to_owned());
            turns.push(Turn::default());
            stopped.push(None);
            order.len() - 1
        });
        let turn = &mut turns[i];
        match event.kind.as_str() {
            SPEECH_STARTED => turn.audio_start_ms = event.value["audio_start_ms"].as_u64(),
            SPEECH_STOPPED => stopped[i] = Some(event.at),
            DELTA if turn.first_delta.is_none() => {
                let start = sent_at(turn.audio_start_ms.unwrap_or(0));
                turn.first_delta = Some(event.at.saturating_sub(start).as_secs_f64());
            }
            COMPLETED => {
                turn.transcript = event.value["transcript"].as_str().map(str::to_owned);
                turn.latency = stopped[i].map(|s| event.at.saturating_sub(s).as_secs_f64());
            }
            FAILED => turn.failed = true,
            _ => {}
        }
    }
    turns
}

/// Each clip's text: the transcripts of the turns whose audio starts in it (`offsets_ms`:
/// each clip's start in the stream; a turn may start [`TURN_LEAD_MS`] early).
pub fn clip_texts(turns: &[Turn], offsets_ms: &[u64]) -> Vec<String> {
    let mut texts = vec![String::new(); offsets_ms.len()];
    for turn in turns {
        let start = turn.audio_start_ms.unwrap_or(0) + TURN_LEAD_MS;
        let clip = offsets_ms.iter().rposition(|&o| o <= start).unwrap_or(0);
        if let (Some(text), Some(slot)) = (&turn.transcript, texts.get_mut(clip)) {
            slot.push(' ');
            slot.push_str(text.trim());
        }
    }
    texts
}

/// Whether every turn begun in `events` is transcribed (or failed), and one began at or
/// after `since_ms` (the last clip sent is heard).
fn settled(events: &[Event], since_ms: u64) -> bool {
    let count = |kinds: &[&str]| {
        events
            .iter()
            .filter(|e| kinds.contains(&e.kind.as_str()))
            .count()
    };
    let heard = events.iter().any(|e| {
        e.kind == SPEECH_STARTED
            && e.value["audio_start_ms"].as_u64().unwrap_or(0) + TURN_LEAD_MS >= since_ms
    });
    let started = count(&[SPEECH_STARTED]);
    heard && started == count(&[SPEECH_STOPPED]) && count(&[COMPLETED, FAILED]) >= started
}

/// Receives until [`settled`] for `since_ms`, or `timeout`; false on timeout or an end.
async fn wait_settled(client: &mut LiveClient, since_ms: u64, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    client.drain();
    while !settled(&client.seen, since_ms) {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            return false;
        };
        match client.next(left).await {
            Some(event) if event.kind == "end" || event.kind == "close" => return false,
            Some(_) => {}
            None => return false,
        }
    }
    true
}

/// Connects to `server` and opens a GA transcription session (English, server VAD).
async fn open_session(server: &Server) -> Result<LiveClient, String> {
    let url = live::url(server.base_url());
    let mut client = LiveClient::connect(&url, &live::Auth::None, false)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    client
        .wait_for("session.created", Duration::from_secs(30))
        .await
        .ok_or("no session.created")?;
    let options = SessionOptions {
        model: Some("whisper-1".into()),
        ..SessionOptions::default()
    };
    client.configure(&options).await?;
    Ok(client)
}

/// A session's audio: each clip followed by [`PAUSE_MS`] of silence, after one pause.
struct Script {
    pcm: Vec<u8>,
    /// Each clip's start in `pcm`, ms.
    offsets_ms: Vec<u64>,
}

fn pause() -> Vec<u8> {
    vec![0; pcm24::BYTES_PER_SECOND * PAUSE_MS / 1000]
}

fn bytes_ms(bytes: usize) -> u64 {
    (pcm24::seconds(bytes) * 1000.0).round() as u64
}

impl Script {
    fn new<'a>(clips: impl IntoIterator<Item = &'a Vec<u8>>) -> Script {
        let mut script = Script {
            pcm: pause(),
            offsets_ms: Vec::new(),
        };
        for pcm in clips {
            script.offsets_ms.push(bytes_ms(script.pcm.len()));
            script.pcm.extend_from_slice(pcm);
            script.pcm.extend_from_slice(&pause());
        }
        script
    }
}

/// What one session of a latency level saw.
struct SessionRun {
    turns: Vec<Turn>,
    offsets_ms: Vec<u64>,
    error: Option<String>,
}

/// One latency-level session: the script at real-time pace, then its last transcripts.
async fn paced_session(server: &Server, script: Script) -> SessionRun {
    let mut run = SessionRun {
        turns: Vec::new(),
        offsets_ms: script.offsets_ms.clone(),
        error: None,
    };
    let mut client = match open_session(server).await {
        Ok(client) => client,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    let streaming_from = client.started.elapsed();
    client
        .stream(&Audio::Pcm24k(script.pcm), CHUNK_MS, 1.0)
        .await;
    let last = script.offsets_ms.last().copied().unwrap_or(0);
    if !wait_settled(&mut client, last, SETTLE).await {
        run.error = Some("transcripts missing after the audio was sent".into());
    }
    // At real-time pace the audio at `ms` left `ms` after streaming began.
    run.turns = turns(&client.seen, |ms| {
        streaming_from + Duration::from_millis(ms)
    });
    client.close().await;
    run
}

/// A latency level's outcome.
pub struct Level {
    pub sessions: usize,
    pub turns: Vec<Turn>,
    pub session_errors: Vec<String>,
    pub wer: f64,
    /// File requests answered while the sessions ran: their latencies, seconds.
    pub files: Vec<f64>,
    pub file_failures: usize,
    /// The server's own mean turn latency over the level (`steno_live_turn_latency_seconds`).
    pub server_turn_latency: Option<f64>,
}

/// Sends file requests of `clips` one after another until `stop`; their latencies.
fn file_load(
    server: &Server,
    clips: &[Clip],
    first: usize,
    stop: &AtomicBool,
) -> (Vec<f64>, usize) {
    let (mut latencies, mut failures) = (Vec::new(), 0);
    for clip in clips.iter().cycle().skip(first) {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let started = Instant::now();
        let response = server
            .transcription(&clip.path)
            .field("language", "en")
            .max_time(FILE_TIMEOUT)
            .spawn()
            .wait_result();
        match response {
            Ok(response) if response.status == 200 => {
                latencies.push(started.elapsed().as_secs_f64())
            }
            _ => failures += 1,
        }
    }
    (latencies, failures)
}

/// `sessions` sessions at once, each streaming `turns` clips from its own place in
/// `clips`, while `file_clients` threads send files.
fn run_level(server: &Server, clips: &[(Clip, Vec<u8>)], o: &Options, sessions: usize) -> Level {
    let scripts: Vec<(Script, Vec<&Clip>)> = (0..sessions)
        .map(|s| {
            let mine: Vec<&(Clip, Vec<u8>)> = clips
                .iter()
                .cycle()
                .skip(s * o.turns)
                .take(o.turns)
                .collect();
            let script = Script::new(mine.iter().map(|(_, pcm)| pcm));
            (script, mine.iter().map(|(clip, _)| clip).collect())
        })
        .collect();
    let files: Vec<Clip> = clips.iter().map(|(c, _)| c.clone()).collect();
    let stop = AtomicBool::new(false);
    let before = server.metrics();
    let (runs, loads) = std::thread::scope(|scope| {
        let loads: Vec<_> = (0..o.file_clients)
            .map(|c| {
                let (files, stop) = (&files, &stop);
                scope.spawn(move || file_load(server, files, c * 7, stop))
            })
            .collect();
        let references: Vec<Vec<&Clip>> = scripts.iter().map(|(_, r)| r.clone()).collect();
        let runs = live::block_on(futures_util::future::join_all(
            scripts
                .into_iter()
                .map(|(script, _)| paced_session(server, script)),
        ));
        stop.store(true, Ordering::SeqCst);
        let loads: Vec<_> = loads
            .into_iter()
            .map(|l| l.join().expect("file load"))
            .collect();
        (runs.into_iter().zip(references).collect::<Vec<_>>(), loads)
    });
    let after = server.metrics();
    level_outcome(sessions, runs, loads, server_mean(&before, &after))
}

/// Mean of `steno_live_turn_latency_seconds` between two `/metrics` snapshots.
fn server_mean(before: &str, after: &str) -> Option<f64> {
    let delta = |name: &str| prometheus::increase(before, after, name);
    let count = delta("steno_live_turn_latency_seconds_count");
    (count > 0.0).then(|| delta("steno_live_turn_latency_seconds_sum") / count)
}

fn level_outcome(
    sessions: usize,
    runs: Vec<(SessionRun, Vec<&Clip>)>,
    loads: Vec<(Vec<f64>, usize)>,
    server_turn_latency: Option<f64>,
) -> Level {
    let mut pairs = Vec::new();
    let mut level = Level {
        sessions,
        turns: Vec::new(),
        session_errors: Vec::new(),
        wer: 0.0,
        files: loads.iter().flat_map(|(l, _)| l.clone()).collect(),
        file_failures: loads.iter().map(|(_, f)| f).sum(),
        server_turn_latency,
    };
    for (run, clips) in runs {
        let texts = clip_texts(&run.turns, &run.offsets_ms);
        pairs.extend(clips.iter().map(|c| c.reference.clone()).zip(texts));
        level.turns.extend(run.turns);
        level.session_errors.extend(run.error);
    }
    level.wer = wer::corpus_wer(pairs);
    level
}

/// The English clips of at most [`MAX_TURN_SECONDS`] (and at least 2 s), with their audio.
fn latency_clips() -> Vec<(Clip, Vec<u8>)> {
    assets::english_clips()
        .into_iter()
        .filter(|c| (2.0..=MAX_TURN_SECONDS).contains(&c.seconds()))
        .map(|c| {
            let pcm = pcm24::from_file(&c.path);
            (c, pcm)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The English set through sessions

/// Streams `clips` through one session, each as fast as the socket takes it, then waits
/// for its turns; each clip's text (empty where it got none).
async fn clips_through_session(
    server: &Server,
    clips: Vec<Vec<u8>>,
) -> Result<Vec<String>, String> {
    let mut client = open_session(server).await?;
    let mut offsets_ms = Vec::new();
    let mut at = 0;
    for pcm in &clips {
        offsets_ms.push(bytes_ms(at));
        let mut audio = pcm.clone();
        audio.extend(pause());
        at += audio.len();
        client.stream(&Audio::Pcm24k(audio), CHUNK_MS, 0.0).await;
        // A clip whose speech the VAD misses gets no turn: give up on it after a while.
        wait_settled(
            &mut client,
            *offsets_ms.last().unwrap(),
            Duration::from_secs(60),
        )
        .await;
    }
    let texts = clip_texts(&turns(&client.seen, |_| Duration::ZERO), &offsets_ms);
    client.close().await;
    Ok(texts)
}

/// Every clip through one of `sessions` live sessions (round robin, all at once); each
/// clip's text, in `clips`' order.
pub fn english_through_sessions(server: &Server, clips: &[Clip], sessions: usize) -> Vec<String> {
    let sessions = sessions.clamp(1, clips.len().max(1));
    let shares: Vec<Vec<Vec<u8>>> = (0..sessions)
        .map(|s| {
            clips
                .iter()
                .skip(s)
                .step_by(sessions)
                .map(|c| pcm24::from_file(&c.path))
                .collect()
        })
        .collect();
    let results = live::block_on(futures_util::future::join_all(
        shares
            .into_iter()
            .map(|share| clips_through_session(server, share)),
    ));
    let mut texts = vec![String::new(); clips.len()];
    for (s, result) in results.into_iter().enumerate() {
        let share = result.unwrap_or_else(|e| panic!("live session {s}: {e}"));
        for (k, text) in share.into_iter().enumerate() {
            texts[s + k * sessions] = text;
        }
    }
    texts
}

/// Every clip sent as a file (English), `clients` requests at a time; each clip's text.
pub fn english_as_files(server: &Server, clips: &[Clip], clients: usize) -> Vec<String> {
    let texts = Mutex::new(vec![String::new(); clips.len()]);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..clients.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(clip) = clips.get(i) else { break };
                let response = server
                    .transcription(&clip.path)
                    .field("language", "en")
                    .send();
                response.expect_status(200);
                let text = response.json()["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                texts.lock().unwrap()[i] = text;
            });
        }
    });
    texts.into_inner().unwrap()
}

// ---------------------------------------------------------------------------------------
// The run and its report

/// The English set's WER through sessions and as files, and how long each took.
pub struct EnglishSet {
    pub clips: usize,
    pub audio_seconds: f64,
    pub live: (f64, f64),
    pub files: (f64, f64),
    /// Turns whose final pass read words already sent differently.
    pub revised_turns: f64,
    /// The clips whose live text has more word edits than their file text: key with
    /// the two edit counts, reference, live text, file text.
    pub worse_live: Vec<[String; 4]>,
}

fn english_set(server: &Server, o: &Options) -> EnglishSet {
    let clips: Vec<Clip> = assets::english_clips()
        .into_iter()
        .step_by(o.wer_stride)
        .collect();
    let references = || clips.iter().map(|c| c.reference.as_str());
    let started = Instant::now();
    let before = server.metrics();
    let live = english_through_sessions(server, &clips, o.wer_sessions);
    let live_wall = started.elapsed().as_secs_f64();
    let revised_turns =
        prometheus::increase(&before, &server.metrics(), "steno_live_revised_turns_total");
    let started = Instant::now();
    let files = english_as_files(server, &clips, o.wer_sessions);
    let files_wall = started.elapsed().as_secs_f64();
    EnglishSet {
        clips: clips.len(),
        audio_seconds: clips.iter().map(Clip::seconds).sum(),
        live: (wer::corpus_wer(references().zip(&live)), live_wall),
        files: (wer::corpus_wer(references().zip(&files)), files_wall),
        revised_turns,
        worse_live: worse_live(&clips, &live, &files),
    }
}

/// The clips whose live text has more word edits than their file text.
fn worse_live(clips: &[Clip], live: &[String], files: &[String]) -> Vec<[String; 4]> {
    let edits = |clip: &Clip, text: &str| wer::stats(&clip.reference, text).edits();
    clips
        .iter()
        .zip(live.iter().zip(files))
        .filter_map(|(clip, (l, f))| {
            let (live_edits, file_edits) = (edits(clip, l), edits(clip, f));
            (live_edits > file_edits).then(|| {
                [
                    format!("{} ({live_edits} vs {file_edits} edits)", clip.speech_key()),
                    clip.reference.clone(),
                    l.clone(),
                    f.clone(),
                ]
            })
        })
        .collect()
}

/// Runs the latency levels and the English set on one server; the Markdown report.
pub fn run(o: &Options) -> String {
    let most = o
        .sessions
        .iter()
        .chain([&o.wer_sessions])
        .max()
        .copied()
        .unwrap_or(1);
    let rows = o.batch_rows.to_string();
    let server = Server::start_model_with_env(
        &o.model,
        &[
            "--max-concurrent-requests",
            "256",
            "--max-jobs",
            "1024",
            "--max-batch-rows",
            &rows,
        ],
        &[("STENO_MAX_SESSIONS", &(most + 8).to_string())],
    );
    let clips = latency_clips();
    eprintln!(
        "live: {} clips of 2–10 s, sessions {:?}",
        clips.len(),
        o.sessions
    );
    // Warm-up: first-call allocations and caches, on both paths.
    server
        .transcription(&clips[0].0.path)
        .send()
        .expect_status(200);
    english_through_sessions(&server, &[clips[0].0.clone()], 1);
    let mut levels = Vec::new();
    for &sessions in &o.sessions {
        let level = run_level(&server, &clips, o, sessions);
        eprintln!("{}", level_row(&level));
        levels.push(level);
    }
    let english = (o.wer_stride > 0).then(|| english_set(&server, o));
    render(o, &levels, english.as_ref())
}

fn percentile(values: impl Iterator<Item = f64>, p: f64) -> f64 {
    let mut sorted: Vec<f64> = values.collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn level_row(l: &Level) -> String {
    let latency = || l.turns.iter().filter_map(|t| t.latency);
    let first = || l.turns.iter().filter_map(|t| t.first_delta);
    let failed = l
        .turns
        .iter()
        .filter(|t| t.failed || t.transcript.is_none())
        .count();
    format!(
        "| {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.1} % | {} | {} | {:.1} | {} |",
        l.sessions,
        l.turns.len(),
        percentile(latency(), 0.5),
        percentile(latency(), 0.95),
        l.server_turn_latency
            .map_or("–".into(), |s| format!("{s:.2}")),
        percentile(first(), 0.5),
        percentile(first(), 0.95),
        100.0 * l.wer,
        failed + l.session_errors.len(),
        l.files.len(),
        percentile(l.files.iter().copied(), 0.5),
        l.file_failures,
    )
}

fn render(o: &Options, levels: &[Level], english: Option<&EnglishSet>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Live sessions (`/v1/realtime`) while file requests run\n\nmodel `{}`; {} cores; \
         each session streams {} English clips of 2–10 s (one turn each, {PAUSE_MS} ms pause) \
         at real-time pace in {CHUNK_MS} ms appends, server VAD (0.5, 300 ms, 500 ms); {} \
         threads send file requests meanwhile; at most {} rows per decoder step. Seconds.\n",
        o.model.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        o.turns,
        o.file_clients,
        o.batch_rows,
    );
    let _ = writeln!(s, "| sessions | turns | turn latency p50 | p95 | server mean | first delta p50 | p95 | live WER | failed | file requests | file p50 | file failed |");
    let _ = writeln!(
        s,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for level in levels {
        let _ = writeln!(s, "{}", level_row(level));
    }
    let _ = writeln!(
        s,
        "\nTurn latency: `speech_stopped` → `completed` as the client received them. First \
         delta: from sending the turn's first audio (`audio_start_ms`, with its 300 ms \
         prefix padding) to its first delta."
    );
    for error in levels.iter().flat_map(|l| &l.session_errors) {
        let _ = writeln!(s, "* session error: {error}");
    }
    if let Some(e) = english {
        let _ = writeln!(
            s,
            "\n## The English set through live sessions\n\n{} clips ({:.1} min), spread over {} \
             sessions, each clip streamed as fast as the socket takes it then its turns \
             awaited; the same clips as files, {} at a time.\n\n| path | WER | wall s |\n|---|---:|---:|\n\
             | live sessions | {:.2} % | {:.0} |\n| files | {:.2} % | {:.0} |\n\nLive − files: {:+.2} points; \
             {} turn(s) revised sent words.",
            e.clips,
            e.audio_seconds / 60.0,
            o.wer_sessions,
            o.wer_sessions,
            100.0 * e.live.0,
            e.live.1,
            100.0 * e.files.0,
            e.files.1,
            100.0 * (e.live.0 - e.files.0),
            e.revised_turns,
        );
        let _ = writeln!(
            s,
            "\n{} clip(s) read worse live than as files:\n",
            e.worse_live.len()
        );
        for [key, reference, live, file] in &e.worse_live {
            let _ = writeln!(
                s,
                "* {key}\n  * reference: {reference}\n  * live: {live}\n  * file: {file}"
            );
        }
    }
    s
}
