//! Decoding tests: every path ends in typed errors or correct 16 kHz audio, never a panic.

use std::time::{Duration, Instant};

use crate::testutil::*;
use crate::{decode, decode_owned, decode_raw_pcm_s16le, Audio, AudioError, Limits, SAMPLE_RATE};

fn limits() -> Limits {
    Limits::default()
}

fn decode_ok(bytes: &[u8], hint: Option<&str>) -> Audio {
    decode(bytes, hint, &limits()).unwrap_or_else(|e| panic!("decode failed: {e}"))
}

fn middle(x: &[f32]) -> &[f32] {
    &x[x.len() / 5..x.len() * 4 / 5]
}

#[test]
fn wav_16k_mono_passes_through_unchanged() {
    let signal = sine(440.0, 0.5, 16_000, 1.0);
    let audio = decode_ok(
        &wav_bytes(&signal, 16_000, 1, WavFormat::S16),
        Some("speech.wav"),
    );
    assert_eq!(audio.source_rate, 16_000);
    assert_eq!(audio.source_channels, 1);
    assert_eq!(audio.samples.len(), 16_000);
    assert!((audio.duration_seconds - 1.0).abs() < 1e-9);
    for (got, want) in audio.samples.iter().zip(&signal) {
        assert!(
            (got - want).abs() <= 1.0 / 32_768.0 + 1e-6,
            "{got} vs {want}"
        );
    }
}

#[test]
fn owned_and_borrowed_input_decode_alike() {
    let wav = wav_bytes(&sine(440.0, 0.5, 22_050, 0.5), 22_050, 1, WavFormat::S16);
    let borrowed = decode_ok(&wav, None);
    assert_eq!(
        decode_owned(wav.clone(), None, &limits()).unwrap(),
        borrowed
    );
    let shared: std::sync::Arc<[u8]> = wav.into();
    assert_eq!(
        decode_owned(shared, Some("a.wav"), &limits()).unwrap(),
        borrowed
    );
    assert_eq!(
        decode_owned(Vec::new(), None, &limits()),
        Err(AudioError::Empty)
    );
}

#[test]
fn sweeps_at_common_rates_round_trip_through_wav() {
    for rate in [8_000, 22_050, 44_100, 48_000] {
        let top = (0.35 * f64::from(rate)).min(6_000.0);
        let signal = sweep(100.0, top, 0.5, rate, 2.0);
        let audio = decode_ok(&wav_bytes(&signal, rate, 1, WavFormat::S16), None);
        assert_eq!(audio.source_rate, rate);
        assert!(
            (audio.duration_seconds - 2.0).abs() < 1e-3,
            "{rate}: {}",
            audio.duration_seconds
        );
        assert_eq!(audio.samples.len(), 32_000, "{rate}");
        // A sweep inside the passband keeps its level: rms of a sine is amplitude / sqrt 2.
        let level = rms(middle(&audio.samples));
        assert!(
            (level - 0.5 / 2f64.sqrt()).abs() < 0.01,
            "{rate}: rms {level}"
        );
    }
}

#[test]
fn stereo_with_different_channels_is_averaged() {
    let rate = 44_100;
    let left = sine(440.0, 0.5, rate, 1.0);
    let right = sine(1_000.0, 0.3, rate, 1.0);
    let wav = wav_bytes(&interleave(&[left, right]), rate, 2, WavFormat::S16);
    let audio = decode_ok(&wav, Some("audio/wav"));
    assert_eq!(audio.source_channels, 2);
    let mid = middle(&audio.samples);
    let a440 = amplitude_at(mid, SAMPLE_RATE, 440.0);
    let a1000 = amplitude_at(mid, SAMPLE_RATE, 1_000.0);
    assert!((a440 - 0.25).abs() < 0.005, "440 Hz amplitude {a440}");
    assert!((a1000 - 0.15).abs() < 0.005, "1 kHz amplitude {a1000}");
}

#[test]
fn many_channels_are_averaged() {
    let rate = 48_000;
    let channels: Vec<Vec<f32>> = (0..6)
        .map(|c| sine(300.0 + 200.0 * c as f64, 0.6, rate, 0.5))
        .collect();
    let audio = decode_ok(
        &wav_bytes(&interleave(&channels), rate, 6, WavFormat::S16),
        None,
    );
    assert_eq!(audio.source_channels, 6);
    let mid = middle(&audio.samples);
    for c in 0..6 {
        let a = amplitude_at(mid, SAMPLE_RATE, 300.0 + 200.0 * c as f64);
        assert!((a - 0.1).abs() < 0.005, "channel {c}: {a}");
    }
}

#[test]
fn every_wav_sample_format_decodes() {
    let rate = 22_050;
    let signal = sine(1_000.0, 0.5, rate, 0.5);
    let expected = sine(1_000.0, 0.5, SAMPLE_RATE, 0.5);
    for (format, tolerance) in [
        (WavFormat::U8, 0.02),
        (WavFormat::S16, 0.003),
        (WavFormat::S24, 0.003),
        (WavFormat::S32, 0.003),
        (WavFormat::F32, 0.003),
        (WavFormat::F64, 0.003),
        (WavFormat::ALaw, 0.03),
        (WavFormat::MuLaw, 0.03),
    ] {
        let audio = decode_ok(&wav_bytes(&signal, rate, 1, format), None);
        assert_eq!(audio.samples.len(), expected.len(), "{format:?}");
        let err = middle(&audio.samples)
            .iter()
            .zip(middle(&expected))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < tolerance, "{format:?}: max error {err}");
    }
}

#[test]
fn non_finite_float_samples_become_zero_and_output_is_clamped() {
    let mut signal = vec![0.0f32; 1_600];
    signal[100] = f32::NAN;
    signal[200] = f32::INFINITY;
    signal[300] = f32::NEG_INFINITY;
    signal[400] = 3.0; // over full scale
    let audio = decode_ok(&wav_bytes(&signal, 16_000, 1, WavFormat::F32), None);
    assert!(audio
        .samples
        .iter()
        .all(|s| s.is_finite() && (-1.0..=1.0).contains(s)));
    assert_eq!(audio.samples[100], 0.0);
    assert_eq!(audio.samples[200], 0.0);
    assert_eq!(audio.samples[400], 1.0);
    // Through the resampler too: one NaN must not wipe out its neighbourhood.
    let mut signal = sine(500.0, 0.5, 44_100, 0.5);
    signal[5_000] = f32::NAN;
    let audio = decode_ok(&wav_bytes(&signal, 44_100, 1, WavFormat::F32), None);
    assert!(audio.samples.iter().all(|s| s.is_finite()));
    assert!(rms(&audio.samples) > 0.3);
}

#[test]
fn flac_and_ogg_vorbis_round_trip_via_sox() {
    let rate = 44_100;
    let signal = interleave(&[sine(440.0, 0.5, rate, 1.5), sine(880.0, 0.3, rate, 1.5)]);
    let wav = wav_bytes(&signal, rate, 2, WavFormat::S16);
    let Some(flac) = sox_convert(&wav, "flac", &[]) else {
        return;
    };
    let audio = decode_ok(&flac, Some("x.flac"));
    assert_eq!((audio.source_rate, audio.source_channels), (rate, 2));
    assert!((audio.duration_seconds - 1.5).abs() < 1e-3);
    let mid = middle(&audio.samples);
    assert!((amplitude_at(mid, SAMPLE_RATE, 440.0) - 0.25).abs() < 0.005);
    assert!((amplitude_at(mid, SAMPLE_RATE, 880.0) - 0.15).abs() < 0.005);
    // The hint is only a hint: a FLAC named .mp3 still decodes.
    assert_eq!(
        decode_ok(&flac, Some("misnamed.mp3")).samples,
        audio.samples
    );

    let Some(ogg) = sox_convert(&wav, "ogg", &[]) else {
        return;
    };
    let audio = decode_ok(&ogg, Some("audio/ogg"));
    assert_eq!((audio.source_rate, audio.source_channels), (rate, 2));
    assert!(
        (audio.duration_seconds - 1.5).abs() < 0.01,
        "{}",
        audio.duration_seconds
    );
    let mid = middle(&audio.samples);
    assert!((amplitude_at(mid, SAMPLE_RATE, 440.0) - 0.25).abs() < 0.02);
    assert!((amplitude_at(mid, SAMPLE_RATE, 880.0) - 0.15).abs() < 0.02);

    // AIFF and 8 kHz µ-law AU, two more containers people send.
    for (ext, args) in [
        ("aiff", &[][..]),
        ("au", &["-r", "8000", "-e", "mu-law", "-c", "1"][..]),
    ] {
        let Some(bytes) = sox_convert(&wav, ext, args) else {
            return;
        };
        match decode(&bytes, Some(ext), &limits()) {
            Ok(audio) => assert!((audio.duration_seconds - 1.5).abs() < 0.01, "{ext}"),
            // symphonia reads AIFF but not Sun AU: that must be a clean typed refusal.
            Err(AudioError::Unsupported(message)) => assert_eq!(ext, "au", "{message}"),
            Err(other) => panic!("{ext}: {other}"),
        }
    }
}

#[test]
fn compressed_formats_match_ffmpegs_decoder() {
    let rate = 44_100;
    let seconds = 2.0;
    let signal = interleave(&[
        sweep(100.0, 6_000.0, 0.5, rate, seconds),
        sine(880.0, 0.3, rate, seconds),
    ]);
    let wav = wav_bytes(&signal, rate, 2, WavFormat::S16);
    // (what, extension, encoder arguments, decoded rate and channels, relative error allowed,
    // source frames of priming that ffmpeg trims and symphonia may not)
    #[allow(clippy::type_complexity)]
    let cases: &[(&str, &str, &[&str], (u32, u16), f64, usize)] = &[
        (
            "MP3",
            "mp3",
            &["-c:a", "libmp3lame", "-b:a", "128k"],
            (rate, 2),
            0.01,
            0,
        ),
        (
            "MP3, 22.05 kHz mono",
            "mp3",
            &["-c:a", "libmp3lame", "-ar", "22050", "-ac", "1"],
            (22_050, 1),
            0.01,
            0,
        ),
        // symphonia 0.5 ignores MP4 edit lists, so AAC keeps its 1024-frame encoder priming
        // (23 ms of silence at the start) where ffmpeg trims it.
        (
            "AAC-LC in M4A",
            "m4a",
            &["-c:a", "aac", "-b:a", "128k"],
            (rate, 2),
            0.01,
            1024,
        ),
        ("ALAC in M4A", "m4a", &["-c:a", "alac"], (rate, 2), 1e-4, 0),
        (
            "Vorbis in WebM",
            "webm",
            &["-c:a", "libvorbis"],
            (rate, 2),
            0.01,
            0,
        ),
        (
            "Vorbis in Ogg",
            "ogg",
            &["-c:a", "libvorbis"],
            (rate, 2),
            0.01,
            0,
        ),
        (
            "FLAC in Matroska",
            "mkv",
            &["-c:a", "flac"],
            (rate, 2),
            1e-4,
            0,
        ),
        (
            "µ-law WAV at 8 kHz",
            "wav",
            &["-c:a", "pcm_mulaw", "-ar", "8000"],
            (8_000, 2),
            1e-4,
            0,
        ),
        (
            "IMA ADPCM WAV",
            "wav",
            &["-c:a", "adpcm_ima_wav"],
            (rate, 2),
            1e-3,
            0,
        ),
        ("AIFF", "aiff", &[], (rate, 2), 1e-4, 0),
        ("CAF", "caf", &[], (rate, 2), 1e-4, 0),
        // ffmpeg (like Apple's afconvert) wraps the ALAC cookie in `frma` and `alac` atoms.
        ("ALAC in CAF", "caf", &["-c:a", "alac"], (rate, 2), 1e-4, 0),
    ];
    for &(what, ext, args, (decoded_rate, channels), tolerance, max_offset) in cases {
        let Some(bytes) = ffmpeg_convert(&wav, ext, &[], args) else {
            continue;
        };
        let audio = decode(&bytes, Some(ext), &limits()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            (audio.source_rate, audio.source_channels),
            (decoded_rate, channels),
            "{what}"
        );
        // Untrimmed priming at the start, and up to a frame of padding at the end.
        let expected_seconds = seconds + 2.0 * max_offset as f64 / f64::from(decoded_rate);
        assert!(
            audio.duration_seconds >= seconds - 0.01
                && audio.duration_seconds <= expected_seconds + 0.01,
            "{what}: {} s",
            audio.duration_seconds
        );
        // Reference: ffmpeg's decoder, then the same downmix and resampler.
        let Some(reference) = ffmpeg_decode(&bytes, ext) else {
            continue;
        };
        let ch = usize::from(channels);
        let mono: Vec<f32> = reference
            .chunks_exact(ch)
            .map(|f| f.iter().sum::<f32>() / ch as f32)
            .collect();
        let (offset, relative) = [0, max_offset]
            .into_iter()
            .map(|offset| {
                let mut padded = vec![0.0; offset];
                padded.extend_from_slice(&mono);
                let reference = crate::resample::resample_to_16k(&padded, decoded_rate).unwrap();
                let n = audio.samples.len().min(reference.len());
                let (ours, theirs) = (middle(&audio.samples[..n]), middle(&reference[..n]));
                let error: Vec<f32> = ours.iter().zip(theirs).map(|(a, b)| a - b).collect();
                (offset, rms(&error) / rms(theirs))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert!(
            relative < tolerance,
            "{what}: differs from ffmpeg by {relative:.5} (offset {offset})"
        );
    }

    // A video track first must not hide the audio track.
    if let Some(bytes) = ffmpeg_convert(
        &wav,
        "mkv",
        &["-f", "lavfi", "-i", "testsrc=size=64x64:rate=5"],
        &[
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "mpeg4",
            "-c:a",
            "libvorbis",
            "-shortest",
        ],
    ) {
        let audio = decode(&bytes, Some("video.mkv"), &limits()).expect("audio track of a video");
        assert!(audio.duration_seconds > 1.5, "{}", audio.duration_seconds);
    }

    // Opus (browser MediaRecorder, voice notes) is not in symphonia 0.5; libopus decodes it
    // (more in opus_tests.rs).
    for ext in ["ogg", "webm"] {
        let Some(bytes) = ffmpeg_convert(&wav, ext, &[], &["-c:a", "libopus"]) else {
            continue;
        };
        let audio = decode(&bytes, Some(ext), &limits()).unwrap_or_else(|e| panic!("{ext}: {e}"));
        assert_eq!((audio.source_rate, audio.source_channels), (48_000, 2));
        assert!((audio.duration_seconds - seconds).abs() < 0.02, "{ext}");
    }
}

#[test]
fn empty_and_oversized_uploads_are_refused_up_front() {
    assert_eq!(decode(&[], None, &limits()), Err(AudioError::Empty));
    let small = Limits {
        max_bytes: 100,
        ..limits()
    };
    assert_eq!(
        decode(&[0u8; 101], None, &small),
        Err(AudioError::TooLarge {
            bytes: 101,
            limit: 100
        })
    );
    // A valid container with no samples in it is also "empty".
    let header_only = wav_bytes(&[], 16_000, 1, WavFormat::S16);
    assert_eq!(
        decode(&header_only, None, &limits()),
        Err(AudioError::Empty)
    );
}

#[test]
fn garbage_is_a_typed_error_not_a_panic() {
    let mut rng = Rng::new(7);
    for size in [1, 3, 44, 100, 1_000, 10_000, 100_000, 2_000_000] {
        let bytes = rng.bytes(size);
        let result = bounded("random bytes", || decode(&bytes, None, &limits()));
        assert!(
            matches!(
                result,
                Err(AudioError::Unsupported(_) | AudioError::Corrupt(_))
            ),
            "{size} random bytes: {result:?}"
        );
        let zeros = vec![0u8; size];
        let result = bounded("zero bytes", || decode(&zeros, Some("wav"), &limits()));
        assert!(
            matches!(
                result,
                Err(AudioError::Unsupported(_) | AudioError::Corrupt(_))
            ),
            "{size} zeros: {result:?}"
        );
    }
    let text = b"this is not audio, it is a text file with a .mp3 name".repeat(100);
    let result = decode(&text, Some("notes.mp3"), &limits());
    match result {
        Err(AudioError::Unsupported(message)) => {
            assert!(
                message.contains("notes.mp3") && message.contains("FLAC"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupted_real_files_never_panic() {
    // Flip bytes all over valid files: decoders must return errors or audio, nothing else.
    let rate = 22_050;
    let signal = sine(700.0, 0.5, rate, 1.0);
    let mut files = vec![("wav", wav_bytes(&signal, rate, 1, WavFormat::S16))];
    let wav = wav_bytes(&signal, rate, 1, WavFormat::S16);
    if let Some(flac) = sox_convert(&wav, "flac", &[]) {
        files.push(("flac", flac));
    }
    if let Some(ogg) = sox_convert(&wav, "ogg", &[]) {
        files.push(("ogg", ogg));
    }
    let mut rng = Rng::new(99);
    for (name, file) in &files {
        for trial in 0..40 {
            let mut damaged = file.clone();
            let flips = 1 + trial % 20;
            for _ in 0..flips {
                let at = (rng.next_u64() as usize) % damaged.len();
                damaged[at] = (rng.next_u64() >> 56) as u8;
            }
            let result = bounded("damaged file", || decode(&damaged, Some(name), &limits()));
            if let Ok(audio) = result {
                assert!(audio
                    .samples
                    .iter()
                    .all(|s| s.is_finite() && s.abs() <= 1.0));
            }
        }
    }
}

#[test]
fn truncated_files() {
    let signal = sine(440.0, 0.5, 16_000, 2.0);
    let wav = wav_bytes(&signal, 16_000, 1, WavFormat::S16);
    // Cut inside the header: nothing to decode.
    for cut in [4, 12, 20, 30, 40] {
        let result = decode(&wav[..cut], None, &limits());
        assert!(
            matches!(
                result,
                Err(AudioError::Corrupt(_) | AudioError::Unsupported(_))
            ),
            "cut at {cut}: {result:?}"
        );
    }
    // Cut in the data: the audio that arrived is decoded (like ffmpeg, unlike a hard error),
    // and the reported duration is what was really there.
    let audio = decode_ok(&wav[..46 + 2 * 20_000], None);
    assert!(
        audio.duration_seconds > 1.0 && audio.duration_seconds <= 1.25,
        "{}",
        audio.duration_seconds
    );
    assert!((audio.samples.len() as f64 - audio.duration_seconds * 16_000.0).abs() < 1e-6);

    if let Some(flac) = sox_convert(&wav, "flac", &[]) {
        let result = bounded("truncated flac", || {
            decode(&flac[..flac.len() / 2], None, &limits())
        });
        let audio = result.expect("half a FLAC still holds audio");
        assert!(audio.duration_seconds > 0.5 && audio.duration_seconds < 1.6);
        assert!(matches!(
            decode(&flac[..30], None, &limits()),
            Err(AudioError::Corrupt(_) | AudioError::Unsupported(_))
        ));
    }
}

#[test]
fn declared_length_over_the_limit_is_refused_before_decoding() {
    let signal = sine(440.0, 0.5, 16_000, 2.0);
    let wav = wav_bytes(&signal, 16_000, 1, WavFormat::S16);
    let short = Limits {
        max_duration_seconds: 1.0,
        ..limits()
    };
    assert_eq!(
        decode(&wav, None, &short),
        Err(AudioError::TooLong {
            seconds: 2.0,
            limit: 1.0
        })
    );
    // FLAC's STREAMINFO declares the total length: claim 10 hours over a tiny body.
    if let Some(mut flac) = sox_convert(&wav, "flac", &[]) {
        // STREAMINFO starts at byte 8; total samples are the low 36 bits at bytes 21..26.
        let total: u64 = 10 * 3600 * 16_000;
        flac[21] = (flac[21] & 0xF0) | ((total >> 32) as u8 & 0x0F);
        flac[22..26].copy_from_slice(&(total as u32).to_be_bytes());
        match bounded("lying flac", || decode(&flac, None, &limits())) {
            Err(AudioError::TooLong { seconds, limit }) => {
                assert_eq!(seconds, 36_000.0);
                assert_eq!(limit, 3.0 * 3600.0);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn wav_header_claiming_hours_with_a_tiny_body() {
    // A PCM header claiming more data than the upload holds is a placeholder (streaming
    // encoders write 0xFFFFFFFF) or a truncated file: decode what is there, quickly.
    let body: Vec<u8> = sine(440.0, 0.5, 16_000, 0.5)
        .iter()
        .flat_map(|&s| ((s * 32_767.0) as i16).to_le_bytes())
        .collect();
    for (data_len, riff_len) in [(u32::MAX, u32::MAX), (0x7FFF_0000, 0x7FFF_0024)] {
        let mut wav = wav_header(1, 1, 16_000, 16, data_len, riff_len);
        wav.extend_from_slice(&body);
        let audio = bounded("lying wav", || decode(&wav, None, &limits())).expect("body decodes");
        assert!(
            (audio.duration_seconds - 0.5).abs() < 0.1,
            "{}",
            audio.duration_seconds
        );
        // …and the limit is still enforced on what is actually decoded.
        let tiny = Limits {
            max_duration_seconds: 0.25,
            ..limits()
        };
        assert!(matches!(
            decode(&wav, None, &tiny),
            Err(AudioError::TooLong { limit, .. }) if limit == 0.25
        ));
    }
}

#[test]
fn decoded_length_is_counted_against_the_limit() {
    // Streamed WAV (no usable length) that is really 3 s long, limit 2 s.
    let body: Vec<u8> = sine(440.0, 0.5, 48_000, 3.0)
        .iter()
        .flat_map(|&s| ((s * 32_767.0) as i16).to_le_bytes())
        .collect();
    let mut wav = wav_header(1, 1, 48_000, 16, u32::MAX, u32::MAX);
    wav.extend_from_slice(&body);
    let limits = Limits {
        max_duration_seconds: 2.0,
        ..limits()
    };
    match decode(&wav, None, &limits) {
        Err(AudioError::TooLong { seconds, limit }) => {
            assert!(seconds > 2.0 && seconds < 2.2, "{seconds}");
            assert_eq!(limit, 2.0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sample_budget_lowers_the_limit_for_wide_streams() {
    // 8 channels × 48 kHz is 4× the default budget rate: 1 s allowed of a 4 s limit.
    let channels: Vec<Vec<f32>> = (0..8).map(|_| sine(440.0, 0.1, 48_000, 1.5)).collect();
    let wav = wav_bytes(&interleave(&channels), 48_000, 8, WavFormat::S16);
    let limits = Limits {
        max_duration_seconds: 4.0,
        ..limits()
    };
    assert_eq!(
        decode(&wav, None, &limits),
        Err(AudioError::TooLong {
            seconds: 1.5,
            limit: 1.0
        })
    );
}

#[test]
fn bad_stream_parameters_are_typed_errors() {
    let body = vec![0u8; 3_200];
    let forge = |channels: u16, rate: u32| {
        let mut wav = wav_header(
            1,
            channels,
            rate,
            16,
            body.len() as u32,
            36 + body.len() as u32 + 2,
        );
        wav.extend_from_slice(&body);
        wav
    };
    for channels in [0, 33, 255, u16::MAX] {
        let result = bounded("bad channels", || {
            decode(&forge(channels, 16_000), None, &limits())
        });
        assert!(
            matches!(
                result,
                Err(AudioError::Corrupt(_) | AudioError::Unsupported(_))
            ),
            "{channels} channels: {result:?}"
        );
    }
    for rate in [0, 1, 999, 384_001, 4_000_000, u32::MAX] {
        let result = bounded("bad rate", || decode(&forge(1, rate), None, &limits()));
        assert!(
            matches!(result, Err(AudioError::Unsupported(ref m)) if m.contains("sample rate"))
                // symphonia itself rejects (or panics on, caught) a 0 Hz time base.
                || (rate == 0 && matches!(result, Err(AudioError::Corrupt(_)))),
            "{rate} Hz: {result:?}"
        );
    }
    // The extremes that are allowed do decode.
    for rate in [1_000, 384_000] {
        let audio = decode_ok(&forge(1, rate), None);
        assert_eq!(audio.source_rate, rate);
    }
}

#[test]
fn invalid_limits_are_rejected() {
    let wav = wav_bytes(&[0.0; 160], 16_000, 1, WavFormat::S16);
    for seconds in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let limits = Limits {
            max_duration_seconds: seconds,
            ..limits()
        };
        assert!(matches!(
            decode(&wav, None, &limits),
            Err(AudioError::InvalidParameter(_))
        ));
    }
}

#[test]
fn raw_pcm_s16le() {
    let rate = 48_000;
    let left = sine(440.0, 0.5, rate, 1.0);
    let right = sine(1_000.0, 0.3, rate, 1.0);
    let pcm: Vec<u8> = interleave(&[left, right])
        .iter()
        .flat_map(|&s| ((s * 32_767.0).round() as i16).to_le_bytes())
        .collect();
    let audio = decode_raw_pcm_s16le(&pcm, rate, Some(2), &limits()).unwrap();
    assert_eq!((audio.source_rate, audio.source_channels), (rate, 2));
    assert_eq!(audio.samples.len(), 16_000);
    let mid = middle(&audio.samples);
    assert!((amplitude_at(mid, SAMPLE_RATE, 440.0) - 0.25).abs() < 0.005);
    assert!((amplitude_at(mid, SAMPLE_RATE, 1_000.0) - 0.15).abs() < 0.005);

    // Same bytes through a WAV header give the same samples.
    let mut wav = wav_header(1, 2, rate, 16, pcm.len() as u32, 38 + pcm.len() as u32);
    wav.extend_from_slice(&pcm);
    assert_eq!(decode_ok(&wav, None).samples, audio.samples);

    let mono16k: Vec<u8> = [0i16, 16_384, -32_768, 32_767]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let audio = decode_raw_pcm_s16le(&mono16k, 16_000, None, &limits()).unwrap();
    assert_eq!(audio.samples, vec![0.0, 0.5, -1.0, 32_767.0 / 32_768.0]);

    let l = limits();
    assert!(matches!(
        decode_raw_pcm_s16le(&pcm, rate, Some(0), &l),
        Err(AudioError::InvalidParameter(_))
    ));
    assert!(matches!(
        decode_raw_pcm_s16le(&pcm, 500, Some(2), &l),
        Err(AudioError::InvalidParameter(_))
    ));
    assert!(matches!(
        decode_raw_pcm_s16le(&pcm[..6], rate, Some(2), &l),
        Err(AudioError::Corrupt(_))
    ));
    assert_eq!(
        decode_raw_pcm_s16le(&[], rate, None, &l),
        Err(AudioError::Empty)
    );
    let short = Limits {
        max_duration_seconds: 0.5,
        ..limits()
    };
    assert_eq!(
        decode_raw_pcm_s16le(&pcm, rate, Some(2), &short),
        Err(AudioError::TooLong {
            seconds: 1.0,
            limit: 0.5
        })
    );
}

#[test]
fn jfk_decodes() {
    let Some(wav) = jfk_wav() else { return };
    let audio = decode_ok(&wav, Some("jfk.wav"));
    assert_eq!((audio.source_rate, audio.source_channels), (16_000, 1));
    assert!((audio.duration_seconds - 11.0).abs() < 0.01);
    assert_eq!(audio.samples.len(), 176_000);
}

#[test]
fn error_messages_say_what_to_do() {
    let messages = [
        AudioError::Empty.to_string(),
        AudioError::TooLarge {
            bytes: 30_000_000,
            limit: 26_214_400,
        }
        .to_string(),
        AudioError::TooLong {
            seconds: 12_000.0,
            limit: 10_800.0,
        }
        .to_string(),
    ];
    assert!(messages[0].contains("empty"));
    assert!(messages[1].contains("30000000") && messages[1].contains("smaller"));
    assert!(
        messages[2].contains("12000.0")
            && messages[2].contains("10800.0")
            && messages[2].contains("split")
    );
}

/// `cargo test -p steno-audio --release -- --ignored --nocapture decode_speed`
#[test]
#[ignore = "timing; run in release"]
fn decode_speed_ten_minutes_44k1_stereo() {
    let rate = 44_100;
    let seconds = 600.0;
    let left = sweep(100.0, 6_000.0, 0.5, rate, seconds);
    let right = white_noise(0.1, rate, seconds, 3);
    let wav = wav_bytes(&interleave(&[left, right]), rate, 2, WavFormat::S16);
    let limits = Limits {
        max_bytes: wav.len(),
        ..limits()
    };
    let shared: std::sync::Arc<[u8]> = wav.clone().into();
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let audio = decode_owned(shared.clone(), Some("wav"), &limits).unwrap();
        best = best.min(started.elapsed());
        assert_eq!(audio.samples.len(), 600 * 16_000);
    }
    println!(
        "decode_owned of 10 min 44.1 kHz stereo WAV ({} MB) to 16 kHz mono: {best:?}",
        wav.len() >> 20
    );
    let started = Instant::now();
    decode(&wav, Some("wav"), &limits).unwrap();
    println!(
        "decode (copies the 100 MB input first): {:?}",
        started.elapsed()
    );
    let pcm = &wav[46..];
    let started = Instant::now();
    decode_raw_pcm_s16le(pcm, rate, Some(2), &limits).unwrap();
    println!("same as raw s16le PCM: {:?}", started.elapsed());
    if let Some(flac) = sox_convert(&wav, "flac", &[]) {
        let started = Instant::now();
        decode_owned(flac.clone(), None, &limits).unwrap();
        println!(
            "same as FLAC ({} MB): {:?}",
            flac.len() >> 20,
            started.elapsed()
        );
    }
    if let Some(ogg) = sox_convert(&wav, "ogg", &[]) {
        let started = Instant::now();
        decode_owned(ogg.clone(), None, &limits).unwrap();
        println!(
            "same as Ogg Vorbis ({} MB): {:?}",
            ogg.len() >> 20,
            started.elapsed()
        );
    }
    if !cfg!(debug_assertions) {
        assert!(best < Duration::from_secs(1), "{best:?}");
    }
}

/// Decode speed on real encoded files: every file in `$STENO_AUDIO_BENCH_DIR`, best of 3.
/// `STENO_AUDIO_BENCH_DIR=dir cargo test -p steno-audio --release -- --ignored --nocapture codec_speed`
#[test]
#[ignore = "timing; needs STENO_AUDIO_BENCH_DIR"]
fn codec_speed_on_files() {
    let Some(dir) = std::env::var_os("STENO_AUDIO_BENCH_DIR") else {
        eprintln!("skipping: set STENO_AUDIO_BENCH_DIR to a folder of audio files");
        return;
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let limits = Limits {
        max_bytes: usize::MAX,
        ..limits()
    };
    for path in paths {
        let bytes: std::sync::Arc<[u8]> = std::fs::read(&path).unwrap().into();
        let mut best = Duration::MAX;
        let mut audio = None;
        for _ in 0..3 {
            let started = Instant::now();
            audio = Some(decode_owned(bytes.clone(), None, &limits).unwrap());
            best = best.min(started.elapsed());
        }
        let audio = audio.unwrap();
        println!(
            "{}: {:.1} MB, {:.1} s of {} Hz × {} → 16 kHz mono in {best:?} ({:.0}× real time)",
            path.file_name().unwrap().to_string_lossy(),
            bytes.len() as f64 / 1e6,
            audio.duration_seconds,
            audio.source_rate,
            audio.source_channels,
            audio.duration_seconds / best.as_secs_f64()
        );
    }
}

#[test]
fn header_only_mp3_is_empty_not_endless() {
    // A LAME-tagged MP3 with no audio frames: symphonia's `frames - delay - padding`
    // wraps to ~2^64 frames, which must not be taken for a declared length (413).
    let wav = wav_bytes(&[], 16_000, 1, WavFormat::S16);
    let Some(mp3) = ffmpeg_convert(&wav, "mp3", &[], &["-c:a", "libmp3lame"]) else {
        return;
    };
    let result = bounded("header-only MP3", || decode(&mp3, Some("mp3"), &limits()));
    assert!(
        matches!(result, Err(AudioError::Empty | AudioError::Corrupt(_))),
        "{result:?}"
    );
}

#[test]
fn alac_cookies_wrapped_in_atoms_are_unwrapped() {
    // ffmpeg's CAF cookie: `frma` atom, `alac` atom header, then the 24-byte config.
    let config: [u8; 24] = [
        0, 0, 16, 0, 0, 16, 40, 10, 14, 1, 0, 0, 0, 0, 32, 4, 0, 3, 232, 0, 0, 0, 62, 128,
    ];
    let mut cookie = b"\0\0\0\x0cfrmaalac\0\0\0\x24alac\0\0\0\0".to_vec();
    cookie.extend_from_slice(&config);
    assert_eq!(
        crate::decode::alac_config(&cookie).as_deref(),
        Some(&config[..])
    );
    // Only the `alac` atom, with a channel layout and a terminator after the config.
    let mut layout = vec![0, 0, 0, 24];
    layout.extend_from_slice(b"chan");
    layout.extend_from_slice(&[0; 16]);
    let mut cookie = b"\0\0\0\x24alac\0\0\0\0".to_vec();
    cookie.extend_from_slice(&config);
    cookie.extend_from_slice(&layout);
    cookie.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0]);
    let mut expected = config.to_vec();
    expected.extend_from_slice(&layout);
    assert_eq!(
        crate::decode::alac_config(&cookie).as_deref(),
        Some(&expected[..])
    );
    // A bare config (M4A's) is left alone; truncated atoms give nothing to use.
    assert_eq!(crate::decode::alac_config(&config), None);
    assert_eq!(crate::decode::alac_config(b"\0\0\0\x0cfrmaalac"), None);
    assert_eq!(
        crate::decode::alac_config(b"\xff\xff\xff\xfffrmaalac\0\0\0\0"),
        None
    );
}

#[test]
fn full_scale_float_extremes_stay_finite() {
    // Found by `make fuzz` (decode target): stereo float WAV at ±f32::MAX summed to inf in
    // the downmix, which the resampler turned into NaN, which `clamp` kept.
    let signal: Vec<f32> = (0..8_000)
        .map(|i| if i % 3 == 0 { f32::MAX } else { -f32::MAX })
        .collect();
    for rate in [8_000, 16_000] {
        let audio = decode_ok(&wav_bytes(&signal, rate, 2, WavFormat::F32), None);
        assert!(
            audio
                .samples
                .iter()
                .all(|s| s.is_finite() && (-1.0..=1.0).contains(s)),
            "{rate} Hz"
        );
    }
}

/// A CAF header, then `chunks` as (type, declared size, body).
fn caf(chunks: &[(&[u8; 4], i64, &[u8])]) -> Vec<u8> {
    let mut bytes = b"caff\x00\x01\x00\x00".to_vec();
    for (kind, size, body) in chunks {
        bytes.extend_from_slice(*kind);
        bytes.extend_from_slice(&size.to_be_bytes());
        bytes.extend_from_slice(body);
    }
    bytes
}

#[test]
fn caf_chunks_declaring_more_than_the_upload_are_corrupt_not_an_abort() {
    // Found by `make fuzz`: symphonia allocated the declared packet count up front and the
    // failed allocation aborted the process.
    let mut pakt = (1i64 << 56).to_be_bytes().to_vec();
    pakt.extend_from_slice(&[0; 18]);
    let huge_packet_table = caf(&[(b"pakt", pakt.len() as i64, &pakt)]);
    let huge_chunk = caf(&[(b"kuki", 1 << 40, &[0; 16])]);
    let negative_chunk = caf(&[(b"info", -5, &[0; 16])]);
    for (what, bytes) in [
        ("packet table", huge_packet_table),
        ("chunk size", huge_chunk),
        ("negative size", negative_chunk),
    ] {
        match decode(&bytes, Some("caf"), &Limits::default()) {
            Err(AudioError::Corrupt(message)) => {
                assert!(message.contains("CAF"), "{what}: {message}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn matroska_leaf_elements_larger_than_the_upload_are_corrupt_not_an_abort() {
    // Found by `make fuzz`: an EBML header, a Segment of unknown size, then a SimpleBlock
    // (0xA3) declaring 2^55 bytes, which symphonia allocated before reading.
    let mut bytes = vec![0x1A, 0x45, 0xDF, 0xA3, 0x80]; // EBML header, empty
    bytes.extend_from_slice(&[
        0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    bytes.extend_from_slice(&[0x1F, 0x43, 0xB6, 0x75, 0xFF]); // Cluster, unknown size
    bytes.extend_from_slice(&[0xA3, 0x01, 0x80, 0, 0, 0, 0, 0, 0]); // SimpleBlock, 2^55 bytes
    bytes.extend_from_slice(&[0; 32]);
    match decode(&bytes, Some("webm"), &Limits::default()) {
        Err(AudioError::Corrupt(message)) => assert!(message.contains("Matroska"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn matroska_lace_sizes_larger_than_their_block_are_corrupt_not_an_abort() {
    // Found by `make fuzz`: symphonia allocated each laced frame's declared size before
    // reading it, and a 2^40-byte lace in a 14-byte block aborted the process.
    let header = [
        0x1A, 0x45, 0xDF, 0xA3, 0x80, // EBML header, empty
        0x18, 0x53, 0x80, 0x67, 0xFF, // Segment, unknown size
        0x1F, 0x43, 0xB6, 0x75, 0xFF, // Cluster, unknown size
    ];
    // Track 1, timestamp 0, flags with the lacing bits, two frames (one size listed).
    let ebml = [0x81, 0, 0, 0b110, 1, 0x08, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    let xiph = [0x81, 0, 0, 0b010, 2, 255, 255, 255, 7, 1, 0, 0, 0, 0];
    let ebml_delta = [
        0x81, 0, 0, 0b110, 2, 0x82, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let fits = [
        0x81, 0, 0, 0b110, 1, 0x82, 0xAA, 0xBB, 0xCC, 0xDD, 0, 0, 0, 0,
    ];
    for (what, block, corrupt) in [
        ("EBML lace", ebml, true),
        ("Xiph lace", xiph, true),
        ("EBML delta", ebml_delta, true),
        ("lace that fits", fits, false),
    ] {
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&[0xA3, 0x80 | block.len() as u8]); // SimpleBlock
        bytes.extend_from_slice(&block);
        match decode(&bytes, Some("webm"), &Limits::default()) {
            Err(AudioError::Corrupt(message)) if corrupt => {
                assert!(message.contains("lacing"), "{what}: {message}")
            }
            Err(AudioError::Corrupt(message)) => {
                assert!(!message.contains("lacing"), "{what}: {message}")
            }
            Err(_) if !corrupt => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// An MP4 atom: 32-bit size, type, body.
fn atom(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut bytes = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(kind);
    bytes.extend_from_slice(body);
    bytes
}

#[test]
fn mp4_tables_larger_than_their_atom_are_corrupt_not_an_abort() {
    // Found by `make fuzz`: symphonia allocated a sample table's declared entries (26 GB)
    // before reading them.
    let mut stco = vec![0, 0, 0, 0];
    stco.extend_from_slice(&0x8000_0000u32.to_be_bytes());
    let stbl = atom(b"stbl", &atom(b"stco", &stco));
    let moov = atom(
        b"moov",
        &atom(b"trak", &atom(b"mdia", &atom(b"minf", &stbl))),
    );
    let mut bytes = atom(b"ftyp", b"M4A \0\0\0\0");
    bytes.extend_from_slice(&moov);
    match decode(&bytes, Some("m4a"), &Limits::default()) {
        Err(AudioError::Corrupt(message)) => assert!(message.contains("MP4"), "{message}"),
        other => panic!("{other:?}"),
    }
}
