//! What transcription produces: segments (timed stretches of text), the transcript of a
//! job, and per-token log-probabilities.

use serde::Serialize;

use crate::timing::Word;

/// A timed stretch of text, as OpenAI's `transcribe()` returns it. `Default` is an
/// empty segment at 0 s, for building made-up ones in tests.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Segment {
    pub id: usize,
    /// First mel frame of the window the segment was decoded from.
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f32,
    pub compression_ratio: f32,
    pub no_speech_prob: f32,
    /// Log-probability of each of `tokens`.
    #[serde(skip)]
    pub token_logprobs: Vec<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word>>,
}

/// The result of one job.
#[derive(Clone, Debug, Serialize)]
pub struct Transcript {
    pub text: String,
    pub language: String,
    /// Detected language probabilities, when the language was detected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_probs: Option<Vec<(String, f32)>>,
    pub duration: f64,
    pub segments: Vec<Segment>,
}

/// One text token with its log-probability (OpenAI's `include[]=logprobs` entry).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}
