//! Vocabulary logits of a decoder step on the CPU: `hidden · Eᵀ` with the token
//! embedding `E` `[vocab, state]` read once, its rows split over the cores.
//!
//! MLX hands this product to BLAS as a GEMM whose other side is one to a few rows, and
//! the BLAS packs all of `E` (80 MB for tiny.en) on every call: ~40 ms a step here,
//! most of a decoder step. Read in place by the `gemm` crate, it is bound by memory
//! bandwidth instead (~4 ms at one row on this 2-core machine).

use super::Strided;

/// `[rows, vocab]` logits of `hidden` `[rows, state]` against `embedding` `[vocab, state]`.
pub fn logits(embedding: &[f32], hidden: &[f32], state: usize) -> Vec<f32> {
    let (vocab, rows) = (embedding.len() / state, hidden.len() / state);
    assert!(vocab * state == embedding.len() && rows * state == hidden.len());
    let mut out = vec![0.0f32; rows * vocab];
    let threads = crate::runtime::cpu_threads().clamp(1, vocab.max(1));
    let per_thread = vocab.div_ceil(threads);
    // Each thread writes the columns `from..to` of every row: disjoint, but strided, so
    // the output is shared as an address rather than split into slices.
    let out_at = out.as_mut_ptr() as usize;
    std::thread::scope(|scope| {
        for from in (0..vocab).step_by(per_thread) {
            let to = (from + per_thread).min(vocab);
            let work = move || {
                // SAFETY: `E[from..to]` lies inside `embedding`, `hidden` is whole, and
                // the destination `out[r·vocab + from..r·vocab + to]` for r < rows lies
                // inside `out` (alive until the scope ends), written by this thread only.
                unsafe {
                    super::product(
                        (to - from, rows, state),
                        Strided {
                            ptr: (out_at as *mut f32).add(from),
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
            };
            if to < vocab {
                scope.spawn(work);
            } else {
                work();
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn logits_are_dot_products_with_every_embedding_row() {
        let (vocab, state, rows) = (1001, 24, 3);
        let embedding: Vec<f32> = (0..vocab * state)
            .map(|i| ((i * 7 % 29) as f32 - 14.0) * 0.05)
            .collect();
        let hidden: Vec<f32> = (0..rows * state)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let out = super::logits(&embedding, &hidden, state);
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
