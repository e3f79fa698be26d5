//! The voice encoder's forward pass on the CPU in Rust, where steno-whisper's CPU kernels
//! run (x86 with AVX2/FMA).
//!
//! On MLX each LSTM step is a dozen small ops, and its sigmoid and tanh run on MLX's
//! scalar x86 `exp`: ~5 800 ops and ~160 M scalar exponentials for a hundred windows,
//! most of what diarization adds to a transcription. Here the windows are split over the
//! cores, each thread runs its windows through all steps and layers with the `gemm`
//! crate's products, and the gates use steno-whisper's vectorised sigmoid and tanh.
//! Same arithmetic as [`crate::encoder`]'s MLX graph, in the same order of operations.

use steno_whisper::cpu::{product, simd, split_rows, Strided};

use crate::encoder::{EMBEDDING_DIM, HIDDEN};
use crate::mel::N_MELS;

/// One LSTM layer's weights in PyTorch's layout.
pub(crate) struct Layer {
    /// `[4H, input]`.
    pub w_ih: Vec<f32>,
    /// `[4H, H]`.
    pub w_hh: Vec<f32>,
    /// `[4H]`: b_ih + b_hh.
    pub bias: Vec<f32>,
}

/// The encoder's weights on the host.
pub(crate) struct HostWeights {
    pub layers: Vec<Layer>,
    /// `[E, H]`.
    pub linear: Vec<f32>,
    pub linear_bias: Vec<f32>,
}

/// Unit embeddings `[windows, E]` of frame-major mel windows of `steps` frames each.
pub(crate) fn embed(weights: &HostWeights, mels: &[f32], steps: usize) -> Vec<f32> {
    let per_window = steps * N_MELS;
    let mut out = vec![0.0; mels.len() / per_window * EMBEDDING_DIM];
    split_rows(&mut out, EMBEDDING_DIM, |first, rows| {
        let n = rows.len() / EMBEDDING_DIM;
        let windows = &mels[first * per_window..(first + n) * per_window];
        let hidden = last_hidden(weights, windows, n, steps);
        matmul_t(
            n,
            EMBEDDING_DIM,
            HIDDEN,
            &hidden,
            &weights.linear,
            rows,
            false,
        );
        for row in rows.chunks_exact_mut(EMBEDDING_DIM) {
            for (v, b) in row.iter_mut().zip(&weights.linear_bias) {
                *v = (*v + b).max(0.0);
            }
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
    });
    out
}

/// The last layer's final hidden state `[n, H]` of `n` windows `[n, steps, 40]`.
fn last_hidden(weights: &HostWeights, windows: &[f32], n: usize, steps: usize) -> Vec<f32> {
    // Time-major, so that each step's rows are one contiguous block.
    let mut x = vec![0.0; windows.len()];
    for (w, window) in windows.chunks_exact(steps * N_MELS).enumerate() {
        for (t, frame) in window.chunks_exact(N_MELS).enumerate() {
            x[(t * n + w) * N_MELS..][..N_MELS].copy_from_slice(frame);
        }
    }
    let (mut input, mut h) = (N_MELS, vec![0.0; n * HIDDEN]);
    let gates_width = 4 * HIDDEN;
    for layer in &weights.layers {
        let mut gates = vec![0.0; steps * n * gates_width];
        matmul_t(
            steps * n,
            gates_width,
            input,
            &x,
            &layer.w_ih,
            &mut gates,
            false,
        );
        for row in gates.chunks_exact_mut(gates_width) {
            row.iter_mut().zip(&layer.bias).for_each(|(g, b)| *g += b);
        }
        let mut outputs = vec![0.0; steps * n * HIDDEN];
        h.fill(0.0);
        let mut c = vec![0.0; n * HIDDEN];
        for (step, out) in gates
            .chunks_exact_mut(n * gates_width)
            .zip(outputs.chunks_exact_mut(n * HIDDEN))
        {
            matmul_t(n, gates_width, HIDDEN, &h, &layer.w_hh, step, true);
            for ((g, c), h) in step
                .chunks_exact_mut(gates_width)
                .zip(c.chunks_exact_mut(HIDDEN))
                .zip(h.chunks_exact_mut(HIDDEN))
            {
                cell(g, c, h);
            }
            out.copy_from_slice(&h);
        }
        (x, input) = (outputs, HIDDEN);
    }
    h
}

/// One LSTM cell: gates `[i, f, g, o]` (pre-activations, `4H`) update `c` and `h`:
/// c = σ(f)·c + σ(i)·tanh(g); h = σ(o)·tanh(c).
fn cell(gates: &mut [f32], c: &mut [f32], h: &mut [f32]) {
    let (i, rest) = gates.split_at_mut(HIDDEN);
    let (f, rest) = rest.split_at_mut(HIDDEN);
    let (g, o) = rest.split_at_mut(HIDDEN);
    simd::sigmoid_in_place(i);
    simd::sigmoid_in_place(f);
    simd::tanh_in_place(g);
    simd::sigmoid_in_place(o);
    for k in 0..HIDDEN {
        c[k] = f[k] * c[k] + i[k] * g[k];
        h[k] = c[k];
    }
    simd::tanh_in_place(h);
    h.iter_mut().zip(o.iter()).for_each(|(h, o)| *h *= o);
}

/// `dst[m × n] (+)= lhs[m × k] · wᵀ` for `w` `[n, k]`, all row-major.
fn matmul_t(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    w: &[f32],
    dst: &mut [f32],
    accumulate: bool,
) {
    assert!(lhs.len() >= m * k && w.len() >= n * k && dst.len() >= m * n);
    // SAFETY: the three matrices lie inside their slices (checked above); `dst` is an
    // exclusive borrow.
    unsafe {
        product(
            (m, n, k),
            Strided::rows(dst.as_mut_ptr(), n),
            Strided::rows(lhs.as_ptr(), k),
            Strided {
                ptr: w.as_ptr(),
                row_stride: 1,
                col_stride: k,
            },
            1.0,
            accumulate,
        )
    }
}
