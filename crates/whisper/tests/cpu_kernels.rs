//! The CPU encoder kernels (steno_whisper::cpu) against MLX's own ops on real speech:
//! the same audio features to within float rounding, and the same tokens.

mod common;

use steno_e2e::assets;
use steno_e2e::assets::samples;
use steno_whisper::cpu;

/// Runs `f` with the kernels on, then off; turns them back on.
fn both<T>(f: impl Fn() -> T) -> (T, T) {
    cpu::set_enabled(true);
    let on = f();
    cpu::set_enabled(false);
    let off = f();
    cpu::set_enabled(true);
    (on, off)
}

#[test]
fn kernels_and_mlx_ops_encode_and_transcribe_alike() {
    if !cpu::available() {
        eprintln!("skipping: this CPU has no AVX2/FMA, the kernels never run");
        return;
    }
    let Some(whisper) = common::tiny_en() else {
        return;
    };
    let jfk = samples(&assets::jfk().path);
    let n_mels = whisper.model.dims.n_mels as i32;
    let window = mlx_rs::Array::from_slice(&whisper.mel(&jfk).window(0, 3000), &[1, 3000, n_mels]);
    let (on, off) = both(|| {
        let features = whisper.model.encoder.forward(&window).unwrap();
        features.as_slice::<f32>().to_vec()
    });
    let worst = on
        .iter()
        .zip(&off)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let scale = off.iter().map(|v| v.abs()).fold(0.0, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "features differ by {worst} (largest value {scale})"
    );

    let clips: Vec<Vec<f32>> = std::iter::once(jfk)
        .chain(
            assets::english_clips()
                .iter()
                .step_by(97)
                .take(5)
                .map(|c| samples(&c.path)),
        )
        .collect();
    let (on, off) = both(|| common::transcribe(&whisper, &clips, 8));
    common::assert_same_tokens(&on, &off);
}
