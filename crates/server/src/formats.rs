//! Transcript renderings: OpenAI's response formats (`json`, `text`, `srt`, `vtt`,
//! `verbose_json`) plus the CLI's `txt` and `tsv`.

use std::fmt::Write;

use steno_whisper::{Segment, Task, Transcript};

use crate::api::{Logprob, Transcription, Usage, VerboseSegment, VerboseTranscription, WordTiming};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
    Tsv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "json" => Format::Json,
            "text" | "txt" => Format::Text,
            "srt" => Format::Srt,
            "vtt" => Format::Vtt,
            "verbose_json" => Format::VerboseJson,
            "tsv" => Format::Tsv,
            other => {
                return Err(format!(
                    "unknown format {other:?}: expected json, text, srt, vtt, verbose_json or tsv"
                ))
            }
        })
    }
}

impl Format {
    /// The HTTP content type of the rendering (OpenAI sends text/plain for
    /// text, srt and vtt alike).
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json | Format::VerboseJson => "application/json",
            _ => "text/plain; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Json | Format::VerboseJson => "json",
            Format::Text => "txt",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Tsv => "tsv",
        }
    }
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (VTT).
fn timestamp(seconds: f64, separator: char) -> String {
    let millis = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}{separator}{ms:03}")
}

fn spoken(segments: &[Segment]) -> impl Iterator<Item = &Segment> {
    segments.iter().filter(|s| !s.text.trim().is_empty())
}

/// What a rendering includes beyond the transcript itself.
#[derive(Clone, Debug)]
pub struct Rendering {
    pub format: Format,
    pub task: Task,
    /// verbose_json: the segment list (left out when only word timings were asked).
    pub segments: bool,
    /// verbose_json: the top-level word list.
    pub words: bool,
    /// json/verbose_json: per-token log-probabilities.
    pub logprobs: Option<Vec<Logprob>>,
}

impl Rendering {
    pub fn new(format: Format, task: Task) -> Self {
        Self {
            format,
            task,
            segments: true,
            words: false,
            logprobs: None,
        }
    }
}

fn json_line<T: serde::Serialize>(body: &T) -> String {
    let mut out = serde_json::to_string(body).unwrap_or_default();
    out.push('\n');
    out
}

pub fn render(transcript: &Transcript, r: &Rendering) -> String {
    match r.format {
        Format::Json => json_line(&Transcription {
            text: transcript.text.trim().to_string(),
            logprobs: r.logprobs.clone(),
            usage: Usage::duration(transcript.duration),
        }),
        Format::Text => format!("{}\n", transcript.text.trim()),
        Format::Srt => {
            let mut out = String::new();
            for (i, s) in spoken(&transcript.segments).enumerate() {
                let _ = write!(
                    out,
                    "{}\n{} --> {}\n{}\n\n",
                    i + 1,
                    timestamp(s.start, ','),
                    timestamp(s.end, ','),
                    s.text.trim()
                );
            }
            out
        }
        Format::Vtt => {
            let mut out = String::from("WEBVTT\n\n");
            for s in spoken(&transcript.segments) {
                let _ = write!(
                    out,
                    "{} --> {}\n{}\n\n",
                    timestamp(s.start, '.'),
                    timestamp(s.end, '.'),
                    s.text.trim()
                );
            }
            out
        }
        Format::Tsv => {
            let mut out = String::from("start\tend\ttext\n");
            for s in spoken(&transcript.segments) {
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}",
                    (s.start * 1000.0).round() as u64,
                    (s.end * 1000.0).round() as u64,
                    s.text.trim().replace('\t', " ")
                );
            }
            out
        }
        Format::VerboseJson => json_line(&verbose(transcript, r)),
    }
}

fn verbose(transcript: &Transcript, r: &Rendering) -> VerboseTranscription {
    let segments = r.segments.then(|| {
        transcript
            .segments
            .iter()
            .map(|s| VerboseSegment {
                id: s.id,
                seek: s.seek,
                start: s.start,
                end: s.end,
                text: s.text.clone(),
                tokens: s.tokens.clone(),
                temperature: s.temperature,
                avg_logprob: s.avg_logprob,
                compression_ratio: s.compression_ratio,
                no_speech_prob: s.no_speech_prob,
            })
            .collect()
    });
    let words = r.words.then(|| {
        transcript
            .segments
            .iter()
            .flat_map(|s| s.words.iter().flatten())
            .map(|w| WordTiming {
                word: w.word.trim().to_string(),
                start: w.start,
                end: w.end,
            })
            .collect()
    });
    VerboseTranscription {
        task: match r.task {
            Task::Transcribe => "transcribe",
            Task::Translate => "translate",
        },
        language: steno_whisper::tokenizer::language_name(&transcript.language)
            .unwrap_or(&transcript.language)
            .to_string(),
        duration: transcript.duration,
        text: transcript.text.trim().to_string(),
        segments,
        words,
        logprobs: r.logprobs.clone(),
        usage: Usage::duration(transcript.duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_like_srt_and_vtt() {
        assert_eq!(timestamp(0.0, ','), "00:00:00,000");
        assert_eq!(timestamp(3661.5, '.'), "01:01:01.500");
        assert_eq!(timestamp(59.9996, ','), "00:01:00,000");
    }

    #[test]
    fn format_names_parse() {
        assert_eq!(
            "verbose_json".parse::<Format>().unwrap(),
            Format::VerboseJson
        );
        assert_eq!("txt".parse::<Format>().unwrap(), Format::Text);
        assert!("xml".parse::<Format>().is_err());
    }
}
