//! Greedy decoding gives identical tokens whether windows are decoded one at a time
//! or batched together (rows joining and leaving a shared decoder batch).

mod common;

use steno_e2e::assets;

#[test]
fn batched_and_unbatched_greedy_decoding_agree() {
    let Some(whisper) = common::tiny_en() else {
        return;
    };
    // Clips of different lengths from different sources, so rows finish at different
    // steps and later rows join a batch already in progress.
    let clips: Vec<Vec<f32>> = assets::english_clips()
        .into_iter()
        .step_by(61)
        .take(9)
        .map(|c| assets::samples(&c.path))
        .collect();
    let one_by_one = common::transcribe(&whisper, &clips, 1);
    let batched = common::transcribe(&whisper, &clips, 4);
    common::assert_same_tokens(&one_by_one, &batched);
}
