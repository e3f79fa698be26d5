//! steno-speaker's voice encoder against Resemblyzer's own (PyTorch), on real speech: the
//! embeddings in tests/fixtures/speaker/resemblyzer.json were made once by
//! tests/fixtures/speaker/make_reference.py from the same pretrained.pt.

use std::path::Path;

use steno_e2e::assets;
use steno_speaker::{Embedding, VoiceEncoder, WINDOW_SAMPLES};

/// The bound: cosine within 1e-3 of 1.
const MIN_COSINE: f32 = 1.0 - 1e-3;

fn encoder() -> VoiceEncoder {
    let path = assets::assets_dir().join("models/resemblyzer/pretrained.pt");
    VoiceEncoder::load(&path).unwrap_or_else(|e| panic!("{e} (run `make setup`)"))
}

fn embedding(value: &serde_json::Value) -> Embedding {
    let values = value.as_array().expect("an array of numbers");
    Embedding(values.iter().map(|v| v.as_f64().unwrap() as f32).collect())
}

#[test]
fn embeddings_match_resemblyzer() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/speaker/resemblyzer.json");
    let text = std::fs::read_to_string(&fixture).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let encoder = encoder();
    let clips = fixture["clips"].as_array().unwrap();
    assert!(clips.len() >= 3);
    for clip in clips {
        let name = clip["clip"].as_str().unwrap();
        let samples = assets::samples(&assets::assets_dir().join("speech").join(name));
        let utterance = encoder.embed_utterance(&samples).unwrap();
        let window = &samples[..WINDOW_SAMPLES.min(samples.len())];
        let first = encoder.embed_windows(&[window]).unwrap().remove(0);
        let cos_utterance = utterance.cosine(&embedding(&clip["utterance"]));
        let cos_window = first.cosine(&embedding(&clip["first_window"]));
        eprintln!("{name}: utterance cosine {cos_utterance:.7}, first window {cos_window:.7}");
        assert!(cos_utterance >= MIN_COSINE, "{name}: {cos_utterance}");
        assert!(cos_window >= MIN_COSINE, "{name}: {cos_window}");
        let norm: f32 = utterance.0.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn different_voices_are_apart_and_one_voice_close() {
    let encoder = encoder();
    let speech = assets::assets_dir().join("speech");
    let embed = |clip: &str| {
        let samples = assets::samples(&speech.join(clip));
        encoder.embed_utterance(&samples).unwrap()
    };
    let reader_a = embed("librivox/sense_and_sensibility_01_austen_64kb-0870.wav");
    let reader_b = embed("librivox/sense_and_sensibility_01_austen_64kb-0880.wav");
    let allison_a = embed("asterisk/conf-full.wav");
    let allison_b = embed("asterisk/conf-locked.wav");
    let jfk = embed("jfk.wav");
    let same = [reader_a.cosine(&reader_b), allison_a.cosine(&allison_b)];
    let different = [
        reader_a.cosine(&allison_a),
        reader_a.cosine(&jfk),
        allison_b.cosine(&jfk),
    ];
    eprintln!("same voice {same:?}, different voices {different:?}");
    let lowest_same = same.iter().copied().fold(f32::INFINITY, f32::min);
    let highest_different = different.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert!(
        lowest_same > 0.75 && highest_different < 0.65,
        "{same:?} {different:?}"
    );
}
