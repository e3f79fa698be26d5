//! Helpers for overload, fault and shutdown tests: clips the model gets right, request
//! forms as bytes, metric polling and memory snapshots of a running server.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::assets::{self, Clip};
use crate::rawhttp::{Multipart, RawRequest};
use crate::server::Server;
use crate::{cli, prometheus, wer};

pub const TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";

/// `n` English clips other than jfk, between `seconds` long, with at least `min_words`
/// reference words, that OpenAI's reference implementation transcribed without an error
/// with tiny.en (when its fixture is there): clips whose WER measures the server.
pub fn clips_the_model_gets_right(
    n: usize,
    seconds: std::ops::RangeInclusive<f64>,
    min_words: usize,
) -> Vec<Clip> {
    let reference = assets::reference_hypotheses(assets::TINY_EN);
    let clips: Vec<Clip> = assets::english_clips()
        .into_iter()
        .filter(|c| c.path != assets::jfk().path)
        .filter(|c| c.reference.split_whitespace().count() >= min_words)
        .filter(|c| match &reference {
            Some(reference) => reference
                .get(&c.speech_key())
                .is_some_and(|h| wer::wer(&c.reference, h) == 0.0),
            None => true,
        })
        .filter(|c| seconds.contains(&c.seconds()))
        .take(n)
        .collect();
    assert_eq!(clips.len(), n, "not enough short English clips");
    clips
}

/// A transcription form for the audio file `path` (sent as its bytes) and `model`.
pub fn transcription_form(path: &Path, model: &str) -> RawRequest {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path
        .file_name()
        .map_or("audio.wav".into(), |n| n.to_string_lossy().into_owned());
    RawRequest::post_form(
        TRANSCRIPTIONS,
        Multipart::new()
            .field("model", model)
            .file("file", &name, &bytes),
    )
}

/// About `seconds` of speech: English clips joined with half-second pauses, written to
/// `dir/long.wav` (16 kHz mono).
pub fn long_wav(dir: &Path, seconds: f64) -> std::path::PathBuf {
    let pause = vec![0f32; 16_000 / 2];
    let mut samples = Vec::new();
    for clip in assets::english_clips() {
        samples.extend(assets::samples(&clip.path));
        samples.extend(&pause);
        if samples.len() as f64 >= seconds * 16_000.0 {
            break;
        }
    }
    assert!(
        samples.len() as f64 >= seconds * 16_000.0,
        "not enough speech"
    );
    let path = dir.join("long.wav");
    cli::write_wav(&path, &samples);
    path
}

/// The sum of the metric `name` over its labels (0 when absent).
pub fn metric(server: &Server, name: &str) -> f64 {
    prometheus::sum(&server.metrics(), name).unwrap_or(0.0)
}

/// The metric `name` with the label `label="value"` (0 when absent).
pub fn metric_with(server: &Server, name: &str, label: &str, value: &str) -> f64 {
    prometheus::samples(&server.metrics(), name)
        .iter()
        .filter(|s| s.label(label) == Some(value))
        .map(|s| s.value)
        .sum()
}

/// Polls `/metrics` until `done` holds for it, or panics after `within` saying `what`.
pub fn wait_for_metrics(
    server: &Server,
    within: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let metrics = server.metrics();
        if done(&metrics) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{what}: not reached within {within:?}; metrics:\n{}",
            interesting(&metrics)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The gauge `name` in the exposition `metrics` (0 when absent).
pub fn value(metrics: &str, name: &str) -> f64 {
    prometheus::sum(metrics, name).unwrap_or(0.0)
}

/// The lines of the metrics worth showing when a wait fails.
fn interesting(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
        .filter(|l| {
            [
                "in_flight",
                "queue_depth",
                "cancellations",
                "rejections",
                "requests_total",
                "mlx",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until no request holds a permit, no job is admitted and no row waits:
/// `steno_requests_in_flight`, `steno_jobs_in_flight` and `steno_queue_depth` are 0.
pub fn wait_until_idle(server: &Server, within: Duration) -> Duration {
    wait_for_metrics(server, within, "requests, jobs and rows back to 0", |m| {
        value(m, "steno_requests_in_flight") == 0.0
            && value(m, "steno_jobs_in_flight") == 0.0
            && value(m, "steno_queue_depth") == 0.0
    })
}

/// A server's memory at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident set size of the process.
    pub rss: u64,
    /// Bytes MLX holds in live arrays.
    pub mlx_active: u64,
    /// Bytes MLX keeps cached for reuse.
    pub mlx_cache: u64,
}

impl Memory {
    /// Reads RSS and MLX memory of an idle server (the worker refreshes the MLX gauges
    /// every 100 ms while idle, so this waits for one refresh first).
    pub fn of(server: &Server) -> Memory {
        std::thread::sleep(Duration::from_millis(300));
        let metrics = server.metrics();
        Memory {
            rss: server.rss_bytes(),
            mlx_active: value(&metrics, "steno_mlx_active_memory_bytes") as u64,
            mlx_cache: value(&metrics, "steno_mlx_cache_memory_bytes") as u64,
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: f64 = (1 << 20) as f64;
        write!(
            f,
            "RSS {:.1} MiB, MLX active {:.1} MiB, MLX cache {:.1} MiB",
            self.rss as f64 / MIB,
            self.mlx_active as f64 / MIB,
            self.mlx_cache as f64 / MIB
        )
    }
}
