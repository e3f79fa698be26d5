//! `steno`: `steno transcribe FILE…` runs Whisper on files; `steno serve` (the
//! default) will serve the OpenAI-compatible API.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use steno_server::formats::{render, Format};
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
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "STENO_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the address is logged).
    #[arg(long, env = "STENO_PORT", default_value_t = 8000)]
    port: u16,
    /// Model directory or Hugging Face repo id (default: tiny.en from the test assets).
    #[arg(long, env = "STENO_MODEL")]
    model: Option<String>,
    /// Model id clients send; `whisper-1` is always accepted too.
    #[arg(long, env = "STENO_MODEL_ID", default_value = "whisper-tiny.en")]
    model_id: String,
    /// Rows (30 s windows) decoded together.
    #[arg(long, env = "STENO_MAX_BATCH_ROWS", default_value_t = 16)]
    max_batch_rows: usize,
    /// Requests waiting beyond those being decoded before new ones get 429.
    #[arg(long, env = "STENO_QUEUE_CAPACITY", default_value_t = 64)]
    queue_capacity: usize,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli
        .command
        .unwrap_or(Command::Serve(ServeArgs::parse_defaults()))
    {
        Command::Serve(args) => serve(args),
        Command::Transcribe(args) => transcribe(args),
    }
}

impl ServeArgs {
    /// The defaults (and environment) when `steno` runs without a subcommand.
    fn parse_defaults() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: ServeArgs,
        }
        Only::parse_from(["steno"]).args
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| default_model().display().to_string());
    let started = Instant::now();
    let source = model.clone();
    let engine = steno_engine::Engine::start(
        steno_engine::EngineConfig {
            queue_capacity: args.queue_capacity,
            max_batch_rows: args.max_batch_rows,
        },
        move || {
            let hub = steno_whisper::hub::HubOptions::from_env();
            Whisper::load_source(&source, &hub, &LoadOptions::default()).map_err(|e| e.to_string())
        },
    )
    .map_err(|e| anyhow::anyhow!("loading model {model}: {e}"))?;
    tracing::info!(%model, seconds = started.elapsed().as_secs_f64(), "model loaded");
    let state = steno_server::routes::AppState {
        engine: engine.clone(),
        model_ids: vec!["whisper-1".to_string(), args.model_id.clone()],
        limits: steno_audio::Limits::default(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("binding {}:{}", args.host, args.port))?;
        tracing::info!(address = %listener.local_addr()?, "listening");
        axum::serve(listener, steno_server::routes::app(state))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        anyhow::Ok(())
    })?;
    engine.shutdown();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
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
                let rendered = render(&transcript, args.format, args.task);
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
