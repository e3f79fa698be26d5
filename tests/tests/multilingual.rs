//! Language detection and translation with the multilingual base model, on speech
//! synthesised at test time by espeak-ng (installed by `make setup`) from known text:
//! the CLI and the HTTP API.

use std::path::{Path, PathBuf};
use std::process::Command;

use steno_e2e::server::Server;
use steno_e2e::{assets, cli, wer};

struct Sample {
    voice: &'static str,
    language: &'static str,
    text: &'static str,
    /// English words a faithful translation contains.
    english: &'static [&'static str],
}

const SPANISH: Sample = Sample {
    voice: "es",
    language: "spanish",
    text: "Buenos días. Me llamo Carlos y vivo en Madrid. Hoy hace mucho calor y quiero ir a la playa con mis amigos.",
    english: &["good", "morning", "madrid", "today", "beach", "friends"],
};

const GERMAN: Sample = Sample {
    voice: "de",
    language: "german",
    text: "Guten Morgen. Ich heiße Anna und wohne in Berlin. Heute regnet es, deshalb bleibe ich zu Hause und lese ein Buch.",
    english: &[],
};

fn speak(dir: &Path, sample: &Sample) -> PathBuf {
    let path = dir.join(format!("{}.wav", sample.voice));
    let status = Command::new("espeak-ng")
        .args(["-v", sample.voice, "-w"])
        .arg(&path)
        .arg(sample.text)
        .status()
        .expect("espeak-ng is installed by `make setup`");
    assert!(status.success(), "espeak-ng failed");
    path
}

fn words(text: &str) -> Vec<String> {
    wer::normalize(text)
}

#[test]
fn language_is_detected_and_transcribed_in_that_language() {
    let dir = tempfile::tempdir().unwrap();
    let samples = [SPANISH, GERMAN];
    let files: Vec<PathBuf> = samples.iter().map(|s| speak(dir.path(), s)).collect();
    let run = cli::transcribe(&assets::model_dir(assets::BASE), &files, &[]);
    for (sample, out) in samples.iter().zip(&run.outputs) {
        assert_eq!(out.json["language"], sample.language, "{}", out.text);
        let error = wer::wer(sample.text, &out.text);
        eprintln!(
            "{}: {:?} (WER {:.1} %)",
            sample.language,
            out.text,
            100.0 * error
        );
        // espeak-ng's German is hard for base; Spanish is near exact.
        let bound = if sample.voice == "es" { 0.1 } else { 0.6 };
        assert!(error <= bound, "{}: WER {error:.2}", sample.language);
    }
}

fn assert_english_translation(sample: &Sample, text: &str) {
    let said = words(text);
    let found: Vec<&&str> = sample
        .english
        .iter()
        .filter(|w| said.iter().any(|s| s == **w))
        .collect();
    eprintln!("translation: {text:?}; expected words found: {found:?}");
    assert!(
        found.len() >= 4,
        "not a translation of the Spanish: {text:?}"
    );
    let spanish = words(sample.text);
    let untranslated = said
        .iter()
        .filter(|w| spanish.contains(w) && *w != "madrid")
        .count();
    assert!(untranslated <= 1, "left in Spanish: {text:?}");
}

#[test]
fn translate_turns_spanish_into_english_on_the_cli_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let spanish = speak(dir.path(), &SPANISH);
    let model = assets::model_dir(assets::BASE);
    let run = cli::transcribe(
        &model,
        std::slice::from_ref(&spanish),
        &["--task", "translate"],
    );
    assert_eq!(run.outputs[0].json["task"], "translate");
    assert_english_translation(&SPANISH, &run.outputs[0].text);

    let server = Server::start_model(&model, &[]);
    let response = server
        .translation(&spanish)
        .field("response_format", "verbose_json")
        .send();
    response.expect_status(200);
    let body = response.json();
    assert_eq!(body["task"], "translate");
    assert_english_translation(&SPANISH, body["text"].as_str().unwrap_or_default());
    // The same audio through transcriptions with language=es stays Spanish.
    let response = server.transcribe(&spanish, &[("language", "es")]);
    response.expect_status(200);
    let text = response.json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(wer::wer(SPANISH.text, &text) <= 0.1, "{text:?}");
}
