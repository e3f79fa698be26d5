//! The one place a client's choices become [`TranscribeOptions`]: the HTTP form
//! ([`from_form`]) and the `steno transcribe` flags both go through
//! [`transcribe_options`], so the two cannot drift apart.

use steno_whisper::{Mode, Task, TranscribeOptions};

use crate::config::DecodingConfig;
use crate::form::AudioForm;

/// The options for one transcription; everything not named here keeps
/// [`TranscribeOptions::default`] (OpenAI's thresholds).
///
/// `temperature` above 0 samples at that temperature only; 0 (or less) decodes greedily
/// with the default fallback ladder 0, 0.2 … 1.0.
pub fn transcribe_options(
    task: Task,
    language: Option<String>,
    prompt: Option<String>,
    temperature: f32,
    mode: Mode,
    word_timestamps: bool,
) -> TranscribeOptions {
    let defaults = TranscribeOptions::default();
    let temperatures = if temperature > 0.0 {
        vec![temperature]
    } else {
        defaults.temperatures.clone()
    };
    TranscribeOptions {
        task,
        language,
        initial_prompt: prompt,
        temperatures,
        word_timestamps,
        mode,
        ..defaults
    }
}

/// The options a checked `/v1/audio/*` form asks for (`task` comes from the route),
/// with the terms to favour (`keywords[]`), the languages to expect (`languages[]`) and
/// the beams (`beam_size`, else the server's `decoding` defaults).
pub fn from_form(form: &AudioForm, task: Task, decoding: &DecodingConfig) -> TranscribeOptions {
    TranscribeOptions {
        keywords: form.keywords.clone(),
        languages: form.languages.clone(),
        beam_size: form.beam_size.unwrap_or(decoding.beam_size),
        best_of: decoding.best_of,
        ..transcribe_options(
            task,
            form.language.clone(),
            form.prompt.clone(),
            form.temperature.unwrap_or(0.0),
            form.mode.unwrap_or(TranscribeOptions::default().mode),
            form.word_timestamps,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_temperature_keeps_the_fallback_ladder() {
        let options =
            transcribe_options(Task::Transcribe, None, None, 0.0, Mode::Sequential, false);
        assert_eq!(
            options.temperatures,
            TranscribeOptions::default().temperatures
        );
        assert!(options.temperatures.len() > 1);
    }

    #[test]
    fn a_temperature_samples_at_it_only() {
        let options =
            transcribe_options(Task::Transcribe, None, None, 0.4, Mode::Sequential, false);
        assert_eq!(options.temperatures, vec![0.4]);
    }

    #[test]
    fn the_choices_land_and_the_rest_stays_default() {
        let options = transcribe_options(
            Task::Translate,
            Some("de".into()),
            Some("Müller, Schmidt".into()),
            0.0,
            Mode::Parallel,
            true,
        );
        assert_eq!(options.task, Task::Translate);
        assert_eq!(options.language.as_deref(), Some("de"));
        assert_eq!(options.initial_prompt.as_deref(), Some("Müller, Schmidt"));
        assert_eq!(options.mode, Mode::Parallel);
        assert!(options.word_timestamps);
        let defaults = TranscribeOptions::default();
        assert_eq!(
            options.compression_ratio_threshold,
            defaults.compression_ratio_threshold
        );
        assert_eq!(options.no_speech_threshold, defaults.no_speech_threshold);
        assert_eq!(options.suppress_tokens, defaults.suppress_tokens);
        assert_eq!(
            options.condition_on_previous_text,
            defaults.condition_on_previous_text
        );
    }
}
