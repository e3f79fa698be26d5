//! Softmax attention of the encoder on the CPU, fused by blocks of query rows.
//!
//! For each block of queries and each head: scores = q·kᵀ (a GEMM into a scratch
//! buffer the size of the L2 cache), `2^x` softmax in place ([`super::simd`]), then
//! weights·v straight into the head's columns of the output, divided by the row sums.
//! The `[heads, t, t]` score matrices never reach memory, and the rows are split over
//! the cores. log2(e) folds into the score GEMM's scale, so `2^x` replaces `e^x`.

use super::{product, split_rows, Strided};

/// Query rows per block: a block's scores (64 × 1500 f32, 375 KiB) stay in L2.
const BLOCK_ROWS: usize = 64;

/// The shape of one attention call over `[batch, time, heads · head_dim]` buffers.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub batch: usize,
    pub time: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Shape {
    fn state(&self) -> usize {
        self.heads * self.head_dim
    }

    fn len(&self) -> usize {
        self.batch * self.time * self.state()
    }
}

/// `softmax(q·kᵀ·scale)·v` per head for q, k, v in `[batch, time, heads · head_dim]`
/// (the layout of the projections, heads not split out), output in the same layout.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], shape: Shape, scale: f32) -> Vec<f32> {
    assert!(q.len() == shape.len() && k.len() == shape.len() && v.len() == shape.len());
    let state = shape.state();
    let mut out = vec![0.0; shape.len()];
    split_rows(&mut out, state, |first_row, rows| {
        let mut scores = vec![0.0; BLOCK_ROWS * shape.time];
        let mut inverse_sums = vec![0.0; BLOCK_ROWS];
        let count = rows.len() / state;
        let mut done = 0;
        while done < count {
            let row = first_row + done;
            // A block stays within one batch item: its keys and values are that item's.
            let batch = row / shape.time;
            let n = BLOCK_ROWS
                .min(count - done)
                .min((batch + 1) * shape.time - row);
            let block = Block {
                shape,
                scale,
                q: &q[row * state..],
                kv_offset: batch * shape.time * state,
                rows: n,
            };
            let out_rows = &mut rows[done * state..(done + n) * state];
            for head in 0..shape.heads {
                block.head(head, k, v, &mut scores, &mut inverse_sums, out_rows);
            }
            done += n;
        }
    });
    out
}

/// One block of query rows of one batch item.
struct Block<'a> {
    shape: Shape,
    scale: f32,
    /// The block's first query row onwards.
    q: &'a [f32],
    /// Where the batch item's keys and values start.
    kv_offset: usize,
    rows: usize,
}

impl Block<'_> {
    fn head(
        &self,
        head: usize,
        k: &[f32],
        v: &[f32],
        scores: &mut [f32],
        inverse_sums: &mut [f32],
        out: &mut [f32],
    ) {
        let Shape { time, head_dim, .. } = self.shape;
        let state = self.shape.state();
        let column = head * head_dim;
        let keys = &k[self.kv_offset + column..];
        let values = &v[self.kv_offset + column..];
        let scores = &mut scores[..self.rows * time];
        // Bounds of every strided read and write below.
        assert!(self.q.len() >= (self.rows - 1) * state + column + head_dim);
        assert!(keys.len() >= (time - 1) * state + head_dim && values.len() >= keys.len());
        assert!(out.len() >= (self.rows - 1) * state + column + head_dim);
        // SAFETY: every matrix lies inside its slice (checked above) with the given
        // strides; `scores` and `out` are exclusive borrows that alias nothing.
        unsafe {
            // scores[r, j] = (q[r] · k[j]) · scale · log2(e)
            product(
                (self.rows, time, head_dim),
                Strided::rows(scores.as_mut_ptr(), time),
                Strided::rows(self.q.as_ptr().add(column), state),
                Strided {
                    ptr: keys.as_ptr(),
                    row_stride: 1,
                    col_stride: state,
                },
                self.scale * std::f32::consts::LOG2_E,
                false,
            );
        }
        for (r, row) in scores.chunks_exact_mut(time).enumerate() {
            inverse_sums[r] = 1.0 / super::simd::exp2_row(row);
        }
        // SAFETY: as above.
        unsafe {
            // out[r, column..column + head_dim] = scores[r] · v
            product(
                (self.rows, head_dim, time),
                Strided::rows(out.as_mut_ptr().add(column), state),
                Strided::rows(scores.as_ptr(), time),
                Strided::rows(values.as_ptr(), state),
                1.0,
                false,
            );
        }
        for (r, &inverse) in inverse_sums[..self.rows].iter().enumerate() {
            for o in &mut out[r * state + column..r * state + column + head_dim] {
                *o *= inverse;
            }
        }
    }
}

/// The shape of one decoder step's attention: one query per row against that row's
/// cached keys and values `[batch, heads, keys, head_dim]`.
#[derive(Clone, Copy, Debug)]
pub struct StepShape {
    pub batch: usize,
    pub heads: usize,
    pub keys: usize,
    pub head_dim: usize,
}

/// A decoder step's attention: `q` `[batch, heads · head_dim]` against `keys` and
/// `values` `[batch, heads, keys, head_dim]`, with an optional additive `mask`
/// `[batch, keys]` (0 or −∞); output `[batch, heads · head_dim]`. One (row, head) pair
/// at a time, split over the cores: each reads its keys and values once, which is all
/// the work there is (MLX's batched matrix-vector products took ~4× as long here).
pub fn single_query(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    mask: Option<&[f32]>,
    shape: StepShape,
    scale: f32,
) -> Vec<f32> {
    let StepShape {
        batch,
        heads,
        keys: n,
        head_dim,
    } = shape;
    let cached = batch * heads * n * head_dim;
    assert!(q.len() == batch * heads * head_dim && keys.len() == cached && values.len() == cached);
    assert!(mask.is_none_or(|m| m.len() == batch * n));
    let mut out = vec![0.0; q.len()];
    split_rows(&mut out, head_dim, |first, rows| {
        let mut scores = vec![0.0; n];
        for (i, o) in rows.chunks_exact_mut(head_dim).enumerate() {
            let pair = first + i;
            let (k, v) = (&keys[pair * n * head_dim..], &values[pair * n * head_dim..]);
            let q = &q[pair * head_dim..(pair + 1) * head_dim];
            // SAFETY: k holds n rows of head_dim floats, q one row; scores holds n.
            unsafe {
                product(
                    (n, 1, head_dim),
                    Strided::rows(scores.as_mut_ptr(), 1),
                    Strided::rows(k.as_ptr(), head_dim),
                    Strided::rows(q.as_ptr(), 1),
                    scale * std::f32::consts::LOG2_E,
                    false,
                )
            };
            if let Some(mask) = mask {
                let row = &mask[pair / heads * n..][..n];
                for (s, m) in scores.iter_mut().zip(row) {
                    *s += m;
                }
            }
            let inverse = 1.0 / super::simd::exp2_row(&mut scores);
            // SAFETY: scores is one row of n, v holds n rows of head_dim, o holds head_dim.
            unsafe {
                product(
                    (1, head_dim, n),
                    Strided::rows(o.as_mut_ptr(), head_dim),
                    Strided::rows(scores.as_ptr(), n),
                    Strided::rows(v.as_ptr(), head_dim),
                    inverse,
                    false,
                )
            };
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain f64 attention, one query at a time.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: Shape, scale: f32) -> Vec<f32> {
        let state = s.state();
        let mut out = vec![0.0; s.len()];
        for b in 0..s.batch {
            for h in 0..s.heads {
                for i in 0..s.time {
                    let qi = &q[(b * s.time + i) * state + h * s.head_dim..][..s.head_dim];
                    let logits: Vec<f64> = (0..s.time)
                        .map(|j| {
                            let kj = &k[(b * s.time + j) * state + h * s.head_dim..][..s.head_dim];
                            qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for c in 0..s.head_dim {
                        let o: f64 = (0..s.time)
                            .map(|j| {
                                weights[j] * v[(b * s.time + j) * state + h * s.head_dim + c] as f64
                            })
                            .sum();
                        out[(b * s.time + i) * state + h * s.head_dim + c] = (o / total) as f32;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn single_query_attention_matches_plain_attention_with_its_mask() {
        let (batch, heads, n, head_dim) = (3, 2, 37, 8);
        let shape = StepShape {
            batch,
            heads,
            keys: n,
            head_dim,
        };
        let (q, k, v) = (
            values(batch * heads * head_dim, 4),
            values(batch * heads * n * head_dim, 5),
            values(batch * heads * n * head_dim, 6),
        );
        // Row b sees keys b.. (left padding masked, as in a batch of rows).
        let mask: Vec<f32> = (0..batch * n)
            .map(|i| {
                if i % n < i / n {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let ours = single_query(&q, &k, &v, Some(&mask), shape, 0.3);
        for pair in 0..batch * heads {
            let b = pair / heads;
            let logits: Vec<f64> = (0..n)
                .map(|j| {
                    let kj = &k[(pair * n + j) * head_dim..][..head_dim];
                    let dot: f64 = q[pair * head_dim..][..head_dim]
                        .iter()
                        .zip(kj)
                        .map(|(a, b)| (a * b) as f64)
                        .sum();
                    dot * 0.3 + mask[b * n + j] as f64
                })
                .collect();
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for c in 0..head_dim {
                let want: f64 = (0..n)
                    .map(|j| weights[j] * v[(pair * n + j) * head_dim + c] as f64)
                    .sum::<f64>()
                    / total;
                let got = ours[pair * head_dim + c];
                assert!(
                    (got as f64 - want).abs() < 2e-5,
                    "pair {pair}, {c}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn blocked_attention_matches_plain_attention() {
        // Two batch items, a time that is not a multiple of the block, blocks that
        // would straddle the items.
        let shape = Shape {
            batch: 2,
            time: 150,
            heads: 3,
            head_dim: 16,
        };
        let (q, k, v) = (
            values(shape.len(), 1),
            values(shape.len(), 2),
            values(shape.len(), 3),
        );
        let ours = attention(&q, &k, &v, shape, 0.7);
        let want = reference(&q, &k, &v, shape, 0.7);
        for (a, b) in ours.iter().zip(&want) {
            assert!((a - b).abs() < 2e-5, "{a} vs {b}");
        }
    }
}
