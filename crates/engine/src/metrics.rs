//! The worker's Prometheus metrics: queue, jobs, batches, stages, models and MLX
//! memory. They register into a registry the caller owns (the server's, which also
//! holds its HTTP metrics and renders them all at `/metrics`).
//!
//! `steno_queue_depth` is the sum of two different waits, kept under its old name
//! for dashboards and alerts that scrape it; `steno_jobs_queued` and
//! `steno_windows_waiting` are its two parts.

use prometheus::{
    Counter, CounterVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

/// Request, queue and inference latencies: 10 ms .. ~20 min.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0,
];
/// Wall seconds per audio second: below 1 is faster than real time.
const REAL_TIME_FACTOR_BUCKETS: &[f64] = &[0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Rows advanced together by one decoder call.
const BATCH_ROW_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

pub struct Metrics {
    /// Time from admission until the worker took the job.
    pub queue_duration: Histogram,
    /// Time on the worker, from intake to the final transcript.
    pub inference_duration: Histogram,
    pub audio_seconds: Counter,
    pub real_time_factor: Histogram,
    /// `jobs_queued + windows_waiting` (the historical `steno_queue_depth`).
    pub queue_depth: IntGauge,
    /// Jobs admitted that the worker has not taken yet.
    pub jobs_queued: IntGauge,
    /// Windows (30 s pieces of taken jobs) waiting for a decoder row.
    pub windows_waiting: IntGauge,
    /// Jobs admitted and not finished (queued or on the worker).
    pub jobs_in_flight: IntGauge,
    pub batch_rows: Histogram,
    pub decoder_steps: IntCounter,
    /// Worker seconds by stage. The label values are public: `encode`, `decode` (the
    /// batched decoder steps, not audio decoding) and `finish`.
    pub stage_seconds: CounterVec,
    /// Jobs stopped before their end, by reason (`client_gone`, `deadline`, `shutdown`).
    pub cancellations: IntCounterVec,
    /// Requests refused at admission, by reason: `engine_full` here; the server adds
    /// `concurrency` for its own limit.
    pub rejections: IntCounterVec,
    pub worker_healthy: IntGauge,
    /// Panics the worker caught in a backend call, by call (`submit`, `step`,
    /// `cancel`, `deliver`); the jobs they hit failed with 500.
    pub worker_panics: IntCounterVec,
    pub models_loaded: IntGauge,
    pub model_loads: IntCounterVec,
    pub mlx_active_memory: IntGauge,
    pub mlx_peak_memory: IntGauge,
    pub mlx_cache_memory: IntGauge,
}

/// Registers `metric` in `registry` and hands it back.
pub fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

/// The `steno_*` constructors every metric here goes through.
struct Register<'a>(&'a Registry);

impl Register<'_> {
    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        registered(self.0, Histogram::with_opts(opts).expect("valid histogram"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        registered(self.0, IntGauge::new(name, help).expect("valid gauge"))
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        registered(self.0, IntCounter::new(name, help).expect("valid counter"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
        registered(self.0, counter)
    }
}

impl Metrics {
    /// The worker's metrics, registered in `registry`. Longer than most functions on
    /// purpose: it is the table of every worker metric's name, help and buckets, one
    /// entry each, in one place to read.
    pub fn register(registry: &Registry) -> Self {
        let r = Register(registry);
        Self {
            queue_duration: r.histogram(
                "steno_queue_duration_seconds",
                "Time from admission until the worker took the job",
                LATENCY_BUCKETS,
            ),
            inference_duration: r.histogram(
                "steno_inference_duration_seconds",
                "Time on the worker from intake to the final transcript",
                LATENCY_BUCKETS,
            ),
            audio_seconds: registered(
                registry,
                Counter::new("steno_audio_seconds_total", "Audio transcribed").expect("valid counter"),
            ),
            real_time_factor: r.histogram(
                "steno_real_time_factor",
                "Inference seconds per audio second, per request",
                REAL_TIME_FACTOR_BUCKETS,
            ),
            queue_depth: r.gauge(
                "steno_queue_depth",
                "Jobs waiting for the worker plus windows waiting for a decoder row \
                 (steno_jobs_queued + steno_windows_waiting)",
            ),
            jobs_queued: r.gauge(
                "steno_jobs_queued",
                "Jobs admitted that the worker has not taken yet",
            ),
            windows_waiting: r.gauge(
                "steno_windows_waiting",
                "Windows of jobs on the worker waiting for a decoder row",
            ),
            jobs_in_flight: r.gauge("steno_jobs_in_flight", "Jobs admitted and not finished"),
            batch_rows: r.histogram(
                "steno_batch_rows",
                "Rows advanced together by one decoder step",
                BATCH_ROW_BUCKETS,
            ),
            decoder_steps: r.counter("steno_decoder_steps_total", "Batched decoder steps"),
            stage_seconds: registered(
                registry,
                CounterVec::new(
                    Opts::new(
                        "steno_stage_seconds_total",
                        "Worker seconds by stage: encode (mel, encoder, language), decode (batched steps), finish (segments, fallback, word timing)",
                    ),
                    &["stage"],
                )
                .expect("valid counter"),
            ),
            cancellations: r.counter_vec(
                "steno_cancellations_total",
                "Jobs stopped before their end, by reason",
                &["reason"],
            ),
            rejections: r.counter_vec(
                "steno_rejections_total",
                "Requests refused at admission, by reason",
                &["reason"],
            ),
            worker_healthy: r.gauge(
                "steno_worker_healthy",
                "1 while the MLX worker serves, 0 while loading, draining or dead",
            ),
            worker_panics: r.counter_vec(
                "steno_worker_panics_total",
                "Panics caught on the worker in a backend call, by call; the jobs hit got 500",
                &["call"],
            ),
            models_loaded: r.gauge("steno_models_loaded", "Models resident on the worker"),
            model_loads: r.counter_vec(
                "steno_model_loads_total",
                "Model loads by model and outcome",
                &["model", "outcome"],
            ),
            mlx_active_memory: r.gauge(
                "steno_mlx_active_memory_bytes",
                "Bytes MLX holds in live arrays (GPU memory on Metal/CUDA)",
            ),
            mlx_peak_memory: r.gauge(
                "steno_mlx_peak_memory_bytes",
                "Most bytes MLX has held in live arrays since start",
            ),
            mlx_cache_memory: r.gauge(
                "steno_mlx_cache_memory_bytes",
                "Bytes MLX keeps cached for reuse",
            ),
        }
    }

    /// The worker's metrics in a registry of their own (tests, the CLI: nothing
    /// renders them).
    pub fn new() -> Self {
        Self::register(&Registry::new())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
