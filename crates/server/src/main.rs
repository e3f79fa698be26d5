//! `steno`: `steno transcribe FILE…` runs Whisper on files; `steno serve` (the
//! default) will serve the OpenAI-compatible API.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use steno_server::config::{Config, LogFormat, Override};
use steno_server::formats::{render, Format, Rendering};
use steno_whisper::{LoadOptions, Mode, Task, TranscribeOptions, Whisper};

#[derive(Parser)]
#[command(
    name = "steno",
    version,
    about = "OpenAI-compatible speech-to-text on MLX"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible HTTP API (the default).
    Serve(ServeArgs),
    /// Transcribe audio files and print or write the results.
    Transcribe(TranscribeArgs),
    /// Print the OpenAPI document (what `make openapi` commits as openapi/openapi.json).
    Openapi,
    /// Decode one upload from stdin to stdout (the server runs this per upload; see
    /// steno_server::decoder).
    #[command(name = steno_server::decoder::SUBCOMMAND, hide = true)]
    DecodeChild,
}

/// Flags override `--config FILE` and `STENO_*` variables, which override the
/// defaults in config/default.toml (every key documented there).
#[derive(clap::Args, Default)]
struct ServeArgs {
    /// A TOML file with any keys of config/default.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [server.host].
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on; 0 picks a free one [server.port].
    #[arg(long)]
    port: Option<u16>,
    /// Model directory or Hugging Face repo id of the default model [models.model].
    #[arg(long)]
    model: Option<String>,
    /// Id clients use for the default model [models.model_id].
    #[arg(long)]
    model_id: Option<String>,
    /// An accepted API key; repeat for several [server.api_keys].
    #[arg(long = "api-key")]
    api_keys: Vec<String>,
    /// Rows decoded together [engine.max_batch_rows].
    #[arg(long)]
    max_batch_rows: Option<usize>,
    /// Requests admitted to the worker before 429 [engine.queue_capacity].
    #[arg(long)]
    queue_capacity: Option<usize>,
    /// Requests handled at once before 429 [server.max_concurrent_requests].
    #[arg(long)]
    max_concurrent_requests: Option<usize>,
    /// Largest upload in bytes [limits.max_upload_bytes].
    #[arg(long)]
    max_upload_bytes: Option<usize>,
    /// text or json [server.log_format].
    #[arg(long)]
    log_format: Option<String>,
}

impl ServeArgs {
    /// The flags given, as configuration overrides.
    fn overrides(&self) -> Vec<Override> {
        use toml::Value;
        let int = |v: usize| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
        let mut out: Vec<Override> = Vec::new();
        let mut add = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                out.push((key.to_string(), v));
            }
        };
        add("server.host", self.host.clone().map(Value::String));
        add("server.port", self.port.map(|p| Value::Integer(p.into())));
        add("models.model", self.model.clone().map(Value::String));
        add("models.model_id", self.model_id.clone().map(Value::String));
        add(
            "server.api_keys",
            (!self.api_keys.is_empty())
                .then(|| Value::Array(self.api_keys.iter().cloned().map(Value::String).collect())),
        );
        add("engine.max_batch_rows", self.max_batch_rows.map(int));
        add("engine.queue_capacity", self.queue_capacity.map(int));
        add(
            "server.max_concurrent_requests",
            self.max_concurrent_requests.map(int),
        );
        add("limits.max_upload_bytes", self.max_upload_bytes.map(int));
        add(
            "server.log_format",
            self.log_format.clone().map(Value::String),
        );
        out
    }
}

#[derive(clap::Args)]
struct TranscribeArgs {
    /// Audio files (any container the audio crate decodes).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Model: a directory (CTranslate2, mlx-community or Hugging Face layout) or a
    /// Hugging Face repo id `org/name[@revision]` (cache, HF_TOKEN, HF_HUB_OFFLINE).
    #[arg(long, env = "STENO_MODEL")]
    model: Option<String>,
    /// Spoken language (code or name); detected when omitted on multilingual models.
    #[arg(long)]
    language: Option<String>,
    #[arg(long, default_value = "transcribe")]
    task: Task,
    /// txt, vtt, srt, tsv, json or verbose_json.
    #[arg(long, default_value = "txt")]
    format: Format,
    /// sequential (OpenAI's algorithm) or batched (windows cut at pauses, decoded in parallel).
    #[arg(long, default_value = "sequential")]
    mode: Mode,
    /// Text to condition the first window on.
    #[arg(long)]
    prompt: Option<String>,
    /// Sampling temperature; 0 enables the fallback ladder 0, 0.2 … 1.0.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Rows (30 s windows) decoded together in one batch.
    #[arg(long, default_value_t = 16)]
    max_batch_rows: usize,
    /// Word-level timestamps (in verbose_json, and for subtitle timing).
    #[arg(long)]
    word_timestamps: bool,
    /// Write FILE.<ext> into this directory instead of printing.
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args),
        Command::Transcribe(args) => {
            init_logging(LogFormat::Text);
            transcribe(args)
        }
        Command::Openapi => {
            print!("{}", steno_server::routes::ApiDoc::json());
            Ok(())
        }
        Command::DecodeChild => {
            steno_server::decoder::no_core_dumps();
            steno_audio::child::serve(std::io::stdin().lock(), std::io::stdout().lock())?;
            Ok(())
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars(), args.overrides())?;
    init_logging(config.server.log_format);
    tracing::info!("effective configuration:\n{}", config.redacted());
    let metrics = Arc::new(steno_engine::Metrics::new());
    let engine_config = steno_engine::EngineConfig {
        default_model: config.models.model_id.clone(),
        max_jobs: config.engine.queue_capacity,
        idle_unload_after: Some(config.models.idle_unload_seconds)
            .filter(|&s| s > 0)
            .map(Duration::from_secs),
        max_model_bytes: Some(config.models.max_model_bytes).filter(|&b| b > 0),
    };
    let engine = steno_engine::Engine::start(engine_config, metrics, loader(&config))
        .map_err(|e| anyhow::anyhow!("cannot serve: {e}"))?;
    let drain = Duration::from_secs(config.server.drain_seconds);
    let (host, port) = (config.server.host.clone(), config.server.port);
    let state = steno_server::routes::AppState::new(engine.clone(), config);
    let permits = state.permits.clone();
    let runtime = tokio::runtime::Runtime::new()?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("binding {host}:{port}"))?;
        tracing::info!(address = %listener.local_addr()?, "listening");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let signalled = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        // On the signal: new requests get 503 (and /health 503) while admitted ones
        // finish, for up to `drain`; then the jobs still running fail with 503 (their
        // clients get that answer before the connections close) and the listener closes.
        let draining = engine.clone();
        let capacity = permits.available_permits();
        let graceful = {
            let signal = signalled(stopped.clone());
            async move {
                signal.await;
                draining.begin_drain();
                let until = Instant::now() + drain;
                while permits.available_permits() < capacity && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if permits.available_permits() < capacity {
                    tracing::warn!("drain deadline passed; failing the requests still running");
                    draining.abort();
                }
            }
        };
        let server = axum::serve(listener, steno_server::routes::app(state))
            .with_graceful_shutdown(graceful)
            .into_future();
        let hard_stop = {
            let signal = signalled(stopped);
            async move {
                signal.await;
                tokio::time::sleep(drain + Duration::from_secs(1)).await;
            }
        };
        tokio::select! {
            result = server => result?,
            () = hard_stop => tracing::warn!("drain deadline passed; closing what is left"),
        }
        anyhow::Ok(())
    });
    // Whatever was admitted has been answered or failed by now (the drain above).
    if !engine.shutdown(Duration::ZERO, WORKER_STOP_GRACE) {
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

/// How long the process waits, after the drain, for the worker to leave its loop.
const WORKER_STOP_GRACE: Duration = Duration::from_millis(500);

/// Loads configured models on the worker: the default (or the embedded tiny.en),
/// and extra ones on first use.
fn loader(config: &Config) -> steno_engine::Loader {
    let config = config.clone();
    let cache_limit = config.engine.mlx_cache_limit_bytes;
    let max_rows = config.engine.max_batch_rows;
    steno_whisper::runtime::set_cpu_lanes(config.engine.cpu_lanes);
    Box::new(move |id: &str| {
        if cache_limit > 0 {
            steno_whisper::runtime::set_cache_limit(cache_limit).map_err(|e| e.to_string())?;
        }
        let source = config
            .model_source(id)
            .map(str::to_string)
            .unwrap_or_else(|| default_model().display().to_string());
        let started = Instant::now();
        let hub = steno_whisper::hub::HubOptions::from_env();
        let whisper = Whisper::load_source(&source, &hub, &LoadOptions::default())
            .map_err(|e| format!("loading model {id} from {source}: {e}"))?;
        tracing::info!(model = id, %source, seconds = started.elapsed().as_secs_f64(), "weights read");
        Ok(
            Box::new(steno_engine::WhisperBackend::new(whisper, max_rows))
                as Box<dyn steno_engine::Backend>,
        )
    })
}

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

fn default_model() -> PathBuf {
    let assets = std::env::var_os("STENO_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/steno/assets")
        });
    assets.join("models/tiny.en-ct2")
}

fn transcribe(args: TranscribeArgs) -> Result<()> {
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| default_model().display().to_string());
    let started = Instant::now();
    let hub = steno_whisper::hub::HubOptions::from_env();
    let whisper = Whisper::load_source(&model, &hub, &LoadOptions::default())
        .with_context(|| format!("loading model {model}"))?;
    tracing::info!(%model, seconds = started.elapsed().as_secs_f64(), "model loaded");

    let mut audio = Vec::with_capacity(args.files.len());
    for file in &args.files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let hint = file.extension().and_then(|e| e.to_str());
        let decoded = steno_audio::decode(&bytes, hint, &steno_audio::Limits::default())
            .with_context(|| format!("decoding {}", file.display()))?;
        audio.push(decoded.samples);
    }
    let temperatures = if args.temperature > 0.0 {
        vec![args.temperature]
    } else {
        TranscribeOptions::default().temperatures
    };
    let options = TranscribeOptions {
        task: args.task,
        language: args.language.clone(),
        initial_prompt: args.prompt.clone(),
        mode: args.mode,
        temperatures,
        word_timestamps: args.word_timestamps,
        ..TranscribeOptions::default()
    };
    let inputs: Vec<(&[f32], TranscribeOptions)> = audio
        .iter()
        .map(|a| (a.as_slice(), options.clone()))
        .collect();
    let started = Instant::now();
    let results = whisper.transcribe_many(&inputs, args.max_batch_rows);
    let audio_seconds: f64 = audio.iter().map(|a| a.len() as f64 / 16_000.0).sum();
    tracing::info!(
        audio_seconds,
        wall_seconds = started.elapsed().as_secs_f64(),
        "transcribed"
    );
    let mut failed = false;
    for (file, result) in args.files.iter().zip(results) {
        match result {
            Ok(transcript) => {
                let rendering = Rendering {
                    words: args.word_timestamps,
                    ..Rendering::new(args.format, args.task)
                };
                let rendered = render(&transcript, &rendering);
                write_output(file, &rendered, args.format, args.output_dir.as_deref())?;
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                failed = true;
            }
        }
    }
    if failed {
        bail!("some files failed");
    }
    Ok(())
}

fn write_output(file: &Path, rendered: &str, format: Format, dir: Option<&Path>) -> Result<()> {
    match dir {
        None => print!("{rendered}"),
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let stem = file.file_stem().unwrap_or_default().to_string_lossy();
            let path = dir.join(format!("{stem}.{}", format.extension()));
            std::fs::write(&path, rendered)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
