//! `make bench`: the real `steno serve` under N concurrent clients (1, 4, 8, 16 by
//! default), batching on (`--max-batch-rows 16`) and off (`--max-batch-rows 1`), on
//! real English clips. Prints and writes `target/bench/server.md`: aggregate audio
//! seconds per wall second, p50/p95 latency, decoded tokens per second, the
//! worker's time split into encoder / decoder steps / finishing, corpus WER, and
//! peak memory (server RSS high-water mark and MLX peak).
//!
//! Usage: steno-bench [--model DIR] [--clients 1,4,8,16] [--requests 16] [--out FILE]
//! [--batch-rows 16] (max batch rows when batching is on)
//!
//! `steno-bench peers` instead runs Steno side by side with faster-whisper and mlx-whisper
//! (`steno_e2e::bench::peers`; knobs are environment variables: BENCH_MODEL, BENCH_CLIPS,
//! BENCH_LONG_SECONDS, BENCH_PEER_CLIENTS, BENCH_PEERS, BENCH_PYTHON, BENCH_OUT) and writes
//! `target/bench/peers.md` and `target/bench/peers.png`.
//!
//! `steno-bench live` runs live sessions over `/v1/realtime` while file requests run
//! (`steno_e2e::bench::live`) and writes `target/bench/live.md`:
//! `steno-bench live [--model DIR] [--sessions 1,4,8] [--turns 6] [--file-clients 2]
//! [--wer-stride 1] [--wer-sessions 4] [--batch-rows 16] [--out FILE]` (`--wer-stride 0` skips the English set
//! through sessions).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use steno_e2e::assets::{self, Clip};
use steno_e2e::bench::peers::stage;
use steno_e2e::prometheus;
use steno_e2e::server::Server;
use steno_e2e::wer;

struct Options {
    model: PathBuf,
    clients: Vec<usize>,
    requests: usize,
    out: PathBuf,
    batch_rows: String,
}

fn options() -> Options {
    let mut o = Options {
        model: assets::model_dir(assets::TINY_EN),
        clients: vec![1, 4, 8, 16],
        requests: 16,
        out: PathBuf::from("target/bench/server.md"),
        batch_rows: "16".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--model" if !value.is_empty() => {
                o.model = assets::try_model_dir(&value).unwrap_or_else(|| PathBuf::from(&value))
            }
            "--model" => {}
            "--clients" => {
                o.clients = value
                    .split(',')
                    .filter_map(|c| c.trim().parse().ok())
                    .collect()
            }
            "--requests" => o.requests = value.parse().expect("--requests N"),
            "--out" => o.out = PathBuf::from(value),
            "--batch-rows" => {
                o.batch_rows = value.parse::<usize>().expect("--batch-rows N").to_string()
            }
            other => panic!("unknown argument {other}; see the file's header for usage"),
        }
    }
    o
}

/// What the worker did between two `/metrics` snapshots.
#[derive(Default)]
struct WorkerDelta {
    tokens: f64,
    steps: f64,
    encode: f64,
    decode: f64,
    finish: f64,
}

fn worker_delta(before: &str, after: &str) -> WorkerDelta {
    let d = |name: &str| prometheus::increase(before, after, name);
    WorkerDelta {
        tokens: d("steno_batch_rows_sum"),
        steps: d("steno_decoder_steps_total"),
        encode: stage(after, "encode") - stage(before, "encode"),
        decode: stage(after, "decode") - stage(before, "decode"),
        finish: stage(after, "finish") - stage(before, "finish"),
    }
}

/// Peak resident memory of a process (VmHWM), bytes.
fn peak_rss(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0)
}

struct Row {
    batching: &'static str,
    clients: usize,
    audio_per_wall: f64,
    p50: f64,
    p95: f64,
    tokens_per_second: f64,
    /// Tokens per second of decoder-step time: the batched decoder's own throughput.
    tokens_per_decode_second: f64,
    rows_per_step: f64,
    split: (f64, f64, f64, f64),
    wer: f64,
    failures: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `requests` transcriptions spread over `clients` threads, each sending its next
/// request when the last one is answered.
fn run_level(
    server: &Server,
    clips: &[(Clip, f64)],
    clients: usize,
    requests: usize,
) -> (Vec<(usize, f64, String)>, f64, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..clients {
            let (next, results, failures) = (next.clone(), results.clone(), failures.clone());
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= requests {
                    break;
                }
                let clip = &clips[i % clips.len()].0;
                let t = Instant::now();
                let response = server
                    .transcription(&clip.path)
                    .max_time(Duration::from_secs(1200))
                    .send();
                if response.status == 200 {
                    let text = response.json()["text"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    results
                        .lock()
                        .unwrap()
                        .push((i, t.elapsed().as_secs_f64(), text));
                } else {
                    eprintln!("request {i}: {} {}", response.status, response.body);
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    let results = Arc::try_unwrap(results).ok().unwrap().into_inner().unwrap();
    (results, wall, failures.load(Ordering::SeqCst))
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("peers") => return peers_main(),
        Some("live") => return live_main(),
        _ => {}
    }
    let o = options();
    let clips: Vec<(Clip, f64)> = assets::english_clips()
        .into_iter()
        .map(|c| {
            let s = c.seconds();
            (c, s)
        })
        .filter(|(_, s)| (3.0..=12.0).contains(s))
        .take(o.requests.max(1))
        .collect();
    let audio_per_request: Vec<f64> = clips.iter().map(|(_, s)| *s).collect();
    eprintln!(
        "model {}, {} clips ({:.1} s of audio), clients {:?}, {} requests per level",
        o.model.display(),
        clips.len(),
        audio_per_request.iter().sum::<f64>(),
        o.clients,
        o.requests
    );
    let mut rows = Vec::new();
    let mut memory = Vec::new();
    for (batching, max_rows) in [("on", o.batch_rows.as_str()), ("off", "1")] {
        let server = Server::start_model(
            &o.model,
            &[
                "--max-batch-rows",
                max_rows,
                "--max-concurrent-requests",
                "256",
                "--queue-capacity",
                "256",
            ],
        );
        // Warm-up: first-call allocations and caches.
        server
            .transcription(&clips[0].0.path)
            .send()
            .expect_status(200);
        for &clients in &o.clients {
            let before = server.metrics();
            let (results, wall, failures) = run_level(&server, &clips, clients, o.requests);
            let after = server.metrics();
            let w = worker_delta(&before, &after);
            let audio: f64 = results
                .iter()
                .map(|(i, _, _)| audio_per_request[i % clips.len()])
                .sum();
            let mut latencies: Vec<f64> = results.iter().map(|(_, l, _)| *l).collect();
            latencies.sort_by(f64::total_cmp);
            let stats =
                wer::corpus_stats(results.iter().map(|(i, _, text)| {
                    (clips[i % clips.len()].0.reference.as_str(), text.as_str())
                }));
            let other = (wall - w.encode - w.decode - w.finish).max(0.0);
            let row = Row {
                batching,
                clients,
                audio_per_wall: audio / wall,
                p50: percentile(&latencies, 0.5),
                p95: percentile(&latencies, 0.95),
                tokens_per_second: w.tokens / wall,
                tokens_per_decode_second: if w.decode > 0.0 {
                    w.tokens / w.decode
                } else {
                    0.0
                },
                rows_per_step: if w.steps > 0.0 {
                    w.tokens / w.steps
                } else {
                    0.0
                },
                split: (
                    w.encode / wall,
                    w.decode / wall,
                    w.finish / wall,
                    other / wall,
                ),
                wer: stats.wer(),
                failures,
            };
            eprintln!(
                "batching {batching}, {clients:>2} clients: {:.2} audio s/wall s, p50 {:.1} s, p95 {:.1} s, {:.1} tokens/s, WER {:.1} %",
                row.audio_per_wall, row.p50, row.p95, row.tokens_per_second, 100.0 * row.wer
            );
            rows.push(row);
        }
        let metrics = server.metrics();
        memory.push((
            batching,
            peak_rss(server.pid()),
            prometheus::sum(&metrics, "steno_mlx_peak_memory_bytes").unwrap_or(0.0),
        ));
    }
    let report = render(&o, &clips, &rows, &memory);
    print!("{report}");
    if let Some(dir) = o.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&o.out, &report).expect("write the report");
    eprintln!("wrote {}", o.out.display());
}

fn render(o: &Options, clips: &[(Clip, f64)], rows: &[Row], memory: &[(&str, f64, f64)]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# steno serve under concurrent clients\n\nmodel `{}`; {} English clips of 3–12 s; {} requests per level; {} cores.\n",
        o.model.display(),
        clips.len(),
        o.requests,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(s, "| batching | clients | audio s / wall s | p50 s | p95 s | tokens/s | tokens per decoder s | rows/step | encode | decode | finish | other | WER | failed |");
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} % | {:.0} % | {:.0} % | {:.0} % | {:.1} % | {} |",
            r.batching, r.clients, r.audio_per_wall, r.p50, r.p95, r.tokens_per_second, r.tokens_per_decode_second, r.rows_per_step,
            100.0 * r.split.0, 100.0 * r.split.1, 100.0 * r.split.2, 100.0 * r.split.3,
            100.0 * r.wer, r.failures
        );
    }
    let ratio = |batching: &str, clients: usize, f: fn(&Row) -> f64| {
        let at = rows
            .iter()
            .find(|r| r.batching == batching && r.clients == clients)
            .map(f)?;
        let one = rows
            .iter()
            .find(|r| r.batching == batching && r.clients == 1)
            .map(f)?;
        Some(at / one)
    };
    let _ = writeln!(s);
    for clients in o.clients.iter().filter(|&&c| c > 1) {
        if let (Some(tokens), Some(decoder), Some(audio)) = (
            ratio("on", *clients, |r| r.tokens_per_second),
            ratio("on", *clients, |r| r.tokens_per_decode_second),
            ratio("on", *clients, |r| r.audio_per_wall),
        ) {
            let _ = writeln!(
                s,
                "* batching on, {clients} clients vs 1: decoded tokens per wall s ×{tokens:.2}, per decoder-step s ×{decoder:.2}, aggregate audio s/wall s ×{audio:.2}"
            );
        }
    }
    for (batching, rss, mlx) in memory {
        let _ = writeln!(
            s,
            "* batching {batching}: peak RSS {:.0} MiB, MLX peak {:.0} MiB",
            rss / 1048576.0,
            mlx / 1048576.0
        );
    }
    s
}

fn peers_main() {
    use steno_e2e::bench::{chart, peers};
    let o = peers::Options::from_env();
    std::fs::create_dir_all(&o.out_dir).expect("create the bench output directory");
    let (rows, failures) = peers::run(&o);
    let report = peers::render(&o, &rows, &failures);
    print!("{report}");
    let md = o.out_dir.join("peers.md");
    std::fs::write(&md, &report).expect("write the peers report");
    let png = o.out_dir.join("peers.png");
    let title = format!(
        "Steno and peers, {} ({} cores): audio seconds per wall second",
        o.model_name,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    match chart::draw(&rows, &title, &png) {
        Ok(()) => eprintln!("wrote {} and {}", md.display(), png.display()),
        Err(e) => {
            eprintln!("wrote {}; the chart failed: {e}", md.display());
            std::process::exit(1);
        }
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
}

fn live_options() -> steno_e2e::bench::live::Options {
    let mut o = steno_e2e::bench::live::Options::default();
    let args: Vec<String> = std::env::args().skip(2).collect();
    let list =
        |v: &str| -> Vec<usize> { v.split(',').filter_map(|c| c.trim().parse().ok()).collect() };
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        let number = || {
            value
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("{} N", pair[0]))
        };
        match pair[0].as_str() {
            "--model" => {
                o.model = assets::try_model_dir(&value).unwrap_or_else(|| PathBuf::from(&value))
            }
            "--sessions" => o.sessions = list(&value),
            "--turns" => o.turns = number(),
            "--file-clients" => o.file_clients = number(),
            "--wer-stride" => o.wer_stride = number(),
            "--wer-sessions" => o.wer_sessions = number(),
            "--batch-rows" => o.batch_rows = number(),
            "--out" => o.out = PathBuf::from(value),
            other => panic!("unknown argument {other}; see the file's header for usage"),
        }
    }
    o
}

fn live_main() {
    let o = live_options();
    let report = steno_e2e::bench::live::run(&o);
    print!("{report}");
    if let Some(dir) = o.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&o.out, &report).expect("write the live report");
    eprintln!("wrote {}", o.out.display());
}
