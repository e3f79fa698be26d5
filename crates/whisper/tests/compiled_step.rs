//! The compiled decoder step (static caches, `decoding.compiled_step = "on"`) gives the
//! same tokens as the dynamic one on real speech, with rows joining and leaving the
//! batch and row counts between the static row buckets (padding rows).

use steno_e2e::assets;
use steno_whisper::decoding::set_compiled_step;
use steno_whisper::{LoadOptions, TranscribeOptions, Whisper};

fn tokens(t: &steno_whisper::Transcript) -> Vec<Vec<u32>> {
    t.segments.iter().map(|s| s.tokens.clone()).collect()
}

#[test]
fn compiled_and_dynamic_steps_give_the_same_tokens() {
    let Some(model) = assets::try_model_dir(assets::TINY_EN) else {
        eprintln!("skipping: tiny.en not installed (run `make setup`)");
        return;
    };
    let whisper = Whisper::load(&model, &LoadOptions::default()).expect("load tiny.en");
    // Clips of different lengths from different sources: rows finish at different
    // steps, later ones join a batch in progress, and 3 rows fill a bucket of 4.
    let clips: Vec<Vec<f32>> = assets::english_clips()
        .into_iter()
        .skip(7)
        .step_by(53)
        .take(7)
        .map(|c| {
            let bytes = std::fs::read(&c.path).unwrap();
            steno_audio::decode(&bytes, None, &steno_audio::Limits::default())
                .unwrap()
                .samples
        })
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
    // One test function: the setting is process-wide.
    set_compiled_step(Some(false));
    let dynamic = whisper.transcribe_many(&inputs, 3);
    set_compiled_step(Some(true));
    let compiled = whisper.transcribe_many(&inputs, 3);
    set_compiled_step(None);
    for (i, (a, b)) in dynamic.iter().zip(&compiled).enumerate() {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        assert!(!a.text.trim().is_empty(), "clip {i} transcribed to nothing");
        assert_eq!(
            tokens(a),
            tokens(b),
            "clip {i}: {:?} vs {:?}",
            a.text,
            b.text
        );
    }
}
