//! Runs the real `steno` binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Waits for `child` up to `limit`; past it, kills and reaps it and returns `None`.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `steno` binary of the profile these tests were built with:
/// `target/<profile>/steno`, beside this test's `deps/` folder (tests) or beside
/// this executable (the bench).
pub fn steno_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("steno"))
        .collect();
    candidates
        .iter()
        .find(|b| b.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{} is missing: build it first (`make test` does)",
                candidates[0].display()
            )
        })
}

/// One transcribed file, as `verbose_json`.
pub struct Output {
    pub text: String,
    pub json: Value,
}

pub struct Run {
    pub outputs: Vec<Output>,
    pub wall: Duration,
}

/// `steno transcribe` over many files at once (they share the batched decoder).
/// Files are linked under unique names so outputs map back to inputs.
pub fn transcribe(model: &Path, files: &[PathBuf], extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("wav");
            let link = dir.path().join(format!("{i:05}.{ext}"));
            std::os::unix::fs::symlink(f, &link).expect("symlink input");
            link
        })
        .collect();
    let out = dir.path().join("out");
    let started = Instant::now();
    let status = Command::new(steno_binary())
        .arg("transcribe")
        .arg("--model")
        .arg(model)
        .args(["--format", "verbose_json", "--output-dir"])
        .arg(&out)
        .args(extra)
        .args(&inputs)
        .status()
        .expect("run steno");
    let wall = started.elapsed();
    assert!(status.success(), "steno transcribe failed: {status}");
    let outputs = (0..files.len())
        .map(|i| {
            let path = out.join(format!("{i:05}.json"));
            let json: Value = serde_json::from_slice(
                &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            )
            .expect("verbose_json output");
            Output {
                text: json["text"].as_str().unwrap_or_default().to_string(),
                json,
            }
        })
        .collect();
    Run { outputs, wall }
}

/// Writes 16 kHz mono 16-bit PCM WAV.
pub fn write_wav(path: &Path, samples: &[f32]) {
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect();
    let mut bytes = Vec::with_capacity(44 + data.len());
    bytes.extend(b"RIFF");
    bytes.extend((36 + data.len() as u32).to_le_bytes());
    bytes.extend(b"WAVEfmt ");
    bytes.extend(16u32.to_le_bytes());
    bytes.extend(1u16.to_le_bytes());
    bytes.extend(1u16.to_le_bytes());
    bytes.extend(16_000u32.to_le_bytes());
    bytes.extend(32_000u32.to_le_bytes());
    bytes.extend(2u16.to_le_bytes());
    bytes.extend(16u16.to_le_bytes());
    bytes.extend(b"data");
    bytes.extend((data.len() as u32).to_le_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).expect("write wav");
}
