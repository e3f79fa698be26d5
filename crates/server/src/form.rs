//! Reads OpenAI's multipart form for `/v1/audio/{transcriptions,translations}` into
//! checked values. Numbers and booleans arrive as strings; list fields come as
//! repeated `name[]` (or `name`) parts; the first invalid field is the error. Every
//! part is read chunk by chunk: a text field is refused as soon as it passes
//! [`MAX_FIELD_BYTES`], the prompt keeps only its end, unknown fields are skipped unread.

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::Multipart;
use steno_whisper::{Mode, Task, WhisperError};

use crate::error::ApiError;
use crate::formats::Format;

/// OpenAI's default rate for raw `audio/pcm` uploads.
const DEFAULT_PCM_RATE: u32 = 24_000;

/// Whisper conditions on at most the last 223 tokens of a prompt; a token spans at most a
/// few dozen characters, so this many trailing characters always hold them (in practice
/// ~4 characters a token). Longer prompts are cut to their end before anything tokenizes
/// them: a 20 MB prompt otherwise held the model's worker thread for most of a minute.
pub const MAX_PROMPT_CHARS: usize = 4096;

/// Longest value of any other text field, in bytes. OpenAI's values are a few dozen bytes;
/// a field is read chunk by chunk and refused (400) as soon as it passes this, so a
/// multi-megabyte field costs no more memory than this.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Most items a list field (`timestamp_granularities`, `include`) may hold, over all its
/// parts: OpenAI's lists have two possible values and one.
pub const MAX_LIST_ITEMS: usize = 8;

/// Most known speakers (`known_speaker_names[]` with `known_speaker_references[]`):
/// OpenAI's limit.
pub const MAX_KNOWN_SPEAKERS: usize = 4;

/// Longest known speaker name, in characters (OpenAI asks for short identifiers such
/// as `agent`).
const MAX_SPEAKER_NAME_CHARS: usize = 64;

/// Longest `known_speaker_references[]` data URL, in bytes: a 10 s clip of 48 kHz
/// stereo 16-bit WAV is 1.9 MB, 2.6 MB in base64. All of them together are at most
/// [`MAX_KNOWN_SPEAKERS`] times this.
pub const MAX_REFERENCE_BYTES: usize = 3 * 1024 * 1024;

/// Most `keywords[]`, and the longest one in characters: the conditioning prompt keeps
/// Whisper's last 223 tokens, which a handful of names fills; every keyword also costs
/// a prefix check per decoder step.
pub const MAX_KEYWORDS: usize = 16;
const MAX_KEYWORD_CHARS: usize = 48;

/// Most `languages[]`.
const MAX_LANGUAGES: usize = 16;

/// Longest client value quoted back in an error message.
const MAX_ECHO_CHARS: usize = 64;

/// Longest model name looked up; longer ones are unknown models (404).
const MAX_MODEL_CHARS: usize = 256;

#[derive(Debug)]
pub struct Upload {
    pub bytes: Vec<u8>,
    pub filename: Option<String>,
    pub content_type: Option<String>,
}

impl Upload {
    /// Raw s16le PCM, which has no header to sniff: only the part's type says so.
    pub fn is_raw_pcm(&self) -> bool {
        let pcm_type = self
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("audio/pcm") || t.starts_with("audio/l16"));
        let pcm_name = self
            .filename
            .as_deref()
            .is_some_and(|f| f.to_ascii_lowercase().ends_with(".pcm"));
        pcm_type || pcm_name
    }

    /// The file extension, a hint for the container sniffer.
    pub fn extension(&self) -> Option<String> {
        let name = self.filename.as_deref()?;
        let (_, ext) = name.rsplit_once('.')?;
        Some(ext.to_ascii_lowercase())
    }
}

#[derive(Debug)]
pub struct AudioForm {
    pub file: Upload,
    pub model: String,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub format: Format,
    /// `None`: greedy with the fallback ladder.
    pub temperature: Option<f32>,
    pub segment_timestamps: bool,
    pub word_timestamps: bool,
    /// Whether `timestamp_granularities` was given at all.
    pub granularities_given: bool,
    pub logprobs: bool,
    pub stream: bool,
    pub mode: Option<Mode>,
    pub sample_rate: u32,
    /// `chunking_strategy` was given (diarizing models need it above 30 s).
    pub chunked: bool,
    /// `known_speaker_names[]` paired with `known_speaker_references[]`.
    pub known_speakers: Vec<KnownSpeakerClip>,
    /// Steno's extensions: bounds on the number of speakers diarization finds.
    pub min_speakers: Option<usize>,
    pub max_speakers: Option<usize>,
    /// `keywords[]`: terms to favour.
    pub keywords: Vec<String>,
    /// `languages[]`: the languages to expect, as codes.
    pub languages: Vec<String>,
    /// Steno's extension `beam_size`: beams of the temperature-0 attempt (`None`: the
    /// server's `decoding.beam_size`).
    pub beam_size: Option<usize>,
}

/// Longest audio a diarizing model takes without `chunking_strategy`, in seconds.
pub const DIARIZE_UNCHUNKED_SECONDS: f64 = 30.0;

impl AudioForm {
    /// OpenAI's refusals for a diarizing model (`model`, as the client named it): only
    /// json, text and diarized_json; no prompt, no logprobs, no timestamp granularities.
    /// The response_format message is OpenAI's word for word; the others follow the
    /// form of its "Unsupported parameter" errors.
    pub fn check_diarizing(&self, model: &str) -> Result<(), ApiError> {
        if !matches!(
            self.format,
            Format::Json | Format::Text | Format::DiarizedJson
        ) {
            return Err(ApiError::invalid(
                format!(
                    "response_format '{}' is not compatible with model '{}'. Use 'json' or \
                     'text' instead.",
                    self.format.name(),
                    echo(model)
                ),
                Some("response_format"),
            )
            .with_code("unsupported_value"));
        }
        let unsupported = [
            (self.prompt.is_some(), "prompt"),
            (self.logprobs, "include"),
            (self.granularities_given, "timestamp_granularities"),
        ];
        match unsupported.into_iter().find(|(given, _)| *given) {
            Some((_, param)) => Err(ApiError::invalid(
                format!(
                    "Unsupported parameter: '{param}' is not supported with diarization models."
                ),
                Some(param),
            )
            .with_code("unsupported_parameter")),
            None => Ok(()),
        }
    }

    /// A diarizing model needs `chunking_strategy` for audio longer than
    /// [`DIARIZE_UNCHUNKED_SECONDS`] (OpenAI's message).
    pub fn check_diarized_length(&self, audio_seconds: f64) -> Result<(), ApiError> {
        if self.chunked || audio_seconds <= DIARIZE_UNCHUNKED_SECONDS {
            return Ok(());
        }
        Err(ApiError::invalid(
            "chunking_strategy is required for diarization models",
            Some("chunking_strategy"),
        )
        .with_code("invalid_value"))
    }
}

/// A known speaker: the name to label them with and a 2–10 s clip of their voice, still
/// in its container (decoded like the upload, by the decoder child).
#[derive(Debug)]
pub struct KnownSpeakerClip {
    pub name: String,
    pub clip: Upload,
}

/// Reads and checks the whole form; `max_file_bytes` bounds the file part as it
/// streams in (413 past it). Fields are checked in the order they arrive, so the first
/// invalid one is the error.
pub async fn read(
    form: &mut Multipart,
    task: Task,
    max_file_bytes: usize,
) -> Result<AudioForm, ApiError> {
    let mut fields = Fields::new(task);
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            if fields.file.is_some() {
                return Err(ApiError::invalid(
                    "Only one file may be uploaded.",
                    Some("file"),
                ));
            }
            fields.file = Some(read_file(&mut field, max_file_bytes).await?);
            continue;
        }
        let value = match param_of(&name) {
            Some("prompt") => read_prompt(&mut field).await?,
            Some(param @ "known_speaker_references") => {
                read_text_at_most(&mut field, param, MAX_REFERENCE_BYTES).await?
            }
            Some(param) => read_text(&mut field, param).await?,
            // Ignored (see `Fields::accept`): never read, multer skips its bytes.
            None => continue,
        };
        fields.accept(&name, value.trim())?;
    }
    fields.finish()
}

/// The form as read so far: each text field checked as it arrives, the required ones
/// checked at the end.
#[derive(Debug)]
struct Fields {
    task: Task,
    file: Option<Upload>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    format: Format,
    temperature: Option<f32>,
    segment_timestamps: bool,
    word_timestamps: bool,
    granularities_given: bool,
    logprobs: bool,
    stream: bool,
    /// `chunking_strategy` was given: parallel mode unless `mode` says otherwise.
    chunked: bool,
    mode: Option<Mode>,
    sample_rate: u32,
    /// Items of `timestamp_granularities` and of `include` so far, over all parts.
    granularity_items: usize,
    include_items: usize,
    speaker_names: Vec<String>,
    speaker_references: Vec<Upload>,
    min_speakers: Option<usize>,
    max_speakers: Option<usize>,
    keywords: Vec<String>,
    languages: Vec<String>,
    beam_size: Option<usize>,
}

impl Fields {
    fn new(task: Task) -> Self {
        Self {
            task,
            file: None,
            model: None,
            language: None,
            prompt: None,
            format: Format::Json,
            temperature: None,
            segment_timestamps: false,
            word_timestamps: false,
            granularities_given: false,
            logprobs: false,
            stream: false,
            chunked: false,
            mode: None,
            sample_rate: DEFAULT_PCM_RATE,
            granularity_items: 0,
            include_items: 0,
            speaker_names: Vec::new(),
            speaker_references: Vec::new(),
            min_speakers: None,
            max_speakers: None,
            keywords: Vec::new(),
            languages: Vec::new(),
            beam_size: None,
        }
    }

    /// One text field (`value` trimmed). Unknown fields (and the
    /// `chunking_strategy[...]` tuning knobs) are ignored, as OpenAI does, for forward
    /// compatibility.
    fn accept(&mut self, name: &str, value: &str) -> Result<(), ApiError> {
        let Some(param) = param_of(name) else {
            return Ok(());
        };
        match param {
            "model" => self.model = Some(value.to_string()).filter(|m| !m.is_empty()),
            // Translation always ends in English: the field means nothing there.
            "language" if self.task == Task::Transcribe && !value.is_empty() => {
                self.language = Some(language(value)?);
            }
            "prompt" if !value.is_empty() => {
                self.prompt = Some(tail(value, MAX_PROMPT_CHARS).to_string());
            }
            "response_format" => self.format = response_format(value)?,
            "temperature" => self.temperature = temperature(value)?,
            "timestamp_granularities" => {
                self.granularities_given = true;
                for granularity in list_items(value, &mut self.granularity_items, param)? {
                    match timestamp_granularity(&granularity)? {
                        Granularity::Word => self.word_timestamps = true,
                        Granularity::Segment => self.segment_timestamps = true,
                    }
                }
            }
            "include" => {
                for item in list_items(value, &mut self.include_items, param)? {
                    include(&item)?;
                    self.logprobs = true;
                }
            }
            "stream" => self.stream = parse_bool(value, "stream")?,
            "chunking_strategy" => {
                self.chunked = chunking_strategy(value)?;
            }
            "mode" => self.mode = Some(mode(value)?),
            "sample_rate" => self.sample_rate = sample_rate(value)?,
            _ => self.accept_speech_field(param, value)?,
        }
        Ok(())
    }

    /// The fields of OpenAI's newest models and of diarization.
    fn accept_speech_field(&mut self, param: &'static str, value: &str) -> Result<(), ApiError> {
        match param {
            "known_speaker_names" => {
                let mut count = self.speaker_names.len();
                for name in list_items_at_most(value, &mut count, MAX_KNOWN_SPEAKERS, param)? {
                    self.speaker_names.push(speaker_name(&name)?);
                }
            }
            "known_speaker_references" => {
                let mut count = self.speaker_references.len();
                for url in list_items_at_most(value, &mut count, MAX_KNOWN_SPEAKERS, param)? {
                    self.speaker_references.push(speaker_reference(&url)?);
                }
            }
            "min_speakers" | "max_speakers" => {
                let bound = Some(speaker_count(value, param)?);
                match param {
                    "min_speakers" => self.min_speakers = bound,
                    _ => self.max_speakers = bound,
                }
            }
            "keywords" => {
                let mut count = self.keywords.len();
                for item in list_items_at_most(value, &mut count, MAX_KEYWORDS, param)? {
                    self.keywords.extend(keyword(&item)?);
                }
            }
            "languages" if self.task == Task::Transcribe => {
                let mut count = self.languages.len();
                for item in list_items_at_most(value, &mut count, MAX_LANGUAGES, param)? {
                    self.languages.push(expected_language(&item)?);
                }
            }
            "beam_size" => self.beam_size = Some(beam_size(value)?),
            _ => {}
        }
        Ok(())
    }

    /// The checked form, once every part has been read.
    fn finish(self) -> Result<AudioForm, ApiError> {
        let file = self.file.ok_or_else(|| {
            ApiError::invalid(
                "A file is required: upload the audio as the multipart field `file`.",
                Some("file"),
            )
        })?;
        let model = self.model.ok_or_else(|| {
            ApiError::invalid("A model is required (e.g. whisper-1).", Some("model"))
        })?;
        if model.chars().count() > MAX_MODEL_CHARS {
            return Err(ApiError::model_not_found(&echo(&model)));
        }
        let mode = match self.mode {
            None if self.chunked => Some(Mode::Parallel),
            mode => mode,
        };
        if self.task == Task::Translate && self.format == Format::DiarizedJson {
            return Err(ApiError::invalid(
                "response_format diarized_json is only available for transcriptions.",
                Some("response_format"),
            ));
        }
        let known_speakers = known_speakers(self.speaker_names, self.speaker_references)?;
        if let (Some(min), Some(max)) = (self.min_speakers, self.max_speakers) {
            if min > max {
                return Err(ApiError::invalid(
                    format!("min_speakers ({min}) must not be above max_speakers ({max})."),
                    Some("min_speakers"),
                ));
            }
        }
        Ok(AudioForm {
            file,
            model,
            language: self.language,
            prompt: self.prompt,
            format: self.format,
            temperature: self.temperature,
            segment_timestamps: self.segment_timestamps,
            word_timestamps: self.word_timestamps,
            granularities_given: self.granularities_given,
            logprobs: self.logprobs,
            stream: self.stream,
            mode,
            sample_rate: self.sample_rate,
            chunked: self.chunked,
            known_speakers,
            min_speakers: self.min_speakers,
            max_speakers: self.max_speakers,
            keywords: self.keywords,
            languages: self.languages,
            beam_size: self.beam_size,
        })
    }
}

/// Names paired with their clips, one for one.
fn known_speakers(
    names: Vec<String>,
    references: Vec<Upload>,
) -> Result<Vec<KnownSpeakerClip>, ApiError> {
    if names.len() != references.len() {
        return Err(ApiError::invalid(
            format!(
                "known_speaker_names and known_speaker_references must have the same number \
                 of items (got {} names and {} references).",
                names.len(),
                references.len()
            ),
            Some("known_speaker_references"),
        ));
    }
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != names.len() {
        return Err(ApiError::invalid(
            "known_speaker_names must not repeat a name.",
            Some("known_speaker_names"),
        ));
    }
    Ok(names
        .into_iter()
        .zip(references)
        .map(|(name, clip)| KnownSpeakerClip { name, clip })
        .collect())
}

/// The field a part's name stands for, as its errors name it (`param`); `None` for the
/// fields Steno ignores, as OpenAI does, for forward compatibility (among them the
/// `chunking_strategy[...]` tuning knobs).
fn param_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "model" => "model",
        "language" => "language",
        "prompt" => "prompt",
        "response_format" => "response_format",
        "temperature" => "temperature",
        "timestamp_granularities[]" | "timestamp_granularities" => "timestamp_granularities",
        "include[]" | "include" => "include",
        "stream" => "stream",
        "chunking_strategy" | "chunking_strategy[type]" => "chunking_strategy",
        "mode" => "mode",
        "sample_rate" => "sample_rate",
        "known_speaker_names[]" | "known_speaker_names" => "known_speaker_names",
        "known_speaker_references[]" | "known_speaker_references" => "known_speaker_references",
        "min_speakers" => "min_speakers",
        "max_speakers" => "max_speakers",
        "keywords[]" | "keywords" => "keywords",
        "languages[]" | "languages" => "languages",
        "beam_size" => "beam_size",
        _ => return None,
    })
}

/// A spoken language Whisper knows (code or English name), kept as given.
fn language(value: &str) -> Result<String, ApiError> {
    if steno_whisper::tokenizer::language_code(value).is_none() {
        return Err(ApiError::invalid(
            format!(
                "Unsupported language {:?}: expected an ISO-639-1 code such as \"en\".",
                echo(value)
            ),
            Some("language"),
        ));
    }
    Ok(value.to_string())
}

/// A known speaker's name: a short non-empty label.
fn speaker_name(value: &str) -> Result<String, ApiError> {
    let name = value.trim();
    if name.is_empty() || name.chars().count() > MAX_SPEAKER_NAME_CHARS {
        return Err(ApiError::invalid(
            format!(
                "Invalid known_speaker_names item {:?}: expected a name of 1 to \
                 {MAX_SPEAKER_NAME_CHARS} characters.",
                echo(name)
            ),
            Some("known_speaker_names"),
        ));
    }
    Ok(name.to_string())
}

/// A `data:<type>;base64,<bytes>` URL's bytes, with the type as the part's content type
/// (a hint for the sniffer) and its subtype as the file name's extension.
fn speaker_reference(value: &str) -> Result<Upload, ApiError> {
    use base64::Engine as _;
    let invalid = |why: &str| {
        ApiError::invalid(
            format!(
                "Invalid known_speaker_references item {:?}: {why}",
                echo(value)
            ),
            Some("known_speaker_references"),
        )
    };
    let expected = "expected a data URL such as data:audio/wav;base64,UklGR…";
    let rest = value
        .strip_prefix("data:")
        .ok_or_else(|| invalid(expected))?;
    let (head, payload) = rest.split_once(',').ok_or_else(|| invalid(expected))?;
    let media_type = head
        .strip_suffix(";base64")
        .ok_or_else(|| invalid(expected))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| invalid(&format!("its base64 does not decode ({e}).")))?;
    let media_type = media_type.split(';').next().unwrap_or_default().trim();
    let subtype = media_type.rsplit('/').next().unwrap_or_default();
    let extension = match subtype.trim_start_matches("x-") {
        "mpeg" => "mp3",
        other => other,
    };
    Ok(Upload {
        bytes,
        filename: (!extension.is_empty()).then(|| format!("reference.{extension}")),
        content_type: (!media_type.is_empty()).then(|| media_type.to_string()),
    })
}

/// A whole number from 1 to `max` for `param`, or its 400.
fn count(value: &str, param: &'static str, max: usize) -> Result<usize, ApiError> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                format!("Invalid {param} {:?}: expected 1 to {max}.", echo(value)),
                Some(param),
            )
        })
}

/// `min_speakers` / `max_speakers`: 1 to [`steno_speaker::MAX_SPEAKERS`].
fn speaker_count(value: &str, param: &'static str) -> Result<usize, ApiError> {
    count(value, param, steno_speaker::MAX_SPEAKERS)
}

/// `beam_size`: 1 (greedy) to [`steno_whisper::beam::MAX_CANDIDATES`]; each beam is a
/// row of the worker's batch.
fn beam_size(value: &str) -> Result<usize, ApiError> {
    count(value, "beam_size", steno_whisper::beam::MAX_CANDIDATES)
}

/// A keyword, trimmed; `None` for an empty one.
fn keyword(value: &str) -> Result<Option<String>, ApiError> {
    let keyword = value.trim();
    if keyword.chars().count() > MAX_KEYWORD_CHARS {
        return Err(ApiError::invalid(
            format!(
                "Invalid keywords item {:?}: at most {MAX_KEYWORD_CHARS} characters.",
                echo(keyword)
            ),
            Some("keywords"),
        ));
    }
    Ok((!keyword.is_empty()).then(|| keyword.to_string()))
}

/// A `languages[]` item: an ISO-639-1 code Whisper knows.
fn expected_language(value: &str) -> Result<String, ApiError> {
    match steno_whisper::tokenizer::language_code(value) {
        Some(code) if code == value => Ok(code.to_string()),
        _ => Err(ApiError::invalid(
            format!(
                "Unsupported language {:?} in languages: expected ISO-639-1 codes such as \"en\".",
                echo(value)
            ),
            Some("languages"),
        )),
    }
}

/// One of OpenAI's response formats, by its exact name.
fn response_format(value: &str) -> Result<Format, ApiError> {
    Format::from_openai_name(value).ok_or_else(|| {
        ApiError::invalid(
            format!(
                "Invalid response_format {:?}: expected {}.",
                echo(value),
                Format::openai_names()
            ),
            Some("response_format"),
        )
    })
}

/// 0 to 1; `None` for 0 (greedy with the fallback ladder).
fn temperature(value: &str) -> Result<Option<f32>, ApiError> {
    let t: f32 = value
        .parse()
        .ok()
        .filter(|t: &f32| (0.0..=1.0).contains(t))
        .ok_or_else(|| {
            ApiError::invalid(
                format!(
                    "Invalid temperature {:?}: expected a number from 0 to 1.",
                    echo(value)
                ),
                Some("temperature"),
            )
        })?;
    Ok((t > 0.0).then_some(t))
}

/// What `timestamp_granularities` may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Granularity {
    Word,
    Segment,
}

fn timestamp_granularity(item: &str) -> Result<Granularity, ApiError> {
    match item {
        "word" => Ok(Granularity::Word),
        "segment" => Ok(Granularity::Segment),
        other => Err(ApiError::invalid(
            format!(
                "Invalid timestamp granularity {:?}: expected word or segment.",
                echo(other)
            ),
            Some("timestamp_granularities"),
        )),
    }
}

/// An `include` item: only `logprobs` exists.
fn include(item: &str) -> Result<(), ApiError> {
    if item != "logprobs" {
        return Err(ApiError::invalid(
            format!(
                "Invalid include {:?}: only logprobs is supported.",
                echo(item)
            ),
            Some("include"),
        ));
    }
    Ok(())
}

/// Steno's `mode` extension; the message is the whisper crate's own.
fn mode(value: &str) -> Result<Mode, ApiError> {
    value.parse().map_err(|e: WhisperError| {
        let message = match e {
            WhisperError::InvalidOption(message) => message,
            other => other.to_string(),
        };
        ApiError::invalid(message, Some("mode"))
    })
}

/// The rate of a raw PCM upload: 8 to 192 kHz.
fn sample_rate(value: &str) -> Result<u32, ApiError> {
    value
        .parse()
        .ok()
        .filter(|r| (8_000..=192_000).contains(r))
        .ok_or_else(|| {
            ApiError::invalid(
                format!(
                    "Invalid sample_rate {:?}: expected 8000 to 192000.",
                    echo(value)
                ),
                Some("sample_rate"),
            )
        })
}

async fn read_file(field: &mut Field<'_>, max_bytes: usize) -> Result<Upload, ApiError> {
    let filename = field.file_name().map(str::to_string);
    let content_type = field.content_type().map(str::to_string);
    let bytes = read_bounded(field, max_bytes, || {
        ApiError::too_large(format!(
            "The file is larger than the {max_bytes}-byte upload limit."
        ))
    })
    .await?;
    Ok(Upload {
        bytes,
        filename,
        content_type,
    })
}

/// A part's bytes, chunk by chunk; the error from `too_long` as soon as they pass
/// `max_bytes`, with the rest of the part unread.
async fn read_bounded(
    field: &mut Field<'_>,
    max_bytes: usize,
    too_long: impl FnOnce() -> ApiError,
) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > max_bytes {
            return Err(too_long());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A text field's value (invalid UTF-8 replaced), at most [`MAX_FIELD_BYTES`].
async fn read_text(field: &mut Field<'_>, param: &'static str) -> Result<String, ApiError> {
    read_text_at_most(field, param, MAX_FIELD_BYTES).await
}

/// A text field's value (invalid UTF-8 replaced), at most `max_bytes`.
async fn read_text_at_most(
    field: &mut Field<'_>,
    param: &'static str,
    max_bytes: usize,
) -> Result<String, ApiError> {
    let bytes = read_bounded(field, max_bytes, || {
        ApiError::invalid(
            format!("The {param} field is longer than {max_bytes} bytes."),
            Some(param),
        )
    })
    .await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The end of the prompt, enough for its last [`MAX_PROMPT_CHARS`] characters: a prompt
/// of any length is read through, holding no more than a few times that many bytes.
async fn read_prompt(field: &mut Field<'_>) -> Result<String, ApiError> {
    // A character takes at most 4 bytes in UTF-8.
    const KEEP: usize = 4 * MAX_PROMPT_CHARS;
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > 2 * KEEP {
            keep_end(&mut bytes, KEEP);
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Drops all but the last `keep` bytes of `bytes` (a few more, to start on a
/// character's first byte).
fn keep_end(bytes: &mut Vec<u8>, keep: usize) {
    let mut start = bytes.len().saturating_sub(keep);
    // UTF-8 continuation bytes are 0b10xxxxxx; a character has at most three.
    for _ in 0..3 {
        if start > 0 && bytes.get(start).is_some_and(|b| b & 0xC0 == 0x80) {
            start -= 1;
        }
    }
    bytes.drain(..start);
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!("The request body is too large: {}", e.body_text()))
    } else {
        ApiError::invalid(
            format!("Malformed multipart/form-data body: {}", e.body_text()),
            None,
        )
    }
}

/// `value` as quoted in an error message: at most [`MAX_ECHO_CHARS`] characters, marked
/// with `…` where cut, so a hostile multi-megabyte field is not sent back.
fn echo(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHO_CHARS) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_string(),
    }
}

/// The last `max` characters of `value`.
fn tail(value: &str, max: usize) -> &str {
    match value.char_indices().rev().nth(max.saturating_sub(1)) {
        Some((start, _)) if max > 0 => &value[start..],
        _ if max == 0 => "",
        _ => value,
    }
}

/// A list field's items: one value per part, or a JSON array in one part. `seen` counts
/// the field's items over all its parts; past [`MAX_LIST_ITEMS`], an error on `param`.
fn list_items(value: &str, seen: &mut usize, param: &'static str) -> Result<Vec<String>, ApiError> {
    list_items_at_most(value, seen, MAX_LIST_ITEMS, param)
}

/// [`list_items`] with its own cap, `max` items.
fn list_items_at_most(
    value: &str,
    seen: &mut usize,
    max: usize,
    param: &'static str,
) -> Result<Vec<String>, ApiError> {
    let array = value.starts_with('[');
    let items = array
        .then(|| serde_json::from_str::<Vec<String>>(value).ok())
        .flatten()
        .unwrap_or_else(|| vec![value.to_string()]);
    *seen += items.len();
    if *seen > max {
        return Err(ApiError::invalid(
            format!("{param} may hold at most {max} items."),
            Some(param),
        ));
    }
    Ok(items)
}

fn parse_bool(value: &str, param: &'static str) -> Result<bool, ApiError> {
    match value {
        "true" | "True" | "1" => Ok(true),
        "false" | "False" | "0" | "" => Ok(false),
        other => Err(ApiError::invalid(
            format!("Invalid {param} {:?}: expected true or false.", echo(other)),
            Some(param),
        )),
    }
}

/// `auto`, `server_vad`, or a JSON object with `"type"` one of those → VAD chunking.
fn chunking_strategy(value: &str) -> Result<bool, ApiError> {
    let kind = if value.starts_with('{') {
        serde_json::from_str::<serde_json::Value>(value)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_default()
    } else {
        value.to_string()
    };
    match kind.as_str() {
        "auto" | "server_vad" => Ok(true),
        _ => Err(ApiError::invalid(
            format!("Invalid chunking_strategy {:?}: expected \"auto\" or {{\"type\": \"server_vad\"}}.", echo(value)),
            Some("chunking_strategy"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields, as a client sends them, on a transcription; `Err` holds the error's
    /// `param`.
    fn fields(parts: &[(&str, &str)]) -> Result<Fields, Option<&'static str>> {
        let mut fields = Fields::new(Task::Transcribe);
        for (name, value) in parts {
            fields
                .accept(name, value)
                .map_err(|e| e.body().error.param)?;
        }
        Ok(fields)
    }

    fn message(e: ApiError) -> String {
        e.body().error.message
    }

    #[test]
    fn text_fields_parse() {
        let f = fields(&[
            ("model", "whisper-1"),
            ("language", "de"),
            ("prompt", "Müller"),
            ("response_format", "verbose_json"),
            ("temperature", "0.4"),
            ("timestamp_granularities[]", "word"),
            ("include[]", "logprobs"),
            ("stream", "true"),
            ("mode", "parallel"),
            ("sample_rate", "48000"),
            ("some_future_field", "whatever"),
        ])
        .unwrap();
        assert_eq!(f.model.as_deref(), Some("whisper-1"));
        assert_eq!(f.language.as_deref(), Some("de"));
        assert_eq!(f.prompt.as_deref(), Some("Müller"));
        assert_eq!(f.format, Format::VerboseJson);
        assert_eq!(f.temperature, Some(0.4));
        assert!(f.word_timestamps && !f.segment_timestamps && f.granularities_given);
        assert!(f.logprobs && f.stream);
        assert_eq!(f.mode, Some(Mode::Parallel));
        assert_eq!(f.sample_rate, 48_000);
    }

    #[test]
    fn defaults_when_fields_are_absent() {
        let f = fields(&[]).unwrap();
        assert_eq!(f.format, Format::Json);
        assert_eq!(f.temperature, None);
        assert_eq!(f.sample_rate, DEFAULT_PCM_RATE);
        assert!(!f.granularities_given && !f.logprobs && !f.stream);
        assert_eq!(f.mode, None);
        // Empty values mean "not given".
        let f = fields(&[("model", ""), ("language", ""), ("prompt", "")]).unwrap();
        assert_eq!((f.model, f.language, f.prompt), (None, None, None));
        // 0 is greedy with the fallback ladder, like no temperature at all.
        assert_eq!(fields(&[("temperature", "0")]).unwrap().temperature, None);
    }

    #[test]
    fn each_invalid_field_names_itself() {
        for (name, value, param) in [
            ("language", "klingon", "language"),
            ("response_format", "JSON", "response_format"),
            ("response_format", "tsv", "response_format"),
            ("response_format", "", "response_format"),
            ("temperature", "1.5", "temperature"),
            ("temperature", "warm", "temperature"),
            (
                "timestamp_granularities[]",
                "char",
                "timestamp_granularities",
            ),
            (
                "timestamp_granularities",
                "[\"word\",\"char\"]",
                "timestamp_granularities",
            ),
            ("include[]", "tokens", "include"),
            ("stream", "maybe", "stream"),
            ("chunking_strategy", "fast", "chunking_strategy"),
            ("mode", "fast", "mode"),
            ("sample_rate", "4000", "sample_rate"),
            ("sample_rate", "fast", "sample_rate"),
        ] {
            assert_eq!(
                fields(&[(name, value)]).err(),
                Some(Some(param)),
                "{name}={value:?}"
            );
        }
    }

    #[test]
    fn messages_quote_the_value_and_the_choices() {
        assert_eq!(
            message(response_format("xml").unwrap_err()),
            "Invalid response_format \"xml\": expected json, text, srt, verbose_json, vtt or diarized_json."
        );
        // The whisper crate's own words, without its "invalid decoding option: " prefix.
        let Err(WhisperError::InvalidOption(words)) = "fast".parse::<Mode>() else {
            panic!("fast is no mode");
        };
        assert_eq!(message(mode("fast").unwrap_err()), words);
        assert!(words.contains("\"fast\""), "{words}");
        assert_eq!(
            message(temperature("2").unwrap_err()),
            "Invalid temperature \"2\": expected a number from 0 to 1."
        );
    }

    #[test]
    fn translations_ignore_language() {
        let mut f = Fields::new(Task::Translate);
        f.accept("language", "klingon").unwrap();
        assert_eq!(f.language, None);
    }

    #[test]
    fn granularities_accumulate_over_parts_and_arrays() {
        let f = fields(&[
            ("timestamp_granularities[]", "segment"),
            ("timestamp_granularities[]", "[\"word\"]"),
        ])
        .unwrap();
        assert!(f.segment_timestamps && f.word_timestamps);
    }

    fn upload() -> Upload {
        Upload {
            bytes: vec![1, 2],
            filename: Some("a.wav".into()),
            content_type: None,
        }
    }

    #[test]
    fn finish_wants_a_file_and_a_model() {
        let f = fields(&[("model", "whisper-1")]).unwrap();
        let missing_file = f.finish().unwrap_err().body().error;
        assert_eq!(missing_file.param, Some("file"));
        let mut f = fields(&[]).unwrap();
        f.file = Some(upload());
        assert_eq!(f.finish().unwrap_err().body().error.param, Some("model"));
        let mut f = fields(&[("model", &"m".repeat(MAX_MODEL_CHARS + 1))]).unwrap();
        f.file = Some(upload());
        let too_long = f.finish().unwrap_err();
        assert_eq!(too_long.status().as_u16(), 404);
        assert!(too_long.body().error.message.contains('…'));
    }

    #[test]
    fn chunking_means_parallel_unless_mode_says_otherwise() {
        let finish = |parts: &[(&str, &str)]| {
            let mut f = fields(parts).unwrap();
            f.file = Some(upload());
            f.model = Some("whisper-1".into());
            f.finish().unwrap().mode
        };
        assert_eq!(finish(&[]), None);
        assert_eq!(
            finish(&[("chunking_strategy", "auto")]),
            Some(Mode::Parallel)
        );
        assert_eq!(
            finish(&[("mode", "sequential"), ("chunking_strategy", "auto")]),
            Some(Mode::Sequential)
        );
        assert_eq!(
            finish(&[
                ("chunking_strategy[type]", "server_vad"),
                ("mode", "sequential")
            ]),
            Some(Mode::Sequential)
        );
    }

    /// A multipart body with `boundary` "B" and the parts (name, filename, value).
    async fn multipart(parts: &[(&str, Option<&str>, &str)]) -> Multipart {
        use axum::extract::FromRequest;
        let mut body = String::new();
        for (name, filename, value) in parts {
            let filename = filename.map_or(String::new(), |f| format!("; filename=\"{f}\""));
            body.push_str(&format!(
                "--B\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str("--B--\r\n");
        let request = axum::http::Request::builder()
            .method("POST")
            .header("content-type", "multipart/form-data; boundary=B")
            .body(axum::body::Body::from(body))
            .unwrap();
        Multipart::from_request(request, &()).await.unwrap()
    }

    #[tokio::test]
    async fn read_takes_the_file_and_the_fields() {
        let mut body = multipart(&[
            ("file", Some("clip.MP3"), "ID3"),
            ("model", None, " whisper-1 "),
            ("response_format", None, "srt"),
        ])
        .await;
        let form = read(&mut body, Task::Transcribe, 100).await.unwrap();
        assert_eq!(form.file.bytes, b"ID3");
        assert_eq!(form.file.extension().as_deref(), Some("mp3"));
        assert_eq!(form.model, "whisper-1");
        assert_eq!(form.format, Format::Srt);
    }

    #[tokio::test]
    async fn read_refuses_two_files_and_big_ones() {
        let mut body = multipart(&[
            ("file", Some("a.wav"), "RIFF"),
            ("file", Some("b.wav"), "RIFF"),
        ])
        .await;
        let two = read(&mut body, Task::Transcribe, 100).await.unwrap_err();
        assert_eq!(message(two), "Only one file may be uploaded.");
        let mut body = multipart(&[("file", Some("a.wav"), "RIFF....")]).await;
        let big = read(&mut body, Task::Transcribe, 4).await.unwrap_err();
        assert_eq!(big.status().as_u16(), 413);
        assert_eq!(
            message(big),
            "The file is larger than the 4-byte upload limit."
        );
    }

    #[tokio::test]
    async fn text_fields_are_capped_and_the_prompt_keeps_its_end() {
        let read_one = |name: &'static str, value: String| async move {
            let mut body = multipart(&[
                ("file", Some("a.wav"), "RIFF"),
                ("model", None, "whisper-1"),
                (name, None, value.as_str()),
            ])
            .await;
            read(&mut body, Task::Transcribe, 100).await
        };
        // At the cap the value is read and checked: an unknown model.
        let at_cap = read_one("model", "x".repeat(MAX_FIELD_BYTES)).await;
        assert_eq!(at_cap.unwrap_err().status().as_u16(), 404);
        for (name, param) in [
            ("model", "model"),
            ("language", "language"),
            ("timestamp_granularities[]", "timestamp_granularities"),
            ("chunking_strategy[type]", "chunking_strategy"),
        ] {
            let error = read_one(name, "x".repeat(MAX_FIELD_BYTES + 1))
                .await
                .unwrap_err();
            assert_eq!(error.status().as_u16(), 400, "{name}");
            assert_eq!(error.body().error.param, Some(param), "{name}");
        }
        // Unknown fields of any size are skipped; the prompt is cut to its end.
        let big = "é".repeat(MAX_FIELD_BYTES);
        assert!(read_one("user", big.clone()).await.is_ok());
        let prompt = format!("{big} the end");
        let form = read_one("prompt", prompt.clone()).await.unwrap();
        assert_eq!(
            form.prompt.as_deref(),
            Some(tail(&prompt, MAX_PROMPT_CHARS))
        );
    }

    /// A multipart body whose `name` field never ends: only an incremental reader answers.
    fn endless_field(name: &str) -> axum::http::Request<axum::body::Body> {
        let head = format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n");
        // Pending between chunks, as a socket is: multer reads whatever is ready at once.
        let chunks = futures_util::stream::unfold(Some(head.into_bytes()), |first| async {
            tokio::task::yield_now().await;
            let chunk = first.unwrap_or_else(|| vec![b'x'; 16 * 1024]);
            Some((
                Ok::<_, std::io::Error>(axum::body::Bytes::from(chunk)),
                None,
            ))
        });
        axum::http::Request::builder()
            .method("POST")
            .header("content-type", "multipart/form-data; boundary=B")
            .body(axum::body::Body::from_stream(chunks))
            .unwrap()
    }

    #[tokio::test]
    async fn an_endless_field_is_refused_once_past_the_cap() {
        use axum::extract::FromRequest;
        let request = endless_field("timestamp_granularities");
        let mut body = Multipart::from_request(request, &()).await.unwrap();
        let refused = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            read(&mut body, Task::Transcribe, 100),
        )
        .await
        .expect("the cap ends the read")
        .unwrap_err();
        assert_eq!(refused.body().error.param, Some("timestamp_granularities"));
        assert_eq!(
            message(refused),
            format!("The timestamp_granularities field is longer than {MAX_FIELD_BYTES} bytes.")
        );
    }

    #[test]
    fn long_values_are_cut() {
        assert_eq!(echo("json"), "json");
        let long = "é".repeat(MAX_PROMPT_CHARS + 1000);
        assert_eq!(echo(&long).chars().count(), MAX_ECHO_CHARS + 1);
        assert!(echo(&long).ends_with('…'));
        assert_eq!(tail("ask not what", 8), "not what");
        assert_eq!(tail("ask", 8), "ask");
        assert_eq!(tail("ask", 0), "");
        assert_eq!(
            tail(&long, MAX_PROMPT_CHARS).chars().count(),
            MAX_PROMPT_CHARS
        );
        assert_eq!(tail("日本語の文", 2), "の文");
    }

    #[test]
    fn list_fields_take_one_value_or_a_json_array() {
        let mut seen = 0;
        let mut items = |value| list_items(value, &mut seen, "include").unwrap();
        assert_eq!(items("word"), ["word"]);
        assert_eq!(items("[\"word\",\"segment\"]"), ["word", "segment"]);
        assert_eq!(items("[\"word\", 1]"), ["[\"word\", 1]"]);
        assert_eq!(seen, 4);
    }

    #[test]
    fn list_fields_hold_a_handful_of_items() {
        let array = |n: usize| format!("[{}]", vec!["\"word\""; n].join(","));
        assert!(fields(&[("timestamp_granularities", &array(MAX_LIST_ITEMS))]).is_ok());
        assert_eq!(
            fields(&[("timestamp_granularities", &array(MAX_LIST_ITEMS + 1))]).err(),
            Some(Some("timestamp_granularities"))
        );
        // Counted over all parts of the field, each list on its own.
        let mut parts = vec![("include[]", "logprobs"); MAX_LIST_ITEMS];
        parts.push(("timestamp_granularities[]", "word"));
        assert!(fields(&parts).is_ok());
        parts.push(("include", "logprobs"));
        assert_eq!(fields(&parts).err(), Some(Some("include")));
    }

    #[test]
    fn keep_end_starts_on_a_character() {
        let mut bytes = "aé日本".as_bytes().to_vec();
        keep_end(&mut bytes, 5);
        assert_eq!(bytes, "日本".as_bytes(), "no half character at the start");
        let mut bytes = b"abc".to_vec();
        keep_end(&mut bytes, 5);
        assert_eq!(bytes, b"abc");
    }

    #[test]
    fn chunking_strategies() {
        assert!(chunking_strategy("auto").unwrap());
        assert!(chunking_strategy("{\"type\":\"server_vad\",\"threshold\":0.5}").unwrap());
        assert!(chunking_strategy("{\"type\":\"magic\"}").is_err());
        assert!(chunking_strategy("fast").is_err());
    }

    #[test]
    fn booleans_arrive_as_strings() {
        assert!(parse_bool("true", "stream").unwrap());
        assert!(!parse_bool("false", "stream").unwrap());
        assert!(parse_bool("yes please", "stream").is_err());
    }

    #[test]
    fn raw_pcm_is_known_by_type_or_name() {
        let upload = |name: Option<&str>, ty: Option<&str>| Upload {
            bytes: vec![],
            filename: name.map(str::to_string),
            content_type: ty.map(str::to_string),
        };
        assert!(upload(None, Some("audio/pcm")).is_raw_pcm());
        assert!(upload(Some("a.PCM"), None).is_raw_pcm());
        assert!(!upload(Some("a.wav"), Some("audio/wav")).is_raw_pcm());
        assert_eq!(
            upload(Some("x.tar.MP3"), None).extension().as_deref(),
            Some("mp3")
        );
    }

    /// A data URL of `bytes` as `media_type`.
    fn data_url(media_type: &str, bytes: &[u8]) -> String {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::STANDARD.encode(bytes);
        format!("data:{media_type};base64,{payload}")
    }

    fn finished(parts: &[(&str, &str)]) -> Result<AudioForm, ApiError> {
        let mut f = fields(parts).map_err(|p| ApiError::invalid("field", p))?;
        f.file = Some(upload());
        f.model = Some("whisper-1".into());
        f.finish()
    }

    #[test]
    fn known_speakers_pair_names_with_decoded_references() {
        let agent = data_url("audio/wav", b"RIFF agent");
        let caller = data_url("audio/mpeg", b"ID3 caller");
        let form = finished(&[
            ("known_speaker_names[]", "agent"),
            ("known_speaker_names[]", " caller "),
            ("known_speaker_references[]", &agent),
            ("known_speaker_references[]", &caller),
        ])
        .unwrap();
        let speakers: Vec<(&str, &[u8], Option<String>)> = form
            .known_speakers
            .iter()
            .map(|k| (k.name.as_str(), k.clip.bytes.as_slice(), k.clip.extension()))
            .collect();
        assert_eq!(
            speakers,
            [
                ("agent", &b"RIFF agent"[..], Some("wav".into())),
                ("caller", &b"ID3 caller"[..], Some("mp3".into()))
            ]
        );
        assert_eq!(
            form.known_speakers[0].clip.content_type.as_deref(),
            Some("audio/wav")
        );
    }

    #[test]
    fn known_speakers_are_bounded_and_must_pair_up() {
        let clip = data_url("audio/wav", b"RIFF");
        let names = vec![("known_speaker_names[]", "a"); MAX_KNOWN_SPEAKERS + 1];
        assert_eq!(fields(&names).err(), Some(Some("known_speaker_names")));
        let refs = vec![("known_speaker_references[]", clip.as_str()); MAX_KNOWN_SPEAKERS + 1];
        assert_eq!(fields(&refs).err(), Some(Some("known_speaker_references")));
        let unpaired = finished(&[("known_speaker_names[]", "a")]).unwrap_err();
        assert_eq!(
            unpaired.body().error.param,
            Some("known_speaker_references")
        );
        let twice = finished(&[
            ("known_speaker_names[]", "a"),
            ("known_speaker_names[]", "a"),
            ("known_speaker_references[]", &clip),
            ("known_speaker_references[]", &clip),
        ])
        .unwrap_err();
        assert_eq!(twice.body().error.param, Some("known_speaker_names"));
        let long = "n".repeat(MAX_SPEAKER_NAME_CHARS + 1);
        for (name, value) in [
            ("known_speaker_names[]", ""),
            ("known_speaker_names[]", long.as_str()),
            ("known_speaker_references[]", "https://example.com/a.wav"),
            ("known_speaker_references[]", "data:audio/wav,RIFF"),
            ("known_speaker_references[]", "data:audio/wav;base64,%%%"),
        ] {
            assert!(fields(&[(name, value)]).is_err(), "{name}={value:?}");
        }
    }

    #[test]
    fn speaker_counts_are_bounded_and_ordered() {
        let f = finished(&[("min_speakers", "2"), ("max_speakers", "3")]).unwrap();
        assert_eq!((f.min_speakers, f.max_speakers), (Some(2), Some(3)));
        let max = steno_speaker::MAX_SPEAKERS.to_string();
        assert!(fields(&[("max_speakers", &max)]).is_ok());
        let over = (steno_speaker::MAX_SPEAKERS + 1).to_string();
        for (name, value) in [
            ("min_speakers", "0"),
            ("max_speakers", over.as_str()),
            ("max_speakers", "two"),
        ] {
            assert_eq!(fields(&[(name, value)]).err(), Some(Some(name)), "{value}");
        }
        let crossed = finished(&[("min_speakers", "3"), ("max_speakers", "2")]).unwrap_err();
        assert_eq!(crossed.body().error.param, Some("min_speakers"));
    }

    #[test]
    fn beam_size_is_bounded() {
        assert_eq!(finished(&[("beam_size", "5")]).unwrap().beam_size, Some(5));
        assert_eq!(finished(&[]).unwrap().beam_size, None);
        let over = (steno_whisper::beam::MAX_CANDIDATES + 1).to_string();
        for value in ["0", over.as_str(), "five", "-1", "2.5"] {
            assert_eq!(
                fields(&[("beam_size", value)]).err(),
                Some(Some("beam_size")),
                "{value}"
            );
        }
    }

    #[test]
    fn keywords_and_languages_are_bounded_lists() {
        let f = finished(&[
            ("keywords[]", "Nguyen"),
            ("keywords[]", "[\"Steno\", \" \", \"MLX\"]"),
            ("languages[]", "de"),
            ("languages", "[\"fr\"]"),
        ])
        .unwrap();
        assert_eq!(f.keywords, ["Nguyen", "Steno", "MLX"]);
        assert_eq!(f.languages, ["de", "fr"]);
        let many = vec![("keywords[]", "x"); MAX_KEYWORDS + 1];
        assert_eq!(fields(&many).err(), Some(Some("keywords")));
        let long = "k".repeat(MAX_KEYWORD_CHARS + 1);
        assert_eq!(
            fields(&[("keywords[]", &long)]).err(),
            Some(Some("keywords"))
        );
        for language in ["klingon", "german", "EN", ""] {
            assert_eq!(
                fields(&[("languages[]", language)]).err(),
                Some(Some("languages")),
                "{language:?}"
            );
        }
        let mut translation = Fields::new(Task::Translate);
        translation.accept("languages[]", "klingon").unwrap();
        assert!(translation.languages.is_empty());
    }

    #[test]
    fn diarizing_models_refuse_what_openai_refuses() {
        let refusal = |parts: &[(&str, &str)]| {
            let e = finished(parts)
                .unwrap()
                .check_diarizing("gpt-4o-transcribe-diarize");
            e.err().map(|e| {
                let body = e.body().error;
                (e.status().as_u16(), body.param, body.code, body.message)
            })
        };
        assert_eq!(refusal(&[]), None);
        assert_eq!(refusal(&[("response_format", "diarized_json")]), None);
        assert_eq!(refusal(&[("response_format", "text")]), None);
        assert_eq!(
            refusal(&[("response_format", "verbose_json")]),
            Some((
                400,
                Some("response_format"),
                Some("unsupported_value"),
                "response_format 'verbose_json' is not compatible with model \
                 'gpt-4o-transcribe-diarize'. Use 'json' or 'text' instead."
                    .into()
            ))
        );
        for (name, value, param) in [
            ("prompt", "Hi", "prompt"),
            ("include[]", "logprobs", "include"),
            (
                "timestamp_granularities[]",
                "segment",
                "timestamp_granularities",
            ),
        ] {
            let (status, got, code, message) = refusal(&[(name, value)]).unwrap();
            assert_eq!(
                (status, got, code),
                (400, Some(param), Some("unsupported_parameter"))
            );
            assert!(message.contains(&format!("'{param}'")), "{message}");
        }
    }

    #[test]
    fn diarizing_past_30_seconds_needs_chunking() {
        let plain = finished(&[]).unwrap();
        assert!(plain
            .check_diarized_length(DIARIZE_UNCHUNKED_SECONDS)
            .is_ok());
        let e = plain.check_diarized_length(30.5).unwrap_err().body().error;
        assert_eq!(
            (e.param, e.code, e.message.as_str()),
            (
                Some("chunking_strategy"),
                Some("invalid_value"),
                "chunking_strategy is required for diarization models"
            )
        );
        let chunked = finished(&[("chunking_strategy", "auto")]).unwrap();
        assert!(chunked.check_diarized_length(600.0).is_ok());
    }

    #[test]
    fn translations_refuse_diarized_json() {
        let mut f = Fields::new(Task::Translate);
        f.accept("response_format", "diarized_json").unwrap();
        f.file = Some(upload());
        f.model = Some("whisper-1".into());
        assert_eq!(
            f.finish().unwrap_err().body().error.param,
            Some("response_format")
        );
    }
}
