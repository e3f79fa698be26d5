//! steno-engine: the one worker thread that owns MLX and the loaded models.
//!
//! Admission control (permits, bounded queue), the cross-request scheduler that
//! batches windows of many requests into one decoder step, cancellation by dropped
//! receivers, health, and graceful shutdown. It knows Whisper only through a small
//! synchronous trait so scheduling can be tested with a scripted backend.
