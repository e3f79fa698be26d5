//! Whether a transcription diarizes, and what it needs for that: a diarizing request
//! names a diarizing alias (`models.diarize_aliases`, OpenAI's
//! `gpt-4o-transcribe-diarize`) or asks for `diarized_json`; it gets OpenAI's refusals
//! for diarizing models ([`requested`]), and its known speakers' clips are decoded like
//! uploads, in the decoder child and inside the audio budget ([`prepare`]).

use steno_engine::DiarizeRequest;
use steno_whisper::Task;

use super::{decode_upload, AppState, Permit};
use crate::config::Config;
use crate::error::ApiError;
use crate::form::{AudioForm, KnownSpeakerClip};
use crate::formats::Format;

/// A known speaker's clip is 2 to 10 seconds long (OpenAI's rule); a little past 10 s
/// is let through, as rounding in an encoder's frame count, before decoding stops.
const MIN_REFERENCE_SECONDS: f64 = 2.0;
const MAX_REFERENCE_SECONDS: f64 = 10.0;
const REFERENCE_SLACK_SECONDS: f64 = 0.1;

/// Whether the request diarizes; for one that does, OpenAI's refusals (400) of what a
/// diarizing model does not take. Checked before the audio is decoded.
pub(super) fn requested(config: &Config, form: &AudioForm, task: Task) -> Result<bool, ApiError> {
    let diarizing = task == Task::Transcribe
        && (config.diarizes(&form.model) || form.format == Format::DiarizedJson);
    if diarizing {
        form.check_diarizing(&form.model)?;
    }
    Ok(diarizing)
}

/// What the engine needs to diarize `samples`: the length rule (`chunking_strategy`
/// above 30 s), the bounds on the number of speakers, and each known speaker's clip
/// decoded (its samples' reservation held by `permit` until the answer).
pub(super) async fn prepare(
    state: &AppState,
    form: &mut AudioForm,
    samples: &[f32],
    permit: &mut Permit,
) -> Result<DiarizeRequest, ApiError> {
    form.check_diarized_length(steno_audio::seconds(samples.len()))?;
    // A raw PCM clip (`data:audio/pcm;base64,…`) has the upload's rate.
    let rate = form.sample_rate;
    let mut known = Vec::with_capacity(form.known_speakers.len());
    for (index, speaker) in form.known_speakers.iter_mut().enumerate() {
        let clip = reference_samples(state, speaker, (index, rate), permit).await?;
        known.push((speaker.name.clone(), clip));
    }
    Ok(DiarizeRequest {
        min_speakers: form.min_speakers,
        max_speakers: form.max_speakers,
        known,
    })
}

/// One known speaker's clip as 16 kHz samples, 2 to 10 s long, else 400 naming the clip.
async fn reference_samples(
    state: &AppState,
    speaker: &mut KnownSpeakerClip,
    (index, rate): (usize, u32),
    permit: &mut Permit,
) -> Result<Vec<f32>, ApiError> {
    let limits = steno_audio::Limits {
        max_bytes: crate::form::MAX_REFERENCE_BYTES,
        max_duration_seconds: MAX_REFERENCE_SECONDS + REFERENCE_SLACK_SECONDS,
        ..steno_audio::Limits::default()
    };
    let invalid = |why: String| {
        ApiError::invalid(
            format!(
                "known_speaker_references[{index}] ({}): {why}",
                speaker.name
            ),
            Some("known_speaker_references"),
        )
    };
    let decoded = decode_upload(state, &mut speaker.clip, rate, limits).await;
    let (samples, reservation) = decoded.map_err(|e| match e.status().as_u16() {
        // Busy (429) stays what it is; anything else is this clip's fault.
        429 => e,
        _ => invalid(e.body().error.message),
    })?;
    permit.hold(reservation);
    let seconds = steno_audio::seconds(samples.len());
    if !(MIN_REFERENCE_SECONDS..=MAX_REFERENCE_SECONDS + REFERENCE_SLACK_SECONDS).contains(&seconds)
    {
        return Err(invalid(format!(
            "each clip must be between 2 and 10 seconds long, not {seconds:.2} s."
        )));
    }
    Ok(samples)
}
