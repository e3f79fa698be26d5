//! Test assets fetched by `scripts/fetch-assets.sh` (`make setup`): real Whisper models and
//! real speech with reference transcripts.
//!
//! Layout under [`assets_dir`]:
//!
//! ```text
//! models/tiny.en-ct2/   model.bin config.json tokenizer.json vocabulary.txt  (English tiny)
//! models/base-ct2/      model.bin config.json tokenizer.json vocabulary.txt  (multilingual base)
//! speech/en-manifest.tsv          jfk + LibriVox + Asterisk prompts, path<TAB>reference
//! speech/synthetic-manifest.tsv   espeak-ng sentences (when espeak-ng was installed)
//! speech/jfk.wav  speech/librivox/  speech/asterisk/  speech/synthetic/
//! ```
//!
//! Manifest paths are relative to the manifest's directory. Sample rates differ between
//! sources (Asterisk is 8 kHz, espeak-ng output 16 kHz or 22.05 kHz).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the assets directory.
pub const ASSETS_ENV: &str = "STENO_ASSETS";
/// The English tiny model (CTranslate2 layout).
pub const TINY_EN: &str = "tiny.en-ct2";
/// The multilingual base model (CTranslate2 layout).
pub const BASE: &str = "base-ct2";
/// Reference transcript of `speech/jfk.wav`.
pub const JFK_TEXT: &str =
    "And so, my fellow Americans, ask not what your country can do for you, \
                            ask what you can do for your country.";

/// One audio file and what is said in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    pub path: PathBuf,
    pub reference: String,
}

impl Clip {
    /// The clip's path relative to the speech directory, as manifests and the reference
    /// fixtures name it (the full path for clips elsewhere).
    pub fn speech_key(&self) -> String {
        let speech = assets_dir().join("speech");
        let key = self.path.strip_prefix(&speech).unwrap_or(&self.path);
        key.to_string_lossy().into_owned()
    }

    /// Length in seconds, decoded.
    pub fn seconds(&self) -> f64 {
        samples(&self.path).len() as f64 / 16_000.0
    }
}

impl fmt::Display for Clip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

/// `$STENO_ASSETS`, or `~/.cache/steno/assets`. Not checked for existence.
pub fn assets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ASSETS_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("steno").join("assets")
}

fn missing(what: &Path) -> ! {
    panic!(
        "test asset {} is missing: run `make setup` (or ./scripts/fetch-assets.sh); \
         set {ASSETS_ENV} to use another assets directory",
        what.display()
    )
}

/// Reads a manifest: one `relative/path.wav<TAB>reference` per line; blank lines and lines
/// starting with `#` are skipped. Paths are resolved against the manifest's directory.
pub fn read_manifest(manifest: &Path) -> io::Result<Vec<Clip>> {
    let text = std::fs::read_to_string(manifest)?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let mut clips = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (path, reference) = line.split_once('\t').ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}:{}: expected `path<TAB>reference`",
                    manifest.display(),
                    n + 1
                ),
            )
        })?;
        clips.push(Clip {
            path: base.join(path),
            reference: reference.trim().to_owned(),
        });
    }
    Ok(clips)
}

/// Reads the manifest at `relative` (to the assets dir), panicking with "run `make setup`"
/// when it is absent.
pub fn manifest(relative: &str) -> Vec<Clip> {
    let path = assets_dir().join(relative);
    if !path.is_file() {
        missing(&path);
    }
    read_manifest(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The English clips (jfk, LibriVox, Asterisk prompts) with their transcripts.
pub fn english_clips() -> Vec<Clip> {
    manifest("speech/en-manifest.tsv")
}

/// Sentences synthesised by espeak-ng, with their exact text.
pub fn synthetic_clips() -> Vec<Clip> {
    manifest("speech/synthetic-manifest.tsv")
}

/// The 11-second JFK clip (16 kHz mono).
pub fn jfk() -> Clip {
    let path = assets_dir().join("speech").join("jfk.wav");
    if !path.is_file() {
        missing(&path);
    }
    Clip {
        path,
        reference: JFK_TEXT.to_owned(),
    }
}

/// Decodes an audio file to 16 kHz mono samples; panics with the path on failure.
pub fn samples(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hint = path.extension().and_then(|e| e.to_str());
    steno_audio::decode(&bytes, hint, &steno_audio::Limits::default())
        .unwrap_or_else(|e| panic!("decoding {}: {e}", path.display()))
        .samples
}

/// A long English file as `tests/tests/english.rs` and `tests/fixtures/reference/long.py`
/// build it: the longest English clips first, each followed by 0.6 s of silence, until it
/// lasts at least `min_seconds`. Returns the 16 kHz samples and the clips used, in order
/// (their references joined with spaces are the file's reference). Panics when all the clips
/// together are shorter.
pub fn long_english_file(min_seconds: f64) -> (Vec<f32>, Vec<Clip>) {
    let mut clips: Vec<(Clip, Vec<f32>)> = english_clips()
        .into_iter()
        .map(|c| {
            let samples = samples(&c.path);
            (c, samples)
        })
        .collect();
    clips.sort_by_key(|(_, s)| std::cmp::Reverse(s.len()));
    let pause = vec![0f32; 16_000 * 6 / 10];
    let min_samples = (min_seconds * 16_000.0).ceil() as usize;
    let (mut samples, mut used) = (Vec::new(), Vec::new());
    for (clip, clip_samples) in clips {
        samples.extend(clip_samples);
        samples.extend(&pause);
        used.push(clip);
        if samples.len() >= min_samples {
            break;
        }
    }
    let duration = samples.len() as f64 / 16_000.0;
    assert!(
        duration >= min_seconds,
        "only {duration:.0} s of English clips"
    );
    (samples, used)
}

/// What OpenAI's reference implementation (openai-whisper, same weights converted from
/// the CTranslate2 files) transcribed for every English clip, keyed by
/// [`Clip::speech_key`]; see tests/fixtures/reference/. `None` without a fixture for `model`.
pub fn reference_hypotheses(model: &str) -> Option<HashMap<String, String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/reference")
        .join(format!("{model}.tsv"));
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('\t'))
            .map(|(p, h)| (p.to_string(), h.to_string()))
            .collect(),
    )
}

/// Directory of the model `name` (e.g. [`TINY_EN`], [`BASE`]), if it has been fetched.
pub fn try_model_dir(name: &str) -> Option<PathBuf> {
    let dir = assets_dir().join("models").join(name);
    dir.is_dir().then_some(dir)
}

/// Directory of the model `name` (e.g. [`TINY_EN`], [`BASE`]); panics with "run `make setup`"
/// when it is absent.
pub fn model_dir(name: &str) -> PathBuf {
    try_model_dir(name).unwrap_or_else(|| missing(&assets_dir().join("models").join(name)))
}

/// Whether `make setup` has fetched the assets (lets tests skip politely instead of panicking).
pub fn available() -> bool {
    assets_dir()
        .join("speech")
        .join("en-manifest.tsv")
        .is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("steno-e2e-assets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn reads_manifest_relative_to_its_directory() {
        let path = temp_file(
            "m.tsv",
            "# comment\njfk.wav\tAnd so, my fellow Americans.\n\nasterisk/digits/1.wav\tone\r\n",
        );
        let clips = read_manifest(&path).unwrap();
        let dir = path.parent().unwrap();
        assert_eq!(
            clips,
            [
                Clip {
                    path: dir.join("jfk.wav"),
                    reference: "And so, my fellow Americans.".into()
                },
                Clip {
                    path: dir.join("asterisk/digits/1.wav"),
                    reference: "one".into()
                },
            ]
        );
    }

    #[test]
    fn rejects_lines_without_a_tab() {
        let path = temp_file("bad.tsv", "ok.wav\tfine\nbroken line\n");
        let err = read_manifest(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("bad.tsv:2"), "{err}");
    }

    #[test]
    #[should_panic(expected = "run `make setup`")]
    fn missing_model_says_what_to_do() {
        model_dir("no-such-model-for-sure");
    }

    /// Checks the real assets when `make setup` has fetched them.
    #[test]
    fn fetched_assets_are_complete() {
        if !available() {
            eprintln!("skipped: assets not fetched (run `make setup`)");
            return;
        }
        let clips = english_clips();
        assert!(clips.len() > 500, "only {} English clips", clips.len());
        for clip in &clips {
            assert!(clip.path.is_file(), "{clip} is missing");
            assert!(!clip.reference.is_empty(), "{clip} has no reference");
        }
        assert!(jfk().path.is_file());
        for model in [TINY_EN, BASE] {
            for file in ["model.bin", "config.json", "tokenizer.json"] {
                assert!(model_dir(model).join(file).is_file(), "{model}/{file}");
            }
        }
    }
}
