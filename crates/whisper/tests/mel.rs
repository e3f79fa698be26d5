//! The log-mel front end against OpenAI Whisper's own `whisper.audio.log_mel_spectrogram`.
//!
//! The references in `tests/fixtures/mel/` were produced once, off CI, by
//! `tests/fixtures/mel/gen.py` (see `tests/fixtures/mel/README.md` for the exact
//! package versions and command): the first 2 s of `jfk.wav` (16 kHz mono s16) as raw
//! samples, and OpenAI's log-mel of it for 80 and 128 bins, frame-major little-endian f32.

use std::path::{Path, PathBuf};
use std::time::Instant;

use steno_whisper::mel::{
    log_mel_spectrogram, Mel, MelFilters, HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE,
};

const TOLERANCE: f32 = 1e-3;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mel")
        .join(name)
}

fn read_s16le(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect()
}

fn read_f32le(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn jfk_2s() -> Vec<f32> {
    let s = read_s16le("jfk_2s.s16le");
    assert_eq!(s.len(), 2 * SAMPLE_RATE);
    s
}

fn check_against_reference(samples: &[f32], n_mels: usize, padding: usize, reference: &str) {
    let filters = MelFilters::new(n_mels);
    let mel = log_mel_spectrogram(samples, &filters, padding);
    let expected = read_f32le(reference);
    assert_eq!(mel.n_mels, n_mels);
    assert_eq!(mel.n_frames, (samples.len() + padding) / HOP_LENGTH);
    assert_eq!(mel.data.len(), mel.n_frames * n_mels);
    let diff = max_abs_diff(&mel.data, &expected);
    println!(
        "{reference}: {} frames x {n_mels} mels, max abs diff {diff:.3e}",
        mel.n_frames
    );
    assert!(diff <= TOLERANCE, "{reference}: max abs diff {diff}");
}

#[test]
fn matches_openai_80_mels() {
    check_against_reference(&jfk_2s(), 80, 0, "jfk_2s_mel80.f32le");
}

#[test]
fn matches_openai_128_mels() {
    check_against_reference(&jfk_2s(), 128, 0, "jfk_2s_mel128.f32le");
}

#[test]
fn matches_openai_with_padding() {
    // 1 s of speech plus 0.5 s of appended zeros: the zero frames sit at the max - 8 floor.
    let samples = &jfk_2s()[..SAMPLE_RATE];
    check_against_reference(samples, 80, 8000, "jfk_1s_pad8000_mel80.f32le");
}

/// `filters.txt`: per row of OpenAI's `mel_filters.npz` (librosa's Slaney filters), the
/// first and last nonzero FFT bin, the row sum, the row max and the first moment
/// `sum(k * w[k])`. Slaney normalisation makes every filter's area `2 / (f_hi - f_lo)`, so
/// the row sums are ~0.02486 (25 Hz bins) below 1 kHz and fall off above it.
#[test]
fn filterbank_matches_librosa_slaney() {
    let text = std::fs::read_to_string(fixture("filters.txt")).unwrap();
    let mut rows_checked = [0usize; 2];
    let banks = [MelFilters::new(80).dense(), MelFilters::new(128).dense()];
    let n_freqs = N_FFT / 2 + 1;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        let n_mels: usize = f[0].parse().unwrap();
        let i: usize = f[1].parse().unwrap();
        let first: usize = f[2].parse().unwrap();
        let last: usize = f[3].parse().unwrap();
        let sum: f64 = f[4].parse().unwrap();
        let max: f64 = f[5].parse().unwrap();
        let moment: f64 = f[6].parse().unwrap();
        let which = usize::from(n_mels == 128);
        let row = &banks[which][i * n_freqs..(i + 1) * n_freqs];
        let nz: Vec<usize> = (0..n_freqs).filter(|&k| row[k] != 0.0).collect();
        assert_eq!(
            (nz[0], *nz.last().unwrap()),
            (first, last),
            "n_mels {n_mels} row {i} support"
        );
        let got_sum: f64 = row.iter().map(|&w| f64::from(w)).sum();
        let got_max = row.iter().copied().fold(0.0f32, f32::max);
        assert!(
            (got_sum - sum).abs() <= 1e-6 * sum.abs().max(1e-3),
            "n_mels {n_mels} row {i}: sum {got_sum} vs {sum}"
        );
        assert!(
            (f64::from(got_max) - max).abs() <= 1e-6 * max,
            "n_mels {n_mels} row {i}: max {got_max} vs {max}"
        );
        let got_moment: f64 = row
            .iter()
            .enumerate()
            .map(|(k, &w)| k as f64 * f64::from(w))
            .sum();
        assert!(
            (got_moment - moment).abs() <= 1e-6 * moment,
            "n_mels {n_mels} row {i}: first moment {got_moment} vs {moment}"
        );
        rows_checked[which] += 1;
    }
    assert_eq!(rows_checked, [80, 128]);
}

#[test]
fn frame_count_and_padding() {
    let filters = MelFilters::new(80);
    for (len, padding) in [
        (0, 0),
        (1, 0),
        (159, 0),
        (160, 0),
        (161, 0),
        (300, 0),
        (1000, 7),
    ] {
        let samples = vec![0.01f32; len];
        let mel = log_mel_spectrogram(&samples, &filters, padding);
        assert_eq!(mel.n_frames, (len + padding) / HOP_LENGTH, "len {len}");
        assert_eq!(mel.data.len(), mel.n_frames * 80);
        assert!(mel.data.iter().all(|v| v.is_finite()));
    }
    // transcribe(): padding = N_SAMPLES adds exactly N_FRAMES frames.
    let speech = jfk_2s();
    let padded = log_mel_spectrogram(&speech, &filters, N_SAMPLES);
    assert_eq!(padded.n_frames, 200 + N_FRAMES);
    // Digital silence: every padded frame away from the speech sits at the floor,
    // max - 8 in log10, i.e. (max - 8 + 4) / 4.
    let max = padded
        .data
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let floor = (max - 2.0).max((-10.0 + 4.0) / 4.0);
    for f in 210..padded.n_frames {
        assert!(
            padded.frame(f).iter().all(|&v| (v - floor).abs() < 1e-6),
            "frame {f} is not at the floor {floor}"
        );
    }
    // The speech part is unchanged by appended silence when the max is the same.
    let plain = log_mel_spectrogram(&speech, &filters, 0);
    let plain_max = plain.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert!((plain_max - max).abs() < 1e-6);
    assert!(max_abs_diff(&plain.data[..198 * 80], &padded.data[..198 * 80]) < 1e-6);
}

#[test]
fn all_silence_is_constant() {
    let filters = MelFilters::new(128);
    let mel = log_mel_spectrogram(&vec![0.0; 4000], &filters, 0);
    assert_eq!(mel.n_frames, 25);
    // log10(1e-10) = -10 everywhere; max - 8 = -18 does not bite; (-10 + 4) / 4.
    assert!(mel.data.iter().all(|&v| v == -1.5));
}

#[test]
fn window_pads_with_zeros() {
    let filters = MelFilters::new(80);
    let mel = log_mel_spectrogram(&jfk_2s(), &filters, 0);
    assert_eq!(mel.n_frames, 200);

    // A full window inside the spectrogram is a plain copy.
    let w = mel.window(10, 50);
    assert_eq!(w.len(), 50 * 80);
    assert_eq!(&w[..], &mel.data[10 * 80..60 * 80]);

    // A 30 s window over 2 s: 200 frames of data, then zeros (pad_or_trim on the mel).
    let w = mel.window(0, N_FRAMES);
    assert_eq!(w.len(), N_FRAMES * 80);
    assert_eq!(&w[..200 * 80], &mel.data[..]);
    assert!(w[200 * 80..].iter().all(|&v| v == 0.0));

    // Straddling the end.
    let w = mel.window(150, 100);
    assert_eq!(&w[..50 * 80], &mel.data[150 * 80..]);
    assert!(w[50 * 80..].iter().all(|&v| v == 0.0));

    // Entirely past the end (or past usize::MAX arithmetic) is all zeros.
    assert!(mel.window(500, 10).iter().all(|&v| v == 0.0));
    assert!(mel.window(usize::MAX, 2).iter().all(|&v| v == 0.0));
    assert!(mel.window(3, 0).is_empty());

    // frame(i) is row i of the frame-major data.
    assert_eq!(mel.frame(7), &mel.data[7 * 80..8 * 80]);
}

/// The whole jfk.wav, when it is around (`$STENO_ASSETS/speech/jfk.wav`, by default
/// `~/.cache/steno/assets/speech/jfk.wav`): its first 2 s of mel match the reference
/// except for the global-max floor, and the output is sane.
#[test]
fn full_jfk_when_present() {
    let dir = std::env::var_os("STENO_ASSETS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/steno/assets")));
    let Some(path) = dir.map(|d| d.join("speech/jfk.wav")).filter(|p| p.exists()) else {
        println!("skipping: jfk.wav not found (set STENO_ASSETS)");
        return;
    };
    let samples = read_wav_s16_mono_16k(&path);
    assert_eq!(&samples[..2 * SAMPLE_RATE], &jfk_2s()[..]);
    let filters = MelFilters::new(80);
    let mel = log_mel_spectrogram(&samples, &filters, N_SAMPLES);
    assert_eq!(mel.n_frames, (samples.len() + N_SAMPLES) / HOP_LENGTH);
    assert!(mel.data.iter().all(|v| v.is_finite()));
    let max = mel.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = mel.data.iter().copied().fold(f32::INFINITY, f32::min);
    assert!(
        (min - (max - 2.0)).abs() < 1e-5,
        "floor is max - 8 in log10"
    );
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

/// Timing: 10 minutes of audio (jfk's 2 s excerpt tiled, plus noise so no frame repeats
/// exactly) on one thread. Run with
/// `cargo test --release -p steno-whisper --test mel -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_ten_minutes() {
    let excerpt = jfk_2s();
    let n = 600 * SAMPLE_RATE;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let samples: Vec<f32> = (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            excerpt[i % excerpt.len()] + ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1e-3
        })
        .collect();
    for n_mels in [80, 128] {
        let t = Instant::now();
        let filters = MelFilters::new(n_mels);
        let build = t.elapsed();
        let mut best = f64::INFINITY;
        let mut mel = Mel {
            n_mels,
            n_frames: 0,
            data: Vec::new(),
        };
        for _ in 0..3 {
            let t = Instant::now();
            mel = log_mel_spectrogram(&samples, &filters, N_SAMPLES);
            best = best.min(t.elapsed().as_secs_f64());
        }
        assert_eq!(mel.n_frames, (n + N_SAMPLES) / HOP_LENGTH);
        println!(
            "n_mels {n_mels}: 10 min of audio (+30 s padding, {} frames) in {:.1} ms \
             (best of 3; filterbank + plan {:.2} ms)",
            mel.n_frames,
            best * 1e3,
            build.as_secs_f64() * 1e3
        );
    }
}
