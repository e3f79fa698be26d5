//! Transcription's entry points and per-job setup, after OpenAI's `transcribe()`:
//! the options ([`TranscribeOptions`], [`Mode`]), the language and logit rules they
//! resolve to, and [`Whisper::transcribe`] / [`Whisper::transcribe_many`], which run a
//! [`Scheduler`] to completion. Production does not call these: the engine's worker
//! thread drives a [`Scheduler`] itself, interleaving admission and cancellation.

use serde::{Deserialize, Serialize};

use crate::beam::{BeamOptions, Search, MAX_CANDIDATES};
use crate::decoding::{KeywordBias, RowRules, SpecialTokens, TimestampRules};
use crate::error::{Result, WhisperError};
pub use crate::keywords::DEFAULT_KEYWORD_BIAS;
pub use crate::longform::{compression_ratio, TIME_PRECISION};
use crate::scheduler::{JobEvent, JobId, Scheduler};
use crate::tokenizer::Task;
use crate::transcript::{Segment, TokenLogprob, Transcript};
use crate::Whisper;

/// How a job's audio is cut into windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// OpenAI's algorithm: one window at a time, each starting where the previous
    /// one's text ended and conditioned on it.
    Sequential,
    /// Windows cut up front at pauses, decoded as parallel rows: the fastest way
    /// through one long file. Not to be confused with the batching of rows from many
    /// jobs, which every mode gets. Also accepted under its first name, `batched`.
    #[serde(alias = "batched")]
    Parallel,
}

impl std::str::FromStr for Mode {
    type Err = WhisperError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sequential" => Ok(Mode::Sequential),
            "parallel" | "batched" => Ok(Mode::Parallel),
            other => Err(WhisperError::InvalidOption(format!(
                "mode must be sequential or parallel (batched is its former name), not {other:?}"
            ))),
        }
    }
}

/// OpenAI `transcribe()` options, with its defaults.
#[derive(Clone, Debug)]
pub struct TranscribeOptions {
    pub task: Task,
    /// A language code; `None` detects it on the first window (multilingual models).
    pub language: Option<String>,
    /// The temperature of each attempt at a window: the first, then one fallback per
    /// rejected result.
    pub temperatures: Vec<f32>,
    pub compression_ratio_threshold: Option<f32>,
    pub logprob_threshold: Option<f32>,
    pub no_speech_threshold: Option<f32>,
    pub condition_on_previous_text: bool,
    pub initial_prompt: Option<String>,
    pub without_timestamps: bool,
    pub max_initial_timestamp: Option<f32>,
    pub suppress_blank: bool,
    /// Token ids to suppress; `-1` adds the non-speech symbols (the default).
    pub suppress_tokens: Vec<i64>,
    pub mode: Mode,
    pub seed: u64,
    /// Word-level timestamps from cross-attention alignment.
    pub word_timestamps: bool,
    /// Terms to favour (`keywords[]`): a window whose text names none of them is decoded
    /// again with them in its prompt and their tokens biased by `keyword_bias`, and that
    /// text kept where it only corrects a misheard term ([`crate::keywords`]).
    pub keywords: Vec<String>,
    /// The logit bias of `keywords`, at most [`crate::decoding::MAX_KEYWORD_BIAS`].
    pub keyword_bias: f32,
    /// The languages to expect (`languages[]`, codes): detection chooses among them
    /// only. Empty: any language the model knows.
    pub languages: Vec<String>,
    /// Beams of the temperature-0 attempts (OpenAI's `beam_size`, [`crate::beam`]); 1
    /// decodes greedily. Each beam is a row of the shared batch.
    pub beam_size: usize,
    /// Rows sampled at each fallback temperature, the best-ranked one kept (OpenAI's
    /// `best_of`); 1 samples one.
    pub best_of: usize,
    /// Beam search patience: it stops once `round(beam_size × patience)` sequences ended.
    pub patience: f32,
    /// How candidates are ranked: `None` by log-probability per token, `Some(α)` with
    /// Google NMT's length penalty (OpenAI's `length_penalty`).
    pub length_penalty: Option<f32>,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            task: Task::Transcribe,
            language: None,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            logprob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            initial_prompt: None,
            without_timestamps: false,
            max_initial_timestamp: Some(1.0),
            suppress_blank: true,
            suppress_tokens: vec![-1],
            mode: Mode::Sequential,
            seed: 0,
            word_timestamps: false,
            keywords: Vec::new(),
            keyword_bias: DEFAULT_KEYWORD_BIAS,
            languages: Vec::new(),
            beam_size: 1,
            best_of: 1,
            patience: 1.0,
            length_penalty: None,
        }
    }
}

impl TranscribeOptions {
    /// How an attempt at `temperature` finds its window's text: a beam search at 0, best
    /// of `best_of` above, else one row.
    pub fn search(&self, temperature: f32) -> Search {
        let beam = BeamOptions {
            beam_size: self.beam_size,
            patience: self.patience,
            length_penalty: self.length_penalty,
        };
        Search::for_attempt(temperature, beam, self.best_of, self.length_penalty)
    }

    /// Refuses beam and best-of settings out of range ([`MAX_CANDIDATES`]).
    pub fn check_search(&self) -> Result<()> {
        let bad = |what: String| Err(WhisperError::InvalidOption(what));
        for (name, value) in [("beam_size", self.beam_size), ("best_of", self.best_of)] {
            if !(1..=MAX_CANDIDATES).contains(&value) {
                return bad(format!("{name} must be 1 to {MAX_CANDIDATES}, not {value}"));
            }
        }
        if !(self.patience.is_finite() && self.patience > 0.0) {
            return bad(format!("patience must be above 0, not {}", self.patience));
        }
        if self
            .length_penalty
            .is_some_and(|a| !(0.0..=1.0).contains(&a))
        {
            return bad("length_penalty must be 0 to 1".into());
        }
        Ok(())
    }

    /// The text the first window is conditioned on: the prompt. Keywords are not part
    /// of it: only a window's keyword pass reads them ([`crate::keywords`]).
    pub fn conditioning_prompt(&self) -> Option<String> {
        let prompt = self.initial_prompt.as_deref().map(str::trim);
        prompt.filter(|p| !p.is_empty()).map(str::to_string)
    }
}

/// Detected language probabilities (most likely first) restricted to `expected` codes
/// and renormalised over them, as if the other language tokens were masked before the
/// softmax; all of them when `expected` is empty or names none of them.
pub(crate) fn expected_languages(
    probs: Vec<(String, f32)>,
    expected: &[String],
) -> Vec<(String, f32)> {
    let kept: Vec<(String, f32)> = probs
        .iter()
        .filter(|(code, _)| expected.contains(code))
        .cloned()
        .collect();
    let total: f32 = kept.iter().map(|(_, p)| p).sum();
    if kept.is_empty() || total <= 0.0 {
        return probs;
    }
    kept.into_iter()
        .map(|(code, p)| (code, p / total))
        .collect()
}

impl Whisper {
    /// The language code for `language` (a code or an English name), if the model
    /// knows it.
    pub(crate) fn resolve_language(&self, language: &str) -> Result<String> {
        let code = crate::tokenizer::language_code(language)
            .ok_or_else(|| WhisperError::UnsupportedLanguage(language.to_string()))?;
        if !self.tokenizer.is_multilingual() && code != "en" {
            return Err(WhisperError::UnsupportedLanguage(format!(
                "{language} (this model is English-only)"
            )));
        }
        self.tokenizer.language_token(code)?;
        Ok(code.to_string())
    }

    /// The logit rules of every row of a job with `options`.
    pub fn row_rules(&self, options: &TranscribeOptions) -> Result<RowRules> {
        let tk = &self.tokenizer;
        let mut suppress: Vec<u32> = options
            .suppress_tokens
            .iter()
            .filter(|&&t| t >= 0)
            .map(|&t| t as u32)
            .collect();
        if options.suppress_tokens.contains(&-1) {
            suppress.extend(tk.non_speech_tokens());
        }
        suppress.extend([
            tk.transcribe(),
            tk.translate(),
            tk.sot(),
            tk.sot_prev(),
            tk.sot_lm(),
            tk.no_speech(),
        ]);
        suppress.sort_unstable();
        suppress.dedup();
        let timestamps = (!options.without_timestamps).then(|| TimestampRules {
            max_initial_timestamp_index: options
                .max_initial_timestamp
                .map(|s| (s as f64 / TIME_PRECISION).round() as u32),
        });
        Ok(RowRules {
            specials: SpecialTokens {
                eot: tk.eot(),
                no_speech: Some(tk.no_speech()),
                no_timestamps: tk.no_timestamps(),
                timestamp_begin: tk.timestamp_begin(),
                blank: tk.encode(" ")?,
            },
            suppress_blank: options.suppress_blank,
            suppress_tokens: suppress,
            timestamps,
            sample_len: self.model.dims.n_text_ctx / 2,
            stop_degenerate: true,
            keywords: KeywordBias::new(&self.tokenizer, &options.keywords, options.keyword_bias)?,
        })
    }

    /// The text tokens of `segments` with their log-probabilities, in order
    /// (timestamps and special tokens left out).
    pub fn token_logprobs(&self, segments: &[Segment]) -> Vec<TokenLogprob> {
        segments
            .iter()
            .flat_map(|s| s.tokens.iter().zip(&s.token_logprobs))
            .filter_map(|(&token, &logprob)| {
                let bytes = self.tokenizer.token_bytes(token)?.to_vec();
                Some(TokenLogprob {
                    token: String::from_utf8_lossy(&bytes).into_owned(),
                    logprob,
                    bytes,
                })
            })
            .collect()
    }

    /// Transcribes several files together through one scheduler, stepping it until
    /// every job is done (model tests and the bench example use this; the CLI and the
    /// server go through the engine's worker).
    pub fn transcribe_many(
        &self,
        inputs: &[(&[f32], TranscribeOptions)],
        max_rows: usize,
    ) -> Vec<Result<Transcript>> {
        let mut scheduler = Scheduler::new(max_rows);
        let mut results: Vec<Option<Result<Transcript>>> =
            (0..inputs.len()).map(|_| None).collect();
        for (i, (samples, options)) in inputs.iter().enumerate() {
            if let Err(e) = scheduler.submit(self, i as JobId, samples.to_vec(), options.clone()) {
                results[i] = Some(Err(e));
            }
        }
        while !scheduler.is_idle() {
            match scheduler.step(self) {
                Ok(events) => {
                    for (id, event) in events {
                        record(&mut results, id, event);
                    }
                }
                Err(e) => {
                    for r in results.iter_mut().filter(|r| r.is_none()) {
                        *r = Some(Err(WhisperError::Mlx(e.to_string())));
                    }
                    break;
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(WhisperError::Mlx("job did not finish".into()))))
            .collect()
    }

    pub fn transcribe(&self, samples: &[f32], options: TranscribeOptions) -> Result<Transcript> {
        self.transcribe_many(&[(samples, options)], 16)
            .pop()
            .unwrap_or_else(|| Err(WhisperError::Internal("no result for one input".into())))
    }
}

/// Where [`Whisper::transcribe_many`] puts a job's event: its transcript or error in
/// the job's slot (the job id is its input's index); streamed segments are not kept,
/// the transcript has them all.
fn record(results: &mut [Option<Result<Transcript>>], id: JobId, event: JobEvent) {
    let Some(slot) = usize::try_from(id).ok().and_then(|i| results.get_mut(i)) else {
        return;
    };
    match event {
        JobEvent::Done(transcript) => *slot = Some(Ok(transcript)),
        JobEvent::Failed(error) => *slot = Some(Err(error)),
        JobEvent::Segments(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_under_both_names() {
        assert_eq!("sequential".parse::<Mode>().unwrap(), Mode::Sequential);
        assert_eq!("parallel".parse::<Mode>().unwrap(), Mode::Parallel);
        assert_eq!("batched".parse::<Mode>().unwrap(), Mode::Parallel);
        let error = "fast".parse::<Mode>().unwrap_err().to_string();
        for name in ["sequential", "parallel", "batched", "\"fast\""] {
            assert!(error.contains(name), "{error}");
        }
    }

    #[test]
    fn modes_deserialize_under_both_names() {
        let parse = |s: &str| serde_json::from_str::<Mode>(s).unwrap();
        assert_eq!(parse("\"parallel\""), Mode::Parallel);
        assert_eq!(parse("\"batched\""), Mode::Parallel);
        assert_eq!(parse("\"sequential\""), Mode::Sequential);
        assert_eq!(
            serde_json::to_string(&Mode::Parallel).unwrap(),
            "\"parallel\""
        );
    }

    #[test]
    fn expected_languages_mask_the_others_and_renormalise() {
        let probs = vec![
            ("en".to_string(), 0.6),
            ("de".to_string(), 0.3),
            ("fr".to_string(), 0.1),
        ];
        let kept = expected_languages(probs.clone(), &["fr".into(), "de".into()]);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].0, "de", "the order (most likely first) is kept");
        assert!((kept[0].1 - 0.75).abs() < 1e-6 && (kept[1].1 - 0.25).abs() < 1e-6);
        // Nothing expected, or none of it among the probabilities: all of them.
        assert_eq!(expected_languages(probs.clone(), &[]), probs);
        assert_eq!(expected_languages(probs.clone(), &["ja".into()]), probs);
    }

    #[test]
    fn keywords_stay_out_of_the_conditioning_prompt() {
        let with = |prompt: Option<&str>, keywords: &[&str]| {
            TranscribeOptions {
                initial_prompt: prompt.map(str::to_string),
                keywords: keywords.iter().map(|k| k.to_string()).collect(),
                ..TranscribeOptions::default()
            }
            .conditioning_prompt()
        };
        assert_eq!(with(None, &[]), None);
        assert_eq!(with(Some("  "), &[]), None);
        assert_eq!(with(Some(" Hello. "), &[]).as_deref(), Some("Hello."));
        assert_eq!(with(None, &["Nguyen", "Steno"]), None);
        assert_eq!(
            with(Some("Minutes of the call."), &["Nguyen"]).as_deref(),
            Some("Minutes of the call.")
        );
    }
}
