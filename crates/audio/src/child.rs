//! Decoding in a child process: the wire format between a server and a decoder process.
//!
//! symphonia's demuxers allocate sizes a file declares before reading them. When such an
//! allocation fails, Rust aborts the whole process, and no `catch_unwind` can stop it:
//! `make fuzz` keeps finding crafted Matroska files a few hundred bytes long that declare
//! terabytes in places no pre-check of the container can reach. The server therefore
//! decodes each upload in a short-lived child process, so that such a file costs one
//! request (answered 400), not the server.
//!
//! The parent writes [`request_header`] and then the upload to the child's stdin; the child
//! runs [`serve`], which decodes with [`crate::decode_owned`] and writes its result; the
//! parent reads it with [`read_reply`]. A child that died instead of answering leaves a
//! short reply, which [`read_reply`] reports as an I/O error. All integers are little-endian.

use std::io::{self, Read, Write};

use crate::{decode_owned, Audio, AudioError, Limits, MAX_CHANNELS, MAX_SOURCE_RATE, SAMPLE_RATE};

const REQUEST_MAGIC: &[u8; 8] = b"STENOD1\n";
const REPLY_MAGIC: &[u8; 8] = b"STENOA1\n";
/// Longest hint or error message on the wire.
const MAX_TEXT: u32 = 64 * 1024;

/// What precedes the `len` bytes of the upload on the child's stdin.
pub fn request_header(len: usize, hint: Option<&str>, limits: &Limits) -> Vec<u8> {
    let mut header = REQUEST_MAGIC.to_vec();
    header.extend_from_slice(&(limits.max_bytes as u64).to_le_bytes());
    header.extend_from_slice(&limits.max_duration_seconds.to_le_bytes());
    header.extend_from_slice(&limits.max_samples_per_second.to_le_bytes());
    header.extend_from_slice(&limits.max_decode_errors.to_le_bytes());
    put_text(&mut header, hint.unwrap_or(""));
    header.extend_from_slice(&(len as u64).to_le_bytes());
    header
}

/// The child's side: reads one request from `input`, decodes it and writes the result to
/// `output`. An error is returned only for a malformed request or a failed write.
pub fn serve(mut input: impl Read, mut output: impl Write) -> io::Result<()> {
    let mut magic = [0; 8];
    input.read_exact(&mut magic)?;
    if &magic != REQUEST_MAGIC {
        return Err(invalid("not a decode request"));
    }
    let limits = Limits {
        max_bytes: usize::try_from(u64_le(&mut input)?).unwrap_or(usize::MAX),
        max_duration_seconds: f64::from_bits(u64_le(&mut input)?),
        max_samples_per_second: u32_le(&mut input)?,
        max_decode_errors: u32_le(&mut input)?,
    };
    let hint = get_text(&mut input)?;
    let len = u64_le(&mut input)?;
    if len > limits.max_bytes as u64 {
        // Answer without reading (or allocating) the upload.
        let error = AudioError::TooLarge {
            bytes: usize::try_from(len).unwrap_or(usize::MAX),
            limit: limits.max_bytes,
        };
        return write_reply(&mut output, &Err(error));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    input.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    let hint = (!hint.is_empty()).then_some(hint.as_str());
    write_reply(&mut output, &decode_owned(bytes, hint, &limits))
}

/// The parent's side: the child's decoded audio or typed error, or an I/O error when the
/// reply is cut short or malformed (the child died). Nothing larger than `limits` allows is
/// allocated, whatever the reply declares. [`read_head`] then [`read_samples`], for a
/// caller with nothing to decide in between.
pub fn read_reply(mut reader: impl Read, limits: &Limits) -> io::Result<Result<Audio, AudioError>> {
    match read_head(&mut reader, limits)? {
        Ok(head) => read_samples(reader, head).map(Ok),
        Err(error) => Ok(Err(error)),
    }
}

/// What a successful reply declares before its samples: enough to decide whether to
/// take them (their memory) before any is allocated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplyHead {
    source_rate: u32,
    source_channels: u16,
    duration_seconds: f64,
    count: usize,
}

impl ReplyHead {
    /// The samples that follow.
    pub fn sample_count(&self) -> usize {
        self.count
    }
}

/// The first part of [`read_reply`]: the child's typed error, or the head of its audio
/// (the samples still unread), refused when out of `limits`.
pub fn read_head(
    mut reader: impl Read,
    limits: &Limits,
) -> io::Result<Result<ReplyHead, AudioError>> {
    let mut magic = [0; 8];
    reader.read_exact(&mut magic)?;
    if &magic != REPLY_MAGIC {
        return Err(invalid("not a decoder reply"));
    }
    let error = match u8_le(&mut reader)? {
        0 => None,
        1 => Some(AudioError::Empty),
        2 => Some(AudioError::Unsupported(get_text(&mut reader)?)),
        3 => Some(AudioError::Corrupt(get_text(&mut reader)?)),
        4 => Some(AudioError::TooLarge {
            bytes: usize::try_from(u64_le(&mut reader)?).unwrap_or(usize::MAX),
            limit: usize::try_from(u64_le(&mut reader)?).unwrap_or(usize::MAX),
        }),
        5 => Some(AudioError::TooLong {
            seconds: f64::from_bits(u64_le(&mut reader)?),
            limit: f64::from_bits(u64_le(&mut reader)?),
        }),
        6 => Some(AudioError::InvalidParameter(get_text(&mut reader)?)),
        tag => return Err(invalid(&format!("unknown reply tag {tag}"))),
    };
    if let Some(error) = error {
        return Ok(Err(error));
    }
    let source_rate = u32_le(&mut reader)?;
    let source_channels = u16::try_from(u32_le(&mut reader)?).unwrap_or(u16::MAX);
    let duration_seconds = f64::from_bits(u64_le(&mut reader)?);
    let count = u64_le(&mut reader)?;
    // The decoder never returns more than the duration limit (plus a resampler's tail).
    let most = (limits.max_duration_seconds + 1.0) * f64::from(SAMPLE_RATE);
    if source_rate > MAX_SOURCE_RATE || source_channels > MAX_CHANNELS || count as f64 > most {
        return Err(invalid("decoded audio out of bounds"));
    }
    Ok(Ok(ReplyHead {
        source_rate,
        source_channels,
        duration_seconds,
        count: count as usize,
    }))
}

/// The second part of [`read_reply`]: the samples `head` declared.
pub fn read_samples(mut reader: impl Read, head: ReplyHead) -> io::Result<Audio> {
    let mut samples = Vec::with_capacity(head.count);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut left = head.count * 4;
    while left > 0 {
        let part = &mut chunk[..left.min(64 * 1024)];
        reader.read_exact(part)?;
        samples.extend(
            part.chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        );
        left -= part.len();
    }
    Ok(Audio {
        samples,
        source_rate: head.source_rate,
        source_channels: head.source_channels,
        duration_seconds: head.duration_seconds,
    })
}

fn write_reply(output: &mut impl Write, result: &Result<Audio, AudioError>) -> io::Result<()> {
    let mut head = REPLY_MAGIC.to_vec();
    match result {
        Ok(audio) => {
            head.push(0);
            head.extend_from_slice(&audio.source_rate.to_le_bytes());
            head.extend_from_slice(&u32::from(audio.source_channels).to_le_bytes());
            head.extend_from_slice(&audio.duration_seconds.to_le_bytes());
            head.extend_from_slice(&(audio.samples.len() as u64).to_le_bytes());
            output.write_all(&head)?;
            let mut chunk = Vec::with_capacity(64 * 1024);
            for samples in audio.samples.chunks(16 * 1024) {
                chunk.clear();
                chunk.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
                output.write_all(&chunk)?;
            }
        }
        Err(error) => {
            match error {
                AudioError::Empty => head.push(1),
                AudioError::Unsupported(text) => {
                    head.push(2);
                    put_text(&mut head, text);
                }
                AudioError::Corrupt(text) => {
                    head.push(3);
                    put_text(&mut head, text);
                }
                AudioError::TooLarge { bytes, limit } => {
                    head.push(4);
                    head.extend_from_slice(&(*bytes as u64).to_le_bytes());
                    head.extend_from_slice(&(*limit as u64).to_le_bytes());
                }
                AudioError::TooLong { seconds, limit } => {
                    head.push(5);
                    head.extend_from_slice(&seconds.to_le_bytes());
                    head.extend_from_slice(&limit.to_le_bytes());
                }
                AudioError::InvalidParameter(text) => {
                    head.push(6);
                    put_text(&mut head, text);
                }
            }
            output.write_all(&head)?;
        }
    }
    output.flush()
}

/// Writes at most [`MAX_TEXT`] bytes of `text` (a cut character reads back as U+FFFD).
fn put_text(out: &mut Vec<u8>, text: &str) {
    let text = &text.as_bytes()[..text.len().min(MAX_TEXT as usize)];
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text);
}

fn get_text(reader: &mut impl Read) -> io::Result<String> {
    let len = u32_le(reader)?;
    if len > MAX_TEXT {
        return Err(invalid("text too long"));
    }
    let mut text = vec![0; len as usize];
    reader.read_exact(&mut text)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

fn u8_le(reader: &mut impl Read) -> io::Result<u8> {
    let mut b = [0; 1];
    reader.read_exact(&mut b)?;
    Ok(b[0])
}

fn u32_le(reader: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    reader.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn u64_le(reader: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    reader.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{sine, wav_bytes, WavFormat};

    /// One request through [`serve`] and back through [`read_reply`], in memory.
    fn round_trip(upload: &[u8], hint: Option<&str>, limits: &Limits) -> Result<Audio, AudioError> {
        let mut request = request_header(upload.len(), hint, limits);
        request.extend_from_slice(upload);
        let mut reply = Vec::new();
        serve(request.as_slice(), &mut reply).expect("the child answers");
        read_reply(reply.as_slice(), limits).expect("a well-formed reply")
    }

    #[test]
    fn audio_and_every_error_cross_the_pipe_unchanged() {
        let limits = Limits::default();
        let wav = wav_bytes(&sine(440.0, 0.5, 44_100, 1.5), 44_100, 1, WavFormat::F32);
        let direct = crate::decode(&wav, Some("wav"), &limits);
        assert_eq!(round_trip(&wav, Some("wav"), &limits), direct);
        assert!(direct.is_ok());

        let short = Limits {
            max_duration_seconds: 1.0,
            ..limits.clone()
        };
        let small = Limits {
            max_bytes: 100,
            ..limits.clone()
        };
        for (upload, limits) in [
            (&b""[..], &limits),
            (&b"not audio at all, just words"[..], &limits),
            (&wav[..], &short),
            (&wav[..], &small),
        ] {
            let through_child = round_trip(upload, None, limits);
            assert!(through_child.is_err(), "{through_child:?}");
            assert_eq!(through_child, crate::decode(upload, None, limits));
        }
    }

    #[test]
    fn a_child_that_died_is_an_io_error_and_lies_are_not_believed() {
        let limits = Limits::default();
        let wav = wav_bytes(&sine(440.0, 0.5, 16_000, 1.0), 16_000, 1, WavFormat::S16);
        let mut request = request_header(wav.len(), None, &limits);
        request.extend_from_slice(&wav);
        let mut reply = Vec::new();
        serve(request.as_slice(), &mut reply).unwrap();
        // Cut anywhere short of the end: nothing, the header, half the samples.
        for cut in [0, 5, 30, reply.len() / 2, reply.len() - 1] {
            let error = read_reply(&reply[..cut], &limits).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        // A reply declaring more samples than the duration limit allows is refused before
        // anything is allocated for them.
        let mut lying = reply[..25].to_vec();
        lying.extend_from_slice(&u64::MAX.to_le_bytes());
        let error = read_reply(lying.as_slice(), &limits).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        // The head alone declares the count, read before any sample is.
        let head = read_head(&reply[..33], &limits).unwrap().unwrap();
        assert_eq!(head.sample_count(), 16_000);
        // A request cut short is the child's I/O error, not a decode of half a file.
        let error = serve(&request[..request.len() - 1], Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
