//! The compiled decoder step (static caches, `decoding.compiled_step = "on"`) gives the
//! same tokens as the dynamic one on real speech, with rows joining and leaving the
//! batch and row counts between the static row buckets (padding rows).

mod common;

use steno_e2e::assets;
use steno_whisper::decoding::set_compiled_step;

#[test]
fn compiled_and_dynamic_steps_give_the_same_tokens() {
    let Some(whisper) = common::tiny_en() else {
        return;
    };
    // Clips of different lengths from different sources: rows finish at different
    // steps, later ones join a batch in progress, and 3 rows fill a bucket of 4.
    let clips: Vec<Vec<f32>> = assets::english_clips()
        .into_iter()
        .skip(7)
        .step_by(53)
        .take(7)
        .map(|c| assets::samples(&c.path))
        .collect();
    // One test function: the setting is process-wide.
    set_compiled_step(Some(false));
    let dynamic = common::transcribe(&whisper, &clips, 3);
    set_compiled_step(Some(true));
    let compiled = common::transcribe(&whisper, &clips, 3);
    set_compiled_step(None);
    common::assert_same_tokens(&dynamic, &compiled);
}
