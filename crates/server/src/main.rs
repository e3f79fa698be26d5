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
    Serve,
    /// Transcribe audio files and print or write the results.
    Transcribe(TranscribeArgs),
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
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => bail!("`steno serve` is not built yet; use `steno transcribe`"),
        Command::Transcribe(args) => transcribe(args),
    }
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
