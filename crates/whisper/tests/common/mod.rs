//! What the model tests share: tiny.en loaded (or the test skipped), a greedy English
//! transcription of real clips, and the check that two runs of it gave the same tokens.
// Each test file includes this module and uses a part of it.
#![allow(dead_code)]

use steno_e2e::assets;
use steno_whisper::{LoadOptions, TranscribeOptions, Transcript, Whisper, WhisperError};

/// tiny.en, or `None` (the caller returns: a skipped test) where `make setup` has not
/// installed it.
pub fn tiny_en() -> Option<Whisper> {
    let Some(model) = assets::try_model_dir(assets::TINY_EN) else {
        eprintln!("skipping: tiny.en not installed (run `make setup`)");
        return None;
    };
    Some(Whisper::load(&model, &LoadOptions::default()).expect("load tiny.en"))
}

/// Greedy decoding in English (no temperature fallback), as the identity tests compare.
pub fn greedy_english() -> TranscribeOptions {
    TranscribeOptions {
        temperatures: vec![0.0],
        language: Some("en".into()),
        ..TranscribeOptions::default()
    }
}

/// Transcribes `clips` together, at most `rows` decoder rows at a time.
pub fn transcribe(
    whisper: &Whisper,
    clips: &[Vec<f32>],
    rows: usize,
) -> Vec<Result<Transcript, WhisperError>> {
    let options = greedy_english();
    let inputs: Vec<(&[f32], TranscribeOptions)> = clips
        .iter()
        .map(|c| (c.as_slice(), options.clone()))
        .collect();
    whisper.transcribe_many(&inputs, rows)
}

/// Every clip transcribed to something, with the same tokens both times.
pub fn assert_same_tokens(
    a: &[Result<Transcript, WhisperError>],
    b: &[Result<Transcript, WhisperError>],
) {
    let tokens =
        |t: &Transcript| -> Vec<Vec<u32>> { t.segments.iter().map(|s| s.tokens.clone()).collect() };
    assert_eq!(a.len(), b.len());
    for (i, (a, b)) in a.iter().zip(b).enumerate() {
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
