//! The CPU encoder kernels (steno_whisper::cpu) against MLX's own ops on real speech:
//! the same audio features to within float rounding, and the same tokens.

use steno_e2e::assets;
use steno_whisper::{cpu, LoadOptions, TranscribeOptions, Whisper};

fn samples(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    steno_audio::decode(&bytes, None, &steno_audio::Limits::default())
        .unwrap()
        .samples
}

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
    let Some(model) = assets::try_model_dir(assets::TINY_EN) else {
        eprintln!("skipping: tiny.en not installed (run `make setup`)");
        return;
    };
    let whisper = Whisper::load(&model, &LoadOptions::default()).expect("load tiny.en");
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
    let options = TranscribeOptions {
        temperatures: vec![0.0],
        language: Some("en".into()),
        ..TranscribeOptions::default()
    };
    let inputs: Vec<(&[f32], TranscribeOptions)> = clips
        .iter()
        .map(|c| (c.as_slice(), options.clone()))
        .collect();
    let (on, off) = both(|| whisper.transcribe_many(&inputs, 8));
    for (i, (a, b)) in on.iter().zip(&off).enumerate() {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        assert!(!a.text.trim().is_empty(), "clip {i} transcribed to nothing");
        let tokens = |t: &steno_whisper::Transcript| -> Vec<Vec<u32>> {
            t.segments.iter().map(|s| s.tokens.clone()).collect()
        };
        assert_eq!(
            tokens(a),
            tokens(b),
            "clip {i}: {:?} vs {:?}",
            a.text,
            b.text
        );
    }
}
