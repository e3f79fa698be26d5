//! The stable-prefix rule for text while a person still speaks: each **interim pass**
//! re-decodes the growing turn; the words two consecutive passes agree on (all but
//! the newest pass's last word, which the audio may cut mid-way) are sent as deltas,
//! and a delta is never retracted. At commit the final pass's words past those sent
//! are the last delta.
//!
//! Words are whitespace-separated pieces of Whisper's text and are compared exactly
//! (a word whose punctuation changed is not agreed yet).

use steno_whisper::TokenLogprob;

/// What one session has sent of its current turn.
#[derive(Debug, Default)]
pub struct StablePrefix {
    /// The previous interim hypothesis, in words.
    previous: Vec<String>,
    /// The words sent so far.
    sent: Vec<String>,
}

/// New text to send, with the log-probabilities of the tokens that carry it.
#[derive(Debug, PartialEq)]
pub struct Delta {
    pub text: String,
    pub logprobs: Option<Vec<TokenLogprob>>,
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
        Some(self.send(&words, agreed, logprobs))
    }

    /// Takes the final text of the turn; returns the words past those sent. The final
    /// text normally starts with them; where it does not, the words past as many as
    /// were sent are the rest (a delta already sent is never taken back).
    pub fn finish(&mut self, text: &str, logprobs: Option<&[TokenLogprob]>) -> Option<Delta> {
        let words = words(text);
        if words.len() <= self.sent.len() {
            return None;
        }
        Some(self.send(&words, words.len(), logprobs))
    }

    /// The words sent so far, as one text.
    pub fn sent(&self) -> String {
        self.sent.join(" ")
    }

    fn send(&mut self, words: &[String], upto: usize, logprobs: Option<&[TokenLogprob]>) -> Delta {
        let from = self.sent.len();
        let mut text = words[from..upto].join(" ");
        if from > 0 {
            text.insert(0, ' ');
        }
        self.sent.extend_from_slice(&words[from..upto]);
        Delta {
            text,
            logprobs: logprobs.map(|tokens| tokens_of_words(tokens, from, upto)),
        }
    }
}

/// The words of `text`, as Steno sends them (one space between words).
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// `text` with its whitespace made single spaces (what the deltas add up to).
pub fn tidy(text: &str) -> String {
    words(text).join(" ")
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
        let rest = prefix
            .finish(
                " And so my fellow Americans, ask not what your country",
                None,
            )
            .unwrap();
        assert_eq!(rest.text, " not what your country");
        assert_eq!(
            prefix.sent(),
            "And so my fellow Americans, ask not what your country"
        );
    }

    #[test]
    fn the_last_word_of_a_pass_is_never_sent_before_commit() {
        let mut prefix = StablePrefix::default();
        assert_eq!(prefix.interim("one two", None), None);
        assert_eq!(prefix.interim("one two", None).unwrap().text, "one");
        assert_eq!(prefix.interim("one two", None), None);
        assert_eq!(prefix.finish("one two", None).unwrap().text, " two");
        assert_eq!(prefix.finish("one two", None), None);
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
        let rest = prefix.finish(" And so my fellow", Some(&tokens)).unwrap();
        let got: Vec<&str> = rest
            .logprobs
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| t.token.as_str())
            .collect();
        assert_eq!(got, [" fel", "low"]);
    }
}
