//! `2^x` and GELU over f32 slices, eight lanes at a time with AVX2 and FMA.
//!
//! MLX's CPU backend evaluates `exp` and `erf` one element at a time on x86 (~17 ns
//! each here), which made softmax and GELU most of an encoder window. These are the
//! same functions as polynomials over `__m256` registers (~0.3 ns an element). Callers
//! check [`super::available`] first; the scalar forms serve slice tails and tests.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Taylor coefficients of `2^f = e^(f·ln 2)`, `(ln 2)^k / k!` for k = 0..=7. On
/// |f| ≤ 0.5 the truncation error is below 5e-9, under f32's rounding.
const EXP2: [f32; 8] = [
    1.0,
    std::f32::consts::LN_2,
    0.240_226_5,
    0.055_504_11,
    0.009_618_129,
    0.001_333_355_8,
    0.000_154_035_3,
    0.000_015_252_734,
];

/// Abramowitz & Stegun 7.1.26: `erf(z) ≈ 1 − t·P(t)·e^(−z²)`, `t = 1/(1 + p·z)` for
/// z ≥ 0, absolute error ≤ 1.5e-7.
const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_7,
    -1.453_152,
    1.061_405_4,
];

/// `2^y` for one value, the scalar form of [`exp2_x8`].
pub fn exp2(y: f32) -> f32 {
    let y = y.clamp(-127.0, 127.0);
    let n = y.round();
    let f = y - n;
    let p = EXP2.iter().rev().fold(0.0f32, |acc, &c| acc.mul_add(f, c));
    // n = −127 gives a zero exponent field, i.e. 0.0: results below 2^−126 flush.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// GELU with the exact (erf) form Whisper was trained with: `x·(1 + erf(x/√2))/2`.
pub fn gelu(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / ERF_P.mul_add(z, 1.0);
    let p = ERF_A.iter().rev().fold(0.0f32, |acc, &a| acc.mul_add(t, a)) * t;
    let erf = 1.0 - p * exp2(-z * z * std::f32::consts::LOG2_E);
    0.5 * x * (1.0 + erf.copysign(x))
}

/// Replaces each value of `row` by `2^(value − max)` and returns their sum.
pub fn exp2_row(row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::exp2_row(row) };
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().fold(0.0, |sum, v| {
        *v = exp2(*v - max);
        sum + *v
    })
}

/// The largest value (−∞ for none), eight lanes at a time.
pub fn max(values: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::max(values) };
    }
    values.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// The index of the first largest value (0 for none): a decoder row's greedy token.
pub fn argmax(values: &[f32]) -> usize {
    let top = max(values);
    values.iter().position(|&v| v == top).unwrap_or(0)
}

/// `ln Σ e^v`: a decoder row's log-softmax normaliser over the vocabulary, which the
/// scalar `exp` made most of a step's host time (~1 ms a row of 51865 logits).
pub fn logsumexp(values: &[f32]) -> f32 {
    let top = max(values);
    if top == f32::NEG_INFINITY {
        return top;
    }
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return top + unsafe { avx2::exp_sum(values, top) }.ln();
    }
    let sum: f32 = values
        .iter()
        .map(|&v| exp2((v - top) * std::f32::consts::LOG2_E))
        .sum();
    top + sum.ln()
}

/// The logistic function `1 / (1 + e^−x)` of one value.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp2(-x * std::f32::consts::LOG2_E))
}

/// Each value `x` of `values` becomes `sigmoid(x)`.
pub fn sigmoid_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::sigmoid_in_place(values, 1.0) };
    }
    for v in values {
        *v = sigmoid(*v);
    }
}

/// Each value `x` of `values` becomes `tanh(x) = 2·sigmoid(2x) − 1`.
pub fn tanh_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        unsafe { avx2::sigmoid_in_place(values, 2.0) };
    } else {
        for v in values.iter_mut() {
            *v = sigmoid(2.0 * *v);
        }
    }
    for v in values {
        *v = 2.0 * *v - 1.0;
    }
}

/// `out[i] = gelu(x[i])`.
pub fn gelu_into(x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::gelu_into(x, out) };
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = gelu(v);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    fn exp2_x8(y: __m256) -> __m256 {
        let y = _mm256_min_ps(
            _mm256_max_ps(y, _mm256_set1_ps(-127.0)),
            _mm256_set1_ps(127.0),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
        let f = _mm256_sub_ps(y, n);
        let mut p = _mm256_set1_ps(EXP2[7]);
        for &c in EXP2[..7].iter().rev() {
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
        }
        let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased)))
    }

    #[target_feature(enable = "avx2,fma")]
    fn max_of(v: __m256) -> f32 {
        let x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let x = _mm_max_ps(x, _mm_movehl_ps(x, x));
        _mm_cvtss_f32(_mm_max_ps(x, _mm_shuffle_ps::<1>(x, x)))
    }

    #[target_feature(enable = "avx2,fma")]
    fn sum_of(v: __m256) -> f32 {
        let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        _mm_cvtss_f32(_mm_add_ps(x, _mm_shuffle_ps::<1>(x, x)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn max(values: &[f32]) -> f32 {
        let (body, tail) = values.split_at(values.len() / 8 * 8);
        let mut max8 = _mm256_set1_ps(f32::NEG_INFINITY);
        for chunk in body.chunks_exact(8) {
            // SAFETY: the chunk holds 8 floats.
            max8 = _mm256_max_ps(max8, unsafe { _mm256_loadu_ps(chunk.as_ptr()) });
        }
        tail.iter().copied().fold(max_of(max8), f32::max)
    }

    /// `Σ e^(v − max)` as `2^((v − max)·log2 e)`.
    #[target_feature(enable = "avx2,fma")]
    pub fn exp_sum(values: &[f32], max: f32) -> f32 {
        let (body, tail) = values.split_at(values.len() / 8 * 8);
        let (max8, log2e) = (
            _mm256_set1_ps(max),
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        );
        let mut sum8 = _mm256_setzero_ps();
        for chunk in body.chunks_exact(8) {
            // SAFETY: the chunk holds 8 floats.
            let x = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            sum8 = _mm256_add_ps(sum8, exp2_x8(_mm256_mul_ps(_mm256_sub_ps(x, max8), log2e)));
        }
        tail.iter().fold(sum_of(sum8), |sum, &v| {
            sum + exp2((v - max) * std::f32::consts::LOG2_E)
        })
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn exp2_row(row: &mut [f32]) -> f32 {
        let max = self::max(row);
        let (body, tail) = row.split_at_mut(row.len() / 8 * 8);
        let (max8, mut sum8) = (_mm256_set1_ps(max), _mm256_setzero_ps());
        for chunk in body.chunks_exact_mut(8) {
            // SAFETY: the chunk holds 8 floats.
            let x = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            let e = exp2_x8(_mm256_sub_ps(x, max8));
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), e) };
            sum8 = _mm256_add_ps(sum8, e);
        }
        tail.iter_mut().fold(sum_of(sum8), |sum, v| {
            *v = exp2(*v - max);
            sum + *v
        })
    }

    /// `sigmoid(scale · x)` for every value.
    #[target_feature(enable = "avx2,fma")]
    pub fn sigmoid_in_place(values: &mut [f32], scale: f32) {
        let k = _mm256_set1_ps(-scale * std::f32::consts::LOG2_E);
        let one = _mm256_set1_ps(1.0);
        let mut chunks = values.chunks_exact_mut(8);
        for chunk in &mut chunks {
            // SAFETY: the chunk holds 8 floats.
            let x = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            let s = _mm256_div_ps(one, _mm256_add_ps(one, exp2_x8(_mm256_mul_ps(x, k))));
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), s) };
        }
        for v in chunks.into_remainder() {
            *v = sigmoid(scale * *v);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn gelu_x8(x: __m256) -> __m256 {
        let sign = _mm256_set1_ps(-0.0);
        let z = _mm256_mul_ps(
            _mm256_andnot_ps(sign, x),
            _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
        );
        let one = _mm256_set1_ps(1.0);
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), z, one));
        let mut p = _mm256_set1_ps(ERF_A[4]);
        for &a in ERF_A[..4].iter().rev() {
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(a));
        }
        let minus_z2 = _mm256_mul_ps(
            _mm256_mul_ps(z, z),
            _mm256_set1_ps(-std::f32::consts::LOG2_E),
        );
        let erf = _mm256_fnmadd_ps(_mm256_mul_ps(p, t), exp2_x8(minus_z2), one);
        // erf takes x's sign; then x·(1 + erf)/2.
        let erf = _mm256_or_ps(erf, _mm256_and_ps(sign, x));
        _mm256_mul_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(0.5)),
            _mm256_add_ps(one, erf),
        )
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn gelu_into(x: &[f32], out: &mut [f32]) {
        let n = x.len().min(out.len());
        let body = n / 8 * 8;
        for (o, v) in out[..body]
            .chunks_exact_mut(8)
            .zip(x[..body].chunks_exact(8))
        {
            // SAFETY: both chunks hold 8 floats.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), gelu_x8(_mm256_loadu_ps(v.as_ptr()))) };
        }
        for (o, &v) in out[body..n].iter_mut().zip(&x[body..n]) {
            *o = gelu(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_gelu(x: f64) -> f64 {
        // erf by its Taylor series (exact enough for |x| < 6 in f64).
        let z = x / std::f64::consts::SQRT_2;
        let (mut term, mut sum, mut n) = (z, z, 0.0);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) && n < 200.0 {
            n += 1.0;
            term *= -z * z / n;
            sum += term / (2.0 * n + 1.0);
        }
        0.5 * x * (1.0 + sum * 2.0 / std::f64::consts::PI.sqrt())
    }

    #[test]
    fn logsumexp_and_argmax_match_the_scalar_forms() {
        let row: Vec<f32> = (0..51_865)
            .map(|i| ((i * 7_919) % 10_007) as f32 * 0.003 - 20.0)
            .collect();
        let mut with_inf = row.clone();
        with_inf[..100].fill(f32::NEG_INFINITY);
        for values in [&row[..], &with_inf[..], &row[..13]] {
            let top = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let want = top as f64
                + values
                    .iter()
                    .map(|&v| ((v - top) as f64).exp())
                    .sum::<f64>()
                    .ln();
            let got = logsumexp(values) as f64;
            assert!(
                (got - want).abs() < 1e-5 * want.abs().max(1.0),
                "{got} vs {want}"
            );
            let first_top = values.iter().position(|&v| v == top).unwrap();
            assert_eq!(argmax(values), first_top);
        }
        assert_eq!(logsumexp(&[f32::NEG_INFINITY; 9]), f32::NEG_INFINITY);
        assert_eq!(logsumexp(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn exp2_matches_the_library_to_a_few_ulps() {
        for i in -3000..=200 {
            let y = i as f32 * 0.041_3;
            let (ours, want) = (exp2(y), y.exp2());
            assert!(
                (ours - want).abs() <= 4e-7 * want,
                "2^{y}: {ours} vs {want}"
            );
        }
        assert_eq!(exp2(-200.0), 0.0);
    }

    #[test]
    fn the_vector_row_matches_the_scalar_row() {
        let row: Vec<f32> = (0..1503)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37)
            .collect();
        let (mut vector, mut scalar) = (row.clone(), row.clone());
        let sum = exp2_row(&mut vector);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let want: f32 = scalar
            .iter_mut()
            .map(|v| {
                *v = (*v - max).exp2();
                *v
            })
            .sum();
        assert!((sum - want).abs() <= 1e-5 * want);
        for (a, b) in vector.iter().zip(&scalar) {
            assert!((a - b).abs() <= 4e-7 * b.max(1e-30), "{a} vs {b}");
        }
    }

    #[test]
    fn sigmoid_and_tanh_match_the_library() {
        let x: Vec<f32> = (-3001..3001).map(|i| i as f32 * 0.0097).collect();
        let (mut s, mut t) = (x.clone(), x.clone());
        sigmoid_in_place(&mut s);
        tanh_in_place(&mut t);
        for ((&v, &s), &t) in x.iter().zip(&s).zip(&t) {
            let want = 1.0 / (1.0 + (-v as f64).exp());
            assert!(
                (s as f64 - want).abs() < 2e-7,
                "sigmoid({v}) = {s}, want {want}"
            );
            assert!(
                (t as f64 - (v as f64).tanh()).abs() < 5e-7,
                "tanh({v}) = {t}"
            );
        }
    }

    #[test]
    fn gelu_matches_the_erf_form() {
        let x: Vec<f32> = (-4003..4003).map(|i| i as f32 * 0.0031).collect();
        let mut out = vec![0.0; x.len()];
        gelu_into(&x, &mut out);
        for (&v, &g) in x.iter().zip(&out) {
            // Past |x| = 6 GELU is x or 0 to within 1e-8 (and the series cancels badly).
            let want = match v {
                v if v.abs() > 6.0 => v.max(0.0),
                v => erf_gelu(v as f64) as f32,
            };
            assert!(
                (g - want).abs() <= 2e-6 * (1.0 + v.abs()),
                "gelu({v}) = {g}, want {want}"
            );
            assert!(
                (g - gelu(v)).abs() <= 1e-6 * (1.0 + v.abs()),
                "vector vs scalar at {v}"
            );
        }
    }
}
