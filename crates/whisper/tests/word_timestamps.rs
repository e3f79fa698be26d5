//! Word-level timestamps against OpenAI's reference.
//!
//! `fixtures/words/*.json` were produced by openai-whisper's own
//! `transcribe(word_timestamps=True)` and `timing.find_alignment`, running the same
//! tiny.en weights (CTranslate2 `model.bin` converted to an OpenAI state dict) in fp32
//! on the CPU; `fixtures/words/README.md` tells exactly how:
//! * `jfk_tiny_en`: jfk.wav (one window, two segments, no punctuation);
//! * `austen_tiny_en`: four LibriVox clips joined with 1.0/3.0/1.5 s of silence (24 s:
//!   punctuation merging, sentence-end and segment-edge clamping, and two windows since
//!   OpenAI re-seeks to the last word's end when word timestamps are on).
//!
//! Needs the real model and speech under `$STENO_ASSETS` (default
//! `~/.cache/steno/assets`); skips otherwise.

use std::path::{Path, PathBuf};

use serde_json::Value;
use steno_whisper::mel::{frames_to_seconds, N_FRAMES, SAMPLE_RATE};
use steno_whisper::timing::{self, Word, WordTiming};
use steno_whisper::{LoadOptions, Segment, Task, Whisper};

/// Largest allowed difference of a word boundary from the reference, in seconds.
const TOLERANCE_S: f64 = 0.2;
/// Largest allowed difference of a word probability from the reference.
const PROBABILITY_TOLERANCE: f64 = 0.05;

fn assets() -> Option<PathBuf> {
    let dir = std::env::var_os("STENO_ASSETS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/steno/assets"))
        })?;
    let ok =
        dir.join("models/tiny.en-ct2/model.bin").is_file() && dir.join("speech/jfk.wav").is_file();
    ok.then_some(dir)
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/words")
        .join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

/// Compares (word, start, end, probability) lists; returns the largest time deviation.
fn compare(label: &str, got: &[(String, f64, f64, f64)], want: &[Value]) -> f64 {
    println!("{label}:");
    println!(
        "  {:<12} {:>6} {:>6} {:>6}   {:>6} {:>6} {:>6}",
        "word", "start", "end", "p", "ref", "ref", "ref"
    );
    let mut max_dev = 0f64;
    let words: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    let want_words: Vec<&str> = want.iter().map(|w| w["word"].as_str().unwrap()).collect();
    assert_eq!(
        words, want_words,
        "{label}: words differ from the reference"
    );
    for ((word, start, end, p), w) in got.iter().zip(want) {
        let (rs, re, rp) = (f(&w["start"]), f(&w["end"]), f(&w["probability"]));
        println!("  {word:<12} {start:>6.2} {end:>6.2} {p:>6.3}   {rs:>6.2} {re:>6.2} {rp:>6.3}");
        max_dev = max_dev.max((start - rs).abs()).max((end - re).abs());
        assert!(
            (start - rs).abs() <= TOLERANCE_S && (end - re).abs() <= TOLERANCE_S,
            "{label}: {word:?} at {start:.2}-{end:.2}, reference {rs:.2}-{re:.2}"
        );
        assert!(
            (p - rp).abs() <= PROBABILITY_TOLERANCE,
            "{label}: {word:?} probability {p:.3}, reference {rp:.3}"
        );
    }
    println!("  max deviation from the reference: {max_dev:.3} s");
    max_dev
}

/// One model load for everything: MLX work stays on this test's thread.
#[test]
fn word_timestamps_match_openai() {
    let Some(assets) = assets() else {
        println!("skipping: tiny.en-ct2 or jfk.wav not found (set STENO_ASSETS)");
        return;
    };
    let whisper =
        Whisper::load(&assets.join("models/tiny.en-ct2"), &LoadOptions::default()).unwrap();
    let speech = assets.join("speech");
    let template = jfk_end_to_end(&whisper, &speech);

    let librivox = speech.join("librivox");
    let mut max_dev = 0f64;
    for (name, dir) in [("jfk_tiny_en", &speech), ("austen_tiny_en", &librivox)] {
        let reference = fixture(name);
        let audio = &reference["audio"];
        let files: Vec<PathBuf> = audio["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| dir.join(f["name"].as_str().unwrap()))
            .collect();
        if !files.iter().all(|f| f.is_file()) {
            println!("skipping {name}: its audio is not under {}", dir.display());
            continue;
        }
        let gaps: Vec<f64> = audio["gaps_seconds"]
            .as_array()
            .unwrap()
            .iter()
            .map(f)
            .collect();
        let samples = joined_audio(&files, &gaps);
        assert_eq!(samples.len() as u64, audio["samples"].as_u64().unwrap());
        max_dev = max_dev.max(reference_windows(
            &whisper, name, &reference, &samples, &template,
        ));
    }
    println!("max deviation from OpenAI over all fixtures: {max_dev:.3} s");
}

/// The brief's path: our own transcription of jfk, then word timestamps for its
/// segments; the decoded tokens must be OpenAI's. Returns a segment to use as a
/// template.
fn jfk_end_to_end(whisper: &Whisper, speech: &Path) -> Segment {
    let reference = fixture("jfk_tiny_en");
    let samples = read_wav_s16_mono_16k(&speech.join("jfk.wav"));
    let duration = steno_audio::seconds(samples.len());
    let transcript = whisper.transcribe(&samples, Default::default()).unwrap();
    let ref_segments = reference["segments"].as_array().unwrap();
    let mut segments = transcript.segments.clone();
    assert_eq!(segments.len(), ref_segments.len(), "segment count");
    for (s, r) in segments.iter().zip(ref_segments) {
        assert_eq!(
            s.tokens,
            u32s(&r["tokens"]),
            "decoded tokens differ from OpenAI's"
        );
        assert_eq!(s.seek, 0, "jfk is one window");
        assert!((s.start - f(&r["decoded_start"])).abs() < 1e-9);
        assert!((s.end - f(&r["decoded_end"])).abs() < 1e-9);
    }

    // The window as transcribe() encodes it: its content frames, zero-padded to 30 s.
    let mel = whisper.mel(&samples);
    let num_frames = (mel.n_frames - N_FRAMES).min(N_FRAMES);
    let mut window = mel.window(0, num_frames);
    window.resize(N_FRAMES * mel.n_mels, 0.0);
    let features = whisper.encode(&[window]).unwrap().pop().unwrap();
    let sot = whisper
        .tokenizer
        .sot_sequence(Some("en"), Task::Transcribe)
        .unwrap();
    assert_eq!(sot, u32s(&reference["sot_sequence"]));

    let mut last_speech = 0.0;
    let words: Vec<Vec<Word>> = timing::add_word_timestamps(
        whisper,
        &mut segments,
        &features,
        &sot,
        0.0,
        num_frames,
        &mut last_speech,
    )
    .unwrap();
    let dev = compare_segments("jfk (own transcript)", &segments, &words, ref_segments);
    let all: Vec<&Word> = words.iter().flatten().collect();
    assert_eq!(last_speech, all.last().unwrap().end);

    // Sanity independent of the reference.
    for pair in all.windows(2) {
        assert!(pair[0].start <= pair[0].end && pair[0].end <= pair[1].start);
    }
    assert!(all.iter().all(|w| w.start >= 0.0 && w.end <= duration));
    let americans = all
        .iter()
        .find(|w| w.word.trim().starts_with("Americans"))
        .unwrap();
    assert!(
        americans.end < 3.5,
        "\"Americans\" ends at {}",
        americans.end
    );
    let joined: String = all.iter().map(|w| w.word.as_str()).collect();
    assert_eq!(joined, transcript.text);
    println!("jfk end to end: max deviation {dev:.3} s");
    transcript.segments[0].clone()
}

/// Replays OpenAI's windows with OpenAI's tokens: `find_alignment` per window, then
/// `add_word_timestamps` with `last_speech_timestamp` carried across windows.
fn reference_windows(
    whisper: &Whisper,
    name: &str,
    reference: &Value,
    samples: &[f32],
    template: &Segment,
) -> f64 {
    let mel = whisper.mel(samples);
    let content_frames = mel.n_frames - N_FRAMES;
    let sot = u32s(&reference["sot_sequence"]);
    let eot = whisper.tokenizer.eot();
    let ref_segments = reference["segments"].as_array().unwrap();
    let mut last_speech = 0.0;
    let mut max_dev = 0f64;
    for window in reference["windows"].as_array().unwrap() {
        let seek = window["seek"].as_u64().unwrap() as usize;
        let num_frames = (content_frames - seek).min(N_FRAMES);
        assert_eq!(num_frames as u64, window["num_frames"].as_u64().unwrap());
        assert_eq!(
            last_speech,
            f(&window["last_speech_timestamp"]),
            "{name}: carried last speech"
        );
        let mut frames = mel.window(seek, num_frames);
        frames.resize(N_FRAMES * mel.n_mels, 0.0);
        let features = whisper.encode(&[frames]).unwrap().pop().unwrap();

        let refs: Vec<&Value> = ref_segments
            .iter()
            .filter(|s| s["seek"].as_u64().unwrap() as usize == seek)
            .collect();
        let mut segments: Vec<Segment> = refs
            .iter()
            .enumerate()
            .map(|(i, r)| Segment {
                id: i,
                seek,
                start: f(&r["decoded_start"]),
                end: f(&r["decoded_end"]),
                text: r["text"].as_str().unwrap().to_string(),
                tokens: u32s(&r["tokens"]),
                token_logprobs: Vec::new(),
                ..template.clone()
            })
            .collect();
        let text: Vec<u32> = segments
            .iter()
            .flat_map(|s| s.tokens.iter().copied().filter(|&t| t < eot))
            .collect();

        let alignment: Vec<WordTiming> =
            timing::find_alignment(whisper, &features, &sot, &text, num_frames).unwrap();
        let got: Vec<_> = alignment
            .iter()
            .map(|a| (a.word.clone(), a.start, a.end, a.probability as f64))
            .collect();
        let want = window["alignment"].as_array().unwrap();
        let label = format!("{name} @ {seek}: find_alignment");
        max_dev = max_dev.max(compare(&label, &got, want));
        for (a, r) in alignment.iter().zip(want) {
            assert_eq!(a.tokens, u32s(&r["tokens"]), "{label}");
        }

        let time_offset = frames_to_seconds(seek);
        let words = timing::add_word_timestamps(
            whisper,
            &mut segments,
            &features,
            &sot,
            time_offset,
            num_frames,
            &mut last_speech,
        )
        .unwrap();
        let refs: Vec<Value> = refs.into_iter().cloned().collect();
        let label = format!("{name} @ {seek}: add_word_timestamps");
        max_dev = max_dev.max(compare_segments(&label, &segments, &words, &refs));
    }
    println!("{name}: max deviation {max_dev:.3} s");
    max_dev
}

/// Words and (moved) bounds of each segment against the reference segments.
fn compare_segments(label: &str, segments: &[Segment], words: &[Vec<Word>], refs: &[Value]) -> f64 {
    assert_eq!(
        words.len(),
        segments.len(),
        "{label}: one word list per segment"
    );
    assert_eq!(segments.len(), refs.len(), "{label}: segment count");
    let mut max_dev = 0f64;
    for (i, ((segment, words), r)) in segments.iter().zip(words).zip(refs).enumerate() {
        let got: Vec<_> = words
            .iter()
            .map(|w| (w.word.clone(), w.start, w.end, w.probability as f64))
            .collect();
        let want = r["words"].as_array().unwrap();
        max_dev = max_dev.max(compare(&format!("{label}, segment {i}"), &got, want));
        let (rs, re) = (f(&r["start"]), f(&r["end"]));
        println!(
            "  segment bounds {:.2}-{:.2}, reference {rs:.2}-{re:.2}",
            segment.start, segment.end
        );
        let dev = (segment.start - rs).abs().max((segment.end - re).abs());
        assert!(dev <= TOLERANCE_S, "{label}, segment {i}: bounds");
        max_dev = max_dev.max(dev);
    }
    max_dev
}

/// WAV files joined with `gaps` seconds of digital silence, as gen.py joins them.
fn joined_audio(files: &[PathBuf], gaps: &[f64]) -> Vec<f32> {
    let mut samples = Vec::new();
    for (i, file) in files.iter().enumerate() {
        samples.extend(read_wav_s16_mono_16k(file));
        if let Some(gap) = gaps.get(i) {
            samples.extend(std::iter::repeat_n(
                0.0,
                (gap * SAMPLE_RATE as f64).round() as usize,
            ));
        }
    }
    samples
}

/// A minimal RIFF/WAVE reader for 16-bit PCM mono 16 kHz files.
fn read_wav_s16_mono_16k(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    let mut pos = 12;
    let mut format_ok = false;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &bytes[pos + 8..(pos + 8 + size).min(bytes.len())];
        match id {
            b"fmt " => {
                let format = u16::from_le_bytes([body[0], body[1]]);
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
                let bits = u16::from_le_bytes([body[14], body[15]]);
                assert_eq!(
                    (format, channels, rate, bits),
                    (1, 1, steno_audio::SAMPLE_RATE, 16)
                );
                format_ok = true;
            }
            b"data" => {
                assert!(format_ok, "data before fmt");
                return body
                    .chunks_exact(2)
                    .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                    .collect();
            }
            _ => {}
        }
        pos += 8 + size + (size & 1);
    }
    panic!("no data chunk in {}", path.display());
}
