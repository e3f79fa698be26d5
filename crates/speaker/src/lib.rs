//! steno-speaker: who speaks when.
//!
//! One job: from 16 kHz mono samples, find the **speaker turns** — who speaks from when to
//! when — and put speaker names on timed text. Synchronous, and MLX-only on the thread
//! that owns MLX (Steno's `steno-mlx` worker), like `steno-whisper`.
//!
//! # The contract (stable; the engine and the server call exactly this)
//!
//! * [`VoiceEncoder::load`]`(path)` reads Resemblyzer 0.1.4's `pretrained.pt` directly
//!   (PyTorch's legacy pickle, read by a bounded reader that runs no code: see
//!   [`torch_pickle`]). No PyTorch at run time.
//! * [`VoiceEncoder::embed_windows`]`(&[&[f32]])` → one [`Embedding`] per window of at
//!   most 1.6 s ([`WINDOW_SAMPLES`]), all windows in batched MLX passes.
//! * [`VoiceEncoder::embed_utterance`]`(samples)` → one [`Embedding`], as Resemblyzer's
//!   `embed_utterance(normalize_volume(wav, -30, increase_only=True))`: 1.6 s windows at
//!   1.3 a second, averaged and normalised. Known speakers' reference clips go through it.
//! * [`diarize`]`(&encoder, samples, &DiarizeOptions { min_speakers, max_speakers, known })`
//!   → `Vec<`[`SpeakerTurn`]`>` sorted by time, disjoint: speech regions from Steno's VAD
//!   (`steno_audio::vad`), sliding 1.6 s windows over them, one embedding each, clustering
//!   that finds the number of speakers itself within `[min_speakers, max_speakers]`, and
//!   turns. A cluster whose mean embedding is close to a [`KnownSpeaker`]'s (cosine ≥
//!   [`KNOWN_SPEAKER_SIMILARITY`]) takes that name; the others are `"A"`, `"B"`, … in order
//!   of first appearance. [`Diarization`] is the same work in steps, for a caller that
//!   interleaves it with other work.
//! * [`label_segments`]`(&[TimedText], &[SpeakerTurn])` → `Vec<`[`LabelledText`]`>`, pure:
//!   a segment with words is split at each word where the speaker changes (a word's
//!   speaker is the turn it overlaps most); without words the whole segment takes the
//!   speaker it overlaps most. Text with no turn near it takes the nearest turn's speaker.
//!
//! # Words
//!
//! * **embedding**: a 256-d unit vector for a stretch of voice; the cosine of two is
//!   their similarity (1 = same voice).
//! * **window** (here): 1.6 s of audio (160 mel frames) the encoder embeds at once.
//! * **cluster**: windows grouped as one voice by average-linkage clustering of their
//!   embeddings.
//! * **speaker turn**: `[start, end)` seconds of one speaker's speech.

mod align;
mod cluster;
mod diarize;
mod encoder;
mod error;
mod lstm;
pub mod mel;
pub mod torch_pickle;

pub use align::{label_segments, LabelledText, TimedText, TimedWord};
pub use cluster::cluster;
pub use diarize::{
    diarize, speaker_name, Diarization, DiarizeOptions, KnownSpeaker, SpeakerTurn,
    KNOWN_SPEAKER_SIMILARITY, MAX_SPEAKERS, WINDOWS_PER_PASS,
};
pub use encoder::{utterance_windows, VoiceEncoder, EMBEDDING_DIM, WINDOW_FRAMES, WINDOW_SAMPLES};
pub use error::{Result, SpeakerError};

/// A voice's 256-d unit vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(pub Vec<f32>);

impl Embedding {
    /// Cosine similarity (both are unit vectors: their dot product).
    pub fn cosine(&self, other: &Embedding) -> f32 {
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }

    /// The normalised mean of `embeddings` (zero vector for none).
    pub fn mean(embeddings: &[Embedding]) -> Embedding {
        let dim = embeddings.first().map_or(EMBEDDING_DIM, |e| e.0.len());
        let mut sum = vec![0.0f32; dim];
        for e in embeddings {
            for (s, v) in sum.iter_mut().zip(&e.0) {
                *s += v;
            }
        }
        let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            sum.iter_mut().for_each(|v| *v /= norm);
        }
        Embedding(sum)
    }
}
