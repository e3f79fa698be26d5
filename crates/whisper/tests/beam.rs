//! Beam search and best-of with real tiny.en: the text is right, and a beam search's rows
//! batched with other jobs' rows give the same text as the search decoded alone.

mod common;

use steno_e2e::{assets, wer};
use steno_whisper::TranscribeOptions;

fn options(beam_size: usize) -> TranscribeOptions {
    TranscribeOptions {
        language: Some("en".into()),
        beam_size,
        ..TranscribeOptions::default()
    }
}

#[test]
fn beam_search_transcribes_english_and_batches_with_other_jobs() {
    let Some(whisper) = common::tiny_en() else {
        return;
    };
    // jfk and clips of different lengths and voices, so groups finish at different steps.
    let clips: Vec<assets::Clip> = std::iter::once(assets::jfk())
        .chain(assets::english_clips().into_iter().step_by(97).take(5))
        .collect();
    let audio: Vec<Vec<f32>> = clips.iter().map(|c| assets::samples(&c.path)).collect();
    let beam: Vec<(&[f32], TranscribeOptions)> =
        audio.iter().map(|a| (a.as_slice(), options(5))).collect();
    // Alone: one beam search at a time (5 rows).
    let alone: Vec<String> = beam
        .iter()
        .map(|input| {
            let out = whisper.transcribe_many(std::slice::from_ref(input), 5);
            out.into_iter().next().unwrap().expect("beam search").text
        })
        .collect();
    // Together: every clip with beams and again greedily, in one batch of 32 rows.
    let greedy = audio.iter().map(|a| (a.as_slice(), options(1)));
    let mixed: Vec<_> = beam.iter().cloned().chain(greedy).collect();
    let together: Vec<String> = whisper
        .transcribe_many(&mixed, 32)
        .into_iter()
        .map(|r| r.expect("mixed batch").text)
        .collect();
    let (together_beam, together_greedy) = together.split_at(clips.len());
    assert_eq!(
        alone, together_beam,
        "beams batched with other jobs changed"
    );
    wer::assert_wer(assets::JFK_TEXT, &alone[0], 0.0, "jfk, beam 5");
    let corpus = |texts: &[String]| {
        wer::corpus_wer(
            clips
                .iter()
                .zip(texts)
                .map(|(c, t)| (c.reference.as_str(), t.as_str())),
        )
    };
    let (beam_wer, greedy_wer) = (corpus(&alone), corpus(together_greedy));
    eprintln!("WER beam 5 {beam_wer:.3}, greedy {greedy_wer:.3}");
    assert!(beam_wer <= 0.1, "beam 5 WER {beam_wer:.3}: {alone:?}");
    assert!(
        beam_wer <= greedy_wer + 0.02,
        "beam {beam_wer:.3} vs greedy {greedy_wer:.3}"
    );
}

#[test]
fn best_of_ranks_sampled_candidates() {
    let Some(whisper) = common::tiny_en() else {
        return;
    };
    let jfk = assets::samples(&assets::jfk().path);
    // Sampled hot, only one temperature: the best of five is the likely text.
    let hot = |best_of| TranscribeOptions {
        temperatures: vec![0.6],
        best_of,
        seed: 7,
        ..options(1)
    };
    let out = whisper.transcribe_many(&[(jfk.as_slice(), hot(5)), (jfk.as_slice(), hot(1))], 8);
    let best = out[0].as_ref().expect("best of 5");
    let one = out[1].as_ref().expect("one sample");
    wer::assert_wer(assets::JFK_TEXT, &best.text, 0.1, "jfk, best of 5 at 0.6");
    let logprob =
        |t: &steno_whisper::Transcript| t.segments.iter().map(|s| s.avg_logprob).sum::<f32>();
    eprintln!(
        "best of 5 {:?} ({}), one {:?} ({})",
        best.text,
        logprob(best),
        one.text,
        logprob(one)
    );
    // Out-of-range settings are refused, not clamped.
    let bad = TranscribeOptions {
        beam_size: 0,
        ..options(1)
    };
    assert!(whisper.transcribe_many(&[(jfk.as_slice(), bad)], 8)[0].is_err());
}
