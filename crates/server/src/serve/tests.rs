//! The graceful stop against a scripted engine (no model, no MLX): raw PCM uploads
//! (decoded in process) over real sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use steno_engine::testing::{self, Script};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;

/// Samples per scripted decoder step, and the step's time: a second of audio takes
/// 100 steps of 5 ms.
const SCRIPT: Script = Script {
    max_rows: 8,
    step_time: Duration::from_millis(5),
    samples_per_step: 160,
};

struct Running {
    address: SocketAddr,
    engine: Engine,
    /// The served state, for requests straight to the router.
    state: AppState,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Serves a scripted engine with `drain_seconds`; `samples_per_step` sets how long
/// a second of audio takes.
async fn start(drain_seconds: u64, script: Script) -> Running {
    let env = [("STENO_DRAIN_SECONDS".to_string(), drain_seconds.to_string())];
    let config = Config::load(None, env, vec![]).unwrap();
    let metrics = Arc::new(Metrics::new());
    let (loader, _log) = testing::loader(script);
    let engine_config = EngineConfig {
        read_memory: testing::growing_memory,
        ..engine_config(&config)
    };
    let engine = Engine::start(engine_config, metrics.engine(), loader).unwrap();
    let state = AppState::new(engine.clone(), config, metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    Running {
        address,
        engine,
        state,
        stop,
        served,
    }
}

/// `POST /v1/audio/transcriptions` with `seconds` of 16 kHz PCM; the status code and
/// the body.
async fn transcribe(address: SocketAddr, seconds: f64) -> (u16, String) {
    let samples = (seconds * 16_000.0) as usize;
    let pcm: Vec<u8> = std::iter::repeat_n([0x10, 0x00], samples)
        .flatten()
        .collect();
    let mut body = Vec::new();
    for (name, value) in [("model", "whisper-1"), ("sample_rate", "16000")] {
        body.extend_from_slice(
            format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pcm\"\r\n\
          Content-Type: audio/pcm\r\n\r\n",
    );
    body.extend_from_slice(&pcm);
    body.extend_from_slice(b"\r\n--B--\r\n");
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    exchange(address, [head.into_bytes(), body].concat()).await
}

async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    exchange(address, request.into_bytes()).await
}

/// Sends `request` and reads the reply to its end: the status code (0 if the
/// connection was refused or dropped without one) and the body.
async fn exchange(address: SocketAddr, request: Vec<u8>) -> (u16, String) {
    let Ok(mut socket) = tokio::net::TcpStream::connect(address).await else {
        return (0, String::new());
    };
    if socket.write_all(&request).await.is_err() {
        return (0, String::new());
    }
    let mut reply = Vec::new();
    let _ = socket.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// Waits until the scripted worker has a job (so it was admitted).
async fn until_a_job_runs(engine: &Engine) {
    let until = Instant::now() + Duration::from_secs(10);
    while engine.metrics().jobs_in_flight.get() == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        engine.metrics().jobs_in_flight.get(),
        1,
        "a job was admitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_lets_admitted_requests_finish_and_refuses_new_ones() {
    let server = start(10, SCRIPT).await;
    assert_eq!(get(server.address, "/health").await.0, 200);
    // One second of audio: 100 steps of 5 ms.
    let admitted = tokio::spawn(transcribe(server.address, 1.0));
    until_a_job_runs(&server.engine).await;
    let signalled = Instant::now();
    server.stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let (status, body) = transcribe(server.address, 0.1).await;
    assert_eq!(status, 503, "a new request during the drain: {body}");
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(get(server.address, "/health").await.0, 503);

    let (status, body) = admitted.await.unwrap();
    assert_eq!(status, 200, "the admitted request finishes: {body}");
    assert!(body.contains("job 0"), "{body}");
    server.served.await.unwrap().unwrap();
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the server stops once the drain is done, not at its deadline: {:?}",
        signalled.elapsed()
    );
    assert_eq!(
        get(server.address, "/health").await.0,
        0,
        "the listener is closed"
    );
    assert!(
        server.engine.stop(WORKER_STOP_GRACE),
        "the idle worker stops"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_answers_what_is_left_with_503() {
    // A second of audio takes 16,000 steps of 5 ms: far past the 1 s drain.
    let endless = Script {
        samples_per_step: 1,
        ..SCRIPT
    };
    let server = start(1, endless).await;
    let admitted = tokio::spawn(transcribe(server.address, 1.0));
    until_a_job_runs(&server.engine).await;
    let signalled = Instant::now();
    server.stop.send(()).unwrap();

    let (status, body) = admitted.await.unwrap();
    let answered = signalled.elapsed();
    assert_eq!(status, 503, "aborted at the deadline: {body}");
    assert!(
        answered >= Duration::from_millis(900) && answered < Duration::from_millis(1800),
        "answered {answered:?} after the signal, for a 1 s drain"
    );
    server.served.await.unwrap().unwrap();
    assert!(
        signalled.elapsed() < Duration::from_millis(2500),
        "stopped {:?} after the signal (drain + 1 s at most)",
        signalled.elapsed()
    );
    assert!(server.engine.stop(WORKER_STOP_GRACE));
    assert_eq!(
        server
            .engine
            .metrics()
            .cancellations
            .with_label_values(&["shutdown"])
            .get(),
        1,
        "the worker dropped the job's rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_turns_health_503_and_serve_fails() {
    use tower::ServiceExt;
    let server = start(10, SCRIPT).await;
    assert_eq!(get(server.address, "/health").await.0, 200);
    let killer = steno_engine::Request {
        model: server.state.config.models.model_id.clone(),
        samples: vec![testing::KILL_THE_WORKER],
        options: Default::default(),
        logprobs: false,
        deadline: None,
        deltas: None,
        diarize: None,
        span: tracing::Span::none(),
    };
    let reply = server.engine.submit(killer).unwrap();
    let served = tokio::time::timeout(Duration::from_secs(5), server.served)
        .await
        .expect("the server stops by itself")
        .unwrap();
    assert!(served.is_err(), "serve reports the death: {served:?}");
    assert!(matches!(
        reply.recv().await,
        Err(steno_engine::EngineError::Unavailable)
    ));
    // The router of a server whose worker is dead: /health is 503.
    let health = app(server.state)
        .oneshot(
            axum::http::Request::get("/health")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    assert!(
        server.engine.stop(WORKER_STOP_GRACE),
        "a dead worker has stopped"
    );
}
