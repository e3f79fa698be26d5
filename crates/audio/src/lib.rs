//! steno-audio: uploaded bytes → mono 16 kHz `f32` samples, in process.
//!
//! Decodes containers and codecs with symphonia (format sniffed from content, the
//! filename only a hint), downmixes, resamples to 16 kHz, finds speech with a VAD,
//! and enforces limits so a hostile upload cannot take unbounded time or memory.
