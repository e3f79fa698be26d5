//! Hostile input against one real `steno serve` (tiny.en): damaged, truncated, lying and
//! bomb-like audio in every container Steno decodes, and hostile multipart forms. Every
//! case must get its expected status with OpenAI's error envelope within [`CASE_LIMIT`];
//! between groups of cases, and at the end, jfk.wav must still transcribe correctly and
//! the process must still be alive, and its peak memory must stay bounded.
//!
//! The valid originals are made from jfk.wav with ffmpeg (installed by `make setup`) into a
//! temporary directory. Cases already covered by `tests/server.rs` (empty file, missing
//! file or model, plain bad field values, a small upload limit, malformed multipart) are
//! not repeated here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use steno_e2e::assets;
use steno_e2e::server::{Request, Response, Server};
use steno_e2e::wer;

/// Longest any one case may take (a tiny.en transcription of 11 s takes about a second).
const CASE_LIMIT: Duration = Duration::from_secs(30);
/// Word error rate allowed on the JFK clip (22 words: two edits).
const JFK_WER: f64 = 0.1;
/// Peak resident memory the server may reach over the whole matrix. The model takes a few
/// hundred MB; the decompression bomb may make it hold up to `max_audio_seconds` (3 h) of
/// 16 kHz samples, 691 MB, before it is refused.
const MAX_PEAK_RSS: u64 = 2 << 30;
const TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";

/// What a case must get back.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// 200 with the whole JFK sentence (WER bound).
    Jfk,
    /// 200 with these words (lowercase, in order) in the text: the part of the speech a
    /// truncated file still holds.
    Contains(&'static str),
    /// 200 with at most this many words: a file cut so early that little or no speech is
    /// left; whatever comes back must not be a hallucinated sentence.
    AtMostWords(usize),
    /// 200 with no text at all (silence).
    Silent,
    /// A 200 as for [`Expect::AtMostWords`], or a 400 on `file`: files cut inside or just
    /// after their headers, where whether any audio frame survives depends on the encoder.
    EarlyCut(usize),
    /// This error status with OpenAI's envelope and this `param`.
    Error(u16, Option<&'static str>),
}

struct Matrix {
    server: Server,
    dir: tempfile::TempDir,
    failures: Vec<String>,
    report: String,
    since_control: usize,
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn transcript(response: &Response) -> Result<String, String> {
    if response.status != 200 {
        return Err(format!(
            "expected 200, got {}: {}",
            response.status,
            clip(&response.body)
        ));
    }
    let json: Value = serde_json::from_str(&response.body)
        .map_err(|e| format!("200 but not JSON ({e}): {}", clip(&response.body)))?;
    json["text"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("200 without text: {json}"))
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

fn check(response: &Response, expect: Expect) -> Result<(), String> {
    match expect {
        Expect::Jfk => {
            let text = transcript(response)?;
            let rate = wer::wer(assets::JFK_TEXT, &text);
            if rate > JFK_WER {
                return Err(format!("WER {:.1} %: {text:?}", 100.0 * rate));
            }
        }
        Expect::Contains(phrase) => {
            let text = transcript(response)?;
            let have = words(&text).join(" ");
            let want = words(phrase).join(" ");
            if !have.contains(&want) {
                return Err(format!("{want:?} not in {text:?}"));
            }
        }
        Expect::AtMostWords(most) => {
            let text = transcript(response)?;
            if words(&text).len() > most {
                return Err(format!("more than {most} words: {text:?}"));
            }
        }
        Expect::Silent => {
            let text = transcript(response)?;
            if !text.trim().is_empty() {
                return Err(format!("text from silence: {text:?}"));
            }
        }
        Expect::EarlyCut(most) => {
            if response.status == 200 {
                return check(response, Expect::AtMostWords(most));
            }
            return check(response, Expect::Error(400, Some("file")));
        }
        Expect::Error(status, param) => {
            if response.status != status {
                return Err(format!(
                    "expected {status}, got {}: {}",
                    response.status,
                    clip(&response.body)
                ));
            }
            let error = std::panic::catch_unwind(|| response.api_error())
                .map_err(|_| format!("not OpenAI's error envelope: {}", clip(&response.body)))?;
            if error.param.as_deref() != param {
                return Err(format!("param {:?}, expected {param:?}", error.param));
            }
            if error.message.chars().count() > 1000 {
                return Err(format!(
                    "a {}-character error message",
                    error.message.chars().count()
                ));
            }
        }
    }
    Ok(())
}

impl Matrix {
    fn new() -> Matrix {
        Matrix {
            server: Server::start(&[]),
            dir: tempfile::tempdir().expect("tempdir"),
            failures: Vec::new(),
            report: String::new(),
            since_control: 0,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` to a file called `name` in the temporary directory.
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write case file");
        path
    }

    /// Sends `request`, checks it against `expect` and the time limit, records the outcome.
    fn case(&mut self, name: &str, request: Request, expect: Expect) {
        self.since_control += 1;
        match request.max_time(2 * CASE_LIMIT).spawn().wait_result() {
            Err(e) => self.failures.push(format!("{name}: no HTTP response: {e}")),
            Ok(response) => {
                let mut outcome = check(&response, expect);
                if outcome.is_ok() && response.elapsed > CASE_LIMIT {
                    outcome = Err(format!("took {:?}", response.elapsed));
                }
                let _ = writeln!(
                    self.report,
                    "{:>6} ms  {}  {name}",
                    response.elapsed.as_millis(),
                    response.status
                );
                if let Err(e) = outcome {
                    self.failures.push(format!("{name}: {e}"));
                }
            }
        }
    }

    /// `file` uploaded as `filename` with `model=whisper-1` and `fields`.
    fn upload(&mut self, name: &str, file: &Path, filename: &str, expect: Expect) {
        let request = Request::post(self.server.url(TRANSCRIPTIONS))
            .file_as("file", file, filename)
            .field("model", "whisper-1");
        self.case(name, request, expect);
    }

    /// jfk.wav still transcribes, and the process is alive with bounded memory. Panics
    /// (with the failures so far) otherwise: nothing after a dead server is meaningful.
    fn control(&mut self, after: &str) {
        self.since_control = 0;
        let request = self.server.transcription(&assets::jfk().path);
        self.case(&format!("control after {after}"), request, Expect::Jfk);
        let alive = Command::new("kill")
            .args(["-0", &self.server.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            alive,
            "steno serve died after {after}; failures so far:\n{}",
            self.failures.join("\n")
        );
        if let Some(peak) = peak_rss(self.server.pid()) {
            assert!(
                peak < MAX_PEAK_RSS,
                "peak RSS {} MB after {after}",
                peak >> 20
            );
        }
    }
}

/// `VmHWM` (peak resident set) of a process, where /proc has it.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets `VmHWM` to the current resident set (Linux: 5 to /proc/PID/clear_refs).
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `VmRSS` (resident set now) of a process, where /proc has it.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A deterministic xorshift byte stream.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// Encodes `input` with ffmpeg into `output` (its extension names the container).
fn ffmpeg(input: &Path, args: &[&str], output: &Path) {
    let result = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-i"])
        .arg(input)
        .args(args)
        .arg(output)
        .output()
        .expect("run ffmpeg (make setup installs it)");
    assert!(
        result.status.success(),
        "ffmpeg {args:?} {}: {}",
        output.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// One container: how to make it, and what truncated copies must give.
struct Container {
    ext: &'static str,
    args: &'static [&'static str],
    /// Whether a file cut at 50 % and 90 % still decodes (the stream is read front to
    /// back); `false` for MP4 and CAF with their indexes at the end.
    streamable: bool,
}

const CONTAINERS: &[Container] = &[
    Container {
        ext: "wav",
        args: &[],
        streamable: true,
    },
    Container {
        ext: "flac",
        args: &["-c:a", "flac"],
        streamable: true,
    },
    Container {
        ext: "mp3",
        args: &["-c:a", "libmp3lame", "-b:a", "64k"],
        streamable: true,
    },
    Container {
        ext: "ogg",
        args: &["-c:a", "libvorbis"],
        streamable: true,
    },
    Container {
        ext: "opus",
        args: &["-c:a", "libopus", "-b:a", "32k"],
        streamable: true,
    },
    Container {
        ext: "webm",
        args: &["-c:a", "libopus", "-b:a", "32k"],
        streamable: true,
    },
    Container {
        ext: "mka",
        args: &["-c:a", "flac"],
        streamable: true,
    },
    Container {
        ext: "aiff",
        args: &[],
        streamable: true,
    },
    Container {
        ext: "m4a",
        args: &["-c:a", "aac", "-b:a", "64k"],
        streamable: false,
    },
    Container {
        ext: "caf",
        args: &["-c:a", "alac"],
        streamable: false,
    },
];

fn containers(m: &mut Matrix) {
    let jfk = assets::jfk().path;
    for (i, c) in CONTAINERS.iter().enumerate() {
        let original = m.path(&format!("jfk.{}", c.ext));
        ffmpeg(&jfk, c.args, &original);
        let bytes = std::fs::read(&original).unwrap();
        // The same encoder on no audio at all: the container's headers alone.
        let header = m.path(&format!("header.{}", c.ext));
        ffmpeg(&jfk, &[&["-t", "0"], c.args].concat(), &header);

        let ext = c.ext;
        // Content, not the name, says what a file is.
        let wrong = if ext == "mp3" {
            "speech.wav"
        } else {
            "speech.mp3"
        };
        m.upload(
            &format!("{ext} named {wrong}"),
            &original,
            wrong,
            Expect::Jfk,
        );
        m.upload(
            &format!("{ext} header only"),
            &header,
            &format!("h.{ext}"),
            Expect::Error(400, Some("file")),
        );
        for (percent, expect) in [
            (1, Expect::EarlyCut(3)),
            (10, Expect::EarlyCut(4)),
            (50, Expect::Contains("my fellow americans")),
            (
                90,
                Expect::Contains("ask not what your country can do for you"),
            ),
        ] {
            let cut = m.write(
                &format!("cut{percent}.{ext}"),
                &bytes[..bytes.len() * percent / 100],
            );
            let expect = match expect {
                Expect::Contains(_) if !c.streamable => Expect::Error(400, Some("file")),
                other => other,
            };
            m.upload(
                &format!("{ext} cut at {percent} %"),
                &cut,
                &format!("cut.{ext}"),
                expect,
            );
        }
        let random = m.write(
            &format!("random.{ext}"),
            &random_bytes(bytes.len(), i as u64 + 1),
        );
        m.upload(
            &format!("{} random bytes as .{ext}", bytes.len()),
            &random,
            &format!("random.{ext}"),
            Expect::Error(400, Some("file")),
        );
        let zeros = m.write(&format!("zeros.{ext}"), &vec![0; bytes.len()]);
        m.upload(
            &format!("{} zero bytes as .{ext}", bytes.len()),
            &zeros,
            &format!("zeros.{ext}"),
            Expect::Error(400, Some("file")),
        );
        if m.since_control >= 14 {
            m.control(&format!("the {ext} cases"));
        }
    }
}

/// A WAV file: `format` 1 (PCM) or 3 (float), the header's fields as given, and the data
/// chunk's declared length (`None`: the real one).
fn wav(
    format: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    data: &[u8],
    declared: Option<u32>,
) -> Vec<u8> {
    let align = channels.wrapping_mul(bits / 8);
    let data_len = declared.unwrap_or(data.len() as u32);
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend(b"RIFF");
    out.extend(36u32.wrapping_add(data_len).to_le_bytes());
    out.extend(b"WAVEfmt ");
    out.extend(16u32.to_le_bytes());
    out.extend(format.to_le_bytes());
    out.extend(channels.to_le_bytes());
    out.extend(rate.to_le_bytes());
    out.extend(rate.wrapping_mul(u32::from(align)).to_le_bytes());
    out.extend(align.to_le_bytes());
    out.extend(bits.to_le_bytes());
    out.extend(b"data");
    out.extend(data_len.to_le_bytes());
    out.extend(data);
    out
}

fn wav_headers(m: &mut Matrix) {
    let samples = assets::samples(&assets::jfk().path);
    let pcm: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s * 32767.0).round() as i16).to_le_bytes())
        .collect();
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "WAV at 1 Hz",
            wav(1, 1, 1, 16, &pcm, None),
            Expect::Error(400, Some("file")),
        ),
        (
            "WAV at 1 MHz",
            wav(1, 1, 1_000_000, 16, &pcm, None),
            Expect::Error(400, Some("file")),
        ),
        (
            "WAV with 0 channels",
            wav(1, 0, 16_000, 16, &pcm, None),
            Expect::Error(400, Some("file")),
        ),
        (
            "WAV with 255 channels",
            wav(1, 255, 16_000, 16, &pcm[..255 * 2 * 400], None),
            Expect::Error(400, Some("file")),
        ),
        (
            "WAV with 0 bits per sample",
            wav(1, 1, 16_000, 0, &pcm, None),
            Expect::Error(400, Some("file")),
        ),
        (
            "WAV declaring 74 hours of data, holding 11 s",
            wav(1, 1, 16_000, 16, &pcm, Some(u32::MAX - 64)),
            Expect::Jfk,
        ),
        (
            "WAV header declaring 11 s, with no data",
            wav(1, 1, 16_000, 16, &[], Some(pcm.len() as u32)),
            Expect::Error(400, Some("file")),
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = m.write("case.wav", &bytes);
        m.upload(name, &path, "case.wav", expect);
    }

    // Float WAV with NaN and ±inf sprinkled through the speech: they become silence.
    let damaged: Vec<u8> = samples
        .iter()
        .enumerate()
        .flat_map(|(i, &s)| {
            let s = match i % 997 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                _ => s,
            };
            s.to_le_bytes()
        })
        .collect();
    let path = m.write("nan.wav", &wav(3, 1, 16_000, 32, &damaged, None));
    m.upload(
        "float WAV with NaN and inf samples",
        &path,
        "nan.wav",
        Expect::Jfk,
    );
    let nan: Vec<u8> = (0..3 * 16_000)
        .flat_map(|_| f32::NAN.to_le_bytes())
        .collect();
    let path = m.write("all-nan.wav", &wav(3, 1, 16_000, 32, &nan, None));
    m.upload(
        "float WAV of NaN only",
        &path,
        "all-nan.wav",
        Expect::Silent,
    );
    m.control("the WAV header cases");
}

/// CRC-8 (polynomial 0x07) of FLAC frame headers.
fn crc8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |mut crc, &b| {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// CRC-16 (polynomial 0x8005) of FLAC frames.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, &b| {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x8005
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// A mono 16-bit 8 kHz FLAC stream of `frames` frames of 65 535 samples of silence, each a
/// CONSTANT subframe: 12 bytes for 8 s of audio. `declared` goes into STREAMINFO's total
/// (0: unknown, as a streaming encoder writes).
fn flac_silence(frames: u32, declared: u64) -> Vec<u8> {
    flac_silence_as(frames, declared, FlacLayout::MONO_8K)
}

/// The rate and channels of a FLAC stream [`flac_silence_as`] writes.
#[derive(Clone, Copy)]
struct FlacLayout {
    rate: u64,
    channels: u64,
    /// The frame header's rate code (FLAC's table: 4 = 8 kHz, 10 = 48 kHz).
    rate_code: u8,
}

impl FlacLayout {
    const MONO_8K: FlacLayout = FlacLayout {
        rate: 8_000,
        channels: 1,
        rate_code: 4,
    };
    const STEREO_48K: FlacLayout = FlacLayout {
        rate: 48_000,
        channels: 2,
        rate_code: 10,
    };
}

/// [`flac_silence`] at `layout`'s rate and channels (each channel its own CONSTANT
/// subframe).
fn flac_silence_as(frames: u32, declared: u64, layout: FlacLayout) -> Vec<u8> {
    const BLOCK: u64 = 65_535;
    let mut out = b"fLaC".to_vec();
    out.extend([0x80, 0, 0, 34]); // last metadata block: STREAMINFO, 34 bytes
    out.extend((BLOCK as u16).to_be_bytes()); // min block size
    out.extend((BLOCK as u16).to_be_bytes()); // max block size
    out.extend([0; 6]); // min and max frame size: unknown
    let packed: u64 = (layout.rate << 44)
        | ((layout.channels - 1) << 41)
        | (15 << 36)
        | (declared & ((1 << 36) - 1));
    out.extend(packed.to_be_bytes()); // rate, channels - 1, bits - 1 = 15, total
    out.extend([0; 16]); // MD5: unknown
    for n in 0..frames {
        let start = out.len();
        // Sync, fixed block size; block size from a 16-bit field, the rate; independent
        // channels, 16-bit.
        let channels = ((layout.channels - 1) as u8) << 4;
        out.extend([0xFF, 0xF8, 0x70 | layout.rate_code, channels | 0x08]);
        // The frame number, UTF-8 coded.
        match n {
            0..=0x7F => out.push(n as u8),
            0x80..=0x7FF => out.extend([0xC0 | (n >> 6) as u8, 0x80 | (n & 0x3F) as u8]),
            _ => out.extend([
                0xE0 | (n >> 12) as u8,
                0x80 | ((n >> 6) & 0x3F) as u8,
                0x80 | (n & 0x3F) as u8,
            ]),
        }
        out.extend(((BLOCK - 1) as u16).to_be_bytes());
        out.push(crc8(&out[start..]));
        for _ in 0..layout.channels {
            out.extend([0x00, 0, 0]); // CONSTANT subframe, value 0
        }
        let crc = crc16(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    out
}

fn lying_and_bombs(m: &mut Matrix) {
    // Sanity check of the writer: a short stream is valid FLAC of silence.
    let path = m.write("silence.flac", &flac_silence(2, 2 * 65_535));
    m.upload(
        "hand-made FLAC, 16 s of silence",
        &path,
        "s.flac",
        Expect::Silent,
    );
    // STREAMINFO declares 2^36 - 1 samples (99 days) over one frame: refused up front.
    let path = m.write("lying.flac", &flac_silence(1, (1 << 36) - 1));
    m.upload(
        "FLAC declaring 99 days, holding 8 s",
        &path,
        "lying.flac",
        Expect::Error(413, Some("file")),
    );
    // 21 KB that decode to 4 hours, with no declared length: counting decoded samples must
    // stop it at max_audio_seconds (3 h), in bounded time and memory.
    let bomb = flac_silence(1_800, 0);
    assert!(bomb.len() < 32 * 1024, "{} bytes", bomb.len());
    let path = m.write("bomb.flac", &bomb);
    m.upload(
        "FLAC bomb: 21 KB of 4 h silence, length undeclared",
        &path,
        "bomb.flac",
        Expect::Error(413, Some("file")),
    );
    m.control("the FLAC bombs");
}

/// What `make fuzz` found in the decoder, committed under fuzz/crashes/decode/ in the fuzz
/// target's input format (a hint byte, then the file). Some are refused by checks before
/// symphonia; the Matroska ones still abort symphonia and must cost only their own request
/// (the server decodes in a child process).
fn fuzz_findings(m: &mut Matrix) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/crashes/decode");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    found.sort();
    assert!(
        found.len() >= 6,
        "{} fuzz findings in {}",
        found.len(),
        dir.display()
    );
    for input in found {
        let name = input.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&input).expect("read a fuzz finding");
        let path = m.write(&name, &bytes[1..]);
        // The one WAV among them decoded to NaN (now silence). The rest are refused (400),
        // or, where the kernel grants symphonia's huge allocation (overcommit), the bad
        // block is skipped and nothing is heard (200, no words).
        let expect = if name.ends_with(".wav") {
            Expect::Silent
        } else {
            Expect::EarlyCut(0)
        };
        m.upload(&format!("fuzz finding {name}"), &path, &name, expect);
    }
    m.control("the fuzz findings");
}

/// Bytes of a FLAC file past its headers that the noise generator may flip.
const FLIP_FROM: usize = 8192;
/// Bytes flipped, and the seed of their offsets: with tiny.en, jfk.flac damaged this way
/// decodes to about 2.5 s of noise that the model reads as text looping to the length
/// limit at two temperatures.
const FLIPS: usize = 200;
const FLIP_SEED: u64 = 24;
/// Worker time the damaged file (2.5 s of noise) may cost, in multiples of what jfk.wav
/// (11 s of speech) costs on the same server just before. Before degenerate rows were
/// stopped, the fallback ran temperatures to the length limit on it: about 5× jfk.wav with
/// tiny.en (40 s with base); now under 2×.
const MAX_NOISE_COST: f64 = 3.0;

/// `bytes` with [`FLIPS`] bytes past [`FLIP_FROM`] inverted, at offsets drawn by
/// SplitMix64 from `seed` (`tests/hostile.rs` and a one-off script agree on them).
fn flip_bytes(mut bytes: Vec<u8>, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let span = (bytes.len() - FLIP_FROM) as u64;
    for _ in 0..FLIPS {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        bytes[FLIP_FROM + (z % span) as usize] ^= 0xFF;
    }
    bytes
}

/// Milliseconds of the `name` entry of a `Server-Timing` header (`name;dur=12.3`).
fn server_timing_ms(response: &Response, name: &str) -> Option<f64> {
    response
        .header("server-timing")?
        .split(',')
        .filter_map(|entry| entry.trim().split_once(";dur="))
        .find(|(entry, _)| *entry == name)?
        .1
        .parse()
        .ok()
}

/// Bit-flipped FLAC that decodes to noise the model reads as looping text: the reply is
/// a 200 with little or no text, and its worker time stays bounded (the degenerate
/// rows stop early and the window's fallback stops within its token budget).
fn compute_amplification(m: &mut Matrix) {
    let speech = m.server.transcription(&assets::jfk().path).spawn().wait();
    speech.expect_status(200);
    let speech_ms = server_timing_ms(&speech, "inference").expect("inference in Server-Timing");
    let flac = m.path("jfk-for-flips.flac");
    ffmpeg(&assets::jfk().path, &["-c:a", "flac"], &flac);
    let bytes = std::fs::read(&flac).expect("read jfk.flac");
    let flipped = m.write("flipped.flac", &flip_bytes(bytes, FLIP_SEED));
    let request = Request::post(m.server.url(TRANSCRIPTIONS))
        .file_as("file", &flipped, "flipped.flac")
        .field("model", "whisper-1");
    let response = request.max_time(2 * CASE_LIMIT).spawn().wait_result();
    let outcome = response
        .map_err(|e| format!("no HTTP response: {e}"))
        .and_then(|r| {
            check(&r, Expect::AtMostWords(40))?;
            let inference = server_timing_ms(&r, "inference")
                .ok_or_else(|| format!("no inference in Server-Timing: {r:?}"))?;
            let _ = writeln!(
                m.report,
                "{inference:>6.0} ms  inference of flipped.flac ({speech_ms:.0} ms for jfk.wav)"
            );
            if inference > MAX_NOISE_COST * speech_ms {
                return Err(format!(
                    "{inference:.0} ms of inference, jfk.wav {speech_ms:.0} ms"
                ));
            }
            Ok(())
        });
    if let Err(e) = outcome {
        m.failures.push(format!("bit-flipped FLAC: {e}"));
    }
    m.control("the bit-flipped FLAC");
}

/// One multipart part: name, filename, content type, bytes.
type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

/// A multipart body with `boundary` from `parts`.
fn multipart(boundary: &str, parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, content_type, bytes) in parts {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").bytes(),
        );
        if let Some(filename) = filename {
            body.extend(format!("; filename=\"{filename}\"").bytes());
        }
        body.extend(b"\r\n");
        if let Some(content_type) = content_type {
            body.extend(format!("Content-Type: {content_type}\r\n").bytes());
        }
        body.extend(b"\r\n");
        body.extend(*bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    body
}

/// Time to the 400 for a 26 MB list field, and growth of the server's peak memory.
const HUGE_FIELD_LIMIT: Duration = Duration::from_secs(1);
const HUGE_FIELD_MAX_GROWTH: u64 = 50 << 20;

/// Text fields are capped (64 KiB) as they stream in, list fields in item count; client
/// request ids are kept only when safe to log. First of the groups: the peak-memory
/// bound is measured from a server that has seen only the start-up control.
fn field_caps(m: &mut Matrix) {
    let jfk = assets::jfk().path;
    // ~8.7 million empty strings: parsed, hundreds of MB; the server reads 64 KiB of it.
    let list = format!("[\"\"{}]", ",\"\"".repeat(26_000_000 / 3));
    let list_path = m.write("granularities.json", list.as_bytes());
    let pid = m.server.pid();
    let before = rss(pid).expect("VmRSS of the server");
    let reset = reset_peak_rss(pid);
    let request = Request::post(m.server.url(TRANSCRIPTIONS))
        .arg("-F")
        .arg(format!(
            "timestamp_granularities=<{}",
            list_path.to_str().unwrap()
        ))
        .file("file", &jfk)
        .field("model", "whisper-1");
    let response = request.max_time(CASE_LIMIT).send();
    let growth = peak_rss(pid).unwrap_or(0).saturating_sub(before);
    eprintln!(
        "26 MB timestamp_granularities: {} in {:?}, peak RSS +{} MiB (peak reset: {reset})",
        response.status,
        response.elapsed,
        growth >> 20
    );
    if let Err(e) = check(
        &response,
        Expect::Error(400, Some("timestamp_granularities")),
    ) {
        m.failures.push(format!("26 MB list field: {e}"));
    }
    if response.elapsed > HUGE_FIELD_LIMIT {
        m.failures.push(format!(
            "26 MB list field: 400 after {:?}",
            response.elapsed
        ));
    }
    if reset && growth > HUGE_FIELD_MAX_GROWTH {
        m.failures
            .push(format!("26 MB list field: peak RSS +{} MiB", growth >> 20));
    }
    let many = format!("[{}]", ["\"word\""; 9].join(","));
    let request = m
        .server
        .transcription(&jfk)
        .field("timestamp_granularities", &many);
    m.case(
        "9 timestamp granularities",
        request,
        Expect::Error(400, Some("timestamp_granularities")),
    );
    request_ids(m);
}

/// A client's `x-request-id` comes back (and is logged) only if it is 1 to 128 of
/// `[A-Za-z0-9._-]`; otherwise the request gets a fresh one.
fn request_ids(m: &mut Matrix) {
    let good = "Good-id_1.2";
    let long = "a".repeat(200);
    for sent in [good, "two words", "a=b", "x\" level=ERROR", long.as_str()] {
        let response = Request::get(m.server.url("/health"))
            .header(&format!("x-request-id: {sent}"))
            .send();
        let got = response.header("x-request-id").unwrap_or_default();
        let safe = (1..=128).contains(&got.len())
            && got
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
        let kept = got == sent;
        if !safe || kept != (sent == good) {
            m.failures
                .push(format!("x-request-id {sent:?} came back as {got:?}"));
        }
    }
}

fn forms(m: &mut Matrix) {
    let jfk = assets::jfk().path;
    let jfk_bytes = std::fs::read(&jfk).unwrap();
    let url = m.server.url(TRANSCRIPTIONS);

    // A 30 MB upload at the default 25 MiB limit.
    let big = m.write("big.wav", &random_bytes(30_000_000, 5));
    let request = Request::post(&url)
        .file("file", &big)
        .field("model", "whisper-1");
    m.case("30 MB upload", request, Expect::Error(413, Some("file")));
    let request = Request::post(&url)
        .file("file", &jfk)
        .file("file", &jfk)
        .field("model", "whisper-1");
    m.case("two files", request, Expect::Error(400, Some("file")));
    let request = Request::post(&url).file("file", &jfk).fields(&[
        ("model", "whisper-1"),
        ("user", "someone"),
        ("chunking_strategy[threshold]", "0.5"),
        ("", "a part with an empty name"),
        ("metadata[foo]", "bar"),
    ]);
    m.case("unknown fields are ignored", request, Expect::Jfk);
    let request = Request::post(&url)
        .file_as(
            "file",
            &jfk,
            &format!("../../etc/{}ü\u{202e}.wav", "x".repeat(3000)),
        )
        .field("model", "whisper-1");
    m.case(
        "a 3000-character filename with ../ and bidi",
        request,
        Expect::Jfk,
    );

    let invalid: &[(&str, &str, &str)] = &[
        ("response_format", "JSON", "response_format"),
        ("response_format", "", "response_format"),
        ("response_format", "json,text", "response_format"),
        ("temperature", "NaN", "temperature"),
        ("temperature", "inf", "temperature"),
        ("temperature", "-0.5", "temperature"),
        ("temperature", "1.0000001", "temperature"),
        ("temperature", "0x1", "temperature"),
        ("temperature", "", "temperature"),
        ("language", "klingon", "language"),
        ("language", "e", "language"),
        ("language", "en-US", "language"),
        (
            "timestamp_granularities[]",
            "WORD",
            "timestamp_granularities",
        ),
        ("timestamp_granularities[]", "", "timestamp_granularities"),
        (
            "timestamp_granularities[]",
            "[\"word\", 1]",
            "timestamp_granularities",
        ),
        (
            "timestamp_granularities[]",
            "segment,word",
            "timestamp_granularities",
        ),
    ];
    for (field, value, param) in invalid {
        let request = m
            .server
            .transcription(&jfk)
            .fields(&[("response_format", "verbose_json"), (field, value)]);
        m.case(
            &format!("{field}={value:?}"),
            request,
            Expect::Error(400, Some(param)),
        );
    }
    m.control("the invalid field values");

    // Megabyte-sized values: refused or cut without echoing them back or stalling.
    // (curl reads `-F name=<file` values from a file: argv holds at most 128 KiB.)
    let huge = m.write("huge.txt", "x".repeat(1 << 20).as_bytes());
    let from_file = |name: &str| format!("{name}=<{}", huge.to_str().unwrap());
    let request = Request::post(&url)
        .file("file", &jfk)
        .arg("-F")
        .arg(from_file("model"));
    m.case(
        "a 1 MB model name",
        request,
        Expect::Error(400, Some("model")),
    );
    for field in ["language", "temperature"] {
        let request = m.server.transcription(&jfk).arg("-F").arg(from_file(field));
        m.case(
            &format!("a 1 MB {field}"),
            request,
            Expect::Error(400, Some(field)),
        );
    }
    // A 20 MB prompt: only its end can condition the model, and tokenizing all of it on the
    // model's thread used to take most of a minute.
    // (Random words: a repetitive prompt makes Whisper repeat it, whatever its size.)
    let vocabulary = [
        "ask", "not", "what", "your", "country", "can", "do", "for", "you",
    ];
    let words: Vec<&str> = random_bytes(4_500_000, 9)
        .iter()
        .map(|&b| vocabulary[usize::from(b) % vocabulary.len()])
        .collect();
    let prompt_path = m.write("prompt.txt", words.join(" ").as_bytes());
    let prompt = format!("prompt=<{}", prompt_path.to_str().unwrap());
    let request = m.server.transcription(&jfk).arg("-F").arg(prompt);
    m.case("a 20 MB prompt", request, Expect::Jfk);

    // Raw bodies: parts curl would not send.
    let boundary = "hostile-boundary";
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let raw = |m: &mut Matrix, name: &str, body: Vec<u8>, expect: Expect| {
        let request = Request::post(m.server.url(TRANSCRIPTIONS)).body(&content_type, &body);
        m.case(name, request, expect);
    };
    raw(
        m,
        "a file part with no filename or type",
        multipart(
            boundary,
            &[
                ("file", None, None, &jfk_bytes[..]),
                ("model", None, None, &b"whisper-1"[..]),
            ],
        ),
        Expect::Jfk,
    );
    raw(
        m,
        "a prompt that is not UTF-8 (decoded lossily)",
        multipart(
            boundary,
            &[
                ("file", Some("a.wav"), None, &jfk_bytes[..]),
                ("model", None, None, &b"whisper-1"[..]),
                ("prompt", None, None, &b"\xff\xfe\x80 not text"[..]),
            ],
        ),
        Expect::Jfk,
    );
    let filler: Vec<Part> = (0..10_000).map(|_| ("x", None, None, &b"y"[..])).collect();
    let mut parts = filler.clone();
    parts.push(("file", Some("a.wav"), None, &jfk_bytes[..]));
    parts.push(("model", None, None, &b"whisper-1"[..]));
    raw(
        m,
        "10 000 unknown parts before the file",
        multipart(boundary, &parts),
        Expect::Jfk,
    );
    raw(
        m,
        "raw PCM of an odd number of bytes",
        multipart(
            boundary,
            &[
                (
                    "file",
                    Some("a.pcm"),
                    Some("audio/pcm"),
                    &jfk_bytes[44..44 + 3201],
                ),
                ("model", None, None, &b"whisper-1"[..]),
            ],
        ),
        Expect::Error(400, Some("file")),
    );
    m.control("the hostile forms");
}

#[test]
fn hostile_inputs_are_refused_and_the_server_survives() {
    let started = std::time::Instant::now();
    let mut m = Matrix::new();
    m.control("start-up");
    field_caps(&mut m);
    containers(&mut m);
    wav_headers(&mut m);
    lying_and_bombs(&mut m);
    fuzz_findings(&mut m);
    compute_amplification(&mut m);
    forms(&mut m);
    m.control("everything");
    eprintln!(
        "hostile matrix: {} lines in {:?}, peak RSS {} MB\n{}",
        m.report.lines().count(),
        started.elapsed(),
        peak_rss(m.server.pid()).unwrap_or(0) >> 20,
        m.report
    );
    assert!(
        m.failures.is_empty(),
        "{} hostile cases failed:\n{}",
        m.failures.len(),
        m.failures.join("\n")
    );
}

/// 30 minutes of silence: 2.7 KB of FLAC that decode to 115 MB of samples.
const HALF_HOUR_FRAMES: u32 = 225;
/// Bytes of samples in it: 1 800 s at 16 kHz, 4 bytes each.
const HALF_HOUR_BYTES: u64 = 1_800 * 16_000 * 4;

/// Four such uploads at once against a budget that holds two: the rest are answered 429
/// with Retry-After before their samples are allocated, a normal request sent meanwhile
/// is answered 200, and the server's peak memory grows by about the budget, not by four
/// files' samples and log-mels.
#[test]
fn decoded_audio_past_its_budget_is_refused_and_memory_stays_bounded() {
    let started = std::time::Instant::now();
    let budget = HALF_HOUR_BYTES * 5 / 2;
    let server = Server::start_with_env(
        &[],
        &[("STENO_MAX_AUDIO_BYTES_IN_FLIGHT", &budget.to_string())],
    );
    let jfk = assets::jfk().path;
    // The model is loaded and warm before the baseline.
    server.transcribe(&jfk, &[]).expect_status(200);
    let peak = || peak_rss(server.pid()).expect("VmHWM in /proc");
    let baseline = peak();
    let dir = tempfile::tempdir().expect("tempdir");
    let silence = dir.path().join("silence.flac");
    let flac = flac_silence(HALF_HOUR_FRAMES, u64::from(HALF_HOUR_FRAMES) * 65_535);
    std::fs::write(&silence, flac).unwrap();
    let uploads: Vec<_> = (0..4)
        .map(|_| {
            server
                .transcription(&silence)
                .max_time(Duration::from_secs(40))
                .spawn()
        })
        .collect();
    let normal = server.transcribe(&jfk, &[]);
    let answers: Vec<_> = uploads.into_iter().map(|u| u.wait()).collect();
    normal.expect_status(200);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    for refused in answers.iter().filter(|a| a.status == 429) {
        refused.expect_error(429);
        assert!(refused.header("retry-after").is_some(), "{refused:?}");
    }
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    assert!(
        (1..=3).contains(&admitted)
            && admitted + statuses.iter().filter(|&&s| s == 429).count() == 4,
        "{statuses:?}"
    );
    let growth = peak().saturating_sub(baseline);
    eprintln!(
        "statuses {statuses:?}; peak RSS {} MB above the warm model's ({} MB); {:?}",
        growth >> 20,
        baseline >> 20,
        started.elapsed()
    );
    assert!(growth <= budget + (128 << 20), "grew {} MB", growth >> 20);
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A decoder child allowed one CPU second, and an upload whose decoding needs more (3
/// hours of 48 kHz stereo, 142 KB of FLAC: about 3 s of CPU here, mostly resampling):
/// the kernel stops that child, its request alone gets 413 in OpenAI's envelope naming
/// the key, and a normal request sent meanwhile gets its transcript.
#[test]
fn a_file_past_the_decoder_limits_costs_only_its_own_request() {
    let started = std::time::Instant::now();
    let server = Server::start_with_env(&[], &[("STENO_DECODER_CPU_SECONDS", "1")]);
    let jfk = assets::jfk().path;
    let dir = tempfile::tempdir().expect("tempdir");
    let long = dir.path().join("three-hours-48k-stereo.flac");
    // 65 535 frames a block: 7 900 blocks are 10 786 s, within max_audio_seconds.
    let blocks = 7_900;
    let flac = flac_silence_as(blocks, u64::from(blocks) * 65_535, FlacLayout::STEREO_48K);
    std::fs::write(&long, flac).unwrap();
    let costly = server
        .transcription(&long)
        .max_time(Duration::from_secs(40))
        .spawn();
    let normal = server.transcribe(&jfk, &[]);
    let costly = costly.wait();
    normal.expect_status(200);
    check(&normal, Expect::Jfk).unwrap();
    let error = costly.expect_error(413);
    assert_eq!(error.param.as_deref(), Some("file"), "{costly:?}");
    assert!(
        error.message.contains("limits.decoder_cpu_seconds"),
        "{}",
        error.message
    );
    let elapsed = started.elapsed();
    eprintln!("413 for the costly file, 200 for jfk, in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}
