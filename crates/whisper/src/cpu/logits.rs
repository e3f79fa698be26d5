//! Vocabulary logits of a decoder step on the CPU: `hidden · Eᵀ` with the token
//! embedding `E` `[vocab, state]` read once, its rows split over the cores.
//!
//! MLX hands this product to BLAS as a GEMM whose other side is one to a few rows, and
//! the BLAS packs all of `E` (80 MB for tiny.en) on every call: ~40 ms a step here,
//! most of a decoder step. Read in place by the `gemm` crate, it is bound by memory
//! bandwidth instead (~4 ms at one row on this 2-core machine).
//!
//! Checkpoints store Whisper in half precision, so `E` is exactly an f16 matrix: read as
//! f16 ([`logits_f16`], each value widened in registers) it is half the bytes, and
//! no GEMM packs it for a few rows.

use half::{f16, vec::HalfFloatVecExt};

use super::Strided;

/// Vocabulary rows one tile of [`logits_f16`] reads at once.
const TILE_TOKENS: usize = 4;
/// Hidden rows one tile multiplies them with (one where there is only one).
const TILE_ROWS: usize = 2;
/// Past this many rows the product is bound by arithmetic, not by reading `E`, and the
/// `gemm` crate's f32 kernels are faster (measured: 25 vs 28 ms at 64 rows, tiny.en).
pub const MAX_F16_ROWS: usize = 32;

/// `embedding` as f16 where that loses nothing (every value is an f16), else `None`.
pub fn exact_f16(embedding: &[f32]) -> Option<Vec<f16>> {
    let half: Vec<f16> = Vec::from_f32_slice(embedding);
    let exact = half.iter().zip(embedding).all(|(h, &x)| h.to_f32() == x);
    exact.then_some(half)
}

/// [`logits`] with the embedding in f16 (see [`exact_f16`]), f32 products and sums.
pub fn logits_f16(embedding: &[f16], hidden: &[f32], state: usize) -> Vec<f32> {
    let vocab = embedding.len() / state;
    assert!(vocab * state == embedding.len());
    over_tokens(vocab, hidden, state, TILE_TOKENS, |from, to, out| {
        let tokens = Tokens {
            embedding: &embedding[from * state..to * state],
            from,
            vocab,
            state,
        };
        // SAFETY: `over_tokens`'s promise is the one `Tokens::logits` asks for.
        unsafe { tokens.logits(hidden, out) }
    })
}

/// The `[rows, vocab]` output of `hidden` `[rows, state]`, its token columns split over
/// the cores in ranges of a multiple of `align`: `work(from, to, out)` fills columns
/// `from..to` of every row through `out` (the output's start), and no other call writes
/// them. The columns are disjoint but strided, so the output is shared as an address
/// rather than split into slices. The calling thread takes the last range.
fn over_tokens(
    vocab: usize,
    hidden: &[f32],
    state: usize,
    align: usize,
    work: impl Fn(usize, usize, *mut f32) + Sync,
) -> Vec<f32> {
    let rows = hidden.len() / state;
    assert!(rows * state == hidden.len());
    let mut out = vec![0.0f32; rows * vocab];
    let threads = crate::runtime::cpu_threads().clamp(1, vocab.max(1));
    let per_thread = vocab.div_ceil(threads).next_multiple_of(align).max(1);
    let out_at = out.as_mut_ptr() as usize;
    std::thread::scope(|scope| {
        let work = &work;
        for from in (0..vocab).step_by(per_thread) {
            let to = (from + per_thread).min(vocab);
            // `out` outlives the scope; each range's columns are its own.
            let range = move || work(from, to, out_at as *mut f32);
            if to < vocab {
                scope.spawn(range);
            } else {
                range();
            }
        }
    });
    out
}

/// Tokens `from..` of the vocabulary: their f16 embedding rows, `state` wide.
#[derive(Clone, Copy)]
struct Tokens<'a> {
    embedding: &'a [f16],
    from: usize,
    vocab: usize,
    state: usize,
}

impl Tokens<'_> {
    /// Writes `out[r·vocab + from + t]` for every hidden row `r` and token `t`.
    ///
    /// # Safety
    /// `out` holds `rows · vocab` values; no other thread writes these.
    unsafe fn logits(self, hidden: &[f32], out: *mut f32) {
        #[cfg(target_arch = "x86_64")]
        if super::available() && is_x86_feature_detected!("f16c") && self.state.is_multiple_of(8) {
            // SAFETY: AVX2, FMA and F16C were detected; the caller's promise for `out`.
            return unsafe {
                match hidden.len() / self.state {
                    1 => self.logits_avx2::<1>(hidden, out),
                    _ => self.logits_avx2::<TILE_ROWS>(hidden, out),
                }
            };
        }
        let rows = hidden.len() / self.state;
        for (t, e) in self.embedding.chunks_exact(self.state).enumerate() {
            for (r, h) in hidden.chunks_exact(self.state).enumerate().take(rows) {
                let dot: f32 = e.iter().zip(h).map(|(e, h)| e.to_f32() * h).sum();
                // SAFETY: the caller's.
                unsafe { *out.add(r * self.vocab + self.from + t) = dot };
            }
        }
    }

    /// Tiles of [`TILE_TOKENS`] embedding rows (kept in L1 while every hidden row passes)
    /// by `R` hidden rows; eight lanes of `state` at a time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn logits_avx2<const R: usize>(self, hidden: &[f32], out: *mut f32) {
        use std::arch::x86_64::*;
        let (state, rows) = (self.state, hidden.len() / self.state);
        let tokens = self.embedding.len() / state;
        let (e, h) = (self.embedding.as_ptr(), hidden.as_ptr());
        for t0 in (0..tokens).step_by(TILE_TOKENS) {
            // Past the end, a tile repeats its last row and stores nothing for it.
            let t_at: [usize; TILE_TOKENS] = std::array::from_fn(|i| (t0 + i).min(tokens - 1));
            for r0 in (0..rows).step_by(R) {
                let r_at: [usize; R] = std::array::from_fn(|j| (r0 + j).min(rows - 1));
                let mut acc = [[_mm256_setzero_ps(); R]; TILE_TOKENS];
                for k in (0..state).step_by(8) {
                    // SAFETY: t_at < tokens and r_at < rows, k + 8 <= state.
                    let ev: [__m256; TILE_TOKENS] = std::array::from_fn(|i| unsafe {
                        _mm256_cvtph_ps(_mm_loadu_si128(e.add(t_at[i] * state + k).cast()))
                    });
                    for (j, &r) in r_at.iter().enumerate() {
                        // SAFETY: as above.
                        let hv = unsafe { _mm256_loadu_ps(h.add(r * state + k)) };
                        for i in 0..TILE_TOKENS {
                            acc[i][j] = _mm256_fmadd_ps(ev[i], hv, acc[i][j]);
                        }
                    }
                }
                for (i, row) in acc.iter().enumerate().take(tokens - t0) {
                    for (j, &sum) in row.iter().enumerate().take(rows - r0) {
                        let at = (r0 + j) * self.vocab + self.from + t0 + i;
                        // SAFETY: the caller's.
                        unsafe { *out.add(at) = horizontal_sum(sum) };
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_sum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

/// `[rows, vocab]` logits of `hidden` `[rows, state]` against `embedding` `[vocab, state]`.
pub fn logits(embedding: &[f32], hidden: &[f32], state: usize) -> Vec<f32> {
    let vocab = embedding.len() / state;
    assert!(vocab * state == embedding.len());
    over_tokens(vocab, hidden, state, 1, |from, to, out| {
        // SAFETY: `E[from..to]` lies inside `embedding`, `hidden` is whole, and the
        // destination `out[r·vocab + from..r·vocab + to]` for every row r lies inside the
        // output, written by this call only (`over_tokens`).
        unsafe {
            super::product(
                (to - from, hidden.len() / state, state),
                Strided {
                    ptr: out.add(from),
                    row_stride: 1,
                    col_stride: vocab,
                },
                Strided::rows(embedding.as_ptr().add(from * state), state),
                Strided {
                    ptr: hidden.as_ptr(),
                    row_stride: 1,
                    col_stride: state,
                },
                1.0,
                false,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_logits_match_f32_logits_of_the_same_values() {
        // Tails of both tiles, and an embedding that is exactly f16.
        let (vocab, state) = (1003, 32);
        let embedding: Vec<f32> = (0..vocab * state)
            .map(|i| f16::from_f32(((i * 7 % 29) as f32 - 14.0) * 0.05).to_f32())
            .collect();
        let half = exact_f16(&embedding).expect("f16 values");
        for rows in [1, 2, 3, 8] {
            let hidden: Vec<f32> = (0..rows * state)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let want = logits(&embedding, &hidden, state);
            let got = logits_f16(&half, &hidden, state);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-4, "rows {rows}, value {i}: {g} vs {w}");
            }
        }
        assert!(exact_f16(&[0.1f32]).is_none(), "0.1 is not an f16");
    }

    #[test]
    fn logits_are_dot_products_with_every_embedding_row() {
        let (vocab, state, rows) = (1001, 24, 3);
        let embedding: Vec<f32> = (0..vocab * state)
            .map(|i| ((i * 7 % 29) as f32 - 14.0) * 0.05)
            .collect();
        let hidden: Vec<f32> = (0..rows * state)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let out = logits(&embedding, &hidden, state);
        for r in 0..rows {
            for v in 0..vocab {
                let want: f32 = (0..state)
                    .map(|k| hidden[r * state + k] * embedding[v * state + k])
                    .sum();
                assert!(
                    (out[r * vocab + v] - want).abs() < 1e-4,
                    "row {r}, token {v}"
                );
            }
        }
    }
}
