//! `steno`: `steno transcribe FILE…` runs Whisper on files; `steno serve` (the
//! default) serves the OpenAI-compatible API ([`steno_server::serve::run`]). This
//! file only parses arguments.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use steno_server::config::{
    embedded_model_dir, embedded_speaker_encoder, Config, LogFormat, Override,
};
use steno_server::formats::{render, Format, Rendering};
use steno_server::options::transcribe_options;
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
    DecodeChild(steno_server::decoder::ChildLimits),
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
    /// Jobs in flight on the worker before 429 [engine.max_jobs]; `--queue-capacity`
    /// is its deprecated alias.
    #[arg(long, alias = "queue-capacity")]
    max_jobs: Option<usize>,
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
        add("engine.max_jobs", self.max_jobs.map(int));
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
    /// txt, vtt, srt, tsv, json, verbose_json, diarized_json or rttm (the last two
    /// diarize).
    #[arg(long, default_value = "txt")]
    format: Format,
    /// Label who speaks when (steno-speaker's voice encoder, from the project's
    /// assets): diarized_json's speakers, rttm's turns.
    #[arg(long)]
    diarize: bool,
    /// At least this many speakers (with --diarize).
    #[arg(long)]
    min_speakers: Option<usize>,
    /// At most this many speakers (with --diarize).
    #[arg(long)]
    max_speakers: Option<usize>,
    /// sequential (OpenAI's algorithm) or parallel (windows cut at pauses, decoded in
    /// parallel; `batched`, its former name, is still accepted).
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
    /// A term to favour (a name, a product); repeat for several (the API's keywords[]).
    #[arg(long = "keyword")]
    keywords: Vec<String>,
    /// The logit bias of the keywords' tokens in a keyword pass (0 to 4; 0: its prompt only).
    #[arg(long, default_value_t = steno_whisper::transcribe::DEFAULT_KEYWORD_BIAS)]
    keyword_bias: f32,
    /// Beam search with this many beams at temperature 0 (1: greedy; at most 16).
    #[arg(long, default_value_t = 1)]
    beam_size: usize,
    /// Rows sampled at each fallback temperature, the likeliest kept (1 to 16).
    #[arg(long, default_value_t = 1)]
    best_of: usize,
    /// Write FILE.<ext> into this directory instead of printing.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Decoder steps compiled over static caches (`decoding.compiled_step`).
    #[arg(long, value_enum, default_value = "auto")]
    compiled_step: steno_server::config::CompiledStep,
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
        Command::DecodeChild(limits) => Ok(steno_server::decoder::run_child(&limits)?),
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
    steno_server::serve::run(config)
}

/// `steno transcribe`: every file in one batched run of the model (its windows share
/// decoder steps, up to `--max-batch-rows` rows), then each result printed or
/// written. A file that fails is named on stderr and the exit code is 1.
fn transcribe(args: TranscribeArgs) -> Result<()> {
    args.compiled_step.apply();
    let whisper = load_model(args.model.as_deref())?;
    let audio = decode_files(&args.files)?;
    let diarize = args.diarize || args.format.needs_speakers();
    // Diarization splits segments at the word where the speaker changes.
    let options = transcribe_options(
        args.task,
        args.language.clone(),
        args.prompt.clone(),
        args.temperature,
        args.mode,
        args.word_timestamps || diarize,
    );
    let options = TranscribeOptions {
        keywords: args.keywords.clone(),
        keyword_bias: args.keyword_bias,
        beam_size: args.beam_size,
        best_of: args.best_of,
        ..options
    };
    let inputs: Vec<(&[f32], TranscribeOptions)> = audio
        .iter()
        .map(|a| (a.as_slice(), options.clone()))
        .collect();
    let started = Instant::now();
    let results = whisper.transcribe_many(&inputs, args.max_batch_rows);
    let audio_seconds: f64 = audio.iter().map(|a| steno_audio::seconds(a.len())).sum();
    tracing::info!(
        audio_seconds,
        wall_seconds = started.elapsed().as_secs_f64(),
        "transcribed"
    );
    let mut speakers = if diarize {
        speaker_turns(&args, &audio)?
    } else {
        vec![None; audio.len()]
    };
    let mut failed = false;
    for ((file, result), speakers) in args.files.iter().zip(results).zip(speakers.drain(..)) {
        match result {
            Ok(transcript) => {
                let rendering = Rendering {
                    words: args.word_timestamps,
                    speakers,
                    recording: file
                        .file_stem()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into(),
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

/// Each file's speaker turns, from the voice encoder of the project's assets. The CLI
/// runs steno-speaker's `diarize` itself, as it runs Whisper itself
/// (`transcribe_many`): the engine, which interleaves it with decoder steps, is the
/// server's.
fn speaker_turns(
    args: &TranscribeArgs,
    audio: &[Vec<f32>],
) -> Result<Vec<Option<Vec<steno_speaker::SpeakerTurn>>>> {
    let path = embedded_speaker_encoder();
    let encoder = steno_speaker::VoiceEncoder::load(&path)
        .with_context(|| format!("loading the voice encoder {}", path.display()))?;
    let options = steno_speaker::DiarizeOptions {
        min_speakers: args.min_speakers,
        max_speakers: args.max_speakers,
        known: Vec::new(),
    };
    let started = Instant::now();
    let turns = audio
        .iter()
        .map(|samples| Ok(Some(steno_speaker::diarize(&encoder, samples, &options)?)))
        .collect::<Result<Vec<_>>>()?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "diarized");
    Ok(turns)
}

/// The model of `--model`, or the embedded tiny.en.
fn load_model(model: Option<&str>) -> Result<Whisper> {
    let model = model.map_or_else(
        || embedded_model_dir().display().to_string(),
        str::to_string,
    );
    let started = Instant::now();
    let hub = steno_whisper::hub::HubOptions::from_env();
    let whisper = Whisper::load_source(&model, &hub, &LoadOptions::default())
        .with_context(|| format!("loading model {model}"))?;
    tracing::info!(%model, seconds = started.elapsed().as_secs_f64(), "model loaded");
    Ok(whisper)
}

/// Each file's samples (16 kHz mono), in order; the first that fails stops the run.
fn decode_files(files: &[PathBuf]) -> Result<Vec<Vec<f32>>> {
    files
        .iter()
        .map(|file| {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let hint = file.extension().and_then(|e| e.to_str());
            let decoded = steno_audio::decode(&bytes, hint, &steno_audio::Limits::default())
                .with_context(|| format!("decoding {}", file.display()))?;
            Ok(decoded.samples)
        })
        .collect()
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
