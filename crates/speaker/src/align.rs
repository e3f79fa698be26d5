//! Speaker turns onto timed text: each word (or segment, without words) takes the speaker
//! whose turns it overlaps most, and a segment is split where its words' speaker changes.

use crate::SpeakerTurn;

/// A word with its time, as Whisper's word timestamps give it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedWord {
    pub start: f64,
    pub end: f64,
    /// As Whisper writes it, leading space included.
    pub text: String,
}

/// A transcript segment: its time, its text, and its words when they were timed.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedText {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub words: Option<Vec<TimedWord>>,
}

/// A piece of text spoken by one speaker.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledText {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub speaker: String,
    /// The segment of the input it comes from (a split segment gives several pieces).
    pub segment: usize,
    /// Its words, when the segment had words.
    pub words: Option<Vec<TimedWord>>,
}

/// Puts `turns`' speakers on `segments`. A segment with words is split at each word where
/// the speaker changes; one without takes the speaker it overlaps most. With no turns at
/// all, everything is speaker "A".
pub fn label_segments(segments: &[TimedText], turns: &[SpeakerTurn]) -> Vec<LabelledText> {
    let mut out = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        match segment.words.as_deref() {
            Some(words) if !words.is_empty() => split_by_words(index, words, turns, &mut out),
            _ => out.push(LabelledText {
                start: segment.start,
                end: segment.end,
                text: segment.text.clone(),
                speaker: speaker_at(segment.start, segment.end, turns),
                segment: index,
                words: segment.words.clone(),
            }),
        }
    }
    out
}

fn split_by_words(
    index: usize,
    words: &[TimedWord],
    turns: &[SpeakerTurn],
    out: &mut Vec<LabelledText>,
) {
    let mut current: Option<LabelledText> = None;
    for word in words {
        let speaker = speaker_at(word.start, word.end, turns);
        match current.as_mut() {
            Some(piece) if piece.speaker == speaker => {
                piece.end = word.end;
                piece.text.push_str(&word.text);
                piece.words.get_or_insert_with(Vec::new).push(word.clone());
            }
            _ => {
                out.extend(current.take());
                current = Some(LabelledText {
                    start: word.start,
                    end: word.end,
                    text: word.text.clone(),
                    speaker,
                    segment: index,
                    words: Some(vec![word.clone()]),
                });
            }
        }
    }
    out.extend(current);
}

/// The speaker of `[start, end)`: the one whose turns overlap it most; with no overlap,
/// the speaker of the nearest turn; with no turns, "A".
fn speaker_at(start: f64, end: f64, turns: &[SpeakerTurn]) -> String {
    let mut totals: Vec<(&str, f64)> = Vec::new();
    for t in turns {
        let overlap = end.min(t.end) - start.max(t.start);
        if overlap > 0.0 {
            match totals.iter_mut().find(|(s, _)| *s == t.speaker) {
                Some((_, total)) => *total += overlap,
                None => totals.push((&t.speaker, overlap)),
            }
        }
    }
    if let Some((speaker, _)) = totals.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        return speaker.to_string();
    }
    let gap = |t: &SpeakerTurn| (t.start - end).max(start - t.end).max(0.0);
    turns
        .iter()
        .min_by(|a, b| gap(a).total_cmp(&gap(b)))
        .map_or_else(|| "A".to_string(), |t| t.speaker.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(start: f64, end: f64, speaker: &str) -> SpeakerTurn {
        SpeakerTurn {
            start,
            end,
            speaker: speaker.into(),
        }
    }

    fn word(start: f64, end: f64, text: &str) -> TimedWord {
        TimedWord {
            start,
            end,
            text: text.into(),
        }
    }

    #[test]
    fn a_segment_is_split_where_the_speaker_changes() {
        let turns = [turn(0.0, 2.1, "Alice"), turn(2.3, 5.0, "B")];
        let segment = TimedText {
            start: 0.0,
            end: 4.0,
            text: " Hello there. Hi!".into(),
            words: Some(vec![
                word(0.2, 0.8, " Hello"),
                word(0.9, 2.0, " there."),
                word(2.4, 3.0, " Hi!"),
            ]),
        };
        let labelled = label_segments(&[segment], &turns);
        let got: Vec<(&str, &str, f64, f64)> = labelled
            .iter()
            .map(|l| (l.speaker.as_str(), l.text.as_str(), l.start, l.end))
            .collect();
        assert_eq!(
            got,
            [
                ("Alice", " Hello there.", 0.2, 2.0),
                ("B", " Hi!", 2.4, 3.0)
            ]
        );
        assert!(labelled.iter().all(|l| l.segment == 0));
    }

    #[test]
    fn without_words_the_most_overlapping_speaker_wins() {
        let turns = [
            turn(0.0, 1.0, "A"),
            turn(1.0, 4.0, "B"),
            turn(4.0, 4.5, "A"),
        ];
        let segment = |start, end| TimedText {
            start,
            end,
            text: "x".into(),
            words: None,
        };
        let labelled = label_segments(&[segment(0.5, 4.5), segment(6.0, 7.0)], &turns);
        assert_eq!(labelled[0].speaker, "B");
        // No overlap: the nearest turn (A's, ending at 4.5).
        assert_eq!(labelled[1].speaker, "A");
        assert_eq!(label_segments(&[segment(0.0, 1.0)], &[])[0].speaker, "A");
    }
}
