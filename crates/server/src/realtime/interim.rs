//! The stable-prefix rule for text while a person still speaks: each **interim pass**
//! re-decodes the growing turn; the words two consecutive passes agree on (all but
//! the newest pass's last word, which the audio may cut mid-way) are sent as deltas,
//! and a delta is never retracted. At commit the final pass's words past those sent
//! are the last delta, and the turn's transcript is what all its deltas add up to.
//!
//! Words are whitespace-separated pieces of Whisper's text and are compared exactly
//! (a word whose punctuation changed is not agreed yet).
//!
//! Two passes can still agree on a word the whole turn's audio reads differently (the
//! end of a pass is cut mid-speech). The final pass then does not start with the sent
//! words; its words are aligned with them (fewest word edits) and the last delta is
//! what follows the last sent word, so the deltas still add up to the transcript, as
//! OpenAI's do.

use steno_whisper::TokenLogprob;

/// What one session has sent of its current turn.
#[derive(Debug, Default)]
pub struct StablePrefix {
    /// The previous interim hypothesis, in words.
    previous: Vec<String>,
    /// The words sent so far.
    sent: Vec<String>,
    /// The tokens that carried them, where the passes had logprobs.
    sent_logprobs: Vec<TokenLogprob>,
}

/// New text to send, with the log-probabilities of the tokens that carry it.
#[derive(Debug, PartialEq)]
pub struct Delta {
    pub text: String,
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// The end of a turn: its last delta and the transcript all its deltas add up to.
#[derive(Debug, PartialEq)]
pub struct Finished {
    pub delta: Option<Delta>,
    pub transcript: String,
    /// The tokens of every delta, where the final pass had logprobs.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Whether the final pass read words already sent differently.
    pub revised: bool,
}

impl StablePrefix {
    /// Takes an interim hypothesis of the whole turn so far; returns the words it and
    /// the previous one agree on past those already sent.
    pub fn interim(&mut self, text: &str, logprobs: Option<&[TokenLogprob]>) -> Option<Delta> {
        let words = words(text);
        let agreed = words
            .iter()
            .zip(&self.previous)
            .take(words.len().saturating_sub(1))
            .take_while(|(a, b)| a == b)
            .count();
        let extends_sent = words.len() >= self.sent.len() && words[..self.sent.len()] == self.sent;
        self.previous = words.clone();
        if !extends_sent || agreed <= self.sent.len() {
            return None;
        }
        Some(self.send(&words, self.sent.len(), agreed, logprobs))
    }

    /// Takes the final text of the turn; returns the words past those sent (see the
    /// module's note for a final text that does not start with them) and the transcript.
    pub fn finish(&mut self, text: &str, logprobs: Option<&[TokenLogprob]>) -> Finished {
        let words = words(text);
        let revised = !words.starts_with(&self.sent);
        let from = match revised {
            true => resume_after(&self.sent, &words),
            false => self.sent.len(),
        };
        let delta = (from < words.len()).then(|| self.send(&words, from, words.len(), logprobs));
        Finished {
            delta,
            transcript: self.sent(),
            logprobs: logprobs.map(|_| self.sent_logprobs.clone()),
            revised,
        }
    }

    /// The words sent so far, as one text.
    fn sent(&self) -> String {
        self.sent.join(" ")
    }

    /// Sends `words[from..upto]`, the words of a pass whose tokens are `logprobs`.
    fn send(
        &mut self,
        words: &[String],
        from: usize,
        upto: usize,
        logprobs: Option<&[TokenLogprob]>,
    ) -> Delta {
        let mut text = words[from..upto].join(" ");
        if !self.sent.is_empty() {
            text.insert(0, ' ');
        }
        self.sent.extend_from_slice(&words[from..upto]);
        let logprobs = logprobs.map(|tokens| tokens_of_words(tokens, from, upto));
        if let Some(tokens) = &logprobs {
            self.sent_logprobs.extend_from_slice(tokens);
        }
        Delta { text, logprobs }
    }
}

/// Where `final_words` go on past `sent`: the end of the prefix of `final_words` that
/// `sent` turns into with the fewest word edits (on ties the longer prefix, so no
/// word is sent twice).
fn resume_after(sent: &[String], final_words: &[String]) -> usize {
    let same = |a: &str, b: &str| comparable(a) == comparable(b);
    // edits[j]: word edits between the sent words so far and final_words[..j].
    let mut edits: Vec<usize> = (0..=final_words.len()).collect();
    for (i, word) in sent.iter().enumerate() {
        let mut diagonal = edits[0];
        edits[0] = i + 1;
        for (j, other) in final_words.iter().enumerate() {
            let substitute = diagonal + usize::from(!same(word, other));
            diagonal = edits[j + 1];
            edits[j + 1] = substitute.min(edits[j] + 1).min(diagonal + 1);
        }
    }
    (0..=final_words.len())
        .rev()
        .min_by_key(|&j| edits[j])
        .unwrap_or(0)
}

/// A word as the alignment compares it: lower case, letters and digits only.
fn comparable(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words of `text`, as Steno sends them (one space between words).
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// The tokens whose text overlaps words `from..upto` of the tokens' joined text.
fn tokens_of_words(tokens: &[TokenLogprob], from: usize, upto: usize) -> Vec<TokenLogprob> {
    let joined: String = tokens.iter().map(|t| t.token.as_str()).collect();
    // Byte spans of the words in the joined text.
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in joined.char_indices().chain([(joined.len(), ' ')]) {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    let (Some(&(lo, _)), Some(&(_, hi))) = (spans.get(from), spans.get(upto.saturating_sub(1)))
    else {
        return Vec::new();
    };
    let mut offset = 0;
    tokens
        .iter()
        .filter(|t| {
            let (a, b) = (offset, offset + t.token.len());
            offset = b;
            a < hi && b > lo
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> TokenLogprob {
        TokenLogprob {
            token: text.into(),
            logprob: -0.1,
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn only_words_two_passes_agree_on_are_sent_and_never_retracted() {
        let mut prefix = StablePrefix::default();
        assert_eq!(prefix.interim(" And so my", None), None);
        let d = prefix.interim(" And so my fellow Ameri", None).unwrap();
        assert_eq!(d.text, "And so my");
        // A pass that changes an agreed word sends nothing; the sent words stay.
        assert_eq!(prefix.interim(" And sew my fellow Americans,", None), None);
        assert_eq!(
            prefix.interim(" And so my fellow Americans, ask", None),
            None
        );
        let d = prefix
            .interim(" And so my fellow Americans, ask not", None)
            .unwrap();
        assert_eq!(d.text, " fellow Americans, ask");
        let end = prefix.finish(
            " And so my fellow Americans, ask not what your country",
            None,
        );
        assert_eq!(end.delta.unwrap().text, " not what your country");
        assert_eq!(
            end.transcript,
            "And so my fellow Americans, ask not what your country"
        );
        assert!(!end.revised);
    }

    #[test]
    fn a_final_pass_that_reads_sent_words_differently_goes_on_after_them() {
        let mut prefix = StablePrefix::default();
        prefix.interim("And so am I fellow Ameri", None);
        prefix.interim("And so am I fellow Americans", None);
        let end = prefix.finish("And so my fellow Americans, ask not", None);
        assert_eq!(end.delta.unwrap().text, " Americans, ask not");
        assert_eq!(end.transcript, "And so am I fellow Americans, ask not");
        assert!(end.revised);
        // Ties go to the longer prefix: "c" read as "x" is not sent again.
        let mut prefix = StablePrefix::default();
        prefix.interim("a b c d", None);
        prefix.interim("a b c d", None);
        let end = prefix.finish("a B x e f", None);
        assert_eq!(end.delta.unwrap().text, " e f");
        // A final pass shorter than the sent words adds nothing.
        let mut prefix = StablePrefix::default();
        prefix.interim("a b c d", None);
        prefix.interim("a b c d", None);
        let end = prefix.finish("a", None);
        assert_eq!(end.delta, None);
        assert_eq!(end.transcript, "a b c");
    }

    #[test]
    fn the_last_word_of_a_pass_is_never_sent_before_commit() {
        let mut prefix = StablePrefix::default();
        assert_eq!(prefix.interim("one two", None), None);
        assert_eq!(prefix.interim("one two", None).unwrap().text, "one");
        assert_eq!(prefix.interim("one two", None), None);
        assert_eq!(prefix.finish("one two", None).delta.unwrap().text, " two");
        assert_eq!(prefix.finish("one two", None).delta, None);
    }

    #[test]
    fn deltas_carry_the_logprobs_of_their_tokens() {
        let tokens = [
            token(" And"),
            token(" so"),
            token(" my"),
            token(" fel"),
            token("low"),
        ];
        let mut prefix = StablePrefix::default();
        prefix.interim(" And so my fellow", Some(&tokens));
        let d = prefix.interim(" And so my fellow", Some(&tokens)).unwrap();
        let got: Vec<&str> = d
            .logprobs
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| t.token.as_str())
            .collect();
        assert_eq!(got, [" And", " so", " my"]);
        let end = prefix.finish(" And so my fellow", Some(&tokens));
        let names = |tokens: Option<Vec<TokenLogprob>>| -> Vec<String> {
            tokens.unwrap().into_iter().map(|t| t.token).collect()
        };
        assert_eq!(names(end.delta.unwrap().logprobs), [" fel", "low"]);
        assert_eq!(names(end.logprobs), [" And", " so", " my", " fel", "low"]);
    }
}
