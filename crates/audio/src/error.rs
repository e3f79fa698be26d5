use thiserror::Error;

/// Why audio could not be turned into 16 kHz samples. Every message says what the
/// client can do about it; none exposes internals beyond the decoder's own reason.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AudioError {
    /// The upload has no bytes, or a valid container that holds no audio samples.
    #[error("the audio file is empty or contains no audio samples")]
    Empty,
    /// A container, codec or stream property this server does not decode.
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// Bytes that claim to be audio but cannot be decoded (damaged, truncated, not audio).
    #[error("could not decode the audio: {0}")]
    Corrupt(String),
    /// The upload exceeds the byte limit.
    #[error("audio file is {bytes} bytes, over the limit of {limit} bytes; send a smaller or more compressed file")]
    TooLarge { bytes: usize, limit: usize },
    /// The audio is longer than allowed; `seconds` is the declared length, or how much was
    /// decoded before the limit was hit (so the real length is at least that).
    #[error("audio is too long: {seconds:.1} s or more, over the limit of {limit:.1} s; split it into shorter files")]
    TooLong { seconds: f64, limit: f64 },
    /// A caller-supplied parameter is out of range (sample rate, channel count, limits).
    #[error("invalid audio parameter: {0}")]
    InvalidParameter(String),
}
