//! OpenAI's request and response shapes, as typed structs: the JSON bodies are
//! rendered from them and the OpenAPI document is derived from them.

use serde::Serialize;
use utoipa::ToSchema;

/// `usage` of a transcription billed by duration: the member of OpenAI's usage union
/// (`duration` or `tokens`) that its Whisper model (`whisper-1`) answers with. Every
/// model Steno serves is a Whisper model, whatever name the client used.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Usage {
    /// Always `duration`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Seconds of input audio, rounded up.
    pub seconds: u64,
}

impl Usage {
    pub fn duration(seconds: f64) -> Self {
        Self {
            kind: "duration",
            seconds: seconds.max(0.0).ceil() as u64,
        }
    }
}

/// One text token and its log-probability (`include[]=logprobs`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Logprob {
    pub token: String,
    pub logprob: f32,
    /// The token's UTF-8 bytes.
    pub bytes: Vec<u8>,
}

impl Logprob {
    /// The engine's token log-probabilities, when the request asked for them.
    pub fn list(tokens: Option<Vec<steno_whisper::TokenLogprob>>) -> Option<Vec<Logprob>> {
        tokens.map(|tokens| {
            tokens
                .into_iter()
                .map(|t| Logprob {
                    token: t.token,
                    logprob: t.logprob,
                    bytes: t.bytes,
                })
                .collect()
        })
    }
}

/// A language of the audio, by its ISO-639-1 code (`languages` of json and
/// `transcript.text.done`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Language {
    pub code: String,
}

impl Language {
    /// The transcript's language (detected, or the one given), as OpenAI's one-item list.
    pub fn list(code: &str) -> Vec<Language> {
        vec![Language {
            code: code.to_string(),
        }]
    }
}

/// `response_format=json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Transcription {
    pub text: String,
    /// The language of the audio (detected, or the one given).
    pub languages: Vec<Language>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Logprob>>,
    pub usage: Usage,
}

/// `response_format=diarized_json`: the text in segments, each with its speaker.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiarizedTranscription {
    /// Always `transcribe`.
    pub task: &'static str,
    /// Seconds of input audio.
    pub duration: f64,
    pub text: String,
    pub segments: Vec<DiarizedSegment>,
    pub usage: Usage,
}

/// A stretch of text one speaker said: a `diarized_json` segment, and the
/// `transcript.text.segment` event of a stream (the same fields).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DiarizedSegment {
    /// Always `transcript.text.segment`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `seg_0`, `seg_1`, … in order; the `segment_id` of its stream deltas.
    pub id: String,
    pub start: f64,
    pub end: f64,
    /// A name of `known_speaker_names[]`, else `A`, `B`, … in order of appearance.
    pub speaker: String,
    pub text: String,
}

/// The JSON bodies of a transcription: `json` or `verbose_json` (OpenAPI only).
#[allow(dead_code)]
#[derive(ToSchema)]
pub enum TranscriptionResponse {
    Json(Transcription),
    VerboseJson(VerboseTranscription),
    DiarizedJson(DiarizedTranscription),
}

/// `response_format=verbose_json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerboseTranscription {
    /// `transcribe` or `translate`.
    pub task: &'static str,
    /// The spoken language's English name, lower case (`english`).
    pub language: String,
    /// Seconds of input audio.
    pub duration: f64,
    pub text: String,
    /// Present unless `timestamp_granularities` leaves out `segment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<VerboseSegment>>,
    /// Present when `timestamp_granularities` includes `word`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<WordTiming>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Logprob>>,
    pub usage: Usage,
}

// A `verbose_json` segment: the same fields as `steno_whisper::Segment` on purpose. This
// is OpenAI's wire shape, kept apart so that a change to the model's type cannot change
// the API (or its OpenAPI schema) unnoticed. (`//`, not `///`: doc comments land in the
// OpenAPI document.)
#[derive(Debug, Serialize, ToSchema)]
pub struct VerboseSegment {
    pub id: usize,
    /// Mel frame (10 ms) at which the segment's 30 s window starts.
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f32,
    pub compression_ratio: f32,
    pub no_speech_prob: f32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WordTiming {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

/// `stream=true`: one event per finished stretch of text.
#[derive(Debug, Serialize, ToSchema)]
pub struct TextDeltaEvent {
    /// Always `transcript.text.delta`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub delta: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Logprob>>,
    /// The diarized segment the text belongs to (when diarizing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_id: Option<String>,
}

/// `stream=true`: the last event, with the whole text.
#[derive(Debug, Serialize, ToSchema)]
pub struct TextDoneEvent {
    /// Always `transcript.text.done`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
    /// The language of the audio (detected, or the one given).
    pub languages: Vec<Language>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Logprob>>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds; when this server started.
    pub created: u64,
    pub owned_by: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<Model>,
}

/// OpenAI's error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `rate_limit_exceeded` or `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault, if any.
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` while loading or draining.
    pub status: &'static str,
}

/// The multipart form of `POST /v1/audio/transcriptions` (for the OpenAPI
/// document; the handler reads the fields one by one). Numbers and booleans
/// arrive as strings.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct TranscriptionForm {
    /// The audio: flac, mp3, mp4, m4a, mpeg, mpga, ogg, oga, wav or webm (format
    /// sniffed from the bytes), or raw s16le when the part is `audio/pcm`.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// A served model id or alias (`whisper-1`, `gpt-4o-transcribe`,
    /// `gpt-4o-mini-transcribe`, `gpt-transcribe`; `gpt-4o-transcribe-diarize` also
    /// diarizes, with OpenAI's rules for that model: no prompt, include or
    /// timestamp_granularities, json/text/diarized_json only, chunking_strategy above 30 s).
    pub model: String,
    /// ISO-639-1 code (or English name) of the spoken language; detected if absent.
    pub language: Option<String>,
    /// Text to condition the first window on (names, spellings, style).
    pub prompt: Option<String>,
    /// `json` (default), `text`, `srt`, `verbose_json`, `vtt` or `diarized_json`
    /// (segments with speaker labels, on any model).
    pub response_format: Option<String>,
    /// 0 (default) decodes greedily with the fallback ladder 0, 0.2 … 1.0;
    /// above 0 samples at that temperature only. At most 1.
    pub temperature: Option<f32>,
    /// Speaker names (at most 4) for `known_speaker_references[]`, one for one: a
    /// diarized segment of that voice takes the name.
    #[schema(rename = "known_speaker_names[]")]
    pub known_speaker_names: Option<Vec<String>>,
    /// Data URLs (`data:audio/wav;base64,…`) of 2 to 10 s clips of each known speaker,
    /// in any format `file` takes; at most 3 MiB each.
    #[schema(rename = "known_speaker_references[]")]
    pub known_speaker_references: Option<Vec<String>>,
    /// Steno extension: diarization finds at least this many speakers (1 to 16).
    pub min_speakers: Option<u32>,
    /// Steno extension: diarization finds at most this many speakers (1 to 16).
    pub max_speakers: Option<u32>,
    /// Steno extension: beam search with this many beams (1 to 16; 1 is greedy) for the
    /// temperature-0 attempt at each window, as OpenAI's open-source `beam_size`. Each
    /// beam takes a row of the server's batch. Default: the server's `decoding.beam_size`.
    pub beam_size: Option<u32>,
    /// Terms to favour (names, jargon; at most 16 of at most 48 characters): named in
    /// the prompt and their tokens' logits raised by a bounded bias.
    #[schema(rename = "keywords[]")]
    pub keywords: Option<Vec<String>>,
    /// ISO-639-1 codes of the languages to expect: detection chooses among them only.
    #[schema(rename = "languages[]")]
    pub languages: Option<Vec<String>>,
    /// `segment` and/or `word` (verbose_json). Also accepted without brackets.
    #[schema(rename = "timestamp_granularities[]")]
    pub timestamp_granularities: Option<Vec<String>>,
    /// `logprobs`: per-token log-probabilities in json/verbose_json and stream events.
    #[schema(rename = "include[]")]
    pub include: Option<Vec<String>>,
    /// `true`: answer with server-sent events `transcript.text.delta` … `transcript.text.done`;
    /// when diarizing, each delta carries its `segment_id` and, with `diarized_json`, is
    /// followed by its `transcript.text.segment`.
    pub stream: Option<bool>,
    /// `auto` or a `{"type":"server_vad"}` object (or `chunking_strategy[type]=server_vad`):
    /// cut the audio at pauses found by voice activity detection and decode the
    /// pieces in parallel (Steno's `parallel` mode).
    pub chunking_strategy: Option<String>,
    /// Steno extension: `sequential` (OpenAI's long-form algorithm, default) or
    /// `parallel` (windows cut at pauses, decoded in parallel; `batched`, its former
    /// name, is still accepted).
    pub mode: Option<String>,
    /// Sample rate of `audio/pcm` uploads (default 24000).
    pub sample_rate: Option<u32>,
}

/// The multipart form of `POST /v1/audio/translations`: audio in any language
/// to English text. Fields as for transcriptions, without `language`.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct TranslationForm {
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    pub model: String,
    pub prompt: Option<String>,
    pub response_format: Option<String>,
    pub temperature: Option<f32>,
}
