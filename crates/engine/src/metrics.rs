//! Every `steno_*` Prometheus metric, with its buckets, in one place. The engine
//! updates the worker's; the server updates the HTTP ones and renders them all.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Request, queue and inference latencies: 10 ms .. ~20 min.
const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0,
];
/// Wall seconds per audio second: below 1 is faster than real time.
const REAL_TIME_FACTOR_BUCKETS: &[f64] = &[0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Rows advanced together by one decoder call.
const BATCH_ROW_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

pub struct Metrics {
    pub registry: Registry,
    /// HTTP requests by route and status.
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    /// Time from admission until the worker took the job.
    pub queue_duration: Histogram,
    /// Time on the worker, from intake to the final transcript.
    pub inference_duration: Histogram,
    pub audio_seconds: prometheus::Counter,
    pub real_time_factor: Histogram,
    /// Jobs waiting for the worker plus windows waiting for a decoder row.
    pub queue_depth: IntGauge,
    pub jobs_in_flight: IntGauge,
    /// Audio requests holding a concurrency permit (uploading, decoding, queued or
    /// transcribing).
    pub requests_in_flight: IntGauge,
    pub batch_rows: Histogram,
    pub decoder_steps: IntCounter,
    /// Worker seconds by stage (`encode`, `decode`, `finish`).
    pub stage_seconds: prometheus::CounterVec,
    /// Jobs stopped before their end, by reason (`client_gone`, `deadline`, `shutdown`).
    pub cancellations: IntCounterVec,
    pub rejections: IntCounterVec,
    pub worker_healthy: IntGauge,
    pub models_loaded: IntGauge,
    pub model_loads: IntCounterVec,
    pub mlx_active_memory: IntGauge,
    pub mlx_peak_memory: IntGauge,
    pub mlx_cache_memory: IntGauge,
}

fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            registered(
                &r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                    .expect("valid histogram"),
            )
        };
        let gauge = |name: &str, help: &str| {
            registered(&r, IntGauge::new(name, help).expect("valid gauge"))
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        Self {
            requests: counter_vec(
                "steno_requests_total",
                "HTTP requests by route and status",
                &["route", "status"],
            ),
            request_duration: registered(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "steno_request_duration_seconds",
                        "HTTP request latency, upload to last byte",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route"],
                )
                .expect("valid histogram"),
            ),
            queue_duration: histogram(
                "steno_queue_duration_seconds",
                "Time from admission until the worker took the job",
                LATENCY_BUCKETS,
            ),
            inference_duration: histogram(
                "steno_inference_duration_seconds",
                "Time on the worker from intake to the final transcript",
                LATENCY_BUCKETS,
            ),
            audio_seconds: registered(
                &r,
                prometheus::Counter::new("steno_audio_seconds_total", "Audio transcribed")
                    .expect("valid counter"),
            ),
            real_time_factor: histogram(
                "steno_real_time_factor",
                "Inference seconds per audio second, per request",
                REAL_TIME_FACTOR_BUCKETS,
            ),
            queue_depth: gauge(
                "steno_queue_depth",
                "Jobs waiting for the worker plus windows waiting for a decoder row",
            ),
            jobs_in_flight: gauge("steno_jobs_in_flight", "Jobs admitted and not finished"),
            requests_in_flight: gauge(
                "steno_requests_in_flight",
                "Audio requests holding a concurrency permit: uploading, decoding, queued or transcribing",
            ),
            batch_rows: histogram(
                "steno_batch_rows",
                "Rows advanced together by one decoder step",
                BATCH_ROW_BUCKETS,
            ),
            decoder_steps: registered(
                &r,
                IntCounter::new("steno_decoder_steps_total", "Batched decoder steps")
                    .expect("valid counter"),
            ),
            stage_seconds: registered(
                &r,
                prometheus::CounterVec::new(
                    Opts::new(
                        "steno_stage_seconds_total",
                        "Worker seconds by stage: encode (mel, encoder, language), decode (batched steps), finish (segments, fallback, word timing)",
                    ),
                    &["stage"],
                )
                .expect("valid counter"),
            ),
            cancellations: counter_vec(
                "steno_cancellations_total",
                "Jobs stopped before their end, by reason",
                &["reason"],
            ),
            rejections: counter_vec(
                "steno_rejections_total",
                "Requests refused at admission, by reason",
                &["reason"],
            ),
            worker_healthy: gauge(
                "steno_worker_healthy",
                "1 while the MLX worker serves, 0 while loading, draining or dead",
            ),
            models_loaded: gauge("steno_models_loaded", "Models resident on the worker"),
            model_loads: counter_vec(
                "steno_model_loads_total",
                "Model loads by model and outcome",
                &["model", "outcome"],
            ),
            mlx_active_memory: gauge(
                "steno_mlx_active_memory_bytes",
                "Bytes MLX holds in live arrays (GPU memory on Metal/CUDA)",
            ),
            mlx_peak_memory: gauge(
                "steno_mlx_peak_memory_bytes",
                "Most bytes MLX has held in live arrays since start",
            ),
            mlx_cache_memory: gauge(
                "steno_mlx_cache_memory_bytes",
                "Bytes MLX keeps cached for reuse",
            ),
            registry: r,
        }
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
