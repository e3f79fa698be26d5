//! `steno serve`'s lifecycle: start the engine, serve the API, and on a shutdown
//! signal drain → abort → close → stop the worker.
//!
//! The graceful stop ([`serve`]), as clients and load balancers see it:
//! 1. New requests (and `/health`) get 503 while the requests already admitted
//!    finish, for up to `server.drain_seconds`.
//! 2. Past that deadline the engine is aborted: replies still awaited get 503 at
//!    once (their clients get that answer before the connections close), even if the
//!    worker is inside a step. The listener closes.
//! 3. One second later whatever connection is still open is dropped.
//!
//! Connections are served by [`accept`]: at most `server.max_connections` at once,
//! each closed when idle or slow to send a request head ([`connection`]).
//!
//! Then [`run`] gives the worker [`WORKER_STOP_GRACE`] to leave its loop and, if it
//! is still inside an MLX evaluation (which cannot be cut), ends the process with
//! `_exit` rather than run MLX's static destructors under it.

mod connection;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use hyper_util::server::graceful::GracefulShutdown;
use steno_engine::{Engine, EngineConfig};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::routes::{app, AppState};

/// How long the process waits, after the drain, for the worker to leave its loop.
pub const WORKER_STOP_GRACE: Duration = Duration::from_millis(500);

/// Connections still open this long after the drain deadline are dropped.
const HARD_STOP_AFTER_DRAIN: Duration = Duration::from_secs(1);

/// How often the drain checks whether the admitted requests are done.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// The pause after an accept error that is not one connection's (out of file
/// descriptors): connections closing meanwhile free some.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `config` until SIGTERM or Ctrl-C, then stops gracefully (see the module).
pub fn run(config: Config) -> anyhow::Result<()> {
    // Before the model loads: a refused start fails at once.
    config.server.check_exposure()?;
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::start(
        engine_config(&config),
        metrics.engine(),
        crate::loader::loader(&config),
    )
    .map_err(|e| anyhow::anyhow!("cannot serve: {e}"))?;
    let (host, port) = (config.server.host.clone(), config.server.port);
    let state = AppState::new(engine.clone(), config, metrics);
    let runtime = tokio::runtime::Runtime::new()?;
    let served = runtime.block_on(async {
        let listener = TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("binding {host}:{port}"))?;
        tracing::info!(address = %listener.local_addr()?, "listening");
        serve(listener, state, shutdown_signal()).await?;
        anyhow::Ok(())
    });
    stop_worker(&engine, served)
}

/// The engine's settings from the configuration.
pub fn engine_config(config: &Config) -> EngineConfig {
    EngineConfig {
        default_model: config.models.model_id.clone(),
        max_jobs: config.engine.max_jobs,
        idle_unload_after: Some(config.models.idle_unload_seconds)
            .filter(|&s| s > 0)
            .map(Duration::from_secs),
        max_model_bytes: Some(config.models.max_model_bytes).filter(|&b| b > 0),
        speaker_encoder: Some(config.speakers.encoder_path()),
        ..EngineConfig::default()
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then drains, aborts and
/// closes (steps 1–3 of the module). Returns once the server has stopped; the
/// worker is still running (stop it with [`Engine::stop`]).
pub async fn serve<F>(listener: TcpListener, state: AppState, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let drain = Duration::from_secs(state.config.server.drain_seconds);
    let (stop, stopped) = watch::channel(false);
    // A dead worker stops the server like a signal, and makes this return an error.
    let worker_died = state.engine.worker_died();
    let died = tokio::spawn(async move {
        let died = tokio::select! {
            () = shutdown => false,
            () = worker_died => true,
        };
        let _ = stop.send(true);
        died
    });
    let graceful = Drain {
        engine: state.engine.clone(),
        // Every slot is free before the first request.
        slots: [&state.permits, &state.uploads]
            .map(|s| (s.clone(), s.available_permits()))
            .to_vec(),
        deadline: drain,
    }
    .after(signalled(stopped.clone()));
    let limits = Limits {
        connections: Arc::new(Semaphore::new(state.config.server.max_connections)),
        timeouts: connection::Timeouts::of(&state.config.server),
    };
    let server = accept(listener, app(state), limits, graceful);
    let hard_stop = async move {
        signalled(stopped).await;
        tokio::time::sleep(drain + HARD_STOP_AFTER_DRAIN).await;
    };
    let served = tokio::select! {
        result = server => result,
        () = hard_stop => {
            tracing::warn!("drain deadline passed; closing what is left");
            Ok(())
        }
    };
    if died.is_finished() && died.await.unwrap_or(false) {
        return Err(std::io::Error::other(
            "the worker thread died; exiting so that the supervisor restarts the server",
        ));
    }
    served
}

/// What bounds the connections.
struct Limits {
    /// A slot per open connection (`server.max_connections`).
    connections: Arc<Semaphore>,
    timeouts: connection::Timeouts,
}

/// Accepts connections until `stop` resolves, then closes the listener, lets each
/// connection finish the request on it and waits for them all to close.
///
/// Past `server.max_connections`, the loop stops accepting until one closes: new
/// connections wait in the kernel's listen backlog (no descriptor of ours) and are
/// served late, not reset; the timeouts guarantee that slots come free.
async fn accept(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let closing = tokio::sync::watch::Sender::new(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = limits.connections.clone().acquire_owned() => {
                slot.expect("the connection semaphore is never closed")
            }
        };
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    pause_after(e).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection::serve(
            stream,
            router.clone(),
            limits.timeouts,
            (graceful.watcher(), closing.subscribe()),
            slot,
        ));
    }
    drop(listener);
    closing.send_replace(true);
    graceful.shutdown().await;
    Ok(())
}

/// An error of one connection (it went away before its accept) is no pause; any
/// other (out of file descriptors) waits [`ACCEPT_ERROR_PAUSE`].
async fn pause_after(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Resolves when the shutdown signal has come.
async fn signalled(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Steps 1 and 2 of the graceful stop (the only drain loop).
struct Drain {
    engine: Engine,
    /// The admitted requests' slots (transcription permits, upload slots), each with
    /// its capacity: none is held when the drain is done.
    slots: Vec<(Arc<Semaphore>, usize)>,
    deadline: Duration,
}

impl Drain {
    /// On `signal`, the engine stops admitting; this waits until every request
    /// slot is back (the requests admitted are answered) or the deadline passes,
    /// then aborts what is left. The server closes its listener when this returns.
    async fn after(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.engine.begin_drain();
        let until = Instant::now() + self.deadline;
        while self.busy() && Instant::now() < until {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        if self.busy() {
            tracing::warn!("drain deadline passed; failing the requests still running");
            self.engine.abort();
        }
    }

    fn busy(&self) -> bool {
        self.slots
            .iter()
            .any(|(slots, capacity)| slots.available_permits() < *capacity)
    }
}

/// The last step: gives the worker [`WORKER_STOP_GRACE`] to stop, else `_exit`s.
fn stop_worker(engine: &Engine, served: anyhow::Result<()>) -> anyhow::Result<()> {
    // Whatever was admitted has been answered or failed by now (the drain).
    if !engine.stop(WORKER_STOP_GRACE) {
        // The worker is inside a step (one MLX evaluation, which cannot be cut); its
        // jobs were already answered. Returning from main would run MLX's static
        // destructors under it, so leave at once instead.
        tracing::warn!(
            "the worker is still inside a step; exiting without waiting for it to finish"
        );
        if let Err(e) = &served {
            eprintln!("Error: {e:#}");
        }
        let code = i32::from(served.is_err());
        // SAFETY: `_exit` ends the process without running any destructor or handler.
        unsafe { libc::_exit(code) };
    }
    tracing::info!("stopped");
    served
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests;
