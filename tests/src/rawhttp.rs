//! A small HTTP/1.1 client on `std::net::TcpStream`, for what a curl process cannot do
//! on cue or cheaply: hundreds of requests from threads, a client-chosen request id on
//! each, and connections closed at a chosen moment (mid-upload, mid-decode).
//!
//! Requests send `Expect: 100-continue` (unless asked not to), so a server that answers
//! before reading the body (a 429 at the door) gets no body it would have to discard,
//! and the answer is never lost to a reset. The answer is parsed into the harness's
//! [`Response`], so its helpers (`json`, `expect_error`, `header`) apply.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::server::Response;

/// A `multipart/form-data` body.
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Multipart {
    fn default() -> Self {
        Self::new()
    }
}

impl Multipart {
    pub fn new() -> Multipart {
        Multipart {
            boundary: "steno-e2e-7d1f0c2b9a4e".to_string(),
            body: Vec::new(),
        }
    }

    /// A text field.
    pub fn field(mut self, name: &str, value: &str) -> Multipart {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self
    }

    /// A file field.
    pub fn file(mut self, name: &str, filename: &str, bytes: &[u8]) -> Multipart {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// (Content-Type, body).
    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            self.body,
        )
    }
}

/// One request, ready to send (any number of times).
#[derive(Clone)]
pub struct RawRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    expect_continue: bool,
}

impl RawRequest {
    pub fn get(path: &str) -> RawRequest {
        RawRequest {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            expect_continue: false,
        }
    }

    /// A POST of `form`, with `Expect: 100-continue`.
    pub fn post_form(path: &str, form: Multipart) -> RawRequest {
        let (content_type, body) = form.finish();
        RawRequest {
            method: "POST".into(),
            path: path.into(),
            headers: vec![("Content-Type".into(), content_type)],
            body,
            expect_continue: true,
        }
    }

    /// A request header.
    pub fn header(mut self, name: &str, value: &str) -> RawRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends the body right after the head instead of waiting for `100 Continue`.
    pub fn without_expect(mut self) -> RawRequest {
        self.expect_continue = false;
        self
    }

    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    fn head(&self, address: SocketAddr) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {address}\r\n",
            self.method, self.path
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.method != "GET" || !self.body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if self.expect_continue && !self.body.is_empty() {
            head.push_str("Expect: 100-continue\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Sends the request and reads one response, all within `timeout`. The connection is
    /// closed when this returns.
    pub fn send(&self, address: SocketAddr, timeout: Duration) -> Result<Response, String> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut connection = Connection::open(address, timeout)?;
        connection.write(&self.head(address), deadline)?;
        if self.expect_continue && !self.body.is_empty() {
            let head = connection.read_head(deadline)?;
            if head.status != 100 {
                // Answered at the door, body unread.
                return connection.finish(head, started, deadline);
            }
        }
        // A server that answers early and closes may refuse the rest of the body; its
        // answer is still worth reading.
        let wrote = connection.write(&self.body, deadline);
        let head = match connection.read_head(deadline) {
            Ok(head) => head,
            Err(e) => return Err(wrote.err().map_or(e.clone(), |w| format!("{w}; then {e}"))),
        };
        connection.finish(head, started, deadline)
    }

    /// Connects and sends the head and the first `bytes` of the body (no `Expect`), then
    /// hands back the open connection: dropping it is a client going away mid-upload.
    pub fn send_partial(&self, address: SocketAddr, bytes: usize) -> Result<TcpStream, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut connection = Connection::open(address, Duration::from_secs(10))?;
        connection.write(&self.head(address), deadline)?;
        connection.write(&self.body[..bytes.min(self.body.len())], deadline)?;
        Ok(connection.stream)
    }

    /// Sends the whole request and hands back the open connection without reading the
    /// answer: dropping it is a client going away while the server works.
    pub fn send_and_hold(&self, address: SocketAddr) -> Result<TcpStream, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut connection = Connection::open(address, Duration::from_secs(10))?;
        connection.write(&self.head(address), deadline)?;
        connection.write(&self.body, deadline)?;
        Ok(connection.stream)
    }
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

struct Connection {
    stream: TcpStream,
    /// Bytes read past the last parsed head.
    buffer: Vec<u8>,
}

impl Connection {
    fn open(address: SocketAddr, timeout: Duration) -> Result<Connection, String> {
        let stream = TcpStream::connect_timeout(&address, timeout)
            .map_err(|e| format!("connect {address}: {e}"))?;
        stream.set_nodelay(true).ok();
        Ok(Connection {
            stream,
            buffer: Vec::new(),
        })
    }

    fn remaining(deadline: Instant) -> Result<Duration, String> {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "timed out".to_string())
    }

    fn write(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), String> {
        self.stream
            .set_write_timeout(Some(Self::remaining(deadline)?))
            .map_err(|e| e.to_string())?;
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads more bytes; `Ok(0)` at the end of the stream.
    fn fill(&mut self, deadline: Instant) -> Result<usize, String> {
        self.stream
            .set_read_timeout(Some(Self::remaining(deadline)?))
            .map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                "timed out".to_string()
            }
            _ => format!("read: {e}"),
        })?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn read_head(&mut self, deadline: Instant) -> Result<Head, String> {
        let end = loop {
            if let Some(i) = find(&self.buffer, b"\r\n\r\n") {
                break i;
            }
            if self.fill(deadline)? == 0 {
                return Err(format!(
                    "connection closed before a response head ({} bytes)",
                    self.buffer.len()
                ));
            }
        };
        let text = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
        self.buffer.drain(..end + 4);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(Head { status, headers })
    }

    /// Reads the body of `head` (skipping interim 1xx heads) into a [`Response`].
    fn finish(
        mut self,
        mut head: Head,
        started: Instant,
        deadline: Instant,
    ) -> Result<Response, String> {
        while (100..200).contains(&head.status) {
            head = self.read_head(deadline)?;
        }
        let header = |name: &str| {
            head.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            self.chunked(deadline)?
        } else if let Some(length) = header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| format!("bad content-length {length:?}"))?;
            while self.buffer.len() < length {
                if self.fill(deadline)? == 0 {
                    return Err(format!(
                        "connection closed after {} of {length} body bytes",
                        self.buffer.len()
                    ));
                }
            }
            if self.buffer.len() > length {
                return Err(format!(
                    "{} bytes after the {length}-byte body: a second answer?",
                    self.buffer.len() - length
                ));
            }
            std::mem::take(&mut self.buffer)
        } else {
            while self.fill(deadline)? > 0 {}
            std::mem::take(&mut self.buffer)
        };
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body: String::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?,
            elapsed: started.elapsed(),
        })
    }

    fn chunked(&mut self, deadline: Instant) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buffer, b"\r\n") {
                    break i;
                }
                if self.fill(deadline)? == 0 {
                    return Err("connection closed inside a chunked body".into());
                }
            };
            let size_text = String::from_utf8_lossy(&self.buffer[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            if size == 0 {
                // Trailers, if any, are not needed.
                return Ok(body);
            }
            while self.buffer.len() < line_end + 2 + size + 2 {
                if self.fill(deadline)? == 0 {
                    return Err("connection closed inside a chunk".into());
                }
            }
            body.extend_from_slice(&self.buffer[line_end + 2..line_end + 2 + size]);
            self.buffer.drain(..line_end + 2 + size + 2);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server that reads the request head, optionally answers 100, and
    /// then writes `answer`.
    fn serve_once(answer: &'static [u8], send_continue: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut chunk = [0u8; 4096];
            while find(&seen, b"\r\n\r\n").is_none() {
                let n = stream.read(&mut chunk).unwrap();
                seen.extend_from_slice(&chunk[..n]);
            }
            if send_continue {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
                // Read the body before answering.
                std::thread::sleep(Duration::from_millis(50));
                stream.set_nonblocking(true).unwrap();
                while let Ok(n) = stream.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                }
            }
            stream.write_all(answer).unwrap();
        });
        address
    }

    fn form() -> RawRequest {
        RawRequest::post_form(
            "/x",
            Multipart::new().field("a", "b").file("f", "f.wav", b"RIFF"),
        )
    }

    #[test]
    fn reads_a_content_length_body_after_continue() {
        let address = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Request-Id: r1\r\n\r\nhello",
            true,
        );
        let response = form().send(address, Duration::from_secs(5)).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "hello");
        assert_eq!(response.header("x-request-id"), Some("r1"));
    }

    #[test]
    fn reads_an_answer_given_at_the_door() {
        let address = serve_once(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\ncontent-length: 2\r\n\r\n{}",
            false,
        );
        let response = form().send(address, Duration::from_secs(5)).unwrap();
        assert_eq!(response.status, 429);
        assert_eq!(response.header("retry-after"), Some("1"));
        assert_eq!(response.body, "{}");
    }

    #[test]
    fn reads_a_chunked_body() {
        let address = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            true,
        );
        let response = form().send(address, Duration::from_secs(5)).unwrap();
        assert_eq!(response.body, "abcde");
    }

    #[test]
    fn multipart_is_well_formed() {
        let (content_type, body) = Multipart::new().field("model", "m").finish();
        let boundary = content_type.split("boundary=").nth(1).unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
        assert!(text.contains("name=\"model\"\r\n\r\nm\r\n"));
    }
}
