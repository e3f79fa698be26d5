//! The encoder's elementwise-heavy work on the CPU, in Rust: fused attention and GELU.
//!
//! On x86, MLX's CPU kernels for `exp` and `erf` are scalar and run one thread per
//! stream, so softmax and GELU cost more than all the encoder's matrix products. Here
//! they run as AVX2 polynomials ([`simd`]) with the rows split over the cores, and the
//! attention's score matrices stay in cache ([`attention`]); MLX keeps the projections,
//! the MLP's matrix products and everything else. The decoder's vocabulary logits are
//! computed here too ([`logits`]), where MLX's BLAS call repacks the whole embedding every
//! step. Used only where [`available`]: an x86-64 CPU with AVX2 and FMA, MLX on the CPU,
//! f32 arrays. A step's host side (each row's log-softmax normaliser and greedy token,
//! [`simd::logsumexp`], [`simd::argmax`], rows over the cores with [`map_split`]) runs on
//! every device.

pub mod attention;
pub mod logits;
pub mod simd;

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the kernels off (MLX's own ops run instead), for comparisons.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether this CPU runs the kernels (AVX2 and FMA, checked once) and they are on.
pub fn available() -> bool {
    static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let detected = *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    });
    detected && ENABLED.load(Ordering::Relaxed)
}

/// Whether the kernels take `x`: they [`available`], MLX computes on the CPU, and `x`
/// is f32 (the kernels read and write f32 buffers).
pub(crate) fn runs(x: &mlx_rs::Array) -> bool {
    available() && crate::model::on_cpu() && x.dtype() == mlx_rs::Dtype::Float32
}

/// Runs `f(first_row, rows)` over consecutive chunks of the `row_len`-wide rows of
/// `out`, one chunk per core ([`crate::runtime::cpu_threads`]); the calling thread
/// takes the last chunk. (Also the voice encoder's, in steno-speaker.)
pub fn split_rows(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = out.len() / row_len;
    let threads = crate::runtime::cpu_threads().clamp(1, rows.max(1));
    let per_thread = rows.div_ceil(threads);
    std::thread::scope(|scope| {
        let mut chunks = out.chunks_mut(per_thread * row_len).enumerate().peekable();
        while let Some((i, chunk)) = chunks.next() {
            let f = &f;
            if chunks.peek().is_some() {
                scope.spawn(move || f(i * per_thread, chunk));
            } else {
                f(i * per_thread, chunk);
            }
        }
    });
}

/// `items` mapped by `f`, in order, over consecutive chunks, one per core
/// ([`crate::runtime::cpu_threads`]); the calling thread takes the last chunk. (A
/// decoder step's rows choosing their next tokens.)
pub fn map_split<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = crate::runtime::cpu_threads().clamp(1, items.len().max(1));
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(per_thread).collect());
    }
    let last = chunks.pop().unwrap_or_default();
    std::thread::scope(|scope| {
        let f = &f;
        let spawned: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        let tail: Vec<R> = last.into_iter().map(f).collect();
        let mut out = Vec::new();
        for handle in spawned {
            out.extend(
                handle
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            );
        }
        out.extend(tail);
        out
    })
}

/// An f32 matrix for [`product`]: element (i, j) at `ptr + i·row_stride + j·col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct Strided<P> {
    pub ptr: P,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<P> Strided<P> {
    /// A row-major matrix whose rows are `row_stride` apart.
    pub fn rows(ptr: P, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride,
            col_stride: 1,
        }
    }
}

/// `dst[m × n] = scale · lhs[m × k] · rhs[k × n]` (added to `dst` when `accumulate`), on
/// the calling thread: the `gemm` crate's kernels, which pick AVX2/FMA at run time.
///
/// # Safety
/// Every element the shapes and strides address lies inside its allocation, and `dst`
/// overlaps neither input.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    scale: f32,
    accumulate: bool,
) {
    // SAFETY: the caller's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride as isize,
            dst.row_stride as isize,
            accumulate,
            lhs.ptr,
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.ptr,
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// GELU of every value, the rows split over the cores.
pub fn gelu(x: &[f32], row_len: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    split_rows(&mut out, row_len, |first_row, rows| {
        let from = first_row * row_len;
        simd::gelu_into(&x[from..from + rows.len()], rows);
    });
    out
}
