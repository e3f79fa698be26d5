//! `keywords[]`: terms a job favours (names, products), without changing what it
//! transcribes where the audio holds none of them.
//!
//! A job with keywords decodes each window as it would without them (the **plain
//! pass**); unless that text already names a term, the window is decoded again (the
//! **keyword pass**) with the terms in a sentence after the window's prompt
//! ([`keyword_prompt`]) and a bounded logit bias ([`KeywordBias`]) on the token that
//! starts a term (where the model already finds it plausible, [`START_TOP_K`]) or
//! continues one the row has begun. The keyword pass replaces the plain one only where
//! it names a term the plain one did not, and changes nothing else
//! ([`keyword_pass_wins`]): a prompt of names alone shifted tiny.en's words on unrelated
//! speech (and it copied a list of names into the text), which one pass could not undo.

use std::ops::Range;

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Largest bias [`KeywordBias`] adds to a logit: enough to tip a near tie towards a
/// listed name, too little to make the model write one over clearly different audio.
pub const MAX_KEYWORD_BIAS: f32 = 4.0;

/// The keyword bias a job gets unless it says otherwise.
pub const DEFAULT_KEYWORD_BIAS: f32 = 1.0;

/// A keyword's first token is favoured before the model begins it only when it holds at
/// least this many characters ([`KeywordTerm::favour_start`]).
const MIN_FAVOURED_START: usize = 3;

/// A term's first token is favoured only while it is among this many likeliest allowed
/// tokens of the row's next position: a name the audio holds is there even when
/// misheard; over unrelated speech the bias would otherwise pull a listed name into the
/// text wherever no word was certain.
pub const START_TOP_K: usize = 5;

/// A keyword pass may replace a plain word only where the model wrote it with a token
/// of at most this log-probability (e^-1.0: about 0.37).
pub const UNSURE_LOGPROB: f32 = -1.0;

/// `keywords[]`: each term's tokens, and the bias added to the logit of the token that
/// starts a term (where that token is distinctive and plausible) or continues one the
/// row has begun, wherever the rules allow it.
#[derive(Clone, Debug, Default)]
pub struct KeywordBias {
    pub terms: Vec<KeywordTerm>,
    /// At most [`MAX_KEYWORD_BIAS`] (clamped where applied).
    pub bias: f32,
}

/// One term of [`KeywordBias`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeywordTerm {
    pub tokens: Vec<u32>,
    /// Whether the first token is favoured before the row has begun the term. Off for a
    /// short, common first token (" K" of " Kowalczyk"): favouring it everywhere turned
    /// words of unrelated speech into "K…"; the term is still continued once the model
    /// writes that token by itself.
    pub favour_start: bool,
}

/// A token to favour next, and whether it continues a begun term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Favoured {
    token: u32,
    continues: bool,
}

impl KeywordBias {
    /// Each keyword's tokens as spoken mid-sentence (after a space), and the bias.
    pub fn new(tokenizer: &Tokenizer, keywords: &[String], bias: f32) -> Result<KeywordBias> {
        let terms = keywords
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .map(|k| {
                let tokens = tokenizer.encode(&format!(" {k}"))?;
                let first = tokens.first().map(|&t| tokenizer.decode(&[t]));
                let favour_start = tokens.len() == 1
                    || first.is_some_and(|f| f.trim().chars().count() >= MIN_FAVOURED_START);
                Ok(KeywordTerm {
                    tokens,
                    favour_start,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KeywordBias { terms, bias })
    }

    /// The tokens to favour after `sampled`: for each term, the one continuing its
    /// longest proper prefix that `sampled` ends with, else its first; each once.
    fn next_tokens(&self, sampled: &[u32]) -> Vec<Favoured> {
        let mut next: Vec<Favoured> = self
            .terms
            .iter()
            .filter_map(|term| {
                let tokens = &term.tokens;
                let begun = (1..tokens.len())
                    .rev()
                    .find(|&k| sampled.ends_with(&tokens[..k]));
                match begun {
                    Some(k) => tokens.get(k).map(|&token| Favoured {
                        token,
                        continues: true,
                    }),
                    None if term.favour_start => tokens.first().map(|&token| Favoured {
                        token,
                        continues: false,
                    }),
                    None => None,
                }
            })
            .collect();
        // A token both starting one term and continuing another counts as continuing.
        next.sort_unstable_by_key(|f| (f.token, !f.continues));
        next.dedup_by_key(|f| f.token);
        next
    }

    /// Adds the bias to the tokens [`Self::next_tokens`] names, where still allowed (a
    /// suppressed token stays suppressed) and, for a term's start, plausible
    /// ([`START_TOP_K`], judged on the logits before any bias).
    pub(crate) fn apply(&self, sampled: &[u32], logits: &mut [f32]) {
        let bias = self.bias.clamp(0.0, MAX_KEYWORD_BIAS);
        if self.terms.is_empty() || bias == 0.0 {
            return;
        }
        let favoured: Vec<u32> = self
            .next_tokens(sampled)
            .into_iter()
            .filter(|f| {
                logits.get(f.token as usize).is_some_and(|l| l.is_finite())
                    && (f.continues || rank(logits, f.token) < START_TOP_K)
            })
            .map(|f| f.token)
            .collect();
        for t in favoured {
            logits[t as usize] += bias;
        }
    }
}

/// How many tokens have a higher logit than `token`'s (0: the likeliest).
fn rank(logits: &[f32], token: u32) -> usize {
    let own = logits[token as usize];
    logits.iter().filter(|&&l| l > own).count()
}

/// The text a keyword pass adds to its window's prompt: a sentence naming the terms,
/// which Whisper reads as earlier speech; `None` for none.
pub fn keyword_prompt(keywords: &[String]) -> Option<String> {
    let terms: Vec<&str> = keywords
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .collect();
    match terms.as_slice() {
        [] => None,
        [only] => Some(format!("{only}.")),
        [rest @ .., last] => Some(format!("{} and {last}.", rest.join(", "))),
    }
}

/// The words of `text` as the keyword rules compare them: lowercase runs of letters,
/// digits and apostrophes.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The words of a pass's text, each with the lowest log-probability of the tokens
/// that wrote it: `pieces` are the text tokens' decoded pieces and log-probabilities.
pub fn weighed_words(pieces: &[(String, f32)]) -> Vec<(String, f32)> {
    let mut out: Vec<(String, f32)> = Vec::new();
    let mut open = false;
    for (piece, logprob) in pieces {
        for c in piece.chars() {
            if !(c.is_alphanumeric() || c == '\'') {
                open = false;
                continue;
            }
            match out.last_mut().filter(|_| open) {
                Some((word, lowest)) => {
                    word.extend(c.to_lowercase());
                    *lowest = lowest.min(*logprob);
                }
                None => out.push((c.to_lowercase().collect(), *logprob)),
            }
            open = true;
        }
    }
    out
}

fn mentions(keywords: &[String], text: &[String]) -> bool {
    keywords.iter().any(|k| {
        let term = words(k);
        !term.is_empty() && text.windows(term.len()).any(|w| w == term.as_slice())
    })
}

/// Whether `text` names any of `keywords` (their words in a row, any case).
pub fn mentions_any(keywords: &[String], text: &str) -> bool {
    mentions(keywords, &words(text))
}

/// Whether a keyword pass's text replaces the plain pass's (its [`weighed_words`]): it
/// names a term the plain text does not, and every stretch where the two differ
/// replaces plain words the model was unsure of (one under [`UNSURE_LOGPROB`]) with
/// words holding a term's word: a misheard name corrected. A pass that also changed
/// other words, turned a confident word into a name, or added words where the plain
/// text had none (a term copied from the prompt), loses.
pub fn keyword_pass_wins(keywords: &[String], plain: &[(String, f32)], pass: &str) -> bool {
    let pass = words(pass);
    let (plain, surety): (Vec<String>, Vec<f32>) = plain.iter().cloned().unzip();
    if !mentions(keywords, &pass) || mentions(keywords, &plain) {
        return false;
    }
    let term_words: Vec<String> = keywords.iter().flat_map(|k| words(k)).collect();
    differences(&plain, &pass).iter().all(|(old, new)| {
        let unsure = surety[old.clone()].iter().any(|&l| l < UNSURE_LOGPROB);
        unsure && pass[new.clone()].iter().any(|w| term_words.contains(w))
    })
}

/// The stretches where `a` and `b` differ around a longest common subsequence of
/// their words, as ranges of each.
fn differences(a: &[String], b: &[String]) -> Vec<(Range<usize>, Range<usize>)> {
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let (n, m) = (a.len(), b.len());
    let mut common = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] = match a[i] == b[j] {
                true => 1 + common[i + 1][j + 1],
                false => common[i + 1][j].max(common[i][j + 1]),
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    let mut open: Option<(usize, usize)> = None;
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            if let Some((oi, oj)) = open.take() {
                out.push((oi..i, oj..j));
            }
            (i, j) = (i + 1, j + 1);
            continue;
        }
        open.get_or_insert((i, j));
        if j == m || (i < n && common[i + 1][j] >= common[i][j + 1]) {
            i += 1;
        } else {
            j += 1;
        }
    }
    out.extend(open.map(|(oi, oj)| (oi..n, oj..m)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: usize = 64;

    fn bias(terms: &[&[u32]], bias: f32) -> KeywordBias {
        KeywordBias {
            terms: terms
                .iter()
                .map(|t| KeywordTerm {
                    tokens: t.to_vec(),
                    favour_start: true,
                })
                .collect(),
            bias,
        }
    }

    /// Logits where token `t` has logit `-t` (0 the likeliest), after the bias.
    fn biased(keywords: &KeywordBias, sampled: &[u32]) -> Vec<f32> {
        let mut logits: Vec<f32> = (0..VOCAB).map(|t| -(t as f32)).collect();
        keywords.apply(sampled, &mut logits);
        logits
    }

    #[test]
    fn a_start_is_favoured_only_among_the_likeliest_tokens() {
        let start = START_TOP_K as u32 - 1;
        let far = START_TOP_K as u32 + 10;
        let logits = biased(&bias(&[&[start, 40], &[far, 41]], 2.0), &[1]);
        assert_eq!(logits[start as usize], -(start as f32) + 2.0, "plausible");
        assert_eq!(
            logits[far as usize],
            -(far as f32),
            "implausible: left alone"
        );
    }

    #[test]
    fn a_begun_term_is_continued_however_unlikely() {
        let keywords = bias(&[&[2, 50, 51]], 2.0);
        assert_eq!(biased(&keywords, &[1, 2])[50], -48.0);
        assert_eq!(biased(&keywords, &[2, 50])[51], -49.0);
        // Finished: back to its (plausible) start.
        assert_eq!(biased(&keywords, &[2, 50, 51])[2], 0.0);
    }

    #[test]
    fn suppressed_tokens_stay_suppressed() {
        let keywords = bias(&[&[3, 50]], 1e9);
        let mut logits: Vec<f32> = (0..VOCAB).map(|t| -(t as f32)).collect();
        logits[50] = f32::NEG_INFINITY;
        keywords.apply(&[3], &mut logits);
        assert_eq!(logits[50], f32::NEG_INFINITY);
        keywords.apply(&[1], &mut logits);
        assert_eq!(logits[3], -3.0 + MAX_KEYWORD_BIAS, "clamped");
    }

    #[test]
    fn the_prompt_is_a_sentence() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(keyword_prompt(&words(&[])), None);
        assert_eq!(keyword_prompt(&words(&[" "])), None);
        assert_eq!(keyword_prompt(&words(&["Nguyen"])).unwrap(), "Nguyen.");
        assert_eq!(
            keyword_prompt(&words(&["Nguyen", " ", "Steno", "MLX"])).unwrap(),
            "Nguyen, Steno and MLX."
        );
    }

    fn list(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_keyword_pass_wins_only_by_correcting_a_name() {
        let names = list(&["Siobhan", "Nguyen", "Volkov"]);
        // Every word sure but "Nune".
        let weighed = |text: &str| -> Vec<(String, f32)> {
            let pieces: Vec<(String, f32)> = text
                .split_inclusive(' ')
                .map(|w| (w.to_string(), if w.contains("Nune") { -2.0 } else { -0.1 }))
                .collect();
            weighed_words(&pieces)
        };
        let plain = &weighed("Please send the report to Shimon Nune before Friday.");
        let pass = "Please send the report to Siobhan Nguyen before Friday.";
        assert!(keyword_pass_wins(&names, plain, pass));
        let sure = &weighed("Press 3 to hear the message envelope.");
        let copied = "Press 3 to hear the message on Volkov.";
        assert!(!keyword_pass_wins(&names, sure, copied), "a sure word kept");
        // Other words changed too, a name added where nothing was heard, a name
        // already heard, or none named: the plain pass stays.
        let also = "Please sent a report to Siobhan Nguyen before Friday.";
        assert!(!keyword_pass_wins(&names, plain, also));
        let added = "Please send the report to Shimon Nune before Friday. Volkov.";
        assert!(!keyword_pass_wins(&names, plain, added));
        let heard = &weighed("Please send the report to Siobhan Nune before Friday.");
        assert!(!keyword_pass_wins(&names, heard, pass));
        let same = "Please send the report to Shimon Nune before Friday.";
        assert!(!keyword_pass_wins(&names, plain, same));
    }

    #[test]
    fn differences_are_the_stretches_an_alignment_does_not_match() {
        let (a, b) = (words("a b c d e"), words("a x y c e f"));
        assert_eq!(
            differences(&a, &b),
            vec![(1..2, 1..3), (3..4, 4..4), (5..5, 5..6)]
        );
        assert!(differences(&a, &a).is_empty());
        assert!(mentions_any(
            &list(&["Szczepanski"]),
            "Mr. SZCZEPANSKI is here"
        ));
        assert!(!mentions_any(&list(&["Nguyen"]), "Nguyenne"));
    }
}
