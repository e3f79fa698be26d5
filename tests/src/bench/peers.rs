//! Steno side by side with its peers on the same audio and the same weights:
//! faster-whisper (CTranslate2, on the model directory itself, int8 and float32) and
//! mlx-whisper (the same weights in its layout, the same MLX CPU backend), run by
//! `tests/peers/run.py` in the bench venv (`tests/peers/setup.sh`).
//!
//! Cases:
//! * `long`: one file of the longest English clips with 0.6 s pauses
//!   ([`assets::long_english_file`]); Steno in `parallel` and `sequential` mode.
//! * `clips`: short English clips one after the other (one request at a time for Steno).
//! * `concurrent`: the same clips from N clients at once: Steno's server with batching
//!   on; each peer as N processes with one model each (neither has a batching server;
//!   `speaches`, the faster-whisper server, is not on PyPI).
//!
//! All audio is first written as 16 kHz mono WAV with Steno's decoder, so every
//! implementation reads the same samples. Decoding is greedy with OpenAI's temperature
//! fallback, language "en", no word timestamps, for all.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::memory::{self, TreeMemory};
use crate::assets::{self, Clip};
use crate::server::Server;
use crate::{cli, prometheus, wer};

/// What to run; every field has an environment variable (see [`Options::from_env`]).
#[derive(Clone, Debug)]
pub struct Options {
    /// Model name under the assets (`tiny.en-ct2`) or a CTranslate2 directory.
    pub model: PathBuf,
    pub model_name: String,
    pub clips: usize,
    pub long_seconds: f64,
    pub clients: usize,
    /// Implementations to run besides Steno (`faster-whisper-int8`, `faster-whisper-float32`,
    /// `mlx-whisper`).
    pub peers: Vec<String>,
    pub python: PathBuf,
    pub out_dir: PathBuf,
    pub timeout: Duration,
}

/// The peers `BENCH_PEERS` may name. `faster-whisper-int8-batched` is faster-whisper's
/// `BatchedInferencePipeline` (its VAD cuts the file, 8 chunks decoded together): the
/// counterpart of Steno's parallel mode, run on the long file only.
pub const PEERS: [&str; 4] = [
    "faster-whisper-int8",
    "faster-whisper-float32",
    "faster-whisper-int8-batched",
    "mlx-whisper",
];

/// Batch size of the batched faster-whisper peer.
const PEER_BATCH_SIZE: usize = 8;

/// (implementation, compute type, batched) of a [`PEERS`] name.
fn peer_spec(peer: &str) -> (&'static str, &'static str, bool) {
    match peer {
        "faster-whisper-int8" => ("faster-whisper", "int8", false),
        "faster-whisper-int8-batched" => ("faster-whisper", "int8", true),
        "faster-whisper-float32" => ("faster-whisper", "float32", false),
        _ => ("mlx-whisper", "float32", false),
    }
}

impl Options {
    /// `BENCH_MODEL` (tiny.en-ct2), `BENCH_CLIPS` (100), `BENCH_LONG_SECONDS` (600),
    /// `BENCH_PEER_CLIENTS` (8), `BENCH_PEERS` (all of [`PEERS`], comma-separated; empty for
    /// Steno alone), `BENCH_PYTHON` (target/venv-bench/bin/python), `BENCH_OUT`
    /// (target/bench), `BENCH_TIMEOUT` (seconds for one run, 1800).
    pub fn from_env() -> Options {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let number = |name: &str, default: f64| {
            var(name).map_or(default, |v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
            })
        };
        let model_arg = var("BENCH_MODEL").unwrap_or_else(|| assets::TINY_EN.to_string());
        let model = assets::try_model_dir(&model_arg).unwrap_or_else(|| PathBuf::from(&model_arg));
        assert!(
            model.join("model.bin").is_file(),
            "BENCH_MODEL={model_arg}: no CTranslate2 model.bin there (run `make setup`)"
        );
        let model_name = model
            .file_name()
            .map_or(model_arg.clone(), |n| n.to_string_lossy().into_owned());
        let peers: Vec<String> = var("BENCH_PEERS").map_or_else(
            || PEERS.iter().map(|p| p.to_string()).collect(),
            |v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty() && *p != "none")
                    .map(|p| {
                        assert!(
                            PEERS.contains(&p),
                            "BENCH_PEERS: unknown {p}; known: {PEERS:?}"
                        );
                        p.to_string()
                    })
                    .collect()
            },
        );
        let python = PathBuf::from(
            var("BENCH_PYTHON").unwrap_or_else(|| "target/venv-bench/bin/python".into()),
        );
        let mut peers = peers;
        if !peers.is_empty() && !python.is_file() {
            eprintln!(
                "peers: {} is missing (`make bench-setup` installs it): Steno alone",
                python.display()
            );
            peers.clear();
        }
        Options {
            model,
            model_name,
            clips: number("BENCH_CLIPS", 100.0) as usize,
            long_seconds: number("BENCH_LONG_SECONDS", 600.0),
            clients: number("BENCH_PEER_CLIENTS", 8.0) as usize,
            peers,
            python,
            out_dir: PathBuf::from(var("BENCH_OUT").unwrap_or_else(|| "target/bench".into())),
            timeout: Duration::from_secs_f64(number("BENCH_TIMEOUT", 1800.0)),
        }
    }
}

/// One case's audio: WAV files and what is said in each.
pub struct Audio {
    pub files: Vec<PathBuf>,
    pub references: Vec<String>,
    pub seconds: f64,
}

/// Where Steno's worker spent a case's wall time (`steno_stage_seconds_total`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Profile {
    /// Log-mel, encoder and language detection (`encode`: the mel is not timed apart).
    pub encode: f64,
    /// Batched decoder steps.
    pub decode: f64,
    /// Segments, temperature fallback, word timing.
    pub finish: f64,
    /// The rest of the wall time: HTTP, audio decoding, queueing, idle worker.
    pub other: f64,
}

#[derive(Clone, Debug)]
pub struct Row {
    pub case: &'static str,
    pub implementation: String,
    pub mode: String,
    pub audio_seconds: f64,
    pub wall_seconds: f64,
    pub wer: f64,
    pub peak_rss: u64,
    pub mlx_peak: Option<u64>,
    pub profile: Option<Profile>,
}

impl Row {
    pub fn speed(&self) -> f64 {
        self.audio_seconds / self.wall_seconds
    }

    pub fn is_steno(&self) -> bool {
        self.implementation == "Steno"
    }
}

/// Writes the cases' audio under `dir`: `long.wav` and `clips/NNN.wav`.
pub fn prepare_audio(o: &Options, dir: &Path) -> (Audio, Audio) {
    std::fs::create_dir_all(dir.join("clips")).expect("create the bench audio directory");
    let (samples, used) = assets::long_english_file(o.long_seconds);
    let long = dir.join("long.wav");
    cli::write_wav(&long, &samples);
    let long = Audio {
        files: vec![long],
        references: vec![used
            .iter()
            .map(|c| c.reference.as_str())
            .collect::<Vec<_>>()
            .join(" ")],
        seconds: samples.len() as f64 / 16_000.0,
    };
    // Evenly spread over the manifest (jfk, LibriVox, the Asterisk prompts by topic).
    let all: Vec<Clip> = assets::english_clips();
    let step = (all.len() / o.clips.max(1)).max(1);
    let mut clips = Audio {
        files: Vec::new(),
        references: Vec::new(),
        seconds: 0.0,
    };
    for (i, clip) in all.iter().step_by(step).take(o.clips).enumerate() {
        let samples = assets::samples(&clip.path);
        let path = dir.join("clips").join(format!("{i:03}.wav"));
        cli::write_wav(&path, &samples);
        clips.files.push(path);
        clips.references.push(clip.reference.clone());
        clips.seconds += samples.len() as f64 / 16_000.0;
    }
    (long, clips)
}

fn corpus_wer(audio: &Audio, texts: &[String]) -> f64 {
    wer::corpus_stats(
        audio
            .references
            .iter()
            .zip(texts)
            .map(|(r, h)| (r.as_str(), h.as_str())),
    )
    .wer()
}

/// Seconds the worker spent in `name` (encode, decode, finish) so far, from `/metrics`.
pub fn stage(text: &str, name: &str) -> f64 {
    prometheus::samples(text, "steno_stage_seconds_total")
        .iter()
        .filter(|s| s.label("stage") == Some(name))
        .map(|s| s.value)
        .sum()
}

/// Sends `audio`'s files from `clients` threads, each taking the next file when its last
/// one is answered; the texts in file order and the wall time.
fn drive(
    server: &Server,
    audio: &Audio,
    clients: usize,
    fields: &[(&str, &str)],
    timeout: Duration,
) -> (Vec<String>, f64) {
    let next = AtomicUsize::new(0);
    let texts = Mutex::new(vec![String::new(); audio.files.len()]);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..clients.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(file) = audio.files.get(i) else {
                    break;
                };
                let response = server
                    .transcription(file)
                    .fields(fields)
                    .max_time(timeout)
                    .send();
                response.expect_status(200);
                texts.lock().unwrap()[i] = response.json()["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            });
        }
    });
    (texts.into_inner().unwrap(), started.elapsed().as_secs_f64())
}

/// One Steno case on a fresh server (so the memory figures are the case's own).
fn steno_case(
    o: &Options,
    case: &'static str,
    mode: &str,
    audio: &Audio,
    clients: usize,
    warmup: &Path,
) -> Row {
    let server = Server::start_model(
        &o.model,
        &[
            "--max-batch-rows",
            "16",
            "--max-concurrent-requests",
            "256",
            "--queue-capacity",
            "256",
        ],
    );
    let fields = [("language", "en"), ("mode", mode)];
    server
        .transcription(warmup)
        .fields(&fields)
        .send()
        .expect_status(200);
    let before = server.metrics();
    let sampler = TreeMemory::start(server.pid());
    let (texts, wall) = drive(&server, audio, clients, &fields, o.timeout);
    let peak_rss = sampler.stop().max(memory::rss(server.pid()));
    let after = server.metrics();
    let delta = |name: &str| stage(&after, name) - stage(&before, name);
    let (encode, decode, finish) = (delta("encode"), delta("decode"), delta("finish"));
    Row {
        case,
        implementation: "Steno".into(),
        mode: match (case, clients) {
            ("concurrent", n) => format!("server, batching on, {n} clients"),
            ("clips", _) => "server, one request at a time".into(),
            _ => mode.to_string(),
        },
        audio_seconds: audio.seconds,
        wall_seconds: wall,
        wer: corpus_wer(audio, &texts),
        peak_rss,
        mlx_peak: prometheus::sum(&after, "steno_mlx_peak_memory_bytes").map(|b| b as u64),
        profile: Some(Profile {
            encode: encode / wall,
            decode: decode / wall,
            finish: finish / wall,
            other: ((wall - encode - decode - finish) / wall).max(0.0),
        }),
    }
}

/// One peer case: `tests/peers/run.py` over `audio` with `processes` worker processes.
fn peer_case(
    o: &Options,
    peer: &str,
    case: &'static str,
    audio: &Audio,
    processes: usize,
    warmup: &Path,
) -> Result<Row, String> {
    let (implementation, compute_type, batched) = peer_spec(peer);
    let batch_size = if batched { PEER_BATCH_SIZE } else { 0 };
    let result = o.out_dir.join(format!("peer-{peer}-{case}.json"));
    let _ = std::fs::remove_file(&result);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/run.py");
    let mlx_dir = o
        .out_dir
        .join("models")
        .join(format!("{}-mlx", o.model_name));
    let mut command = Command::new(&o.python);
    command
        .arg(&script)
        .args(["--impl", implementation, "--compute-type", compute_type])
        .arg("--model")
        .arg(&o.model)
        .arg("--mlx-dir")
        .arg(&mlx_dir)
        .args(["--processes", &processes.to_string()])
        .args(["--batch-size", &batch_size.to_string()])
        .args(["--timeout", &format!("{}", o.timeout.as_secs())])
        .arg("--warmup")
        .arg(warmup)
        .arg("--out")
        .arg(&result)
        .args(&audio.files)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut child = command
        .spawn()
        .map_err(|e| format!("{}: {e} (run `make bench-setup`)", o.python.display()))?;
    let sampler = TreeMemory::start(child.id());
    let Some(status) = crate::cli::wait_within(&mut child, o.timeout * 2) else {
        return Err(format!(
            "{peer} {case}: still running after {:?}",
            o.timeout * 2
        ));
    };
    let peak_rss = sampler.stop();
    if !status.success() {
        return Err(format!("{peer} {case}: run.py exited with {status}"));
    }
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(&result).map_err(|e| format!("{}: {e}", result.display()))?,
    )
    .map_err(|e| format!("{}: {e}", result.display()))?;
    let texts: Vec<String> = json["texts"]
        .as_array()
        .ok_or("no texts")?
        .iter()
        .map(|t| t.as_str().unwrap_or_default().to_string())
        .collect();
    let threads = json["threads_per_process"].as_u64().unwrap_or(0);
    Ok(Row {
        case,
        implementation: match (implementation, batched) {
            ("faster-whisper", false) => format!("faster-whisper {compute_type}"),
            ("faster-whisper", true) => format!("faster-whisper {compute_type} batched"),
            (other, _) => other.to_string(),
        },
        mode: if batched {
            format!("VAD chunks × {batch_size}, 1 process, {threads} threads")
        } else if processes > 1 {
            format!("{processes} processes × {threads} thread")
        } else {
            format!("1 process, {threads} threads")
        },
        audio_seconds: audio.seconds,
        wall_seconds: json["wall_seconds"].as_f64().ok_or("no wall_seconds")?,
        wer: corpus_wer(audio, &texts),
        peak_rss,
        mlx_peak: None,
        profile: None,
    })
}

/// Runs every case; rows in table order, plus the runs that failed.
pub fn run(o: &Options) -> (Vec<Row>, Vec<String>) {
    let audio_dir = o.out_dir.join("audio");
    let (long, clips) = prepare_audio(o, &audio_dir);
    let warmup = clips.files[0].clone();
    eprintln!(
        "peers: model {}; long file {:.0} s; {} clips, {:.0} s; {} concurrent clients; peers {:?}",
        o.model.display(),
        long.seconds,
        clips.files.len(),
        clips.seconds,
        o.clients,
        o.peers
    );
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut report = |row: Result<Row, String>| match row {
        Ok(row) => {
            eprintln!(
                "  {:<10} {:<29} {:<42} {:>7.1} s audio in {:>7.1} s: {:>6.2} audio s/wall s, WER {:.2} %, peak {:.0} MiB",
                row.case,
                row.implementation,
                row.mode,
                row.audio_seconds,
                row.wall_seconds,
                row.speed(),
                100.0 * row.wer,
                row.peak_rss as f64 / 1048576.0
            );
            rows.push(row);
        }
        Err(e) => {
            eprintln!("  FAILED: {e}");
            failures.push(e);
        }
    };
    for (case, audio) in [("long", &long), ("clips", &clips), ("concurrent", &clips)] {
        let clients = if case == "concurrent" { o.clients } else { 1 };
        let modes: &[&str] = if case == "long" {
            &["parallel", "sequential"]
        } else {
            &["sequential"]
        };
        for mode in modes {
            report(Ok(steno_case(o, case, mode, audio, clients, &warmup)));
        }
        for peer in &o.peers {
            if peer_spec(peer).2 && case != "long" {
                continue;
            }
            report(peer_case(o, peer, case, audio, clients, &warmup));
        }
    }
    (rows, failures)
}

/// The Steno row each case's ratios are taken against (parallel mode for the long file).
fn steno_reference<'a>(rows: &'a [Row], case: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.case == case && r.is_steno())
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / 1048576.0)
}

/// The Markdown report: the table, the goals, Steno's profile.
pub fn render(o: &Options, rows: &[Row], failures: &[String]) -> String {
    let mut s = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        s,
        "# Steno and its peers\n\nModel `{}` (the same CTranslate2 weights for all: faster-whisper \
         loads them as they are, mlx-whisper after conversion to its layout, float32); the same \
         16 kHz audio; greedy decoding with OpenAI's temperature fallback, language `en`, no word \
         timestamps. {cores} cores. `Steno ÷ this` is Steno's audio seconds per wall second \
         divided by the row's, in the same case (the long file: Steno parallel).\n",
        o.model_name
    );
    let _ = writeln!(
        s,
        "| case | model | implementation | mode | audio s | wall s | audio s / wall s | Steno ÷ this | WER | peak RSS MiB | MLX peak MiB |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let ratio = steno_reference(rows, r.case).map_or("—".to_string(), |steno| {
            format!("{:.2}", steno.speed() / r.speed())
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {} | {:.2} % | {} | {} |",
            r.case,
            o.model_name,
            r.implementation,
            r.mode,
            r.audio_seconds,
            r.wall_seconds,
            r.speed(),
            ratio,
            100.0 * r.wer,
            mib(r.peak_rss),
            r.mlx_peak.map_or("—".to_string(), mib)
        );
    }
    let _ = writeln!(s, "\n## Goals\n");
    let find = |case: &str, implementation: &str| {
        rows.iter()
            .find(|r| r.case == case && r.implementation == implementation)
    };
    let goal = |s: &mut String, what: &str, case: &str, peer: &str, target: f64| match (
        steno_reference(rows, case),
        find(case, peer),
    ) {
        (Some(steno), Some(peer_row)) => {
            let ratio = steno.speed() / peer_row.speed();
            let wer_ok = steno.wer <= peer_row.wer + 1e-9;
            let _ = writeln!(
                    s,
                    "* {what}: Steno {:.2}× {peer}'s speed (goal ≥ {target}×: {}), WER {:.2} % vs {:.2} % ({})",
                    ratio,
                    if ratio >= target { "met" } else { "not met" },
                    100.0 * steno.wer,
                    100.0 * peer_row.wer,
                    if wer_ok { "equal or better" } else { "worse" }
                );
        }
        _ => {
            let _ = writeln!(s, "* {what}: not measured ({peer} not run)");
        }
    };
    goal(&mut s, "long file, parallel", "long", "mlx-whisper", 5.0);
    goal(
        &mut s,
        &format!("{} concurrent clients", o.clients),
        "concurrent",
        "mlx-whisper",
        5.0,
    );
    for r in rows
        .iter()
        .filter(|r| !r.is_steno() && r.implementation != "mlx-whisper")
    {
        if let Some(steno) = steno_reference(rows, r.case) {
            let _ = writeln!(
                s,
                "* {}: Steno at {:.2}× the speed of {} ({}); WER {:.2} % vs {:.2} %",
                r.case,
                steno.speed() / r.speed(),
                r.implementation,
                r.mode,
                100.0 * steno.wer,
                100.0 * r.wer
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Where Steno's time goes\n\nShare of each case's wall time in the worker's stages \
         (`steno_stage_seconds_total`): `encode` is log-mel + encoder + language detection, \
         `decode` the batched decoder steps, `finish` segments and the temperature fallback's \
         bookkeeping; `other` is everything outside the worker's steps (HTTP, audio decoding, \
         queueing, the worker waiting for work).\n"
    );
    let _ = writeln!(s, "| case | mode | encode | decode | finish | other |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for r in rows {
        if let Some(p) = r.profile {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} % | {:.0} % | {:.0} % | {:.0} % |",
                r.case,
                r.mode,
                100.0 * p.encode,
                100.0 * p.decode,
                100.0 * p.finish,
                100.0 * p.other
            );
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(s, "\n## Failed runs\n");
        for f in failures {
            let _ = writeln!(s, "* {f}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(case: &'static str, implementation: &str, audio: f64, wall: f64) -> Row {
        Row {
            case,
            implementation: implementation.into(),
            mode: "m".into(),
            audio_seconds: audio,
            wall_seconds: wall,
            wer: 0.05,
            peak_rss: 100 << 20,
            mlx_peak: None,
            profile: None,
        }
    }

    #[test]
    fn ratios_are_against_the_cases_steno_row() {
        let o = Options {
            model: PathBuf::from("m"),
            model_name: "tiny".into(),
            clips: 1,
            long_seconds: 1.0,
            clients: 8,
            peers: Vec::new(),
            python: PathBuf::new(),
            out_dir: PathBuf::new(),
            timeout: Duration::from_secs(1),
        };
        let rows = [
            row("long", "Steno", 600.0, 10.0),
            row("long", "mlx-whisper", 600.0, 100.0),
            row("clips", "Steno", 60.0, 6.0),
        ];
        let md = render(&o, &rows, &[]);
        assert!(
            md.contains("| long | tiny | mlx-whisper | m | 600.0 | 100.0 | 6.00 | 10.00 |"),
            "{md}"
        );
        assert!(
            md.contains("Steno 10.00× mlx-whisper's speed (goal ≥ 5×: met)"),
            "{md}"
        );
        assert!(md.contains("8 concurrent clients: not measured"), "{md}");
    }
}
