//! Word error rate.
//!
//! Both texts are normalised the same way before they are compared:
//!
//! * lowercase;
//! * hyphens and dashes (`-`, `‐`, `‑`, `–`, `—`) become spaces, so "Call-Forward" is two words;
//! * an apostrophe (`'` or `’`) is kept when it sits between two letters or digits ("don't",
//!   "party's") and dropped otherwise (quotes, "parties'");
//! * every other character that is neither alphanumeric nor whitespace is removed
//!   ("H.323" → "h323", "Hello," → "hello");
//! * words are the whitespace-separated pieces that remain.
//!
//! Numbers are not spelled out: "press 1" and "press one" differ by one substitution.
//!
//! The distance is the Levenshtein distance over words (substitution, deletion and
//! insertion each cost 1). Corpus WER is the sum of the edits over the sum of the reference
//! words, not the mean of per-clip rates.

/// Normalises `text` as described in the module documentation and splits it into words.
pub fn normalize(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '-' | '\u{2010}' | '\u{2011}' | '\u{2013}' | '\u{2014}' => out.push(' '),
            '\'' | '\u{2019}' => {
                let before = i > 0 && chars[i - 1].is_alphanumeric();
                let after = chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
                if before && after {
                    out.push('\'');
                }
            }
            c if c.is_alphanumeric() => out.extend(c.to_lowercase()),
            c if c.is_whitespace() => out.push(' '),
            _ => {}
        }
    }
    out.split_whitespace().map(str::to_owned).collect()
}

/// Edit counts of one alignment (or of a corpus: they add up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WerStats {
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
    /// Number of words in the normalised reference.
    pub reference_words: usize,
}

impl WerStats {
    pub fn edits(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Edits over reference words. With an empty reference: 0.0 when the hypothesis is
    /// empty too, infinity otherwise.
    pub fn wer(&self) -> f64 {
        match (self.reference_words, self.edits()) {
            (0, 0) => 0.0,
            (0, _) => f64::INFINITY,
            (n, e) => e as f64 / n as f64,
        }
    }
}

impl std::ops::Add for WerStats {
    type Output = WerStats;
    fn add(self, o: WerStats) -> WerStats {
        WerStats {
            substitutions: self.substitutions + o.substitutions,
            deletions: self.deletions + o.deletions,
            insertions: self.insertions + o.insertions,
            reference_words: self.reference_words + o.reference_words,
        }
    }
}

impl std::ops::AddAssign for WerStats {
    fn add_assign(&mut self, o: WerStats) {
        *self = *self + o;
    }
}

impl std::iter::Sum for WerStats {
    fn sum<I: Iterator<Item = WerStats>>(iter: I) -> WerStats {
        iter.fold(WerStats::default(), |a, b| a + b)
    }
}

/// Minimum-edit alignment of two word sequences (Levenshtein over words). Among
/// alignments of equal cost, the one with the most substitutions is reported.
pub fn align<S: AsRef<str>>(reference: &[S], hypothesis: &[S]) -> WerStats {
    // prev[j] / cur[j]: best (cost, subs, dels, ins) aligning reference[..i] with hypothesis[..j].
    type Cell = (usize, usize, usize, usize);
    let better = |a: Cell, b: Cell| {
        if (a.0, usize::MAX - a.1) <= (b.0, usize::MAX - b.1) {
            a
        } else {
            b
        }
    };
    let mut prev: Vec<Cell> = (0..=hypothesis.len()).map(|j| (j, 0, 0, j)).collect();
    let mut cur = prev.clone();
    for (i, r) in reference.iter().enumerate() {
        cur[0] = (i + 1, 0, i + 1, 0);
        for (j, h) in hypothesis.iter().enumerate() {
            let (c, s, d, n) = prev[j];
            let diagonal = if r.as_ref() == h.as_ref() {
                (c, s, d, n)
            } else {
                (c + 1, s + 1, d, n)
            };
            let (c, s, d, n) = prev[j + 1];
            let deletion = (c + 1, s, d + 1, n);
            let (c, s, d, n) = cur[j];
            let insertion = (c + 1, s, d, n + 1);
            cur[j + 1] = better(better(diagonal, deletion), insertion);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let (_, substitutions, deletions, insertions) = prev[hypothesis.len()];
    WerStats {
        substitutions,
        deletions,
        insertions,
        reference_words: reference.len(),
    }
}

/// Normalises both texts and aligns them.
pub fn stats(reference: &str, hypothesis: &str) -> WerStats {
    align(&normalize(reference), &normalize(hypothesis))
}

/// Word error rate of one hypothesis against its reference.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    stats(reference, hypothesis).wer()
}

/// Summed edit counts over many (reference, hypothesis) pairs.
/// Panics, naming `what` and both texts, when `hypothesis`'s WER against `reference`
/// exceeds `bound` (a fraction).
pub fn assert_wer(reference: &str, hypothesis: &str, bound: f64, what: &str) {
    let rate = wer(reference, hypothesis);
    assert!(
        rate <= bound,
        "{what}: WER {:.1} % > {:.1} %\n  reference:  {reference:?}\n  hypothesis: {hypothesis:?}",
        100.0 * rate,
        100.0 * bound
    );
}

pub fn corpus_stats<R, H, I>(pairs: I) -> WerStats
where
    R: AsRef<str>,
    H: AsRef<str>,
    I: IntoIterator<Item = (R, H)>,
{
    pairs
        .into_iter()
        .map(|(r, h)| stats(r.as_ref(), h.as_ref()))
        .sum()
}

/// Corpus word error rate: total edits over total reference words.
pub fn corpus_wer<R, H, I>(pairs: I) -> f64
where
    R: AsRef<str>,
    H: AsRef<str>,
    I: IntoIterator<Item = (R, H)>,
{
    corpus_stats(pairs).wer()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize("Hello, World!"), ["hello", "world"]);
        assert_eq!(normalize("Don't STOP."), ["don't", "stop"]);
        assert_eq!(normalize("Don\u{2019}t"), ["don't"]);
        assert_eq!(
            normalize("'quoted' parties' party's"),
            ["quoted", "parties", "party's"]
        );
        assert_eq!(
            normalize("Call-Forward on No Answer."),
            ["call", "forward", "on", "no", "answer"]
        );
        assert_eq!(normalize("well\u{2014}maybe"), ["well", "maybe"]);
        assert_eq!(
            normalize("H.323 ... \"don't call\" menu"),
            ["h323", "don't", "call", "menu"]
        );
        assert_eq!(normalize("press 1, then #"), ["press", "1", "then"]);
        assert_eq!(normalize("  \t\n "), Vec::<String>::new());
        assert_eq!(normalize("ÉCOLE Straße"), ["école", "straße"]);
    }

    #[test]
    fn jfk_case_and_punctuation_are_free() {
        let reference = "And so, my fellow Americans, ask not what your country can do for you, \
                         ask what you can do for your country.";
        let hypothesis = " And so my fellow Americans ask not what your country can do for you \
                          ask what you can do for your country";
        assert_eq!(wer(reference, hypothesis), 0.0);
        assert_eq!(stats(reference, hypothesis).reference_words, 22);
    }

    #[test]
    fn hand_checked_alignments() {
        // One substitution.
        let s = align(&words("the cat sat"), &words("the bat sat"));
        assert_eq!(
            (
                s.substitutions,
                s.deletions,
                s.insertions,
                s.reference_words
            ),
            (1, 0, 0, 3)
        );
        // One deletion.
        let s = align(&words("the cat sat"), &words("the sat"));
        assert_eq!((s.substitutions, s.deletions, s.insertions), (0, 1, 0));
        // One insertion.
        let s = align(&words("the cat sat"), &words("the cat sat down"));
        assert_eq!((s.substitutions, s.deletions, s.insertions), (0, 0, 1));
        // kitten → sitting over letters-as-words: k→s, e→i, +g = 3.
        let s = align(&words("k i t t e n"), &words("s i t t i n g"));
        assert_eq!((s.edits(), s.substitutions, s.insertions), (3, 2, 1));
        // Completely different, hypothesis longer: 2 substitutions + 1 insertion.
        assert_eq!(align(&words("a b"), &words("x y z")).edits(), 3);
        // Shifted by one word: delete the first, insert at the end.
        let s = align(&words("a b c d"), &words("b c d e"));
        assert_eq!(s.edits(), 2);
        // Empty sides.
        assert_eq!(align::<&str>(&[], &[]).wer(), 0.0);
        assert_eq!(align(&words("a b c"), &[]).deletions, 3);
        assert_eq!(align(&[], &words("you")).wer(), f64::INFINITY);
    }

    #[test]
    fn rates() {
        assert_eq!(wer("the cat sat on the mat", "the cat sat on the mat"), 0.0);
        assert!((wer("the cat sat on the mat", "the cat sit on mat") - 2.0 / 6.0).abs() < 1e-12);
        // More edits than reference words: WER above 1.
        assert_eq!(wer("yes", "no no no"), 3.0);
        // Hyphen vs space and case are not errors; a dropped apostrophe is.
        assert_eq!(
            wer("Call-Forward Unconditional.", "call forward unconditional"),
            0.0
        );
        assert_eq!(wer("you don't", "you dont"), 0.5);
    }

    #[test]
    fn corpus_is_total_edits_over_total_words() {
        // 1 edit / 4 words and 2 edits / 1 word: corpus 3/5, not the mean of 0.25 and 2.0.
        let pairs = [
            ("one two three four", "one two three for"),
            ("hello", "hello there friend"),
        ];
        let s = corpus_stats(pairs);
        assert_eq!((s.edits(), s.reference_words), (3, 5));
        assert!((corpus_wer(pairs) - 0.6).abs() < 1e-12);
        let owned: Vec<(String, String)> = vec![("a b".into(), "a b".into())];
        assert_eq!(corpus_wer(owned), 0.0);
        assert_eq!(corpus_wer(Vec::<(&str, &str)>::new()), 0.0);
    }
}
