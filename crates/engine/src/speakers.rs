//! Diarization on the worker: the voice encoder (loaded on first use), and each
//! diarizing job's windows embedded a pass at a time between decoder steps, so that a
//! long file's diarization does not stall the other jobs' decoding.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use steno_speaker::{
    Diarization, DiarizeOptions, KnownSpeaker, SpeakerTurn, VoiceEncoder, WINDOWS_PER_PASS,
};
use steno_whisper::WhisperError;

use crate::EngineError;

/// What a job asks of diarization: bounds on the number of speakers and the known
/// speakers' reference clips (16 kHz samples, named).
#[derive(Debug, Clone, Default)]
pub struct DiarizeRequest {
    pub min_speakers: Option<usize>,
    pub max_speakers: Option<usize>,
    pub known: Vec<(String, Vec<f32>)>,
}

/// After the encoder fails to load, diarizing jobs fail at once for this long.
const RETRY_FAILED_LOAD_AFTER: Duration = Duration::from_secs(30);

/// The worker's voice encoder and where it comes from.
pub(crate) struct Speakers {
    path: Option<PathBuf>,
    encoder: Option<VoiceEncoder>,
    failed_at: Option<Instant>,
}

impl Speakers {
    pub(crate) fn new(path: Option<PathBuf>) -> Self {
        Speakers {
            path,
            encoder: None,
            failed_at: None,
        }
    }

    /// The encoder, read on first use (a failure is retried after a while).
    fn encoder(&mut self) -> Result<&VoiceEncoder, EngineError> {
        if self.encoder.is_none() {
            let unavailable = || EngineError::ModelUnavailable("speaker encoder".into());
            let path = self.path.clone().ok_or_else(unavailable)?;
            if self
                .failed_at
                .is_some_and(|at| at.elapsed() < RETRY_FAILED_LOAD_AFTER)
            {
                return Err(unavailable());
            }
            let started = Instant::now();
            match VoiceEncoder::load(&path) {
                Ok(encoder) => {
                    tracing::info!(path = %path.display(), seconds = started.elapsed().as_secs_f64(), "voice encoder loaded");
                    self.encoder = Some(encoder);
                }
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "loading the voice encoder failed");
                    self.failed_at = Some(Instant::now());
                    return Err(unavailable());
                }
            }
        }
        Ok(self.encoder.as_ref().expect("loaded above"))
    }

    /// A job's diarization, started at intake: the known speakers embedded, its speech
    /// found and cut into windows (embedded later, by [`Speakers::advance`]).
    pub(crate) fn start(
        &mut self,
        request: DiarizeRequest,
        samples: &[f32],
    ) -> Result<Diarization, EngineError> {
        // The request's own faults first: they are 400 whether or not the encoder loads.
        let bounds = DiarizeOptions {
            min_speakers: request.min_speakers,
            max_speakers: request.max_speakers,
            known: Vec::new(),
        };
        bounds.bounds().map_err(invalid)?;
        let encoder = self.encoder()?;
        let mut known = Vec::with_capacity(request.known.len());
        for (name, clip) in request.known {
            let embedding = encoder.embed_utterance(&clip).map_err(invalid)?;
            known.push(KnownSpeaker { name, embedding });
        }
        let options = DiarizeOptions {
            min_speakers: request.min_speakers,
            max_speakers: request.max_speakers,
            known,
        };
        Diarization::new(encoder.front_end(), samples, options).map_err(invalid)
    }

    /// Embeds one pass of `job`'s windows; true when all are embedded.
    pub(crate) fn advance(&mut self, job: &mut Diarization) -> Result<bool, EngineError> {
        let encoder = self.encoder()?;
        job.advance(encoder, WINDOWS_PER_PASS).map_err(failed)
    }

    /// Embeds what is left of `job` and makes its turns.
    pub(crate) fn finish(&mut self, mut job: Diarization) -> Result<Vec<SpeakerTurn>, EngineError> {
        while !self.advance(&mut job)? {}
        Ok(job.finish())
    }
}

/// The request's fault (bounds on the number of speakers, an empty clip): 400.
fn invalid(e: steno_speaker::SpeakerError) -> EngineError {
    match e {
        steno_speaker::SpeakerError::InvalidOption(detail) => {
            EngineError::InvalidRequest(WhisperError::InvalidOption(detail))
        }
        other => failed(other),
    }
}

fn failed(e: steno_speaker::SpeakerError) -> EngineError {
    tracing::error!(error = %e, "diarization failed");
    EngineError::Internal("diarization failed on this request".into())
}
