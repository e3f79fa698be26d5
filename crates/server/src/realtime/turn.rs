//! Turn detection (`server_vad`): where speech starts and stops in a session's audio,
//! found with Steno's energy VAD ([`steno_audio::vad::speech_regions`]) over the last few
//! seconds, in steps of [`STEP_MS`] as audio arrives.
//!
//! A **turn** is one stretch of speech: it starts `prefix_padding_ms` before the first
//! speech the VAD finds, and stops once `silence_duration_ms` passed without speech (or
//! it reached the longest turn allowed); the audio up to the stop is committed as one
//! item. A turn at the longest allowed is cut where long files are cut into windows
//! ([`split_points`]: the longest pause in its last third, else its quietest 100 ms), and
//! the speech after the cut opens the next turn at once, so no word is cut in two. OpenAI's `threshold` (0–1, default 0.5) sets how far above the local noise floor
//! speech must be: `20 dB × threshold` (0.5 → the VAD's own 10 dB).

use steno_audio::vad::{speech_regions, split_points, VadParams};
use steno_audio::SAMPLE_RATE;

use super::protocol::Vad;

/// How much audio each look at the stream adds.
pub const STEP_MS: usize = 100;
/// How much audio before each step the VAD sees (its noise floor needs a few seconds).
const CONTEXT_MS: usize = 4_000;

fn samples(ms: usize) -> usize {
    ms * SAMPLE_RATE as usize / 1000
}

/// A change of turn, at an absolute position in the session's 16 kHz audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnEvent {
    /// Speech began; the turn starts here (prefix padding included).
    Started { at: usize },
    /// The turn is over; its audio ends here (the trailing silence included).
    Stopped { at: usize },
}

/// Finds turns in a session's stream.
pub struct TurnDetector {
    vad: VadParams,
    prefix: usize,
    silence: usize,
    max_turn: usize,
    /// Absolute position up to which the stream has been looked at.
    checked: usize,
    /// The current turn's start, while one is open.
    speaking: Option<usize>,
    /// The end of the last speech found (absolute).
    last_voice: usize,
    /// Where the next turn starts at once: a turn cut at its longest, still speaking.
    resume: Option<usize>,
}

impl TurnDetector {
    /// `from` is the absolute position the detector starts at (the buffer's start).
    pub fn new(vad: Vad, max_turn_seconds: f64, from: usize) -> Self {
        Self {
            vad: VadParams {
                threshold_db: (20.0 * vad.threshold) as f32,
                // The session's own padding and silence replace the VAD's.
                lead_ms: 0,
                hangover_ms: 0,
                ..VadParams::default()
            },
            prefix: samples(vad.prefix_padding_ms as usize),
            silence: samples(vad.silence_duration_ms as usize).max(1),
            max_turn: (max_turn_seconds * f64::from(SAMPLE_RATE)) as usize,
            checked: from,
            speaking: None,
            last_voice: from,
            resume: None,
        }
    }

    pub fn speaking(&self) -> Option<usize> {
        self.speaking
    }

    /// The next change of turn in `buffer` (whose first sample is absolute `origin`),
    /// looking at what arrived since the last call in steps; `None` once it is all seen.
    /// Call again after handling an event: the rest of the audio may hold another.
    pub fn advance(&mut self, buffer: &[f32], origin: usize) -> Option<TurnEvent> {
        let end = origin + buffer.len();
        self.checked = self.checked.max(origin);
        if let Some(at) = self.resume.take() {
            self.speaking = Some(at);
            return Some(TurnEvent::Started { at });
        }
        while self.checked + samples(STEP_MS) <= end {
            self.checked += samples(STEP_MS);
            if let Some(event) = self.look(buffer, origin) {
                return Some(event);
            }
        }
        None
    }

    /// One step: the VAD over the context ending at `self.checked`.
    fn look(&mut self, buffer: &[f32], origin: usize) -> Option<TurnEvent> {
        let to = self.checked - origin;
        let from = to.saturating_sub(samples(CONTEXT_MS));
        let regions = speech_regions(&buffer[from..to], &self.vad);
        let voiced_end = regions.last().map(|&(_, e)| origin + from + e);
        match self.speaking {
            None => {
                // Only speech that reaches into this step starts a turn (older regions
                // belonged to a turn already over).
                let &(start, _) = regions
                    .iter()
                    .find(|&&(_, e)| origin + from + e > self.last_voice)?;
                let at = (origin + from + start)
                    .saturating_sub(self.prefix)
                    .max(origin);
                self.speaking = Some(at);
                self.last_voice = voiced_end.unwrap_or(self.checked);
                Some(TurnEvent::Started { at })
            }
            Some(start) => {
                if let Some(voiced) = voiced_end {
                    self.last_voice = self.last_voice.max(voiced);
                }
                let quiet = self.checked.saturating_sub(self.last_voice) >= self.silence;
                if quiet {
                    self.speaking = None;
                    self.last_voice = self.checked;
                    return Some(TurnEvent::Stopped { at: self.checked });
                }
                (self.checked - start >= self.max_turn).then(|| self.cut(buffer, origin, start))
            }
        }
    }

    /// Ends a turn that reached the longest allowed at its best cut; the speech after the
    /// cut is the next turn, which [`Self::advance`] opens first thing.
    fn cut(&mut self, buffer: &[f32], origin: usize, start: usize) -> TurnEvent {
        let audio = &buffer[start.saturating_sub(origin)..self.checked - origin];
        // One cut in the turn's last third (split_points cuts what is longer than its
        // window; a window one sample short of the turn asks for exactly one).
        let at = split_points(audio, audio.len().saturating_sub(1), &self.vad)
            .first()
            .map_or(self.checked, |&cut| start + cut);
        self.speaking = None;
        if at < self.checked {
            self.resume = Some(at);
        } else {
            self.last_voice = self.checked;
        }
        TurnEvent::Stopped { at }
    }

    /// The earliest absolute position the detector may still need (for a turn's prefix
    /// or the VAD's context): the session drops audio before it while no turn is open.
    pub fn keep_from(&self) -> usize {
        match self.speaking {
            Some(start) => start,
            None => self
                .checked
                .saturating_sub(samples(CONTEXT_MS).max(self.prefix)),
        }
    }

    /// Forget the open turn (the client committed or cleared the buffer by hand).
    pub fn reset(&mut self, at: usize) {
        self.speaking = None;
        self.resume = None;
        self.checked = self.checked.max(at);
        self.last_voice = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 300 Hz tone with a little noise under it: the VAD's idea of speech.
    fn tone(seconds: f64, amplitude: f32) -> Vec<f32> {
        let n = (seconds * 16_000.0) as usize;
        let mut seed = 7u32;
        (0..n)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                amplitude * (i as f32 * 300.0 * std::f32::consts::TAU / 16_000.0).sin()
                    + 0.001 * noise
            })
            .collect()
    }

    fn quiet(seconds: f64) -> Vec<f32> {
        tone(seconds, 0.0)
    }

    fn events(audio: &[f32], vad: Vad, chunk: usize) -> Vec<TurnEvent> {
        let mut detector = TurnDetector::new(vad, 30.0, 0);
        let mut buffer = Vec::new();
        let mut found = Vec::new();
        for piece in audio.chunks(chunk) {
            buffer.extend_from_slice(piece);
            while let Some(e) = detector.advance(&buffer, 0) {
                found.push(e);
            }
        }
        found
    }

    #[test]
    fn a_turn_starts_with_its_padding_and_stops_after_the_silence() {
        let mut audio = quiet(1.0);
        audio.extend(tone(1.5, 0.3));
        audio.extend(quiet(1.5));
        let found = events(&audio, Vad::default(), 480);
        let [TurnEvent::Started { at: start }, TurnEvent::Stopped { at: stop }] = found[..] else {
            panic!("one turn, got {found:?}")
        };
        // Speech at 1.0 s, padding 300 ms; silence 500 ms after speech ends at 2.5 s.
        assert!((10_000..=11_500).contains(&start), "start {start}");
        assert!((48_000..=50_000).contains(&stop), "stop {stop}");
    }

    #[test]
    fn two_utterances_apart_are_two_turns_and_close_ones_are_one() {
        let mut audio = quiet(1.0);
        audio.extend(tone(1.0, 0.3));
        audio.extend(quiet(0.3));
        audio.extend(tone(1.0, 0.3));
        audio.extend(quiet(1.2));
        audio.extend(tone(1.0, 0.3));
        audio.extend(quiet(1.0));
        let found = events(&audio, Vad::default(), 1_600);
        assert_eq!(found.len(), 4, "{found:?}");
        // Big appends find the same turns as small ones.
        assert_eq!(events(&audio, Vad::default(), 16_000 * 10), found);
    }

    #[test]
    fn silence_and_steady_noise_never_start_a_turn() {
        assert!(events(&quiet(5.0), Vad::default(), 800).is_empty());
        let hum: Vec<f32> = tone(5.0, 0.2);
        // A steady tone from the start is the noise floor itself.
        assert!(events(&hum, Vad::default(), 800).len() <= 2);
    }

    #[test]
    fn a_turn_longer_than_the_limit_is_cut() {
        let mut audio = quiet(0.5);
        audio.extend(tone(4.0, 0.3));
        let mut detector = TurnDetector::new(Vad::default(), 1.0, 0);
        let mut stops = 0;
        while let Some(e) = detector.advance(&audio, 0) {
            stops += usize::from(matches!(e, TurnEvent::Stopped { .. }));
        }
        assert!(stops >= 2, "{stops}");
    }

    /// Syllables: 250 ms of tone, 80 ms of quiet, for `seconds`.
    fn syllables(seconds: f64) -> Vec<f32> {
        let mut audio = Vec::new();
        while (audio.len() as f64) < seconds * 16_000.0 {
            audio.extend(tone(0.25, 0.3));
            audio.extend(quiet(0.08));
        }
        audio.truncate((seconds * 16_000.0) as usize);
        audio
    }

    #[test]
    fn a_turn_at_the_limit_is_cut_in_its_pause_and_the_next_starts_there() {
        let mut audio = quiet(1.0);
        audio.extend(syllables(2.2));
        audio.extend(quiet(0.35));
        audio.extend(syllables(2.0));
        audio.extend(quiet(1.5));
        let mut detector = TurnDetector::new(Vad::default(), 3.0, 0);
        let mut found = Vec::new();
        for end in (1_600..=audio.len()).step_by(1_600) {
            while let Some(e) = detector.advance(&audio[..end], 0) {
                found.push(e);
            }
        }
        let [TurnEvent::Started { .. }, TurnEvent::Stopped { at: cut }, TurnEvent::Started { at: next }, TurnEvent::Stopped { .. }] =
            found[..]
        else {
            panic!("two turns, got {found:?}")
        };
        // The pause is 3.2-3.55 s; the limit (3 s from the turn's start) came later.
        assert!((51_200..=56_800).contains(&cut), "cut at {cut}");
        assert_eq!(next, cut);
    }
}
