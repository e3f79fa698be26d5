//! Every `steno_*` metric `/metrics` renders: the HTTP ones here, the worker's
//! ([`steno_engine::Metrics`]) registered in the same registry. Metric names are
//! public (deploy/observability and the e2e tests scrape them): never rename one.

use std::sync::Arc;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use steno_engine::metrics::{registered, LATENCY_BUCKETS};

pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status.
    pub requests: IntCounterVec,
    /// HTTP latency by route, upload to last byte.
    pub request_duration: HistogramVec,
    /// Audio requests admitted and not yet answered (uploading, decoding audio, queued
    /// or transcribing).
    pub requests_in_flight: IntGauge,
    /// `steno_rejections_total`, shared with the engine (which counts
    /// `engine_full`); the server counts `concurrency` (no permit left).
    pub rejections: IntCounterVec,
    /// Live transcription sessions (`crate::realtime`).
    pub live: LiveMetrics,
    engine: Arc<steno_engine::Metrics>,
}

/// The metrics of live transcription sessions.
pub struct LiveMetrics {
    /// Sessions open now.
    pub sessions_open: IntGauge,
    /// Sessions ended, by why (`client_closed`, `idle`, `refused`, `slow_reader`, ...).
    pub sessions: IntCounterVec,
    /// Turns committed, by outcome (`completed`, `failed`).
    pub turns: IntCounterVec,
    /// Interim passes, by outcome (`decoded`, `skipped` when the engine was full,
    /// `dropped` when the turn ended first, `failed`).
    pub interim_passes: IntCounterVec,
    /// Completed turns whose final pass read words already sent differently (the
    /// transcript keeps the sent words: see `realtime::interim`).
    pub revised_turns: IntCounter,
    /// From the end of a turn (speech stopped, or the commit) to its `completed` event.
    pub turn_latency: Histogram,
}

impl LiveMetrics {
    fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, label: &str| {
            registered(
                registry,
                IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid counter"),
            )
        };
        Self {
            sessions_open: registered(
                registry,
                IntGauge::new(
                    "steno_live_sessions_open",
                    "Live transcription sessions open",
                )
                .expect("valid gauge"),
            ),
            sessions: counter(
                "steno_live_sessions_total",
                "Live transcription sessions ended, by reason",
                "reason",
            ),
            turns: counter(
                "steno_live_turns_total",
                "Live turns committed, by outcome",
                "outcome",
            ),
            interim_passes: counter(
                "steno_live_interim_passes_total",
                "Interim passes over turns in progress, by outcome",
                "outcome",
            ),
            revised_turns: registered(
                registry,
                IntCounter::new(
                    "steno_live_revised_turns_total",
                    "Completed live turns whose final pass read words already sent differently",
                )
                .expect("valid counter"),
            ),
            turn_latency: registered(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "steno_live_turn_latency_seconds",
                        "From a turn's end (speech stopped or commit) to its completed transcript",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("valid histogram"),
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let engine = Arc::new(steno_engine::Metrics::register(&registry));
        let requests = IntCounterVec::new(
            Opts::new("steno_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .expect("valid counter");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "steno_request_duration_seconds",
                "HTTP request latency, upload to last byte",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid histogram");
        let requests_in_flight = IntGauge::new(
            "steno_requests_in_flight",
            "Audio requests admitted and not yet answered: uploading, decoding, queued or transcribing",
        )
        .expect("valid gauge");
        Self {
            requests: registered(&registry, requests),
            request_duration: registered(&registry, request_duration),
            requests_in_flight: registered(&registry, requests_in_flight),
            rejections: engine.rejections.clone(),
            live: LiveMetrics::register(&registry),
            engine,
            registry,
        }
    }

    /// The worker's metrics, for [`steno_engine::Engine::start`].
    pub fn engine(&self) -> Arc<steno_engine::Metrics> {
        self.engine.clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "rendering metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_registry_renders_http_and_worker_metrics_under_their_old_names() {
        let metrics = Metrics::new();
        metrics
            .requests
            .with_label_values(&["/health", "200"])
            .inc();
        metrics.rejections.with_label_values(&["concurrency"]).inc();
        metrics.engine().queue_depth.set(3);
        let text = metrics.render();
        for line in [
            "steno_requests_total{route=\"/health\",status=\"200\"} 1",
            "steno_rejections_total{reason=\"concurrency\"} 1",
            "steno_queue_depth 3",
            "steno_jobs_queued 0",
            "steno_windows_waiting 0",
            "steno_requests_in_flight 0",
            "steno_worker_healthy 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert_eq!(
            metrics
                .engine()
                .rejections
                .with_label_values(&["concurrency"])
                .get(),
            1,
            "the server and the engine count into one series"
        );
    }
}
