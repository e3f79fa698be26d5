//! Greedy decoding gives identical tokens whether windows are decoded one at a time
//! or batched together (rows joining and leaving a shared decoder batch).

use steno_e2e::assets;
use steno_whisper::{LoadOptions, TranscribeOptions, Whisper};

fn tokens(t: &steno_whisper::Transcript) -> Vec<Vec<u32>> {
    t.segments.iter().map(|s| s.tokens.clone()).collect()
}

#[test]
fn batched_and_unbatched_greedy_decoding_agree() {
    let Some(model) = assets::try_model_dir(assets::TINY_EN) else {
        eprintln!("skipping: tiny.en not installed (run `make setup`)");
        return;
    };
    let whisper = Whisper::load(&model, &LoadOptions::default()).expect("load tiny.en");
    // Clips of different lengths from different sources, so rows finish at different
    // steps and later rows join a batch already in progress.
    let clips: Vec<Vec<f32>> = assets::english_clips()
        .into_iter()
        .step_by(61)
        .take(9)
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
    let one_by_one: Vec<_> = whisper.transcribe_many(&inputs, 1);
    let batched: Vec<_> = whisper.transcribe_many(&inputs, 4);
    for (i, (a, b)) in one_by_one.iter().zip(&batched).enumerate() {
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
