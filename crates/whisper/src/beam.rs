//! Several candidates for one window, ranked as OpenAI's `decoding.py` does
//! (`BeamSearchDecoder`, `MaximumLikelihoodRanker`): a **beam search** at temperature 0,
//! or **best of** `n` rows sampled independently at the fallback temperatures.
//!
//! The candidates of a window are a **group** of rows of the one shared batch
//! ([`crate::decoding::Batch`]): a beam search's beams are rows batched with every other
//! request's rows, and after each step the batch gathers their caches by the beams' sources.
//! The scheduler and the long-form rules see a group as one row: it finishes with the one
//! best-ranked candidate. This module is the bookkeeping only, over plain data: which
//! continuations a step keeps, when a search is done, which candidate wins.

/// The most beams, or best-of rows, one window may take: each is a row of the batch.
pub const MAX_CANDIDATES: usize = 16;

/// How many candidates a window gets, and how they are found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Search {
    /// One row: greedy at temperature 0, one sample above.
    Single,
    /// `n` rows sampled independently; the best-ranked one wins.
    BestOf {
        n: usize,
        length_penalty: Option<f32>,
    },
    /// A beam search (temperature 0).
    Beam(BeamOptions),
}

/// OpenAI's `beam_size`, `patience` and `length_penalty`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeamOptions {
    pub beam_size: usize,
    /// The search stops once `round(beam_size × patience)` sequences have finished.
    pub patience: f32,
    /// `None`: rank by log-probability per token; `Some(α)`: divide by
    /// `((5 + length) / 6)^α` (Google NMT's length penalty).
    pub length_penalty: Option<f32>,
}

impl Search {
    /// The search a window's attempt gets: a beam search at temperature 0 when
    /// `beam_size > 1`, best of `best_of` above it, else one row.
    pub fn for_attempt(
        temperature: f32,
        beam: BeamOptions,
        best_of: usize,
        length_penalty: Option<f32>,
    ) -> Self {
        if temperature <= 0.0 && beam.beam_size > 1 {
            Search::Beam(beam)
        } else if temperature > 0.0 && best_of > 1 {
            Search::BestOf {
                n: best_of,
                length_penalty,
            }
        } else {
            Search::Single
        }
    }

    /// Rows of the batch the window's group takes while it decodes.
    pub fn rows(&self) -> usize {
        match self {
            Search::Single => 1,
            Search::BestOf { n, .. } => *n,
            Search::Beam(b) => b.beam_size,
        }
    }

    /// The same search on at most `max_rows` rows (a batch smaller than a beam).
    pub fn narrowed(self, max_rows: usize) -> Self {
        let max_rows = max_rows.max(1);
        match self {
            Search::BestOf { n, length_penalty } if n > max_rows => Search::BestOf {
                n: max_rows,
                length_penalty,
            },
            Search::Beam(b) if b.beam_size > max_rows => Search::Beam(BeamOptions {
                beam_size: max_rows,
                ..b
            }),
            other => other,
        }
    }
}

impl BeamOptions {
    /// Finished sequences the search waits for: `round(beam_size × patience)` (Python's
    /// round, halves to even), at least one.
    pub fn max_candidates(&self) -> usize {
        let x = self.beam_size as f64 * self.patience as f64;
        let mut r = x.round();
        if (x - x.trunc() - 0.5).abs() < 1e-9 && r % 2.0 != 0.0 {
            r -= 1.0;
        }
        (r as usize).max(1)
    }
}

/// A sequence in the running for a window, `item` being whatever the caller keeps for it.
#[derive(Clone, Debug)]
pub struct Candidate<T> {
    pub sum_logprob: f32,
    /// Sampled tokens, not counting the final EOT.
    pub length: usize,
    /// Cut short as degenerate (a loop, too long for its audio).
    pub degenerate: bool,
    pub item: T,
}

/// OpenAI's `MaximumLikelihoodRanker` score.
pub fn score(sum_logprob: f32, length: usize, length_penalty: Option<f32>) -> f32 {
    // An empty sequence would divide by zero; the logit rules never let one finish.
    let length = length.max(1) as f32;
    let penalty = match length_penalty {
        None => length,
        Some(alpha) => ((5.0 + length) / 6.0).powf(alpha),
    };
    sum_logprob / penalty
}

/// The index of the best-ranked candidate (the first of equals, like `np.argmax`).
/// Degenerate candidates rank last: cut short, their sums leave out the tokens a loop
/// would have gone on to cost.
pub fn best<T>(candidates: &[Candidate<T>], length_penalty: Option<f32>) -> Option<usize> {
    let key = |c: &Candidate<T>| {
        (
            !c.degenerate,
            score(c.sum_logprob, c.length, length_penalty),
        )
    };
    let mut best: Option<(usize, (bool, f32))> = None;
    for (i, c) in candidates.iter().enumerate() {
        let (ok, s) = key(c);
        let better = best
            .is_none_or(|(_, (best_ok, best_s))| (ok && !best_ok) || (ok == best_ok && s > best_s));
        if better {
            best = Some((i, (ok, s)));
        }
    }
    best.map(|(i, _)| i)
}

/// A live beam as a step sees it: its sampled tokens and their summed log-probability.
#[derive(Clone, Copy, Debug)]
pub struct Beam<'a> {
    pub sampled: &'a [u32],
    pub sum_logprob: f32,
}

/// A continuation a step keeps: beam `source` extended by `token`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Extension {
    pub source: usize,
    pub token: u32,
    pub logprob: f32,
    pub sum_logprob: f32,
}

/// What one step of a beam search keeps, each list best first.
#[derive(Debug, Default, PartialEq)]
pub struct Choice {
    /// At most `beam_size` continuations that go on decoding.
    pub live: Vec<Extension>,
    /// Continuations ending in EOT that ranked above the last live one.
    pub finished: Vec<Extension>,
}

/// One step of OpenAI's beam search for one group: each beam's `beam_size + 1` likeliest
/// next tokens (`logprobs[j]`, after the logit rules) are ranked together by summed
/// log-probability; from the top, sequences ending in EOT finish and the others stay live
/// until `beam_size` of them do. Beams with the same tokens count once (a new group starts
/// as one beam).
pub fn choose(beams: &[Beam], logprobs: &[&[f32]], beam_size: usize, eot: u32) -> Choice {
    let mut pool: Vec<Extension> = Vec::new();
    for (j, (beam, lp)) in beams.iter().zip(logprobs).enumerate() {
        if beams[..j].iter().any(|b| b.sampled == beam.sampled) {
            continue;
        }
        for (token, logprob) in top_k(lp, beam_size + 1) {
            pool.push(Extension {
                source: j,
                token,
                logprob,
                sum_logprob: beam.sum_logprob + logprob,
            });
        }
    }
    // Stable: equal sums keep the order beams and tokens were listed in, as Python's
    // sorted() over OpenAI's dict does.
    pool.sort_by(|a, b| b.sum_logprob.total_cmp(&a.sum_logprob));
    let mut choice = Choice::default();
    for ext in pool {
        if ext.token == eot {
            choice.finished.push(ext);
        } else {
            choice.live.push(ext);
            if choice.live.len() == beam_size {
                break;
            }
        }
    }
    choice
}

/// The `k` likeliest tokens with a finite log-probability, likeliest first (ties: lower id).
fn top_k(logprobs: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (t, &lp) in logprobs.iter().enumerate() {
        if !lp.is_finite() || (top.len() == k && lp <= top[k - 1].1) {
            continue;
        }
        let at = top.partition_point(|&(_, l)| l >= lp);
        top.insert(at, (t as u32, lp));
        top.truncate(k);
    }
    top
}

/// The sequences a beam search has finished so far, up to the number it waits for.
#[derive(Debug)]
pub struct BeamGroup<T> {
    pub options: BeamOptions,
    finished: Vec<Candidate<T>>,
}

impl<T> BeamGroup<T> {
    pub fn new(options: BeamOptions) -> Self {
        Self {
            options,
            finished: Vec::new(),
        }
    }

    /// Adds a step's newly finished sequences, best first, while there is room
    /// (OpenAI: the candidate list is full at `max_candidates`).
    pub fn add_finished(&mut self, newly: impl IntoIterator<Item = Candidate<T>>) {
        for c in newly {
            if self.is_done() {
                break;
            }
            self.finished.push(c);
        }
    }

    /// Whether enough sequences have finished (patience).
    pub fn is_done(&self) -> bool {
        self.finished.len() >= self.options.max_candidates()
    }

    /// The winner, once the search stops (done, or at the length limit): with fewer
    /// than `beam_size` finished sequences, the live beams join them, likeliest first,
    /// until there are that many (OpenAI's `finalize`); then the ranker chooses.
    pub fn finalize(mut self, mut live: Vec<Candidate<T>>) -> Option<T> {
        live.sort_by(|a, b| b.sum_logprob.total_cmp(&a.sum_logprob));
        for c in live {
            if self.finished.len() >= self.options.beam_size {
                break;
            }
            self.finished.push(c);
        }
        let i = best(&self.finished, self.options.length_penalty)?;
        Some(self.finished.swap_remove(i).item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOT: u32 = 9;
    const NEG: f32 = f32::NEG_INFINITY;

    fn options(beam_size: usize, patience: f32, length_penalty: Option<f32>) -> BeamOptions {
        BeamOptions {
            beam_size,
            patience,
            length_penalty,
        }
    }

    fn candidate(sum: f32, length: usize, item: &'static str) -> Candidate<&'static str> {
        Candidate {
            sum_logprob: sum,
            length,
            degenerate: false,
            item,
        }
    }

    /// Log-probabilities over a vocabulary of 10 from (token, probability) pairs.
    fn lp(pairs: &[(u32, f32)]) -> Vec<f32> {
        let mut v = vec![NEG; 10];
        for &(t, p) in pairs {
            v[t as usize] = p.ln();
        }
        v
    }

    #[test]
    fn the_ranker_divides_by_length_or_the_nmt_penalty() {
        // Per token: -6 over 3 tokens (-2) beats -5 over 2 (-2.5).
        let c = [candidate(-5.0, 2, "short"), candidate(-6.0, 3, "long")];
        assert_eq!(best(&c, None), Some(1));
        // α = 0: no length normalisation, the larger sum wins.
        assert_eq!(best(&c, Some(0.0)), Some(0));
        // α = 1: ((5 + n) / 6): -5 / (7/6) = -4.29 vs -6 / (8/6) = -4.5.
        assert_eq!(best(&c, Some(1.0)), Some(0));
        assert!((score(-6.0, 3, Some(1.0)) + 4.5).abs() < 1e-6);
        // Ties go to the first, like np.argmax; nothing to rank, no winner.
        assert_eq!(
            best(&[candidate(-1.0, 1, "a"), candidate(-1.0, 1, "b")], None),
            Some(0)
        );
        assert_eq!(best::<&str>(&[], None), None);
    }

    #[test]
    fn degenerate_candidates_rank_last() {
        let mut looped = candidate(-0.5, 40, "loop");
        looped.degenerate = true;
        assert_eq!(
            best(&[looped.clone(), candidate(-30.0, 10, "text")], None),
            Some(1)
        );
        assert_eq!(best(&[looped], None), Some(0));
    }

    #[test]
    fn patience_sets_how_many_sequences_the_search_waits_for() {
        assert_eq!(options(5, 1.0, None).max_candidates(), 5);
        assert_eq!(options(5, 2.0, None).max_candidates(), 10);
        // Python's round: 7.5 -> 8, 2.5 -> 2; never below one.
        assert_eq!(options(5, 1.5, None).max_candidates(), 8);
        assert_eq!(options(5, 0.5, None).max_candidates(), 2);
        assert_eq!(options(1, 0.1, None).max_candidates(), 1);
    }

    #[test]
    fn a_new_group_expands_its_one_beam_into_distinct_tokens() {
        // Five identical beams (or one): the five likeliest tokens, once each.
        let probs = lp(&[
            (1, 0.4),
            (2, 0.3),
            (3, 0.15),
            (4, 0.1),
            (5, 0.04),
            (6, 0.01),
        ]);
        let beams = vec![
            Beam {
                sampled: &[],
                sum_logprob: 0.0
            };
            5
        ];
        let choice = choose(&beams, &[probs.as_slice(); 5], 5, EOT);
        let tokens: Vec<u32> = choice.live.iter().map(|e| e.token).collect();
        assert_eq!(tokens, vec![1, 2, 3, 4, 5]);
        assert!(choice.live.iter().all(|e| e.source == 0));
        assert!(choice.finished.is_empty());
        assert!((choice.live[0].sum_logprob - 0.4f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn beams_compete_on_summed_logprob_and_eot_finishes_a_sequence() {
        // Beam 0 (sum ln 0.6) is sure of 1 then EOT; beam 1 (sum ln 0.4) splits.
        let b0 = lp(&[(1, 0.7), (EOT, 0.3)]);
        let b1 = lp(&[(2, 0.5), (3, 0.5)]);
        let beams = [
            Beam {
                sampled: &[7],
                sum_logprob: 0.6f32.ln(),
            },
            Beam {
                sampled: &[8],
                sum_logprob: 0.4f32.ln(),
            },
        ];
        let choice = choose(&beams, &[&b0, &b1], 2, EOT);
        // 0.42 (0→1), 0.2 (1→2), 0.2 (1→3), 0.18 (0→EOT): two live fill the beam at
        // 0.2; EOT at 0.18 ranks below them and is not collected.
        let live: Vec<(usize, u32)> = choice.live.iter().map(|e| (e.source, e.token)).collect();
        assert_eq!(live, vec![(0, 1), (1, 2)]);
        assert!(choice.finished.is_empty());
        // With EOT likelier it finishes, and the beam still keeps two live sequences.
        let b0 = lp(&[(1, 0.4), (EOT, 0.6)]);
        let choice = choose(&beams, &[&b0, &b1], 2, EOT);
        assert_eq!(choice.finished.len(), 1);
        assert_eq!(
            (choice.finished[0].source, choice.finished[0].token),
            (0, EOT)
        );
        let live: Vec<(usize, u32)> = choice.live.iter().map(|e| (e.source, e.token)).collect();
        assert_eq!(live, vec![(0, 1), (1, 2)]);
    }

    #[test]
    fn suppressed_tokens_are_never_chosen() {
        let probs = lp(&[(4, 1.0)]);
        let choice = choose(
            &[Beam {
                sampled: &[],
                sum_logprob: 0.0,
            }],
            &[&probs],
            3,
            EOT,
        );
        assert_eq!(choice.live.len(), 1);
        assert_eq!(choice.live[0].token, 4);
    }

    #[test]
    fn the_group_collects_finished_sequences_up_to_patience() {
        let mut group = BeamGroup::new(options(2, 1.5, None)); // waits for round(3.0) = 3
        group.add_finished([candidate(-1.0, 2, "a"), candidate(-2.0, 2, "b")]);
        assert!(!group.is_done());
        group.add_finished([candidate(-1.2, 3, "c"), candidate(-0.1, 1, "late")]);
        assert!(group.is_done());
        // "late" came after the list was full; the best per token of a, b, c is c.
        assert_eq!(group.finalize(Vec::new()), Some("c"));
    }

    #[test]
    fn live_beams_fill_in_when_too_few_sequences_finished() {
        // One finished of a beam of three: the two likeliest live beams join it.
        let mut group = BeamGroup::new(options(3, 1.0, None));
        group.add_finished([candidate(-9.0, 3, "finished")]);
        let live = vec![
            candidate(-8.0, 4, "third"),
            candidate(-2.0, 4, "first"),
            candidate(-4.0, 4, "second"),
        ];
        assert_eq!(group.finalize(live), Some("first"));
        // Enough finished: the live beams do not join.
        let mut group = BeamGroup::new(options(1, 1.0, None));
        group.add_finished([candidate(-9.0, 3, "finished")]);
        assert_eq!(
            group.finalize(vec![candidate(-0.1, 4, "live")]),
            Some("finished")
        );
        // Nothing at all: no winner.
        assert_eq!(
            BeamGroup::<&str>::new(options(2, 1.0, None)).finalize(Vec::new()),
            None
        );
    }

    #[test]
    fn the_search_per_attempt_and_its_rows() {
        let beam = options(5, 1.0, None);
        assert_eq!(Search::for_attempt(0.0, beam, 5, None), Search::Beam(beam));
        assert_eq!(
            Search::for_attempt(0.4, beam, 3, None),
            Search::BestOf {
                n: 3,
                length_penalty: None
            }
        );
        assert_eq!(
            Search::for_attempt(0.0, options(1, 1.0, None), 5, None),
            Search::Single
        );
        assert_eq!(Search::for_attempt(0.2, beam, 1, None), Search::Single);
        assert_eq!(Search::Beam(beam).rows(), 5);
        assert_eq!(Search::Beam(beam).narrowed(4).rows(), 4);
        assert_eq!(Search::Single.narrowed(4).rows(), 1);
    }
}
