//! Diarization of conversations joined from real voices of the test assets (the LibriVox
//! reader, the Asterisk prompt voice, jfk, a CMU recording) and espeak-ng voices, with
//! known turns and no overlap: DER with a 0.25 s collar (`steno_e2e::der`), known-speaker
//! labelling, and (ignored, run by hand) the time diarization adds to a transcription.

use std::path::{Path, PathBuf};
use std::time::Instant;

use steno_audio::vad::{speech_regions, VadParams};
use steno_e2e::assets;
use steno_e2e::der::{der, Turn, COLLAR};
use steno_speaker::{
    diarize, label_segments, DiarizeOptions, KnownSpeaker, SpeakerTurn, TimedText, VoiceEncoder,
};
use steno_whisper::{TranscribeOptions, Whisper};

/// The goals.
const MAX_DER: f64 = 0.10;
const MIN_KNOWN_ACCURACY: f64 = 0.95;
const RATE: usize = 16_000;
/// Silence between two turns.
const GAP_SECONDS: f64 = 0.6;

/// The encoder, loaded once per test thread (MLX arrays stay on the thread that made them).
fn encoder() -> &'static VoiceEncoder {
    thread_local! {
        static ENCODER: &'static VoiceEncoder = {
            let path = assets::assets_dir().join("models/resemblyzer/pretrained.pt");
            let encoder = VoiceEncoder::load(&path).unwrap_or_else(|e| panic!("{e} (run `make setup`)"));
            Box::leak(Box::new(encoder))
        };
    }
    ENCODER.with(|e| *e)
}

fn speech(relative: &str) -> PathBuf {
    assets::assets_dir().join("speech").join(relative)
}

/// A voice: its name, the pieces of speech the conversations use, and a reference clip
/// (2–10 s) the conversations do not use.
struct Voice {
    name: &'static str,
    pieces: Vec<Vec<f32>>,
    reference: Vec<f32>,
}

/// `samples` cut at pauses into pieces of at least `min_seconds` of audio.
fn cut_at_pauses(samples: &[f32], min_seconds: f64) -> Vec<Vec<f32>> {
    let regions = speech_regions(samples, &VadParams::default());
    let mut pieces = Vec::new();
    let mut start = regions.first().map_or(0, |r| r.0);
    for (i, r) in regions.iter().enumerate() {
        let next = regions.get(i + 1).map(|n| n.0);
        let long_enough = (r.1 - start) as f64 >= min_seconds * RATE as f64;
        if long_enough || next.is_none() {
            pieces.push(samples[start..r.1].to_vec());
            start = next.unwrap_or(r.1);
        }
    }
    pieces
}

fn reader() -> Voice {
    let clip = |n: &str| {
        assets::samples(&speech(&format!(
            "librivox/sense_and_sensibility_01_austen_64kb-{n}.wav"
        )))
    };
    let pieces = ["0870", "0880", "0890"]
        .iter()
        .flat_map(|n| cut_at_pauses(&clip(n), 2.0))
        .collect();
    Voice {
        name: "reader",
        pieces,
        reference: clip("0920"),
    }
}

/// Asterisk's prompt voice: prompts of 2–5 s, in name order.
fn allison() -> Voice {
    let mut names: Vec<PathBuf> = std::fs::read_dir(speech("asterisk"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    names.sort();
    let mut clips = names.iter().map(|p| assets::samples(p)).filter(|s| {
        let seconds = s.len() as f64 / RATE as f64;
        (2.0..5.0).contains(&seconds)
    });
    let reference: Vec<f32> = clips.by_ref().take(2).flatten().collect();
    Voice {
        name: "allison",
        pieces: clips.take(8).collect(),
        reference,
    }
}

/// One recording cut at pauses: its first piece is the reference, the rest the turns.
fn one_recording(name: &'static str, relative: &str) -> Voice {
    let mut pieces = cut_at_pauses(&assets::samples(&speech(relative)), 2.0);
    let reference = pieces.remove(0);
    Voice {
        name,
        pieces,
        reference,
    }
}

fn jfk() -> Voice {
    one_recording("jfk", "jfk.wav")
}

/// CMU's chan3 recording (an4 speaker, 21 s, 11 kHz).
fn cmu() -> Voice {
    one_recording("cmu", "cmu/chan3.wav")
}

/// espeak-ng's voice `variant` saying the fetch script's sentences, or `None` without
/// espeak-ng.
fn espeak(name: &'static str, variant: &str, dir: &Path) -> Option<Voice> {
    const SENTENCES: [&str; 5] = [
        "The quick brown fox jumps over the lazy dog.",
        "Please call me back when you have a free moment.",
        "The weather today is cold and windy, with rain in the evening.",
        "We will meet at the library after lunch on Friday.",
        "Open the window and let the fresh air in.",
    ];
    let mut clips = Vec::new();
    for (i, text) in SENTENCES.iter().enumerate() {
        let path = dir.join(format!("{name}-{i}.wav"));
        let status = std::process::Command::new("espeak-ng")
            .args(["-v", variant, "-w"])
            .arg(&path)
            .arg(text)
            .status()
            .ok()?;
        assert!(status.success(), "espeak-ng -v {variant}");
        clips.push(assets::samples(&path));
    }
    let reference = clips.remove(0);
    Some(Voice {
        name,
        pieces: clips,
        reference,
    })
}

/// A conversation: the voices take turns (piece by piece, round robin, each turn one
/// piece), `GAP_SECONDS` of silence between turns. Returns the samples and the true
/// turns (each piece's audible extent).
fn conversation(voices: &[&Voice], turns: usize) -> (Vec<f32>, Vec<Turn>) {
    let gap = vec![0.0f32; (GAP_SECONDS * RATE as f64) as usize];
    let (mut samples, mut truth) = (Vec::new(), Vec::new());
    for t in 0..turns {
        let voice = voices[t % voices.len()];
        let piece = &voice.pieces[(t / voices.len()) % voice.pieces.len()];
        let (first, last) = audible(piece);
        let at = samples.len();
        truth.push(Turn::new(
            (at + first) as f64 / RATE as f64,
            (at + last) as f64 / RATE as f64,
            voice.name,
        ));
        samples.extend(piece);
        samples.extend(&gap);
    }
    (samples, truth)
}

/// The first and last sample of 10 ms frames louder than a tenth of the clip's loudest
/// frame's RMS: what a listener would mark as the turn, silence trimmed.
fn audible(samples: &[f32]) -> (usize, usize) {
    let rms: Vec<f32> = samples
        .chunks(RATE / 100)
        .map(|c| (c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32).sqrt())
        .collect();
    let loudest = rms.iter().copied().fold(0.0, f32::max);
    let loud = |r: &&f32| **r > 0.1 * loudest;
    let first = rms.iter().position(|r| loud(&r)).unwrap_or(0);
    let last = rms.iter().rposition(|r| loud(&r)).unwrap_or(rms.len());
    (
        first * RATE / 100,
        ((last + 1) * RATE / 100).min(samples.len()),
    )
}

fn as_turns(turns: &[SpeakerTurn]) -> Vec<Turn> {
    turns
        .iter()
        .map(|t| Turn::new(t.start, t.end, &t.speaker))
        .collect()
}

/// DER of diarizing each of `sets` (voices, turns); prints each and returns them.
fn score(label: &str, sets: &[(Vec<&Voice>, usize)]) -> Vec<f64> {
    sets.iter()
        .map(|(voices, turns)| {
            let (samples, truth) = conversation(voices, *turns);
            let started = Instant::now();
            let found = diarize(encoder(), &samples, &DiarizeOptions::default()).unwrap();
            let rate = der(&truth, &as_turns(&found), COLLAR);
            let names: Vec<&str> = voices.iter().map(|v| v.name).collect();
            let speakers: std::collections::BTreeSet<&str> =
                found.iter().map(|t| t.speaker.as_str()).collect();
            eprintln!(
                "{label} {names:?}: {:.1} s, DER {:.1} %, {} speakers found, {:.2} s",
                samples.len() as f64 / RATE as f64,
                100.0 * rate,
                speakers.len(),
                started.elapsed().as_secs_f64()
            );
            rate
        })
        .collect()
}

fn assert_goal(label: &str, rates: &[f64]) {
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    eprintln!("{label}: mean DER {:.1} %", 100.0 * mean);
    for rate in rates {
        assert!(*rate <= MAX_DER, "{label}: DER {rate} above {MAX_DER}");
    }
}

#[test]
fn two_speakers_of_real_voices() {
    let (r, a, j, c) = (reader(), allison(), jfk(), cmu());
    let rates = score(
        "2 speakers",
        &[(vec![&r, &a], 8), (vec![&a, &j], 6), (vec![&c, &r], 6)],
    );
    assert_goal("2 speakers", &rates);
}

#[test]
fn three_and_four_speakers_of_real_voices() {
    let (r, a, j, c) = (reader(), allison(), jfk(), cmu());
    let three = score(
        "3 speakers",
        &[(vec![&r, &a, &j], 9), (vec![&a, &c, &j], 9)],
    );
    let four = score("4 speakers", &[(vec![&r, &a, &j, &c], 12)]);
    assert_goal("3 speakers", &three);
    assert_goal("4 speakers", &four);
}

#[test]
fn espeak_voices() {
    let dir = std::env::temp_dir().join(format!("steno-speaker-espeak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let voices: Option<Vec<Voice>> = [
        ("en-us", "en-us"),
        ("en-gb-f", "en-gb+f3"),
        ("de-m", "de+m4"),
        ("fr-f", "fr+f2"),
    ]
    .iter()
    .map(|(name, variant)| espeak(name, variant, &dir))
    .collect();
    let Some(voices) = voices else {
        eprintln!("espeak-ng is not installed: skipped");
        return;
    };
    let v: Vec<&Voice> = voices.iter().collect();
    // GE2E hears espeak-ng's voices (one formant synthesiser, variants of one voice) as
    // nearly one speaker: their turns are reported, not held to the goal for real voices.
    // What is held: speech is found where they speak (one-speaker DER: missed speech and
    // false alarms only).
    for (voices, turns) in [(&v[..2], 6), (&v[..3], 9), (&v[..], 12)] {
        let (samples, truth) = conversation(voices, turns);
        let found = as_turns(&diarize(encoder(), &samples, &DiarizeOptions::default()).unwrap());
        let one = |turns: &[Turn]| -> Vec<Turn> {
            turns
                .iter()
                .map(|t| Turn::new(t.start, t.end, "x"))
                .collect()
        };
        let detection = der(&one(&truth), &one(&found), COLLAR);
        let speakers: std::collections::BTreeSet<&str> =
            found.iter().map(|t| t.speaker.as_str()).collect();
        eprintln!(
            "espeak {} voices: DER {:.1} %, {} speakers found, speech detection error {:.1} %",
            voices.len(),
            100.0 * der(&truth, &found, COLLAR),
            speakers.len(),
            100.0 * detection
        );
        assert!(detection <= MAX_DER, "{detection}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Each true turn as a segment of text: the share whose speaker is named right when the
/// voices' reference clips are given as known speakers.
#[test]
fn known_speakers_are_named() {
    let (r, a, j, c) = (reader(), allison(), jfk(), cmu());
    let mut right = 0;
    let mut total = 0;
    for voices in [vec![&r, &a], vec![&r, &a, &j], vec![&r, &a, &j, &c]] {
        let (samples, truth) = conversation(&voices, 3 * voices.len());
        let known = voices
            .iter()
            .map(|v| KnownSpeaker {
                name: v.name.to_string(),
                embedding: encoder().embed_utterance(&v.reference).unwrap(),
            })
            .collect();
        let options = DiarizeOptions {
            known,
            ..DiarizeOptions::default()
        };
        let found = diarize(encoder(), &samples, &options).unwrap();
        let segments: Vec<TimedText> = truth
            .iter()
            .map(|t| TimedText {
                start: t.start,
                end: t.end,
                text: String::new(),
                words: None,
            })
            .collect();
        let labelled = label_segments(&segments, &found);
        let hits = labelled
            .iter()
            .zip(&truth)
            .filter(|(l, t)| l.speaker == t.speaker)
            .count();
        eprintln!(
            "known {} voices: {hits}/{} segments named right",
            voices.len(),
            truth.len()
        );
        right += hits;
        total += truth.len();
    }
    let accuracy = right as f64 / total as f64;
    eprintln!(
        "known speakers: {:.1} % of {total} segments",
        100.0 * accuracy
    );
    assert!(accuracy >= MIN_KNOWN_ACCURACY, "{accuracy}");
}

/// The voices are distinct to the encoder: for the record, every pair's similarity.
#[test]
fn the_voices_are_told_apart() {
    let voices = [reader(), allison(), jfk(), cmu()];
    let embeddings: Vec<_> = voices
        .iter()
        .map(|v| encoder().embed_utterance(&v.reference).unwrap())
        .collect();
    for (i, a) in embeddings.iter().enumerate() {
        let row: Vec<String> = embeddings
            .iter()
            .map(|b| format!("{:.2}", a.cosine(b)))
            .collect();
        eprintln!("{:8} {}", voices[i].name, row.join(" "));
        for b in &embeddings[i + 1..] {
            assert!(a.cosine(b) < 0.75);
        }
    }
}

/// The time diarization adds to transcribing the same file (tiny.en, this CPU): medians
/// of five alternated runs each, for the record (`cargo test --release -p steno-speaker --test
/// conversations -- --ignored --nocapture`); speed is never asserted in tests.
#[test]
#[ignore]
fn time_added_to_a_transcription() {
    let (r, a, j, c) = (reader(), allison(), jfk(), cmu());
    let (samples, _) = conversation(&[&r, &a, &j, &c], 12);
    let whisper = Whisper::load(&assets::model_dir(assets::TINY_EN), &Default::default()).unwrap();
    let median = |mut runs: Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    let timed = |f: &dyn Fn()| {
        let started = Instant::now();
        f();
        started.elapsed().as_secs_f64()
    };
    let transcribe = || {
        whisper
            .transcribe(&samples, TranscribeOptions::default())
            .unwrap();
    };
    let diarization = || {
        diarize(encoder(), &samples, &DiarizeOptions::default()).unwrap();
    };
    // Alternated, so that the shared machine's load weighs on both alike; the ratio of
    // each pair as well as the ratio of the medians.
    let (mut transcription, mut diarizing) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        transcription.push(timed(&transcribe));
        diarizing.push(timed(&diarization));
    }
    let ratios: Vec<f64> = diarizing
        .iter()
        .zip(&transcription)
        .map(|(d, t)| 100.0 * d / t)
        .collect();
    let (t, d) = (median(transcription.clone()), median(diarizing.clone()));
    eprintln!(
        "{:.1} s of audio: transcription {t:.2} s {transcription:.2?}, diarization {d:.2} s \
         {diarizing:.2?}: +{:.1} % (median of the pairs' ratios +{:.1} %, {ratios:.1?})",
        samples.len() as f64 / RATE as f64,
        100.0 * d / t,
        median(ratios.clone())
    );
}
