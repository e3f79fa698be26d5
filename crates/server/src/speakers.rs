//! Speaker labels on a transcript: Whisper's segments as the speaker crate's timed text,
//! the labelled pieces as OpenAI's diarized segments (`diarized_json`, the streamed
//! `transcript.text.segment` events), and the speaker turns as RTTM lines (the CLI's
//! `--format rttm`, what diarization scorers read).

use std::fmt::Write;

use steno_speaker::{label_segments, SpeakerTurn, TimedText, TimedWord};
use steno_whisper::{Segment, Transcript};

use crate::api::DiarizedSegment;

/// A transcript's segments as timed text, with their words when they were timed
/// (diarization asks for word timestamps so that a segment splits where its speaker
/// changes).
pub fn timed_text(segments: &[Segment]) -> Vec<TimedText> {
    segments
        .iter()
        .map(|s| TimedText {
            start: s.start,
            end: s.end,
            text: s.text.clone(),
            words: s.words.as_ref().map(|words| {
                words
                    .iter()
                    .map(|w| TimedWord {
                        start: w.start,
                        end: w.end,
                        text: w.word.clone(),
                    })
                    .collect()
            }),
        })
        .collect()
}

/// The transcript split into one piece per speaker change, each with its speaker, in
/// OpenAI's shape; pieces without text are left out. Ids are `seg_0`, `seg_1`, … With
/// no turns everything is speaker `A`.
pub fn diarized_segments(transcript: &Transcript, turns: &[SpeakerTurn]) -> Vec<DiarizedSegment> {
    label_segments(&timed_text(&transcript.segments), turns)
        .into_iter()
        .filter(|piece| !piece.text.trim().is_empty())
        .enumerate()
        .map(|(i, piece)| DiarizedSegment {
            kind: "transcript.text.segment",
            id: format!("seg_{i}"),
            start: piece.start,
            end: piece.end,
            speaker: piece.speaker,
            text: piece.text.trim().to_string(),
        })
        .collect()
}

/// One RTTM `SPEAKER` line per turn: `SPEAKER <recording> 1 <start> <duration> <NA> <NA>
/// <speaker> <NA> <NA>`, times in seconds with millisecond precision. RTTM fields are
/// separated by spaces, so spaces in the recording or a speaker name become `_`.
pub fn rttm(recording: &str, turns: &[SpeakerTurn]) -> String {
    let field = |s: &str| -> String {
        let s: String = s
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        if s.is_empty() {
            "<NA>".into()
        } else {
            s
        }
    };
    let recording = field(recording);
    let mut out = String::new();
    for turn in turns.iter().filter(|t| t.end > t.start) {
        let _ = writeln!(
            out,
            "SPEAKER {recording} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>",
            turn.start,
            turn.end - turn.start,
            field(&turn.speaker)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use steno_whisper::timing::Word;

    fn word(word: &str, start: f64, end: f64) -> Word {
        Word {
            word: word.into(),
            start,
            end,
            probability: 1.0,
        }
    }

    fn turn(start: f64, end: f64, speaker: &str) -> SpeakerTurn {
        SpeakerTurn {
            start,
            end,
            speaker: speaker.into(),
        }
    }

    fn transcript(segments: Vec<Segment>) -> Transcript {
        Transcript {
            text: segments.iter().map(|s| s.text.as_str()).collect(),
            language: "en".into(),
            language_probs: None,
            duration: 4.0,
            segments,
        }
    }

    #[test]
    fn a_segment_splits_where_the_speaker_changes() {
        let segment = Segment {
            start: 0.0,
            end: 4.0,
            text: " Hello there. Hi!".into(),
            words: Some(vec![
                word(" Hello", 0.0, 0.8),
                word(" there.", 0.8, 1.6),
                word(" Hi!", 2.5, 3.2),
            ]),
            ..Segment::default()
        };
        let silent = Segment {
            start: 4.0,
            end: 4.0,
            text: " ".into(),
            ..Segment::default()
        };
        let turns = [turn(0.0, 2.0, "A"), turn(2.2, 4.0, "agent")];
        let pieces = diarized_segments(&transcript(vec![segment, silent]), &turns);
        let shape: Vec<(&str, &str, &str)> = pieces
            .iter()
            .map(|p| (p.id.as_str(), p.speaker.as_str(), p.text.as_str()))
            .collect();
        assert_eq!(
            shape,
            [("seg_0", "A", "Hello there."), ("seg_1", "agent", "Hi!")]
        );
        assert_eq!((pieces[1].start, pieces[1].end), (2.5, 3.2));
        assert!(pieces.iter().all(|p| p.kind == "transcript.text.segment"));
    }

    #[test]
    fn rttm_has_one_line_per_turn() {
        let turns = [
            turn(0.0, 1.25, "A"),
            turn(1.5, 1.5, "B"),
            turn(2.0, 3.0, "Ada Lovelace"),
        ];
        assert_eq!(
            rttm("my call", &turns),
            "SPEAKER my_call 1 0.000 1.250 <NA> <NA> A <NA> <NA>\n\
             SPEAKER my_call 1 2.000 1.000 <NA> <NA> Ada_Lovelace <NA> <NA>\n"
        );
        assert_eq!(rttm("x", &[]), "");
    }
}
