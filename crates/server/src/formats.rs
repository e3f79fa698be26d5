//! Transcript renderings: OpenAI's response formats (`json`, `text`, `srt`, `vtt`,
//! `verbose_json`) plus the CLI's `txt` and `tsv`.

use std::fmt::Write;

use serde_json::json;
use steno_whisper::{Segment, Task, Transcript};

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

pub fn render(transcript: &Transcript, format: Format, task: Task) -> String {
    match format {
        Format::Json => format!("{}\n", json!({ "text": transcript.text.trim() })),
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
        Format::VerboseJson => {
            let segments: Vec<_> = transcript
                .segments
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "seek": s.seek,
                        "start": s.start,
                        "end": s.end,
                        "text": s.text,
                        "tokens": s.tokens,
                        "temperature": s.temperature,
                        "avg_logprob": s.avg_logprob,
                        "compression_ratio": s.compression_ratio,
                        "no_speech_prob": s.no_speech_prob,
                        "words": s.words,
                    })
                })
                .collect();
            let words: Vec<_> = transcript
                .segments
                .iter()
                .flat_map(|s| s.words.iter().flatten())
                .map(|w| json!({ "word": w.word.trim(), "start": w.start, "end": w.end }))
                .collect();
            let task = match task {
                Task::Transcribe => "transcribe",
                Task::Translate => "translate",
            };
            let mut body = json!({
                    "task": task,
                    "language": steno_whisper::tokenizer::language_name(&transcript.language)
                        .unwrap_or(&transcript.language),
                    "duration": transcript.duration,
                    "text": transcript.text.trim(),
                    "segments": segments,
            });
            if transcript.segments.iter().any(|s| s.words.is_some()) {
                body["words"] = json!(words);
            }
            format!("{body}\n")
        }
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
