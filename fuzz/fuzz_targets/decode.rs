//! The audio decoder on hostile bytes: `steno_audio::decode` must return `Ok` or a typed
//! error (never abort, hang or exhaust memory), and any audio it returns must honour the
//! crate's contract (finite samples in [-1, 1], a sane rate and channel count, no more
//! audio than the duration limit).
//!
//! Input: the first byte picks the filename hint (the server passes the upload's
//! extension); the rest is the uploaded file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steno_audio::{Limits, MAX_CHANNELS, MAX_SOURCE_RATE, MIN_SOURCE_RATE, SAMPLE_RATE};

const HINTS: [Option<&str>; 14] = [
    None,
    Some("wav"),
    Some("flac"),
    Some("mp3"),
    Some("ogg"),
    Some("opus"),
    Some("webm"),
    Some("mkv"),
    Some("m4a"),
    Some("mp4"),
    Some("aiff"),
    Some("caf"),
    Some("audio/ogg; codecs=opus"),
    Some("bin"),
];

/// Ten minutes rather than the server's three hours, so that one input (a tiny file that
/// decodes to hours of silence) cannot take seconds: the bound is what is tested.
const MAX_SECONDS: f64 = 600.0;

fuzz_target!(
    init: {
        // Panics inside the decoders are caught by `decode` and reported as
        // `AudioError::Corrupt` (the server's contract); libFuzzer's hook would abort on
        // them before the catch. Keep them quiet instead. A panic that escapes `decode`
        // still aborts: libfuzzer-sys aborts on any panic out of the target.
        if std::env::var_os("STENO_FUZZ_PANIC_IS_CRASH").is_none() {
            std::panic::set_hook(Box::new(|_| {}));
        }
    },
    |data: &[u8]| {
        let Some((&selector, file)) = data.split_first() else {
            return;
        };
        let hint = HINTS[usize::from(selector) % HINTS.len()];
        let limits = Limits {
            max_duration_seconds: MAX_SECONDS,
            ..Limits::default()
        };
        let Ok(audio) = steno_audio::decode(file, hint, &limits) else {
            return;
        };
        assert!(
            (MIN_SOURCE_RATE..=MAX_SOURCE_RATE).contains(&audio.source_rate),
            "source rate {}",
            audio.source_rate
        );
        assert!(
            (1..=MAX_CHANNELS).contains(&audio.source_channels),
            "channels {}",
            audio.source_channels
        );
        assert!(
            audio.duration_seconds.is_finite()
                && audio.duration_seconds > 0.0
                && audio.duration_seconds <= MAX_SECONDS,
            "duration {}",
            audio.duration_seconds
        );
        // The resampler may add a filter's length at the end, never a second.
        let most = (audio.duration_seconds + 1.0) * f64::from(SAMPLE_RATE);
        assert!(
            audio.samples.len() as f64 <= most,
            "{} samples for {} s",
            audio.samples.len(),
            audio.duration_seconds
        );
        assert!(
            audio
                .samples
                .iter()
                .all(|s| s.is_finite() && (-1.0..=1.0).contains(s)),
            "samples outside [-1, 1]"
        );
    }
);
