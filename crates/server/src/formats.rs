//! Transcript renderings: OpenAI's response formats (`json`, `text`, `srt`, `vtt`,
//! `verbose_json`, `diarized_json`) plus the CLI's `txt`, `tsv` and `rttm`.

use std::fmt::Write;

use steno_speaker::SpeakerTurn;
use steno_whisper::{Segment, Task, Transcript};

use crate::api::{
    DiarizedTranscription, Language, Logprob, Transcription, Usage, VerboseSegment,
    VerboseTranscription, WordTiming,
};
use crate::speakers;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
    /// Segments with their speakers (diarization).
    DiarizedJson,
    Tsv,
    /// The speaker turns as RTTM lines (the CLI's, with `--diarize`).
    Rttm,
}

/// Every rendering by its name, in the order messages list them: the one list of formats.
/// `response_format` accepts the [`Format::is_openai`] ones; the CLI's `--format` all of
/// them, and `txt` for [`Format::Text`].
const NAMES: [(&str, Format); 8] = [
    ("json", Format::Json),
    ("text", Format::Text),
    ("srt", Format::Srt),
    ("verbose_json", Format::VerboseJson),
    ("vtt", Format::Vtt),
    ("diarized_json", Format::DiarizedJson),
    ("tsv", Format::Tsv),
    ("rttm", Format::Rttm),
];

/// The CLI's other name for [`Format::Text`], after the file extension.
const TEXT_ALIAS: &str = "txt";

impl std::str::FromStr for Format {
    type Err = String;
    /// Any format by name (the CLI's `--format`).
    fn from_str(s: &str) -> Result<Self, String> {
        if s == TEXT_ALIAS {
            return Ok(Format::Text);
        }
        Format::named(s, |_| true).ok_or_else(|| {
            format!(
                "unknown format {s:?}: expected {}",
                Format::listed(|_| true)
            )
        })
    }
}

impl Format {
    /// Whether OpenAI's API has this format (`tsv` and `rttm` are the CLI's own).
    pub fn is_openai(self) -> bool {
        !matches!(self, Format::Tsv | Format::Rttm)
    }

    /// Whether the rendering needs speaker turns (diarization).
    pub fn needs_speakers(self) -> bool {
        matches!(self, Format::DiarizedJson | Format::Rttm)
    }

    /// The format's name (`response_format`, `--format`).
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, format)| *format == self)
            .map_or("", |(name, _)| *name)
    }

    /// A `response_format` value: one of OpenAI's formats, by its exact name.
    pub fn from_openai_name(name: &str) -> Option<Format> {
        Format::named(name, Format::is_openai)
    }

    /// OpenAI's format names as a message lists them: `json, text, … or vtt`.
    pub fn openai_names() -> String {
        Format::listed(Format::is_openai)
    }

    fn named(name: &str, keep: impl Fn(Format) -> bool) -> Option<Format> {
        NAMES
            .iter()
            .find(|(n, format)| *n == name && keep(*format))
            .map(|(_, format)| *format)
    }

    fn listed(keep: impl Fn(Format) -> bool) -> String {
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(_, format)| keep(*format))
            .map(|(name, _)| *name)
            .collect();
        match names.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    /// The HTTP content type of the rendering (OpenAI sends text/plain for
    /// text, srt and vtt alike).
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json | Format::VerboseJson | Format::DiarizedJson => "application/json",
            _ => "text/plain; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Json | Format::VerboseJson | Format::DiarizedJson => "json",
            Format::Text => "txt",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Tsv => "tsv",
            Format::Rttm => "rttm",
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
    /// diarized_json, rttm: who spoke when (`None` renders everything as speaker `A`).
    pub speakers: Option<Vec<SpeakerTurn>>,
    /// rttm: the recording's name (its file's stem).
    pub recording: String,
}

impl Rendering {
    pub fn new(format: Format, task: Task) -> Self {
        Self {
            format,
            task,
            segments: true,
            words: false,
            logprobs: None,
            speakers: None,
            recording: "audio".into(),
        }
    }
}

fn json_line<T: serde::Serialize>(body: &T) -> String {
    let mut out = serde_json::to_string(body).unwrap_or_default();
    out.push('\n');
    out
}

/// The transcript as `r.format` asks. A new format needs a [`Format`] variant, its name
/// in [`NAMES`] and its arm here.
pub fn render(transcript: &Transcript, r: &Rendering) -> String {
    match r.format {
        Format::Json => json_line(&Transcription {
            text: transcript.text.trim().to_string(),
            languages: Language::list(&transcript.language),
            logprobs: r.logprobs.clone(),
            usage: Usage::duration(transcript.duration),
        }),
        Format::DiarizedJson => json_line(&DiarizedTranscription {
            task: "transcribe",
            duration: transcript.duration,
            text: transcript.text.trim().to_string(),
            segments: speakers::diarized_segments(transcript, turns(r)),
            usage: Usage::duration(transcript.duration),
        }),
        Format::Rttm => speakers::rttm(&r.recording, turns(r)),
        Format::Text => format!("{}\n", transcript.text.trim()),
        Format::Srt => srt(&transcript.segments),
        Format::Vtt => vtt(&transcript.segments),
        Format::Tsv => tsv(&transcript.segments),
        Format::VerboseJson => json_line(&verbose(transcript, r)),
    }
}

fn turns(r: &Rendering) -> &[SpeakerTurn] {
    r.speakers.as_deref().unwrap_or_default()
}

fn srt(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (i, s) in spoken(segments).enumerate() {
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

fn vtt(segments: &[Segment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in spoken(segments) {
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

/// Milliseconds and text, tab-separated (whisper's CLI `tsv`).
fn tsv(segments: &[Segment]) -> String {
    let mut out = String::from("start\tend\ttext\n");
    for s in spoken(segments) {
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

    fn segment(id: usize, start: f64, end: f64, text: &str) -> Segment {
        Segment {
            id,
            start,
            end,
            text: text.into(),
            ..Segment::default()
        }
    }

    #[test]
    fn subtitles_skip_silent_segments() {
        let segments = [
            segment(0, 0.0, 1.5, " Ask not"),
            segment(1, 1.5, 2.0, "  "),
            segment(2, 2.0, 3.25, " what\tyour country"),
        ];
        assert_eq!(
            srt(&segments),
            "1\n00:00:00,000 --> 00:00:01,500\nAsk not\n\n\
             2\n00:00:02,000 --> 00:00:03,250\nwhat\tyour country\n\n"
        );
        assert_eq!(
            vtt(&segments),
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nAsk not\n\n\
             00:00:02.000 --> 00:00:03.250\nwhat\tyour country\n\n"
        );
        assert_eq!(
            tsv(&segments),
            "start\tend\ttext\n0\t1500\tAsk not\n2000\t3250\twhat your country\n"
        );
    }

    #[test]
    fn format_names_parse() {
        assert_eq!(
            "verbose_json".parse::<Format>().unwrap(),
            Format::VerboseJson
        );
        assert_eq!("txt".parse::<Format>().unwrap(), Format::Text);
        assert_eq!("tsv".parse::<Format>().unwrap(), Format::Tsv);
        assert_eq!(
            "xml".parse::<Format>().unwrap_err(),
            "unknown format \"xml\": expected json, text, srt, verbose_json, vtt, diarized_json, tsv or rttm"
        );
    }

    #[test]
    fn response_format_takes_openai_names_only() {
        for (name, format) in [
            ("json", Format::Json),
            ("text", Format::Text),
            ("srt", Format::Srt),
            ("verbose_json", Format::VerboseJson),
            ("vtt", Format::Vtt),
        ] {
            assert_eq!(Format::from_openai_name(name), Some(format), "{name}");
        }
        assert_eq!(
            Format::from_openai_name("diarized_json"),
            Some(Format::DiarizedJson)
        );
        for name in ["tsv", "rttm", "txt", "JSON", "", "json,text"] {
            assert_eq!(Format::from_openai_name(name), None, "{name}");
        }
        assert_eq!(
            Format::openai_names(),
            "json, text, srt, verbose_json, vtt or diarized_json"
        );
    }

    #[test]
    fn every_format_has_one_name() {
        for format in [
            Format::Json,
            Format::Text,
            Format::Srt,
            Format::Vtt,
            Format::VerboseJson,
            Format::DiarizedJson,
            Format::Tsv,
            Format::Rttm,
        ] {
            let names: Vec<&str> = NAMES
                .iter()
                .filter(|(_, f)| *f == format)
                .map(|(name, _)| *name)
                .collect();
            assert_eq!(names.len(), 1, "{format:?}: {names:?}");
            assert_eq!(names[0].parse::<Format>().unwrap(), format);
        }
    }
}
