//! Scheduling tests against a scripted backend: no model, no MLX. The real model is
//! tested end to end in `tests/` (steno-e2e).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use steno_whisper::{TranscribeOptions, WhisperError};
use tokio::sync::mpsc;

use super::*;
use crate::testing::{self, Log, Script};

struct Harness {
    engine: Engine,
    log: Arc<Mutex<Log>>,
}

fn start(config: EngineConfig, max_rows: usize, step_time: Duration) -> Harness {
    let script = Script {
        max_rows,
        step_time,
        samples_per_step: 1,
    };
    let (loader, log) = testing::loader(script);
    let config = EngineConfig {
        default_model: "default".into(),
        read_memory: testing::growing_memory,
        ..config
    };
    let engine = Engine::start(config, Arc::new(Metrics::new()), loader).expect("engine starts");
    Harness { engine, log }
}

fn request(model: &str, steps: usize) -> Request {
    Request {
        model: model.into(),
        samples: vec![0.5; steps],
        options: TranscribeOptions::default(),
        logprobs: false,
        deadline: None,
        deltas: None,
        diarize: None,
        span: tracing::Span::none(),
    }
}

/// The job's answer, waited for on a runtime of its own (the tests run on plain
/// threads, as the worker does).
fn wait(receiver: ReplyReceiver) -> Result<Reply, EngineError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
        .block_on(receiver.recv())
}

#[test]
fn a_lone_job_runs_at_once_and_later_jobs_join_between_steps() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(5));
    let long = h.engine.submit(request("default", 40)).unwrap();
    // The second job arrives once the first is being decoded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.log.lock().unwrap().steps.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let short = h.engine.submit(request("default", 3)).unwrap();
    let short_reply = wait(short).unwrap();
    let long_reply = wait(long).unwrap();
    assert_eq!(short_reply.transcript.text, " job 1");
    assert_eq!(long_reply.transcript.text, " job 0");
    let log = h.log.lock().unwrap();
    assert_eq!(
        log.steps[0],
        vec![0],
        "the first job starts alone, without waiting"
    );
    let joint = log.steps.iter().filter(|s| s.len() == 2).count();
    assert_eq!(
        joint, 3,
        "the short job shares three steps with the long one"
    );
    assert!(
        log.steps.last().unwrap() == &vec![0],
        "the short job leaves and the long one goes on"
    );
    assert!(h.engine.metrics().decoder_steps.get() >= 40);
}

#[test]
fn max_batch_rows_bounds_each_step() {
    let h = start(EngineConfig::default(), 2, Duration::from_millis(1));
    let receivers: Vec<_> = (0..5)
        .map(|_| h.engine.submit(request("default", 4)).unwrap())
        .collect();
    for r in receivers {
        wait(r).unwrap();
    }
    let log = h.log.lock().unwrap();
    assert!(log.steps.iter().all(|s| s.len() <= 2));
    assert!(log.steps.iter().any(|s| s.len() == 2));
}

#[test]
fn a_job_whose_client_left_while_queued_is_never_submitted() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(50));
    let busy = h.engine.submit(request("default", 4)).unwrap();
    // The worker is inside a 50 ms step: this job waits in the queue, its client gone.
    std::thread::sleep(Duration::from_millis(20));
    drop(h.engine.submit(request("default", 4)).unwrap());
    assert!(wait(busy).is_ok());
    let metrics = h.engine.metrics();
    let gone = metrics.cancellations.with_label_values(&["client_gone"]);
    assert_eq!(gone.get(), 1);
    let log = h.log.lock().unwrap();
    // Job 0 ran alone; the left one got no id, no step and no cancel in the backend.
    assert!(
        log.steps.iter().flatten().all(|&id| id == 0),
        "{:?}",
        log.steps
    );
    assert!(log.cancelled.is_empty());
}

#[test]
fn a_dropped_receiver_frees_the_job_before_the_next_step() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(5));
    let gone = h.engine.submit(request("default", 10_000)).unwrap();
    let stays = h.engine.submit(request("default", 30)).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    drop(gone);
    assert!(wait(stays).is_ok());
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.log.lock().unwrap().cancelled.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(h.log.lock().unwrap().cancelled, vec![0]);
    let metrics = h.engine.metrics();
    assert_eq!(
        metrics
            .cancellations
            .with_label_values(&["client_gone"])
            .get(),
        1
    );
    // The slot is free again.
    assert!(wait(h.engine.submit(request("default", 1)).unwrap()).is_ok());
}

#[test]
fn admission_refuses_past_max_jobs_and_frees_slots_on_completion() {
    let config = EngineConfig {
        max_jobs: 2,
        ..EngineConfig::default()
    };
    let h = start(config, 8, Duration::from_millis(5));
    let a = h.engine.submit(request("default", 20)).unwrap();
    let b = h.engine.submit(request("default", 20)).unwrap();
    assert!(matches!(
        h.engine.submit(request("default", 1)),
        Err(EngineError::Overloaded)
    ));
    assert_eq!(
        h.engine
            .metrics()
            .rejections
            .with_label_values(&["engine_full"])
            .get(),
        1
    );
    wait(a).unwrap();
    wait(b).unwrap();
    // Slots are released when the jobs finish.
    std::thread::sleep(Duration::from_millis(20));
    assert!(wait(h.engine.submit(request("default", 1)).unwrap()).is_ok());
}

#[test]
fn a_failed_batch_fails_only_its_rows_and_the_worker_keeps_serving() {
    // Two rows per step: the poisoned job and its batch mate fail; the third job,
    // still waiting for a row, is untouched.
    let h = start(EngineConfig::default(), 2, Duration::from_millis(2));
    let mut poison = request("default", 5);
    poison.samples[0] = -1.0;
    let mate = h.engine.submit(request("default", 5)).unwrap();
    let bad = h.engine.submit(poison).unwrap();
    let waiting = h.engine.submit(request("default", 5)).unwrap();
    assert!(matches!(wait(mate), Err(EngineError::Internal(_))));
    assert!(matches!(wait(bad), Err(EngineError::Internal(_))));
    assert!(wait(waiting).is_ok());
    assert!(wait(h.engine.submit(request("default", 2)).unwrap()).is_ok());
    assert!(h.engine.is_healthy());
}

#[test]
fn an_invalid_request_is_refused_without_touching_others() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(1));
    let mut bad = request("default", 3);
    bad.options.language = Some("xx".into());
    let good = h.engine.submit(request("default", 3)).unwrap();
    let refused = wait(h.engine.submit(bad).unwrap());
    assert!(
        matches!(
            &refused,
            Err(EngineError::InvalidRequest(WhisperError::UnsupportedLanguage(l))) if l == "xx"
        ),
        "the model's error comes through typed: {refused:?}"
    );
    assert_eq!(
        refused.err().map(|e| e.to_string()).as_deref(),
        Some("unsupported language `xx`"),
        "and its message as is"
    );
    assert!(wait(good).is_ok());
}

#[test]
fn a_passed_deadline_stops_the_job_with_its_own_error() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(5));
    let mut slow = request("default", 10_000);
    slow.deadline = Some(Instant::now() + Duration::from_millis(50));
    let started = Instant::now();
    assert!(matches!(
        wait(h.engine.submit(slow).unwrap()),
        Err(EngineError::DeadlineExceeded)
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        h.engine
            .metrics()
            .cancellations
            .with_label_values(&["deadline"])
            .get(),
        1
    );
}

#[test]
fn deltas_stream_segments_and_logprobs_come_with_the_reply() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(1));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut streamed = request("default", 3);
    streamed.deltas = Some(tx);
    streamed.logprobs = true;
    let reply = wait(h.engine.submit(streamed).unwrap()).unwrap();
    let delta = rx.blocking_recv().expect("one delta");
    assert_eq!(delta.text, " job 0");
    assert_eq!(delta.logprobs.unwrap()[0].logprob, -0.5);
    assert!(
        rx.blocking_recv().is_none(),
        "the sender is dropped with the job"
    );
    assert_eq!(reply.logprobs.unwrap()[0].token, " job 0");
}

#[test]
fn other_models_load_on_first_use_and_a_broken_one_fails_alone() {
    let config = EngineConfig {
        idle_unload_after: Some(Duration::from_millis(100)),
        ..EngineConfig::default()
    };
    let h = start(config, 8, Duration::from_millis(1));
    // The second request for the broken model fails without reading it again.
    for _ in 0..2 {
        assert!(matches!(
            wait(h.engine.submit(request("broken", 2)).unwrap()),
            Err(EngineError::ModelUnavailable(_))
        ));
    }
    assert!(wait(h.engine.submit(request("other", 2)).unwrap()).is_ok());
    assert!(wait(h.engine.submit(request("default", 2)).unwrap()).is_ok());
    assert_eq!(h.engine.metrics().models_loaded.get(), 2);
    // Idle past the TTL: "other" is unloaded, the default stays.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(h.engine.metrics().models_loaded.get(), 1);
    assert!(wait(h.engine.submit(request("other", 2)).unwrap()).is_ok());
    let loads = h.log.lock().unwrap().loads.clone();
    assert_eq!(loads, ["default", "broken", "other", "other"]);
}

#[test]
fn the_memory_budget_unloads_the_least_recently_used_idle_model() {
    let config = EngineConfig {
        // A budget below the default model alone: every idle model other than the
        // default and the one just loaded must go.
        max_model_bytes: Some(0),
        ..EngineConfig::default()
    };
    let h = start(config, 8, Duration::from_millis(1));
    assert!(wait(h.engine.submit(request("a", 1)).unwrap()).is_ok());
    assert!(wait(h.engine.submit(request("b", 1)).unwrap()).is_ok());
    std::thread::sleep(Duration::from_millis(150));
    // The default model is never unloaded; "a" went when "b" came.
    assert_eq!(h.engine.metrics().models_loaded.get(), 2);
    assert!(wait(h.engine.submit(request("a", 1)).unwrap()).is_ok());
    assert_eq!(h.log.lock().unwrap().loads, ["default", "a", "b", "a"]);
}

#[test]
fn a_failing_default_model_fails_start() {
    let loader: Loader = Box::new(|_| {
        Err(LoadError::Runtime(Box::new(WhisperError::Mlx(
            "corrupt weights in model.bin".into(),
        ))))
    });
    let config = EngineConfig {
        default_model: "default".into(),
        ..EngineConfig::default()
    };
    let error = Engine::start(config, Arc::new(Metrics::new()), loader).err();
    assert!(
        matches!(error, Some(StartError::Load(LoadError::Runtime(_)))),
        "{error:?}"
    );
    assert_eq!(
        error.map(|e| e.to_string()).as_deref(),
        Some("MLX: corrupt weights in model.bin"),
        "the loader's message, as is"
    );
}

#[test]
fn a_draining_engine_finishes_admitted_work_and_refuses_new_jobs() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(2));
    let admitted = h.engine.submit(request("default", 20)).unwrap();
    h.engine.begin_drain();
    assert!(matches!(
        h.engine.submit(request("default", 1)),
        Err(EngineError::Unavailable)
    ));
    assert!(!h.engine.is_healthy());
    assert!(wait(admitted).is_ok());
    assert!(
        h.engine.stop(Duration::from_secs(10)),
        "an idle worker stops"
    );
}

#[test]
fn stop_fails_what_is_left() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(5));
    let endless = h.engine.submit(request("default", 1_000_000)).unwrap();
    // Stopped once it runs (a job still queued is refused, not cancelled).
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.log.lock().unwrap().steps.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    assert!(h.engine.stop(Duration::from_secs(10)));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(wait(endless), Err(EngineError::Unavailable)));
    assert_eq!(
        h.engine
            .metrics()
            .cancellations
            .with_label_values(&["shutdown"])
            .get(),
        1
    );
}

#[test]
fn an_abort_answers_awaited_jobs_without_waiting_for_the_step_under_way() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(1500));
    let endless = h.engine.submit(request("default", 1_000_000)).unwrap();
    // Once the first step is logged, the second one is under way.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.log.lock().unwrap().steps.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let aborted = Instant::now();
    assert!(
        !h.engine.stop(Duration::from_millis(100)),
        "the worker is still inside its step"
    );
    let answer = wait(endless);
    assert!(
        matches!(answer, Err(EngineError::Unavailable)),
        "{answer:?}"
    );
    assert!(
        aborted.elapsed() < Duration::from_millis(700),
        "answered {:?} after the abort",
        aborted.elapsed()
    );
}

#[test]
fn the_queue_gauges_split_jobs_from_windows() {
    // One row per step: of three jobs on the worker, two windows wait for a row.
    let h = start(EngineConfig::default(), 1, Duration::from_millis(20));
    let receivers: Vec<_> = (0..3)
        .map(|_| h.engine.submit(request("default", 50)).unwrap())
        .collect();
    let metrics = h.engine.metrics();
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.windows_waiting.get() != 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(metrics.windows_waiting.get(), 2);
    assert_eq!(metrics.jobs_queued.get(), 0, "the worker took all three");
    assert_eq!(metrics.queue_depth.get(), 2, "the old gauge is their sum");
    assert_eq!(metrics.jobs_in_flight.get(), 3);
    drop(receivers);
}

/// `request` whose first sample scripts the backend (see [`testing::PANIC_IN_STEP`]).
fn scripted(steps: usize, first_sample: f32) -> Request {
    let mut request = request("default", steps);
    request.samples[0] = first_sample;
    request
}

/// Runs `future` on a runtime of its own for at most `within`: whether it resolved.
fn resolves_within(future: impl std::future::Future<Output = ()>, within: Duration) -> bool {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
        .block_on(async { tokio::time::timeout(within, future).await.is_ok() })
}

#[test]
fn a_panic_in_a_step_fails_that_models_jobs_and_the_worker_goes_on() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(2));
    let mate = h.engine.submit(request("default", 10_000)).unwrap();
    let panicking = h
        .engine
        .submit(scripted(5, testing::PANIC_IN_STEP))
        .unwrap();
    // Its rows are in an unknown state after the panic: the batch mate fails too.
    assert!(matches!(wait(panicking), Err(EngineError::Internal(_))));
    assert!(matches!(wait(mate), Err(EngineError::Internal(_))));
    assert!(wait(h.engine.submit(request("default", 3)).unwrap()).is_ok());
    let panics = &h.engine.metrics().worker_panics;
    assert_eq!(panics.with_label_values(&["step"]).get(), 1);
    assert_eq!(
        h.log.lock().unwrap().resets,
        1,
        "the backend forgot its jobs"
    );
    assert!(h.engine.is_healthy());
    assert!(!resolves_within(
        h.engine.worker_died(),
        Duration::from_millis(50)
    ));
}

#[test]
fn a_panic_in_submit_fails_only_that_job() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(2));
    let running = h.engine.submit(request("default", 50)).unwrap();
    let panicking = h
        .engine
        .submit(scripted(5, testing::PANIC_IN_SUBMIT))
        .unwrap();
    assert!(matches!(wait(panicking), Err(EngineError::Internal(_))));
    assert!(
        wait(running).is_ok(),
        "the job already running is untouched"
    );
    assert!(wait(h.engine.submit(request("default", 3)).unwrap()).is_ok());
    let panics = &h.engine.metrics().worker_panics;
    assert_eq!(panics.with_label_values(&["submit"]).get(), 1);
    assert_eq!(h.log.lock().unwrap().resets, 0);
}

#[test]
fn a_dead_worker_turns_unhealthy_and_says_so() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(2));
    assert!(h.engine.is_healthy());
    let killer = h
        .engine
        .submit(scripted(5, testing::KILL_THE_WORKER))
        .unwrap();
    assert!(
        resolves_within(h.engine.worker_died(), Duration::from_secs(5)),
        "the death is reported"
    );
    assert!(!h.engine.is_healthy());
    assert_eq!(h.engine.metrics().worker_healthy.get(), 0);
    assert!(matches!(wait(killer), Err(EngineError::Unavailable)));
    assert!(matches!(
        h.engine.submit(request("default", 1)),
        Err(EngineError::Unavailable)
    ));
    assert!(
        h.engine.stop(Duration::from_secs(1)),
        "a dead worker has stopped"
    );
}

#[test]
fn a_stopped_worker_is_not_reported_dead() {
    let h = start(EngineConfig::default(), 8, Duration::from_millis(2));
    assert!(h.engine.stop(Duration::from_secs(5)));
    assert!(!h.engine.is_healthy());
    assert!(!resolves_within(
        h.engine.worker_died(),
        Duration::from_millis(100)
    ));
}

/// A diarizing job with `bounds` on a scripted model, the voice encoder at `encoder`.
fn diarize_reply(
    encoder: Option<std::path::PathBuf>,
    bounds: (usize, usize),
) -> Result<Reply, EngineError> {
    let config = EngineConfig {
        speaker_encoder: encoder,
        ..EngineConfig::default()
    };
    let h = start(config, 8, Duration::from_millis(1));
    let mut job = request("default", 3);
    job.diarize = Some(DiarizeRequest {
        min_speakers: Some(bounds.0),
        max_speakers: Some(bounds.1),
        known: Vec::new(),
    });
    wait(h.engine.submit(job).unwrap())
}

#[test]
fn diarizing_without_a_voice_encoder_is_unavailable_and_bad_bounds_are_the_request_s_fault() {
    let missing = std::env::temp_dir().join("steno-no-such-encoder.pt");
    match diarize_reply(Some(missing.clone()), (1, 4)) {
        Err(EngineError::ModelUnavailable(what)) => assert_eq!(what, "speaker encoder"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        diarize_reply(None, (1, 4)),
        Err(EngineError::ModelUnavailable(_))
    ));
    match diarize_reply(Some(missing), (3, 2)) {
        Err(EngineError::InvalidRequest(WhisperError::InvalidOption(detail))) => {
            assert!(detail.contains("min_speakers"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}
