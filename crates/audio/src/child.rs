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
//! runs [`serve`], which decodes with [`crate::decode_into`] and writes each chunk of samples
//! as it is decoded, so that it never holds more than a chunk of them (a 3-hour upload is
//! 691 MB of samples: held whole in every child, ten such uploads took 7 GB). The parent
//! reads the reply message by message with [`ReplyReader`] (deciding, chunk by chunk,
//! whether to keep taking them) or whole with [`read_reply`]. A child that died instead of
//! answering leaves a short reply, which reads as an I/O error. All integers are
//! little-endian.

use std::io::{self, Read, Write};

use crate::{
    decode_into, Audio, AudioError, Limits, SampleSink, SourceInfo, MAX_CHANNELS, MAX_SOURCE_RATE,
    SAMPLE_RATE,
};

const REQUEST_MAGIC: &[u8; 8] = b"STENOD1\n";
const REPLY_MAGIC: &[u8; 8] = b"STENOA2\n";
/// Longest hint or error message on the wire.
const MAX_TEXT: u32 = 64 * 1024;
/// Most samples in one [`Message::Samples`] (256 KiB).
const MAX_CHUNK: usize = 64 * 1024;

/// Reply tags: 0 ends with the audio's source, 1 to 6 end with an [`AudioError`]
/// (see [`write_end`]); these three come before the end.
const TAG_EXPECT: u8 = 0x20;
const TAG_SAMPLES: u8 = 0x21;
const TAG_RESTART: u8 = 0x22;

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
        output.write_all(REPLY_MAGIC)?;
        return write_end(&mut output, &Err(error));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    input.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    output.write_all(REPLY_MAGIC)?;
    let hint = (!hint.is_empty()).then_some(hint.as_str());
    let mut sink = PipeSink {
        output: &mut output,
        failed: None,
    };
    let result = decode_into(bytes, hint, &limits, &mut sink);
    if let Some(error) = sink.failed {
        // The parent stopped reading (it refused the samples, or its client left).
        return Err(error);
    }
    write_end(&mut output, &result)
}

/// The child's [`SampleSink`]: each call becomes a message on the reply; a failed write
/// stops decoding (kept to be returned by [`serve`]).
struct PipeSink<W> {
    output: W,
    failed: Option<io::Error>,
}

impl<W: Write> PipeSink<W> {
    fn send(&mut self, message: &[u8]) -> Result<(), AudioError> {
        self.output.write_all(message).map_err(|error| {
            self.failed = Some(error);
            AudioError::Corrupt("the reply could not be written".into())
        })
    }
}

impl<W: Write> SampleSink for PipeSink<W> {
    fn expect(&mut self, samples: usize) -> Result<(), AudioError> {
        let mut message = vec![TAG_EXPECT];
        message.extend_from_slice(&(samples as u64).to_le_bytes());
        self.send(&message)
    }

    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        let mut message = Vec::with_capacity(5 + 4 * MAX_CHUNK.min(samples.len()));
        for chunk in samples.chunks(MAX_CHUNK) {
            message.clear();
            message.push(TAG_SAMPLES);
            message.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            message.extend(chunk.iter().flat_map(|s| s.to_le_bytes()));
            self.send(&message)?;
        }
        Ok(())
    }

    fn restart(&mut self) -> Result<(), AudioError> {
        self.send(&[TAG_RESTART])
    }
}

/// The parent's side, whole: the child's decoded audio or typed error, or an I/O error
/// when the reply is cut short or malformed (the child died). Nothing larger than
/// `limits` allows is allocated, whatever the reply declares.
pub fn read_reply(reader: impl Read, limits: &Limits) -> io::Result<Result<Audio, AudioError>> {
    let mut reply = ReplyReader::new(reader, limits)?;
    let mut samples = Vec::new();
    loop {
        match reply.read_message()? {
            Message::Expect(count) => samples.reserve(count),
            Message::Samples(chunk) => samples.extend_from_slice(chunk),
            Message::Restart => samples.clear(),
            Message::End(result) => return Ok(result.map(|source| source.with_samples(samples))),
        }
    }
}

/// One message of the child's reply.
#[derive(Debug, PartialEq)]
pub enum Message<'a> {
    /// The source declares about this many samples in all (at most what `limits` allow).
    Expect(usize),
    /// The next samples.
    Samples(&'a [f32]),
    /// Decoding starts over: forget the samples so far.
    Restart,
    /// The last message: the audio's source, or why there is no audio.
    End(Result<SourceInfo, AudioError>),
}

/// Reads the child's reply a [`Message`] at a time, refusing one that breaks the wire
/// format or `limits` (more samples than the duration limit allows) as
/// [`io::ErrorKind::InvalidData`].
pub struct ReplyReader<R> {
    reader: R,
    /// Most samples the limits allow (plus a resampler's tail).
    most: usize,
    received: usize,
    bytes: Vec<u8>,
    samples: Vec<f32>,
}

impl<R: Read> ReplyReader<R> {
    /// Reads the reply's magic.
    pub fn new(mut reader: R, limits: &Limits) -> io::Result<Self> {
        let mut magic = [0; 8];
        reader.read_exact(&mut magic)?;
        if &magic != REPLY_MAGIC {
            return Err(invalid("not a decoder reply"));
        }
        Ok(ReplyReader {
            reader,
            most: ((limits.max_duration_seconds + 1.0) * f64::from(SAMPLE_RATE)) as usize,
            received: 0,
            bytes: Vec::new(),
            samples: Vec::new(),
        })
    }

    /// Most samples a reply may hold under the reader's limits.
    pub fn most_samples(&self) -> usize {
        self.most
    }

    /// The next message; after [`Message::End`] there is none.
    pub fn read_message(&mut self) -> io::Result<Message<'_>> {
        let reader = &mut self.reader;
        match u8_le(reader)? {
            TAG_EXPECT => {
                let count = usize::try_from(u64_le(reader)?).unwrap_or(usize::MAX);
                Ok(Message::Expect(count.min(self.most)))
            }
            TAG_SAMPLES => self.read_samples(),
            TAG_RESTART => {
                self.received = 0;
                Ok(Message::Restart)
            }
            0 => {
                let source_rate = u32_le(reader)?;
                let source_channels = u16::try_from(u32_le(reader)?).unwrap_or(u16::MAX);
                let duration_seconds = f64::from_bits(u64_le(reader)?);
                if source_rate > MAX_SOURCE_RATE || source_channels > MAX_CHANNELS {
                    return Err(invalid("decoded audio out of bounds"));
                }
                Ok(Message::End(Ok(SourceInfo {
                    source_rate,
                    source_channels,
                    duration_seconds,
                })))
            }
            tag => read_error(reader, tag).map(|error| Message::End(Err(error))),
        }
    }

    fn read_samples(&mut self) -> io::Result<Message<'_>> {
        let count = u32_le(&mut self.reader)? as usize;
        // The decoder never returns more than the duration limit (plus a resampler's tail).
        if count > MAX_CHUNK || self.received + count > self.most {
            return Err(invalid("decoded audio out of bounds"));
        }
        self.received += count;
        self.bytes.resize(4 * count, 0);
        self.reader.read_exact(&mut self.bytes)?;
        self.samples.clear();
        self.samples.extend(
            self.bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        Ok(Message::Samples(&self.samples))
    }
}

/// The [`AudioError`] a reply ending with `tag` carries.
fn read_error(reader: &mut impl Read, tag: u8) -> io::Result<AudioError> {
    Ok(match tag {
        1 => AudioError::Empty,
        2 => AudioError::Unsupported(get_text(reader)?),
        3 => AudioError::Corrupt(get_text(reader)?),
        4 => AudioError::TooLarge {
            bytes: usize::try_from(u64_le(reader)?).unwrap_or(usize::MAX),
            limit: usize::try_from(u64_le(reader)?).unwrap_or(usize::MAX),
        },
        5 => AudioError::TooLong {
            seconds: f64::from_bits(u64_le(reader)?),
            limit: f64::from_bits(u64_le(reader)?),
        },
        6 => AudioError::InvalidParameter(get_text(reader)?),
        tag => return Err(invalid(&format!("unknown reply tag {tag}"))),
    })
}

/// The reply's last message: the source of the audio whose samples were written, or
/// why there is none.
fn write_end(output: &mut impl Write, result: &Result<SourceInfo, AudioError>) -> io::Result<()> {
    let mut end = Vec::new();
    match result {
        Ok(source) => {
            end.push(0);
            end.extend_from_slice(&source.source_rate.to_le_bytes());
            end.extend_from_slice(&u32::from(source.source_channels).to_le_bytes());
            end.extend_from_slice(&source.duration_seconds.to_le_bytes());
        }
        Err(AudioError::Empty) => end.push(1),
        Err(AudioError::Unsupported(text)) => {
            end.push(2);
            put_text(&mut end, text);
        }
        Err(AudioError::Corrupt(text)) => {
            end.push(3);
            put_text(&mut end, text);
        }
        Err(AudioError::TooLarge { bytes, limit }) => {
            end.push(4);
            end.extend_from_slice(&(*bytes as u64).to_le_bytes());
            end.extend_from_slice(&(*limit as u64).to_le_bytes());
        }
        Err(AudioError::TooLong { seconds, limit }) => {
            end.push(5);
            end.extend_from_slice(&seconds.to_le_bytes());
            end.extend_from_slice(&limit.to_le_bytes());
        }
        Err(AudioError::InvalidParameter(text)) => {
            end.push(6);
            put_text(&mut end, text);
        }
    }
    output.write_all(&end)?;
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

    /// The messages of a reply, samples as their counts.
    fn messages(reply: &[u8], limits: &Limits) -> Vec<String> {
        let mut reader = ReplyReader::new(reply, limits).unwrap();
        let mut seen = Vec::new();
        loop {
            let message = reader.read_message().unwrap();
            let end = matches!(message, Message::End(_));
            seen.push(match message {
                Message::Samples(chunk) => format!("samples {}", chunk.len()),
                other => format!("{other:?}"),
            });
            if end {
                return seen;
            }
        }
    }

    #[test]
    fn samples_cross_a_second_at_a_time_as_they_are_decoded() {
        let limits = Limits::default();
        let wav = wav_bytes(&sine(440.0, 0.5, 16_000, 2.5), 16_000, 1, WavFormat::S16);
        let mut request = request_header(wav.len(), None, &limits);
        request.extend_from_slice(&wav);
        let mut reply = Vec::new();
        serve(request.as_slice(), &mut reply).unwrap();
        let seen = messages(&reply, &limits);
        // A chunk is written once a second has gathered (a packet may add a little).
        let chunks: Vec<usize> = seen[1..seen.len() - 1]
            .iter()
            .map(|m| m.strip_prefix("samples ").unwrap().parse().unwrap())
            .collect();
        assert_eq!(seen[0], "Expect(40000)");
        assert_eq!(chunks.iter().sum::<usize>(), 40_000, "{seen:?}");
        assert_eq!(chunks.len(), 3, "{seen:?}");
        assert!(chunks[..2].iter().all(|&n| (16_000..17_500).contains(&n)));
        assert!(seen[4].starts_with("End(Ok("), "{seen:?}");
    }

    #[test]
    fn a_child_that_died_is_an_io_error_and_lies_are_not_believed() {
        let limits = Limits::default();
        let wav = wav_bytes(&sine(440.0, 0.5, 16_000, 1.0), 16_000, 1, WavFormat::S16);
        let mut request = request_header(wav.len(), None, &limits);
        request.extend_from_slice(&wav);
        let mut reply = Vec::new();
        serve(request.as_slice(), &mut reply).unwrap();
        // Cut anywhere short of the end: nothing, the magic, half the samples.
        for cut in [0, 5, 12, reply.len() / 2, reply.len() - 1] {
            let error = read_reply(&reply[..cut], &limits).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        // A chunk larger than the wire allows, and more samples than the duration limit
        // allows, are refused before anything is allocated for them.
        let mut lying = REPLY_MAGIC.to_vec();
        lying.push(TAG_SAMPLES);
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        let error = read_reply(lying.as_slice(), &limits).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let one_second = Limits {
            max_duration_seconds: 1.0,
            ..limits.clone()
        };
        let mut long = REPLY_MAGIC.to_vec();
        for _ in 0..3 {
            long.push(TAG_SAMPLES);
            long.extend_from_slice(&16_000u32.to_le_bytes());
            long.extend_from_slice(&[0; 64_000]);
        }
        let error = read_reply(long.as_slice(), &one_second).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        // What the source declares is capped at what the limits allow.
        let mut expect = REPLY_MAGIC.to_vec();
        expect.push(TAG_EXPECT);
        expect.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut reader = ReplyReader::new(expect.as_slice(), &one_second).unwrap();
        assert_eq!(reader.read_message().unwrap(), Message::Expect(32_000));
        // A request cut short is the child's I/O error, not a decode of half a file.
        let error = serve(&request[..request.len() - 1], Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_parent_that_stops_reading_stops_the_child() {
        /// Takes `room` bytes, then fails as a closed pipe does.
        struct Closing {
            room: usize,
        }
        impl Write for Closing {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                if bytes.len() > self.room {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                self.room -= bytes.len();
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let limits = Limits::default();
        let wav = wav_bytes(&sine(440.0, 0.5, 16_000, 5.0), 16_000, 1, WavFormat::S16);
        let mut request = request_header(wav.len(), None, &limits);
        request.extend_from_slice(&wav);
        let error = serve(request.as_slice(), Closing { room: 100_000 }).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
