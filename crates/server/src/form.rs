//! Reads OpenAI's multipart form for `/v1/audio/{transcriptions,translations}` into
//! checked values. Numbers and booleans arrive as strings; list fields come as
//! repeated `name[]` (or `name`) parts; the first invalid field is the error.

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::Multipart;
use steno_whisper::{Mode, Task};

use crate::error::ApiError;
use crate::formats::Format;

/// OpenAI's default rate for raw `audio/pcm` uploads.
const DEFAULT_PCM_RATE: u32 = 24_000;

/// Whisper conditions on at most the last 223 tokens of a prompt; a token spans at most a
/// few dozen characters, so this many trailing characters always hold them (in practice
/// ~4 characters a token). Longer prompts are cut to their end before anything tokenizes
/// them: a 20 MB prompt otherwise held the model's worker thread for most of a minute.
pub const MAX_PROMPT_CHARS: usize = 4096;

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
}

/// Reads and checks the whole form; `max_file_bytes` bounds the file part as it
/// streams in (413 past it).
pub async fn read(
    form: &mut Multipart,
    task: Task,
    max_file_bytes: usize,
) -> Result<AudioForm, ApiError> {
    let mut file: Option<Upload> = None;
    let mut model = None;
    let mut language = None;
    let mut prompt = None;
    let mut format = Format::Json;
    let mut temperature = None;
    let (mut segment_timestamps, mut word_timestamps, mut granularities_given) =
        (false, false, false);
    let mut logprobs = false;
    let mut stream = false;
    let mut chunked = false;
    let mut mode = None;
    let mut sample_rate = DEFAULT_PCM_RATE;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            if file.is_some() {
                return Err(ApiError::invalid(
                    "Only one file may be uploaded.",
                    Some("file"),
                ));
            }
            file = Some(read_file(&mut field, max_file_bytes).await?);
            continue;
        }
        let value = field.text().await.map_err(multipart_error)?;
        let value = value.trim();
        match name.as_str() {
            "model" => model = Some(value.to_string()).filter(|m| !m.is_empty()),
            "language" if task == Task::Transcribe && !value.is_empty() => {
                if steno_whisper::tokenizer::language_code(value).is_none() {
                    return Err(ApiError::invalid(
                        format!("Unsupported language {:?}: expected an ISO-639-1 code such as \"en\".", echo(value)),
                        Some("language"),
                    ));
                }
                language = Some(value.to_string());
            }
            "prompt" if !value.is_empty() => prompt = Some(tail(value, MAX_PROMPT_CHARS).to_string()),
            "response_format" => {
                format = match value {
                    "json" | "text" | "srt" | "vtt" | "verbose_json" => {
                        value.parse().map_err(|e: String| ApiError::invalid(e, Some("response_format")))?
                    }
                    other => {
                        return Err(ApiError::invalid(
                            format!("Invalid response_format {:?}: expected json, text, srt, verbose_json or vtt.", echo(other)),
                            Some("response_format"),
                        ))
                    }
                }
            }
            "temperature" => {
                let t: f32 = value
                    .parse()
                    .ok()
                    .filter(|t: &f32| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("Invalid temperature {:?}: expected a number from 0 to 1.", echo(value)),
                            Some("temperature"),
                        )
                    })?;
                temperature = (t > 0.0).then_some(t);
            }
            "timestamp_granularities[]" | "timestamp_granularities" => {
                granularities_given = true;
                for g in list_items(value) {
                    match g.as_str() {
                        "word" => word_timestamps = true,
                        "segment" => segment_timestamps = true,
                        other => {
                            return Err(ApiError::invalid(
                                format!("Invalid timestamp granularity {:?}: expected word or segment.", echo(other)),
                                Some("timestamp_granularities"),
                            ))
                        }
                    }
                }
            }
            "include[]" | "include" => {
                for item in list_items(value) {
                    if item != "logprobs" {
                        return Err(ApiError::invalid(
                            format!("Invalid include {:?}: only logprobs is supported.", echo(&item)),
                            Some("include"),
                        ));
                    }
                    logprobs = true;
                }
            }
            "stream" => stream = parse_bool(value, "stream")?,
            "chunking_strategy" | "chunking_strategy[type]" => {
                chunked = chunking_strategy(value)?;
            }
            "mode" => {
                mode = Some(value.parse().map_err(|e: steno_whisper::WhisperError| {
                    ApiError::invalid(e.to_string().replace("invalid decoding option: ", ""), Some("mode"))
                })?)
            }
            "sample_rate" => {
                sample_rate = value
                    .parse()
                    .ok()
                    .filter(|r| (8_000..=192_000).contains(r))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("Invalid sample_rate {:?}: expected 8000 to 192000.", echo(value)),
                            Some("sample_rate"),
                        )
                    })?
            }
            // Unknown fields (and the chunking_strategy[...] tuning knobs) are
            // ignored, as OpenAI does, for forward compatibility.
            _ => {}
        }
    }
    let file = file.ok_or_else(|| {
        ApiError::invalid(
            "A file is required: upload the audio as the multipart field `file`.",
            Some("file"),
        )
    })?;
    let model = model
        .ok_or_else(|| ApiError::invalid("A model is required (e.g. whisper-1).", Some("model")))?;
    if model.chars().count() > MAX_MODEL_CHARS {
        return Err(ApiError::model_not_found(&echo(&model)));
    }
    if chunked && mode.is_none() {
        mode = Some(Mode::Batched);
    }
    Ok(AudioForm {
        file,
        model,
        language,
        prompt,
        format,
        temperature,
        segment_timestamps,
        word_timestamps,
        granularities_given,
        logprobs,
        stream,
        mode,
        sample_rate,
    })
}

async fn read_file(field: &mut Field<'_>, max_bytes: usize) -> Result<Upload, ApiError> {
    let filename = field.file_name().map(str::to_string);
    let content_type = field.content_type().map(str::to_string);
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > max_bytes {
            return Err(ApiError::too_large(format!(
                "The file is larger than the {max_bytes}-byte upload limit."
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Upload {
        bytes,
        filename,
        content_type,
    })
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

/// A list field's items: one value per part, or a JSON array in one part.
fn list_items(value: &str) -> Vec<String> {
    if value.starts_with('[') {
        if let Ok(items) = serde_json::from_str::<Vec<String>>(value) {
            return items;
        }
    }
    vec![value.to_string()]
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
        assert_eq!(list_items("word"), ["word"]);
        assert_eq!(list_items("[\"word\",\"segment\"]"), ["word", "segment"]);
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
}
