//! MLX runs through the unmodified registry mlx-rs on top of this crate.

use mlx_rs::{fast, Array, Dtype};
use std::time::Instant;

fn values(array: &Array) -> Vec<f32> {
    array.eval().unwrap();
    array.as_slice::<f32>().to_vec()
}

#[test]
fn matmul_matches_hand_computation() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = Array::from_slice(&[7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0], &[3, 2]);
    let c = a.matmul(&b).unwrap();
    assert_eq!(c.shape(), &[2, 2]);
    // [1 2 3; 4 5 6] · [7 8; 9 10; 11 12]
    assert_eq!(values(&c), vec![58.0, 64.0, 139.0, 154.0]);
}

/// softmax(q·kᵀ·scale)·v for one head, computed in plain Rust.
fn reference_attention(q: &[f32], k: &[f32], v: &[f32], len: usize, dim: usize) -> Vec<f32> {
    let scale = 1.0 / (dim as f32).sqrt();
    let mut out = vec![0.0f32; len * dim];
    for i in 0..len {
        let scores: Vec<f32> = (0..len)
            .map(|j| {
                (0..dim)
                    .map(|d| q[i * dim + d] * k[j * dim + d])
                    .sum::<f32>()
                    * scale
            })
            .collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f32 = exps.iter().sum();
        for (j, e) in exps.iter().enumerate() {
            for d in 0..dim {
                out[i * dim + d] += e / total * v[j * dim + d];
            }
        }
    }
    out
}

#[test]
fn scaled_dot_product_attention_matches_reference() {
    let (len, dim) = (5usize, 8usize);
    let pattern = |seed: f32| -> Vec<f32> {
        (0..len * dim)
            .map(|i| (i as f32 * 0.37 + seed).sin() * 0.8)
            .collect()
    };
    let (q, k, v) = (pattern(0.1), pattern(1.3), pattern(2.7));
    let shape = [1, 1, len as i32, dim as i32];
    let out = fast::scaled_dot_product_attention(
        Array::from_slice(&q, &shape),
        Array::from_slice(&k, &shape),
        Array::from_slice(&v, &shape),
        1.0 / (dim as f32).sqrt(),
        None,
        None,
    )
    .unwrap();
    let expected = reference_attention(&q, &k, &v, len, dim);
    for (got, want) in values(&out).iter().zip(&expected) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

#[test]
fn half_precision_reads_back() {
    let a = Array::from_slice(&[1.5f32, -2.25, 1024.0], &[3]);
    let h = a.as_dtype(Dtype::Float16).unwrap();
    h.eval().unwrap();
    let read: Vec<f32> = h
        .as_slice::<half::f16>()
        .iter()
        .map(|x| x.to_f32())
        .collect();
    assert_eq!(read, vec![1.5, -2.25, 1024.0]);
    let scalar = Array::from_f32(-0.5).as_dtype(Dtype::Float16).unwrap();
    assert_eq!(scalar.item_exact::<half::f16>().to_f32(), -0.5);
}

/// A smoke check that the fast GEMM is linked (OpenBLAS on Linux CPU, Accelerate or
/// a GPU elsewhere), not the wheel's reference BLAS. Measured on a shared 2-core
/// machine: OpenBLAS 60–145 GFLOP/s (15–36 ms), reference BLAS 3.4 GFLOP/s (0.64 s,
/// forced with LD_PRELOAD of the wheel's libblas). The bound sits between, with room.
#[test]
fn large_matmul_uses_a_fast_gemm() {
    let n = 1024;
    let a = mlx_rs::random::uniform::<_, f32>(0.0, 1.0, &[n, n], None).unwrap();
    let b = mlx_rs::random::uniform::<_, f32>(0.0, 1.0, &[n, n], None).unwrap();
    a.matmul(&b).unwrap().eval().unwrap(); // warm up
    let start = Instant::now();
    let c = a.matmul(&b).unwrap();
    c.eval().unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let gflops = 2.0 * (n as f64).powi(3) / seconds / 1e9;
    eprintln!("1024³ fp32 matmul: {seconds:.3} s, {gflops:.1} GFLOP/s");
    assert!(
        seconds < 2.0,
        "1024³ matmul took {seconds:.2} s ({gflops:.1} GFLOP/s): reference BLAS linked?"
    );
}
