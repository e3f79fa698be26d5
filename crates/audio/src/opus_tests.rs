//! Opus tests: real speech encoded by ffmpeg's libopus (and ffmpeg's own encoder) in Ogg and
//! WebM, decoded through `decode`, compared with the source and with libopus via ffmpeg;
//! then truncated, corrupted and forged Opus, which must fail typed, fast and bounded.

use std::time::Instant;

use symphonia::core::codecs::{CodecParameters, Decoder, DecoderOptions, CODEC_TYPE_OPUS};
use symphonia::core::errors::Error as SymphoniaError;

use crate::opus::{OpusDecoder, OPUS_RATE};
use crate::testutil::*;
use crate::{decode, Audio, AudioError, Limits, SAMPLE_RATE};

fn limits() -> Limits {
    Limits::default()
}

/// 11 s of real speech at 16 kHz: jfk.wav, or (only where the assets were not fetched)
/// synthetic voiced speech so the tests still run.
fn speech() -> Vec<f32> {
    match jfk_wav() {
        Some(wav) => {
            let audio = decode(&wav, Some("jfk.wav"), &limits()).unwrap();
            assert_eq!(audio.source_rate, SAMPLE_RATE);
            audio.samples
        }
        None => {
            eprintln!("using synthetic speech instead of jfk.wav");
            pseudo_speech(11.0, 0.5, 11)
        }
    }
}

/// The speech as a 16 kHz WAV with `channels` channels (the second one a different,
/// quieter utterance: the later part of the speech), and the mono mix `decode` should
/// reproduce.
fn speech_wav(channels: u16) -> (Vec<u8>, Vec<f32>) {
    let left = speech();
    if channels == 1 {
        return (wav_bytes(&left, SAMPLE_RATE, 1, WavFormat::S16), left);
    }
    let offset = left.len() / 3;
    let right: Vec<f32> = (0..left.len())
        .map(|i| 0.6 * left[(i + offset) % left.len()])
        .collect();
    let mono = left
        .iter()
        .zip(&right)
        .map(|(l, r)| (l + r) / 2.0)
        .collect();
    (
        wav_bytes(&interleave(&[left, right]), SAMPLE_RATE, 2, WavFormat::S16),
        mono,
    )
}

/// Encodes with ffmpeg; `None` (reason printed) when ffmpeg or the encoder is missing.
fn encode(wav: &[u8], ext: &str, args: &[&str]) -> Option<Vec<u8>> {
    ffmpeg_convert(wav, ext, &[], args)
}

/// The lag (in samples, within ±`max_lag`) at which `ours` best matches `reference`:
/// positive when ours is late.
fn best_lag(ours: &[f32], reference: &[f32], max_lag: isize) -> isize {
    let n = ours.len().min(reference.len()) as isize;
    (-max_lag..=max_lag)
        .max_by(|&a, &b| {
            let score = |lag: isize| -> f64 {
                (0.max(lag)..n.min(n + lag))
                    .map(|i| f64::from(ours[i as usize]) * f64::from(reference[(i - lag) as usize]))
                    .sum()
            };
            score(a).total_cmp(&score(b))
        })
        .unwrap()
}

/// Signal-to-noise ratio in dB of `ours` against `reference`, `ours` shifted back by `lag`.
fn snr_db(ours: &[f32], reference: &[f32], lag: isize) -> f64 {
    let n = ours.len().min(reference.len()) as isize;
    let (mut signal, mut noise) = (0f64, 0f64);
    for i in 0.max(lag)..n.min(n + lag) {
        let want = f64::from(reference[(i - lag) as usize]);
        let got = f64::from(ours[i as usize]);
        signal += want * want;
        noise += (got - want) * (got - want);
    }
    10.0 * (signal / noise.max(1e-20)).log10()
}

/// Pearson correlation of 20 ms RMS envelopes.
fn envelope_correlation(a: &[f32], b: &[f32]) -> f64 {
    let hop = (SAMPLE_RATE / 50) as usize;
    let n = a.len().min(b.len()) / hop;
    let env = |x: &[f32]| -> Vec<f64> { (0..n).map(|i| rms(&x[i * hop..(i + 1) * hop])).collect() };
    let (ea, eb) = (env(a), env(b));
    let mean = |e: &[f64]| e.iter().sum::<f64>() / e.len() as f64;
    let (ma, mb) = (mean(&ea), mean(&eb));
    let cov: f64 = ea.iter().zip(&eb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let var = |e: &[f64], m: f64| e.iter().map(|x| (x - m) * (x - m)).sum::<f64>();
    cov / (var(&ea, ma) * var(&eb, mb)).sqrt()
}

/// ffmpeg's libopus decode of `bytes`, mixed to mono and put through the same resampler.
fn libopus_reference(bytes: &[u8], ext: &str, channels: usize) -> Option<Vec<f32>> {
    let decoded = ffmpeg_decode_using(bytes, ext, Some("libopus"))?;
    let mono: Vec<f32> = decoded
        .chunks_exact(channels)
        .map(|f| f.iter().sum::<f32>() / channels as f32)
        .collect();
    Some(crate::resample::resample_to_16k(&mono, OPUS_RATE).unwrap())
}

#[test]
fn real_speech_in_ogg_and_webm_decodes_like_the_source() {
    // (container, channels, rate the encoder gets, encoder arguments)
    #[allow(clippy::type_complexity)]
    let cases: &[(&str, u16, u32, &[&str])] = &[
        ("opus", 1, 16_000, &["-c:a", "libopus"]),
        ("opus", 1, 48_000, &["-c:a", "libopus", "-ar", "48000"]),
        ("opus", 2, 16_000, &["-c:a", "libopus"]),
        (
            "opus",
            2,
            48_000,
            &["-c:a", "libopus", "-ar", "48000", "-b:a", "96k"],
        ),
        ("webm", 1, 16_000, &["-c:a", "libopus"]),
        ("webm", 1, 48_000, &["-c:a", "libopus", "-ar", "48000"]),
        ("webm", 2, 16_000, &["-c:a", "libopus"]),
        (
            "webm",
            2,
            48_000,
            &["-c:a", "libopus", "-ar", "48000", "-b:a", "96k"],
        ),
        // Voice notes are low-rate SILK; ffmpeg's own encoder makes CELT-only streams.
        (
            "ogg",
            1,
            16_000,
            &["-c:a", "libopus", "-b:a", "16k", "-application", "voip"],
        ),
        (
            "oga",
            2,
            48_000,
            &[
                "-c:a", "opus", "-strict", "-2", "-ar", "48000", "-b:a", "128k",
            ],
        ),
    ];
    let mut ran = 0;
    for &(ext, channels, rate, args) in cases {
        let (wav, source) = speech_wav(channels);
        let Some(bytes) = encode(&wav, ext, args) else {
            continue;
        };
        let what = format!("{ext}, {channels} ch, {rate} Hz input, {args:?}");
        let audio: Audio = decode(&bytes, Some(&format!("speech.{ext}")), &limits())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            (audio.source_rate, audio.source_channels),
            (OPUS_RATE, channels),
            "{what}"
        );
        // Length: Ogg trims pre-skip and end padding exactly; WebM keeps the end padding
        // (under one 20 ms frame), symphonia's Matroska reader dropping DiscardPadding.
        let seconds = source.len() as f64 / f64::from(SAMPLE_RATE);
        let extra = audio.duration_seconds - seconds;
        assert!((-0.001..0.02).contains(&extra), "{what}: {extra} s extra");
        let extra_samples = audio.samples.len() as isize - source.len() as isize;
        assert!(
            (-16..320).contains(&extra_samples),
            "{what}: {extra_samples}"
        );
        if ext != "webm" {
            assert!(
                extra.abs() < 1e-3,
                "{what}: Ogg must be trimmed exactly ({extra} s)"
            );
        }

        // Aligned with the source: pre-skip (6.5 ms with libopus) was dropped, not kept.
        let lag = best_lag(&audio.samples, &source, 400);
        assert!(lag.abs() <= 1, "{what}: output is {lag} samples late");
        let snr = snr_db(&audio.samples, &source, lag);
        let envelope = envelope_correlation(&audio.samples, &source);
        let low_rate = args.contains(&"16k");
        let min_snr = if low_rate { 3.0 } else { 10.0 };
        assert!(snr >= min_snr, "{what}: SNR {snr:.1} dB");
        assert!(
            envelope >= 0.97,
            "{what}: envelope correlation {envelope:.3}"
        );

        // The same stream through libopus in ffmpeg: the same decoder, so nearly the same
        // samples (ffmpeg's libopus may be another version).
        if let Some(reference) = libopus_reference(&bytes, ext, usize::from(channels)) {
            let n = reference.len().min(audio.samples.len());
            let error: Vec<f32> = audio.samples[..n]
                .iter()
                .zip(&reference[..n])
                .map(|(a, b)| a - b)
                .collect();
            let relative = rms(&error) / rms(&reference[..n]);
            assert!(
                relative < 1e-3,
                "{what}: differs from libopus by {relative:.2e}"
            );
            eprintln!(
                "{what}: {} bytes, SNR {snr:.1} dB, envelope r {envelope:.3}, \
                 vs libopus {relative:.2e}, extra {:.1} ms",
                bytes.len(),
                extra * 1e3
            );
        }
        ran += 1;
    }
    if ran == 0 {
        eprintln!("skipping Opus round trips: ffmpeg could not encode Opus");
    }
}

#[test]
fn surround_opus_uses_the_multistream_decoder() {
    // 5.1 speech: libopus writes channel-mapping family 1 (4 streams, 2 of them coupled).
    // WAV order is FL FR FC LFE BL BR; the LFE channel, which the encoder low-passes,
    // stays silent.
    let speech = speech();
    let n = speech.len();
    let channels: Vec<Vec<f32>> = (0..6)
        .map(|c| {
            let offset = c * n / 6;
            let level = if c == 3 { 0.0 } else { 0.5 };
            (0..n).map(|i| level * speech[(i + offset) % n]).collect()
        })
        .collect();
    let mono: Vec<f32> = (0..n)
        .map(|i| channels.iter().map(|c| c[i]).sum::<f32>() / 6.0)
        .collect();
    let wav = wav_bytes(&interleave(&channels), SAMPLE_RATE, 6, WavFormat::S16);
    for ext in ["opus", "webm"] {
        let Some(bytes) = encode(&wav, ext, &["-c:a", "libopus", "-b:a", "256k"]) else {
            return;
        };
        let audio = decode(&bytes, Some(ext), &limits()).unwrap_or_else(|e| panic!("{ext}: {e}"));
        assert_eq!((audio.source_rate, audio.source_channels), (OPUS_RATE, 6));
        let lag = best_lag(&audio.samples, &mono, 400);
        assert!(lag.abs() <= 1, "{ext}: {lag}");
        let envelope = envelope_correlation(&audio.samples, &mono);
        assert!(
            envelope >= 0.95,
            "{ext}: envelope correlation {envelope:.3}"
        );
        if let Some(reference) = libopus_reference(&bytes, ext, 6) {
            let k = reference.len().min(audio.samples.len());
            let error: Vec<f32> = audio.samples[..k]
                .iter()
                .zip(&reference[..k])
                .map(|(a, b)| a - b)
                .collect();
            let relative = rms(&error) / rms(&reference[..k]);
            assert!(
                relative < 1e-3,
                "{ext}: differs from libopus by {relative:.2e}"
            );
        }
    }
}

// ---- Ogg pages, to take real files apart and to forge hostile ones ----

/// Ogg's CRC-32 (polynomial 0x04C11DB7, no reflection, initial 0).
fn ogg_crc(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[derive(Clone)]
struct OggPage {
    /// The 27-byte header (its CRC field is recomputed on writing).
    header: Vec<u8>,
    lacing: Vec<u8>,
    body: Vec<u8>,
}

fn ogg_pages(file: &[u8]) -> Vec<OggPage> {
    let mut pages = Vec::new();
    let mut at = 0;
    while at + 27 <= file.len() {
        assert_eq!(&file[at..at + 4], b"OggS", "page at {at}");
        let segments = usize::from(file[at + 26]);
        let lacing = file[at + 27..at + 27 + segments].to_vec();
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let body_at = at + 27 + segments;
        pages.push(OggPage {
            header: file[at..at + 27].to_vec(),
            lacing,
            body: file[body_at..body_at + body_len].to_vec(),
        });
        at = body_at + body_len;
    }
    pages
}

fn ogg_bytes(pages: &[OggPage]) -> Vec<u8> {
    let mut out = Vec::new();
    for page in pages {
        let start = out.len();
        out.extend_from_slice(&page.header);
        out[start + 22..start + 26].fill(0);
        out[start + 26] = page.lacing.len() as u8;
        out.extend_from_slice(&page.lacing);
        out.extend_from_slice(&page.body);
        let crc = ogg_crc(&out[start..]);
        out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// A page holding whole `packets` (each under 64 KiB).
fn ogg_page(flags: u8, granule: u64, sequence: u32, packets: &[&[u8]]) -> OggPage {
    let mut header = Vec::with_capacity(27);
    header.extend_from_slice(b"OggS");
    header.push(0);
    header.push(flags);
    header.extend_from_slice(&granule.to_le_bytes());
    header.extend_from_slice(&0x5354_454Eu32.to_le_bytes());
    header.extend_from_slice(&sequence.to_le_bytes());
    header.extend_from_slice(&[0; 5]);
    let mut lacing = Vec::new();
    let mut body = Vec::new();
    for packet in packets {
        lacing.extend(std::iter::repeat_n(255, packet.len() / 255));
        lacing.push((packet.len() % 255) as u8);
        body.extend_from_slice(packet);
    }
    assert!(lacing.len() <= 255);
    OggPage {
        header,
        lacing,
        body,
    }
}

/// An `OpusHead` for `channels` channels; families other than 0 get one stream per channel.
fn opus_head(channels: u8, family: u8, pre_skip: u16) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(channels);
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(family);
    if family != 0 {
        head.push(channels);
        head.push(0);
        head.extend(0..channels);
    }
    head
}

/// A complete Ogg Opus file: `head`, tags, then `packets` of `frames` samples each (empty
/// ones none), up to 200 per page, with correct granule positions. Without `eos` the last
/// page lacks the end-of-stream flag, as in a live stream cut off: no declared length.
fn ogg_opus(head: &[u8], packets: &[Vec<u8>], frames: u64, eos: bool) -> Vec<u8> {
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&5u32.to_le_bytes());
    tags.extend_from_slice(b"steno");
    tags.extend_from_slice(&0u32.to_le_bytes());
    let mut pages = vec![ogg_page(2, 0, 0, &[head]), ogg_page(0, 0, 1, &[&tags])];
    let chunks: Vec<&[Vec<u8>]> = packets.chunks(200).collect();
    let mut granule = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        granule += chunk.iter().filter(|p| !p.is_empty()).count() as u64 * frames;
        let last = if eos && i + 1 == chunks.len() { 4 } else { 0 };
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        pages.push(ogg_page(last, granule, 2 + i as u32, &refs));
    }
    ogg_bytes(&pages)
}

/// Calls `f` with each (page index, byte range in that page's body) of every packet in
/// the audio pages (after the two header pages), in order, with the packet's index.
/// Packets split over pages are reported piece by piece under one index.
fn for_each_audio_packet(pages: &[OggPage], mut f: impl FnMut(usize, usize, usize, usize)) {
    let mut packet = 0;
    for (p, page) in pages.iter().enumerate().skip(2) {
        let mut at = 0;
        let mut start = 0;
        for &lace in &page.lacing {
            at += usize::from(lace);
            if lace < 255 {
                f(packet, p, start, at);
                packet += 1;
                start = at;
            }
        }
        if start < at {
            f(packet, p, start, at);
        }
    }
}

fn speech_ogg_opus(channels: u16) -> Option<Vec<u8>> {
    let (wav, _) = speech_wav(channels);
    encode(&wav, "opus", &["-c:a", "libopus"])
}

fn assert_bounded_outcome(what: &str, result: &Result<Audio, AudioError>, max_seconds: f64) {
    match result {
        Ok(audio) => {
            assert!(
                audio.duration_seconds <= max_seconds,
                "{what}: {} s",
                audio.duration_seconds
            );
            assert!(
                audio
                    .samples
                    .iter()
                    .all(|s| s.is_finite() && s.abs() <= 1.0),
                "{what}"
            );
        }
        Err(AudioError::Corrupt(_) | AudioError::Unsupported(_) | AudioError::Empty) => {}
        Err(other) => panic!("{what}: {other:?}"),
    }
}

#[test]
fn truncated_opus_files_decode_what_arrived_or_fail_typed() {
    for ext in ["opus", "webm"] {
        let (wav, _) = speech_wav(2);
        let Some(file) = encode(&wav, ext, &["-c:a", "libopus"]) else {
            return;
        };
        let len = file.len();
        let full = decode(&file, Some(ext), &limits())
            .unwrap()
            .duration_seconds;
        for cut in [
            1,
            4,
            20,
            28,
            40,
            47,
            80,
            150,
            400,
            len / 10,
            len / 4,
            len / 2,
            len - 1000,
            len - 1,
        ] {
            let what = format!("{ext} cut at {cut} of {len}");
            let result = bounded(&what, || decode(&file[..cut], Some(ext), &limits()));
            assert_bounded_outcome(&what, &result, full + 1e-9);
            // Past the headers, what arrived is decoded, in proportion to the bytes.
            if cut >= len / 4 {
                let audio = result.unwrap_or_else(|e| panic!("{what}: {e}"));
                let share = audio.duration_seconds / full;
                let expected = cut as f64 / len as f64;
                assert!(
                    (share - expected).abs() < 0.15,
                    "{what}: {share:.2} of the audio from {expected:.2} of the bytes"
                );
            }
        }
    }
}

#[test]
fn opus_packets_overwritten_with_random_bytes() {
    let Some(file) = speech_ogg_opus(2) else {
        return;
    };
    let pages = ogg_pages(&file);
    let mut rng = Rng::new(2024);
    let mut count = 0;
    for_each_audio_packet(&pages, |i, _, _, _| count = count.max(i + 1));
    assert!(count > 500, "{count} packets");

    // Every 10th packet (and every packet) replaced by random bytes of the same length,
    // page CRCs fixed so the demuxer hands them to the decoder.
    for every in [10, 3, 1] {
        let mut damaged = pages.clone();
        for_each_audio_packet(&pages, |i, p, start, end| {
            if i % every == 0 {
                let noise = rng.bytes(end - start);
                damaged[p].body[start..end].copy_from_slice(&noise);
            }
        });
        let bytes = ogg_bytes(&damaged);
        let what = format!("every {every}th packet random");
        let result = bounded(&what, || decode(&bytes, Some("opus"), &limits()));
        // A random packet may say it lasts up to 120 ms.
        assert_bounded_outcome(&what, &result, count as f64 * 0.12);
        if every == 10 {
            // A few damaged packets in a long file are skipped (or decode to noise).
            let audio = result.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(audio.duration_seconds > 9.5, "{}", audio.duration_seconds);
        }
    }

    // Packets that libopus must reject (code 3 with zero frames) are counted as damaged.
    let invalid = vec![vec![0xFB, 0x00]; 300];
    let head = opus_head(1, 0, 312);
    let bytes = ogg_opus(&head, &invalid, 960, true);
    match bounded("invalid packets", || decode(&bytes, None, &limits())) {
        Err(AudioError::Corrupt(message)) => {
            assert!(
                message.contains("more than 100 damaged packets"),
                "{message}"
            );
            assert!(message.contains("opus: invalid packet"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let lenient = Limits {
        max_decode_errors: 1_000,
        ..limits()
    };
    match decode(&bytes, None, &lenient) {
        Err(AudioError::Corrupt(message)) => {
            assert!(message.contains("no audio could be decoded"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Empty packets too (libopus alone would conceal each as a lost packet).
    let mut mixed = vec![Vec::new(); 50];
    mixed.extend(vec![vec![0xF8u8]; 50]); // 20 ms CELT frames of 0 bytes: valid silence
    let bytes = ogg_opus(&head, &mixed, 960, true);
    let audio = decode(&bytes, None, &limits()).unwrap();
    assert!(
        (audio.duration_seconds - (50.0 * 960.0 - 312.0) / 48_000.0).abs() < 1e-9,
        "{}",
        audio.duration_seconds
    );

    // WebM has no checksums: flip random bytes anywhere after the headers.
    let (wav, _) = speech_wav(1);
    let Some(webm) = encode(&wav, "webm", &["-c:a", "libopus"]) else {
        return;
    };
    for trial in 0..30 {
        let mut damaged = webm.clone();
        let flips = 1 + trial * 5;
        for _ in 0..flips {
            let at = 200 + (rng.next_u64() as usize) % (damaged.len() - 200);
            damaged[at] = (rng.next_u64() >> 56) as u8;
        }
        let what = format!("webm trial {trial}");
        let result = bounded(&what, || decode(&damaged, Some("webm"), &limits()));
        // A flipped table-of-contents byte can make a 20 ms packet say 120 ms.
        assert_bounded_outcome(&what, &result, 11.1 + 0.1 * flips as f64);
    }
}

#[test]
fn opus_head_claiming_255_channels() {
    // Straight at the decoder: family 255 with 255 mono streams.
    let mut params = CodecParameters::new();
    params
        .for_codec(CODEC_TYPE_OPUS)
        .with_extra_data(opus_head(255, 255, 0).into());
    let result = OpusDecoder::try_new(&params, &DecoderOptions::default());
    assert!(
        matches!(result, Err(SymphoniaError::Unsupported(m)) if m.contains("channels")),
        "{:?}",
        result.err()
    );
    // Family 0 allows only mono and stereo; cut-off or wrong headers are malformed.
    for head in [
        opus_head(255, 0, 0),
        opus_head(3, 0, 0),
        opus_head(0, 0, 0),
        opus_head(2, 1, 0)[..20].to_vec(),
        b"OpusHead".to_vec(),
        b"NotOpus!\x01\x02\x38\x01\x80\xbb\0\0\0\0\0".to_vec(),
    ] {
        params.with_extra_data(head.clone().into());
        let result = OpusDecoder::try_new(&params, &DecoderOptions::default());
        assert!(
            matches!(result, Err(SymphoniaError::DecodeError(_))),
            "{head:?}: {:?}",
            result.err()
        );
    }
    // A multistream mapping naming a stream that does not exist.
    let mut head = opus_head(2, 1, 0);
    head[22] = 7;
    params.with_extra_data(head.into());
    assert!(OpusDecoder::try_new(&params, &DecoderOptions::default()).is_err());
    // Ambisonics is refused, not mixed down wrongly.
    params.with_extra_data(opus_head(4, 2, 0).into());
    assert!(matches!(
        OpusDecoder::try_new(&params, &DecoderOptions::default()),
        Err(SymphoniaError::Unsupported(_))
    ));

    // In real files: forged into the Ogg header page (CRC fixed) and the WebM CodecPrivate.
    let Some(file) = speech_ogg_opus(1) else {
        return;
    };
    for family in [0, 1, 255] {
        let mut pages = ogg_pages(&file);
        pages[0].body[9] = 255;
        pages[0].body[18] = family;
        let bytes = ogg_bytes(&pages);
        let result = bounded("255-channel ogg", || {
            decode(&bytes, Some("opus"), &limits())
        });
        eprintln!("Ogg, 255 channels, family {family}: {result:?}");
        assert!(
            matches!(
                result,
                Err(AudioError::Unsupported(_) | AudioError::Corrupt(_))
            ),
            "Ogg family {family}: {result:?}"
        );
    }
    let (wav, _) = speech_wav(1);
    let Some(webm) = encode(&wav, "webm", &["-c:a", "libopus"]) else {
        return;
    };
    let at = webm
        .windows(8)
        .position(|w| w == b"OpusHead")
        .expect("OpusHead in CodecPrivate");
    for (family, unsupported) in [(0, false), (1, true), (255, true)] {
        let mut bytes = webm.clone();
        bytes[at + 9] = 255;
        bytes[at + 18] = family;
        let result = bounded("255-channel webm", || {
            decode(&bytes, Some("webm"), &limits())
        });
        eprintln!("WebM, 255 channels, family {family}: {result:?}");
        match result {
            Err(AudioError::Unsupported(m)) if unsupported => {
                assert!(m.contains("Opus") && m.contains("channels"), "{m}")
            }
            Err(AudioError::Corrupt(m)) if !unsupported => assert!(m.contains("opus"), "{m}"),
            other => panic!("WebM family {family}: {other:?}"),
        }
    }
}

#[test]
fn tiny_opus_packets_cannot_exceed_the_duration_limit() {
    // Two bytes per 120 ms (six empty CELT frames, concealed as silence): 1.4 MB would be
    // 23 hours. The decoded-length check stops it at the limit.
    let packets = vec![vec![0xFBu8, 0x06]; 700_000];
    let bytes = ogg_opus(&opus_head(2, 0, 0), &packets, 5_760, false);
    let short = Limits {
        max_duration_seconds: 60.0,
        ..limits()
    };
    match bounded("tiny packets", || decode(&bytes, None, &short)) {
        Err(AudioError::TooLong { seconds, limit }) => {
            assert_eq!(limit, 60.0);
            assert!(seconds > 60.0 && seconds < 60.2, "{seconds}");
        }
        other => panic!("{other:?}"),
    }
    // With an end-of-stream page, the declared length (from its granule position) is
    // refused up front.
    let bytes = ogg_opus(&opus_head(2, 0, 0), &packets, 5_760, true);
    match bounded("declared", || decode(&bytes, None, &limits())) {
        Err(AudioError::TooLong { seconds, .. }) => assert!(seconds > 80_000.0, "{seconds}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn pre_skip_and_gain_from_the_header_are_applied() {
    // A real mono stream re-wrapped with a bigger pre-skip and -6 dB output gain.
    let Some(file) = speech_ogg_opus(1) else {
        return;
    };
    let plain = decode(&file, None, &limits()).unwrap();
    let mut pages = ogg_pages(&file);
    let pre_skip = u16::from_le_bytes([pages[0].body[10], pages[0].body[11]]);
    let more = 4_800u16; // 100 ms
    pages[0].body[10..12].copy_from_slice(&(pre_skip + more).to_le_bytes());
    pages[0].body[16..18].copy_from_slice(&(-6i16 * 256).to_le_bytes());
    let audio = decode(&ogg_bytes(&pages), None, &limits()).unwrap();
    let shift = usize::from(more) / 3;
    // symphonia trims the end by granule position, which did not move: 100 ms less.
    assert!(
        (plain.duration_seconds - audio.duration_seconds - 0.1).abs() < 1e-3,
        "{} vs {}",
        plain.duration_seconds,
        audio.duration_seconds
    );
    let gain = 10f64.powf(-6.0 / 20.0);
    let (ours, theirs) = (
        &audio.samples[1_000..100_000],
        &plain.samples[1_000 + shift..100_000 + shift],
    );
    let level = rms(ours) / rms(theirs);
    assert!((level - gain).abs() < 0.02, "gain {level}");
    let lag = best_lag(ours, theirs, 50);
    assert_eq!(lag, 0);
}

/// The worst case the default limits allow: 3 hours of the cheapest packets (2 bytes per
/// 120 ms, stereo), which libopus conceals as silence.
/// `cargo test -p steno-audio --release -- --ignored --nocapture opus_worst_case`
#[test]
#[ignore = "timing; run in release"]
fn opus_worst_case_decode_time() {
    let packets = vec![vec![0xFBu8, 0x06]; 100_000];
    let bytes = ogg_opus(&opus_head(2, 0, 0), &packets, 5_760, false);
    let started = Instant::now();
    let result = decode(&bytes, None, &limits());
    println!(
        "{} KB of 120 ms packets: {result:?} after {:?}",
        bytes.len() / 1000,
        started.elapsed()
    );
    assert!(matches!(result, Err(AudioError::TooLong { .. })));
}
