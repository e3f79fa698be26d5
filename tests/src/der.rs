//! Diarization error rate, as the NIST RTTM scorers count it: of the reference's speech
//! time (outside a collar around each reference boundary), the share that is missed,
//! falsely detected, or given to the wrong speaker under the best one-to-one mapping of
//! hypothesis speakers onto reference speakers. Scored on a 10 ms grid; one speaker at a
//! time (the test conversations have no overlap).

use std::collections::BTreeMap;

/// One speaker's stretch of speech, `[start, end)` seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub start: f64,
    pub end: f64,
    pub speaker: String,
}

impl Turn {
    pub fn new(start: f64, end: f64, speaker: &str) -> Turn {
        Turn {
            start,
            end,
            speaker: speaker.to_string(),
        }
    }
}

/// The collar the issue scores with: 0.25 s either side of each reference boundary.
pub const COLLAR: f64 = 0.25;

/// Grid step, seconds.
const STEP: f64 = 0.01;

/// The diarization error rate of `hypothesis` against `reference`, not scoring the
/// `collar` seconds either side of each reference turn's start and end. 0 when the
/// reference has no scored speech and the hypothesis none either; 1 per second of false
/// alarm past that.
pub fn der(reference: &[Turn], hypothesis: &[Turn], collar: f64) -> f64 {
    let end = reference
        .iter()
        .chain(hypothesis)
        .map(|t| t.end)
        .fold(0.0, f64::max);
    let frames = (end / STEP).ceil() as usize;
    let (ref_names, ref_frames) = speaker_frames(reference, frames);
    let (hyp_names, hyp_frames) = speaker_frames(hypothesis, frames);
    let scored: Vec<bool> = (0..frames)
        .map(|i| {
            let t = (i as f64 + 0.5) * STEP;
            !reference
                .iter()
                .any(|r| (t - r.start).abs() < collar || (t - r.end).abs() < collar)
        })
        .collect();
    // Overlap (in frames) of each hypothesis speaker with each reference speaker.
    let mut overlap = vec![vec![0usize; ref_names.len()]; hyp_names.len()];
    let (mut speech, mut missed, mut false_alarm) = (0usize, 0usize, 0usize);
    for i in (0..frames).filter(|&i| scored[i]) {
        match (ref_frames[i], hyp_frames[i]) {
            (Some(r), Some(h)) => {
                speech += 1;
                overlap[h][r] += 1;
            }
            (Some(_), None) => {
                speech += 1;
                missed += 1;
            }
            (None, Some(_)) => false_alarm += 1,
            (None, None) => {}
        }
    }
    let both: usize = overlap.iter().flatten().sum();
    let confusion = both - best_mapping(&overlap);
    let errors = missed + false_alarm + confusion;
    if speech == 0 {
        return if errors == 0 {
            0.0
        } else {
            errors as f64 * STEP
        };
    }
    errors as f64 / speech as f64
}

/// Speaker names (sorted) and, per frame, the index of the speaker talking then.
fn speaker_frames(turns: &[Turn], frames: usize) -> (Vec<String>, Vec<Option<usize>>) {
    let names: Vec<String> = turns
        .iter()
        .map(|t| t.speaker.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut out = vec![None; frames];
    for turn in turns {
        let first = (turn.start / STEP).round().max(0.0) as usize;
        let last = ((turn.end / STEP).round() as usize).min(frames);
        for frame in out.iter_mut().take(last).skip(first) {
            *frame = Some(index[turn.speaker.as_str()]);
        }
    }
    (names, out)
}

/// The largest total overlap of a one-to-one mapping of hypothesis speakers (rows) onto
/// reference speakers (columns): exhaustive, which the handful of speakers of a test
/// conversation allows.
fn best_mapping(overlap: &[Vec<usize>]) -> usize {
    fn search(overlap: &[Vec<usize>], row: usize, used: &mut Vec<bool>) -> usize {
        let Some(cells) = overlap.get(row) else {
            return 0;
        };
        // This hypothesis speaker mapped to no one…
        let mut best = search(overlap, row + 1, used);
        // …or to each free reference speaker.
        for (column, &cell) in cells.iter().enumerate() {
            if !used[column] {
                used[column] = true;
                best = best.max(cell + search(overlap, row + 1, used));
                used[column] = false;
            }
        }
        best
    }
    let columns = overlap.first().map_or(0, Vec::len);
    search(overlap, 0, &mut vec![false; columns])
}

/// The `SPEAKER` lines of an RTTM file as turns (other lines are skipped).
pub fn parse_rttm(rttm: &str) -> Vec<Turn> {
    rttm.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first() != Some(&"SPEAKER") || fields.len() < 8 {
                return None;
            }
            let start: f64 = fields[3].parse().ok()?;
            let duration: f64 = fields[4].parse().ok()?;
            Some(Turn::new(start, start + duration, fields[7]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(list: &[(f64, f64, &str)]) -> Vec<Turn> {
        list.iter().map(|&(s, e, n)| Turn::new(s, e, n)).collect()
    }

    #[test]
    fn the_same_turns_under_other_names_score_zero() {
        let reference = turns(&[(0.0, 5.0, "alice"), (5.0, 9.0, "bob"), (9.0, 12.0, "alice")]);
        let hypothesis = turns(&[(0.0, 5.0, "B"), (5.0, 9.0, "A"), (9.0, 12.0, "B")]);
        assert_eq!(der(&reference, &hypothesis, COLLAR), 0.0);
        assert_eq!(der(&reference, &hypothesis, 0.0), 0.0);
    }

    #[test]
    fn misses_false_alarms_and_confusions_add_up() {
        let reference = turns(&[(0.0, 10.0, "a"), (10.0, 20.0, "b")]);
        // b's last 2 s missed, 1 s of false alarm past the end, 3 s of b called a.
        let hypothesis = turns(&[(0.0, 13.0, "x"), (13.0, 18.0, "y"), (20.0, 21.0, "y")]);
        let rate = der(&reference, &hypothesis, 0.0);
        assert!((rate - (2.0 + 1.0 + 3.0) / 20.0).abs() < 0.002, "{rate}");
        // One speaker for everything: half the speech confused.
        let one = turns(&[(0.0, 20.0, "x")]);
        assert!((der(&reference, &one, 0.0) - 0.5).abs() < 0.002);
    }

    #[test]
    fn the_collar_forgives_boundaries() {
        let reference = turns(&[(0.0, 10.0, "a"), (10.0, 20.0, "b")]);
        let hypothesis = turns(&[(0.2, 10.2, "x"), (10.2, 19.8, "y")]);
        assert!(der(&reference, &hypothesis, 0.0) > 0.0);
        assert_eq!(der(&reference, &hypothesis, COLLAR), 0.0);
    }

    #[test]
    fn rttm_lines_parse() {
        let rttm = "SPEAKER conv 1 0.210 6.630 <NA> <NA> A <NA> <NA>\n\
                    ; a comment\nSPEAKER conv 1 7.890 5.040 <NA> <NA> agent <NA> <NA>\n";
        let turns = parse_rttm(rttm);
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[1].speaker, "agent");
        assert!((turns[0].end - 6.84).abs() < 1e-9);
    }
}
