//! Runs the real `steno serve` and talks to it with the real `curl`.
//!
//! [`Server::start`] spawns `steno serve --host 127.0.0.1 --port 0 --model <tiny.en>` with
//! extra arguments, waits for its `listening address=…` log line and keeps draining its
//! stderr (the lines are kept, and printed when a test panics while the server is up).
//! The child is killed when the [`Server`] is dropped.
//!
//! [`Request`] builds one `curl` command line; [`Response`] is what came back: status,
//! headers of the final response, body, and helpers for JSON, SSE and OpenAI's error
//! envelope.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{assets, cli};

/// How long `steno serve` may take to load the model and listen.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Default `curl --max-time` of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `steno serve`; killed on drop.
pub struct Server {
    child: Child,
    base_url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// `steno serve` with the tiny.en model and `extra` arguments.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with_env(extra, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_model_with_env(&assets::model_dir(assets::TINY_EN), extra, env)
    }

    /// `steno serve` with the model at `model` (a directory or repo id) and `extra` arguments.
    pub fn start_model(model: &Path, extra: &[&str]) -> Server {
        Server::start_model_with_env(model, extra, &[])
    }

    /// The general form of the constructors above. Every `STENO_*` variable of the test's
    /// environment other than `STENO_ASSETS` is removed, so only `extra` and `env` configure
    /// the server.
    pub fn start_model_with_env(model: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = serve_command(model, extra, env)
            .spawn()
            .expect("spawn steno serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let thread_log = log.clone();
        std::thread::spawn(move || {
            let mut address_tx = Some(address_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if let Some(address) = listening_address(&line) {
                    if let Some(tx) = address_tx.take() {
                        let _ = tx.send(address);
                    }
                }
                thread_log.lock().unwrap().push(line);
            }
        });
        let mut server = Server {
            child,
            base_url: String::new(),
            log,
        };
        match address_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(address) => server.base_url = format!("http://{address}"),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "steno serve did not log `listening` within {STARTUP_TIMEOUT:?}:\n{}",
                server.log_text()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.child.wait().ok();
                // Let the reader thread store the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "steno serve exited before listening ({status:?}):\n{}",
                    server.log_text()
                )
            }
        }
        server
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.base_url
            .trim_start_matches("http://")
            .parse()
            .expect("listening address")
    }

    /// Sends the child SIGTERM (with the `kill` command).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait steno serve") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The child's resident set size (`VmRSS` of /proc/PID/status), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("no VmRSS in {path}"))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The server's stderr so far, ANSI colours removed.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn log_text(&self) -> String {
        self.log().join("\n")
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Response {
        Request::get(self.url(path)).send()
    }

    /// `GET /metrics` as text; panics unless it answers 200.
    pub fn metrics(&self) -> String {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200, "GET /metrics: {}", response.body);
        response.body
    }

    /// A `POST /v1/audio/transcriptions` with `file` and `model=whisper-1`, ready for more
    /// fields.
    pub fn transcription(&self, file: &Path) -> Request {
        self.audio_request("/v1/audio/transcriptions", file)
    }

    /// A `POST /v1/audio/translations` with `file` and `model=whisper-1`.
    pub fn translation(&self, file: &Path) -> Request {
        self.audio_request("/v1/audio/translations", file)
    }

    fn audio_request(&self, path: &str, file: &Path) -> Request {
        Request::post(self.url(path))
            .file("file", file)
            .field("model", "whisper-1")
    }

    /// Transcribes `file` with extra form `fields`; the response, whatever its status.
    pub fn transcribe(&self, file: &Path, fields: &[(&str, &str)]) -> Response {
        self.transcription(file).fields(fields).send()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail = &log[log.len().saturating_sub(60)..];
            eprintln!(
                "--- steno serve ({}) stderr, last {} lines ---\n{}\n---",
                self.base_url,
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// `steno serve` on 127.0.0.1 with a free port, `model` and `extra` arguments, stderr piped.
/// Every `STENO_*` variable of the test's environment other than `STENO_ASSETS` is removed,
/// so only `extra` and `env` configure the server.
fn serve_command(model: &Path, extra: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(cli::steno_binary());
    command.arg("serve");
    // Loopback, unless a test names another host: only to check that the start is
    // refused, since a server there would be open to the network.
    if !extra.contains(&"--host") {
        command.args(["--host", "127.0.0.1"]);
    }
    command
        .args(["--port", "0", "--model"])
        .arg(model)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("STENO_") && key != assets::ASSETS_ENV {
            command.env_remove(&*key);
        }
    }
    command.env("NO_COLOR", "1").env("RUST_LOG", "info");
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// How a `steno serve` that was expected to stop on its own ended.
#[derive(Debug)]
pub struct Exited {
    /// `None` when it was still running at the timeout (it is killed then).
    pub status: Option<ExitStatus>,
    /// Its stderr, ANSI colours removed.
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `steno serve` with `model` and `extra` arguments until it exits or `timeout`
/// passes (then kills it), for starts that must fail.
pub fn serve_until_exit(model: &Path, extra: &[&str], timeout: Duration) -> Exited {
    let started = Instant::now();
    let mut child = serve_command(model, extra, &[])
        .spawn()
        .expect("spawn steno serve");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = crate::cli::wait_within(&mut child, timeout);
    let elapsed = started.elapsed();
    let stderr = reader.join().unwrap_or_default();
    Exited {
        status,
        stderr: stderr
            .lines()
            .map(strip_ansi)
            .collect::<Vec<_>>()
            .join("\n"),
        elapsed,
    }
}

/// Removes ANSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The `host:port` of a `listening address=…` log line (plain or JSON tracing output).
fn listening_address(line: &str) -> Option<String> {
    if !line.contains("listening") {
        return None;
    }
    let rest = if let Some(i) = line.find("address=") {
        &line[i + "address=".len()..]
    } else {
        let i = line.find("\"address\":")?;
        &line[i + "\"address\":".len()..]
    };
    let address: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',' && *c != '}')
        .collect();
    (!address.is_empty()).then_some(address)
}

/// One `curl` invocation, built up with the methods below.
pub struct Request {
    url: String,
    args: Vec<OsString>,
    max_time: Duration,
    dir: tempfile::TempDir,
}

/// Escapes a value for curl's `-F name=@"…"` / `;filename="…"` syntax.
fn curl_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Request {
    fn new(url: String) -> Request {
        Request {
            url,
            args: Vec::new(),
            max_time: REQUEST_TIMEOUT,
            dir: tempfile::tempdir().expect("tempdir for curl"),
        }
    }

    pub fn get(url: impl Into<String>) -> Request {
        Request::new(url.into())
    }

    /// A POST (the form fields or body added later make it one; `-X POST` makes an empty one
    /// a POST too).
    pub fn post(url: impl Into<String>) -> Request {
        Request::new(url.into()).arg("-X").arg("POST")
    }

    /// One raw curl argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Request {
        self.args.push(arg.into());
        self
    }

    /// A text form field, sent verbatim (`--form-string`: no `@` or `<` magic).
    pub fn field(self, name: &str, value: &str) -> Request {
        self.arg("--form-string").arg(format!("{name}={value}"))
    }

    pub fn fields(self, fields: &[(&str, &str)]) -> Request {
        fields
            .iter()
            .fold(self, |request, (name, value)| request.field(name, value))
    }

    /// A file form field, named after the file.
    pub fn file(self, name: &str, path: &Path) -> Request {
        let path = path.to_str().expect("UTF-8 path");
        self.arg("-F").arg(format!("{name}=@{}", curl_quote(path)))
    }

    /// A file form field with the file name `filename` in its Content-Disposition.
    pub fn file_as(self, name: &str, path: &Path, filename: &str) -> Request {
        let path = path.to_str().expect("UTF-8 path");
        self.arg("-F").arg(format!(
            "{name}=@{};filename={}",
            curl_quote(path),
            curl_quote(filename)
        ))
    }

    /// A request header, `Name: value`.
    pub fn header(self, header: &str) -> Request {
        self.arg("-H").arg(header)
    }

    /// `Authorization: Bearer key`.
    pub fn bearer(self, key: &str) -> Request {
        self.header(&format!("Authorization: Bearer {key}"))
    }

    /// A raw POST body with this Content-Type.
    pub fn body(self, content_type: &str, bytes: &[u8]) -> Request {
        let path = self.dir.path().join("request-body");
        std::fs::write(&path, bytes).expect("write request body");
        let mut data = OsString::from("@");
        data.push(path.as_os_str());
        self.header(&format!("Content-Type: {content_type}"))
            .arg("--data-binary")
            .arg(data)
    }

    /// `curl --max-time`.
    pub fn max_time(mut self, max_time: Duration) -> Request {
        self.max_time = max_time;
        self
    }

    /// Starts curl without waiting for it.
    pub fn spawn(self) -> Pending {
        let headers = self.dir.path().join("response-headers");
        let body = self.dir.path().join("response-body");
        let child = Command::new("curl")
            .args(["-sS", "--max-time"])
            .arg(format!("{:.3}", self.max_time.as_secs_f64()))
            .arg("-D")
            .arg(&headers)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(&self.args)
            .arg(&self.url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn curl (is it installed?)");
        Pending {
            child: Some(child),
            started: Instant::now(),
            headers,
            body,
            url: self.url,
            _dir: self.dir,
        }
    }

    /// Runs curl to completion; panics when curl itself fails (no HTTP response).
    pub fn send(self) -> Response {
        self.spawn().wait()
    }
}

/// A running curl; killed if dropped before it is waited for.
pub struct Pending {
    child: Option<Child>,
    started: Instant,
    headers: PathBuf,
    body: PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

impl Pending {
    /// curl's process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether curl is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills curl (the client goes away mid-request) and reaps it.
    pub fn kill(self) {
        // Drop kills and reaps.
    }

    /// Waits for curl; `Err` with curl's message when it got no HTTP response.
    pub fn wait_result(mut self) -> Result<Response, String> {
        let child = self.child.take().expect("curl not yet waited for");
        let output = child.wait_with_output().expect("wait for curl");
        let elapsed = self.started.elapsed();
        let code = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !output.status.success() {
            return Err(format!(
                "curl {} failed ({}, http_code {code}) after {elapsed:?}: {}",
                self.url,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| format!("curl {}: unexpected http_code {code:?}", self.url))?;
        let headers = std::fs::read_to_string(&self.headers).unwrap_or_default();
        let body = std::fs::read(&self.body).unwrap_or_default();
        Ok(Response {
            status,
            headers: parse_headers(&headers),
            body: String::from_utf8(body)
                .map_err(|e| format!("curl {}: body is not UTF-8: {e}", self.url))?,
            elapsed,
        })
    }

    /// Waits for curl; panics when it got no HTTP response.
    pub fn wait(self) -> Response {
        self.wait_result().unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Headers of the last response in curl's `-D` dump (skipping `100 Continue` and the like),
/// names lowercased.
fn parse_headers(dump: &str) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for line in dump.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            headers.clear();
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    headers
}

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Final response's headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// From spawning curl to its exit.
    pub elapsed: Duration,
}

/// OpenAI's error envelope `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub message: String,
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The Content-Type without parameters, lowercased (`""` when absent).
    pub fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}); status {}, content-type {:?}:\n{}",
                self.status,
                self.header("content-type"),
                self.body
            )
        })
    }

    /// Panics unless the status is `status`, showing the body.
    pub fn expect_status(&self, status: u16) -> &Response {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {}; body:\n{}",
            self.status, self.body
        );
        self
    }

    /// The `data:` payloads of a `text/event-stream` body, each parsed as JSON (a final
    /// `[DONE]` is skipped).
    pub fn sse_events(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let mut data = String::new();
        for line in self.body.lines().chain(std::iter::once("")) {
            let line = line.trim_end_matches('\r');
            if let Some(payload) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(payload.strip_prefix(' ').unwrap_or(payload));
            } else if line.is_empty() && !data.is_empty() {
                let payload = std::mem::take(&mut data);
                if payload.trim() == "[DONE]" {
                    continue;
                }
                events.push(serde_json::from_str(&payload).unwrap_or_else(|e| {
                    panic!(
                        "SSE data is not JSON ({e}): {payload:?}\nbody:\n{}",
                        self.body
                    )
                }));
            }
        }
        events
    }

    /// Checks that the body is exactly OpenAI's error envelope (those four keys, with
    /// string / string / string-or-null / string-or-null values) and returns it.
    pub fn api_error(&self) -> ApiError {
        let json = self.json();
        let fail = |why: &str| -> ! {
            panic!(
                "not an OpenAI error envelope ({why}); status {}:\n{}",
                self.status, self.body
            )
        };
        let top = json.as_object().unwrap_or_else(|| fail("not an object"));
        if top.len() != 1 {
            fail("top level must hold only `error`");
        }
        let error = top
            .get("error")
            .and_then(Value::as_object)
            .unwrap_or_else(|| fail("no `error` object"));
        let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
        keys.sort_unstable();
        if keys != ["code", "message", "param", "type"] {
            fail(&format!("keys {keys:?}"));
        }
        let string = |key: &str| error[key].as_str().map(str::to_string);
        let nullable = |key: &str| match &error[key] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            _ => fail(&format!("`{key}` must be a string or null")),
        };
        let message = string("message").unwrap_or_else(|| fail("`message` must be a string"));
        if message.is_empty() {
            fail("empty `message`");
        }
        ApiError {
            message,
            kind: string("type").unwrap_or_else(|| fail("`type` must be a string")),
            param: nullable("param"),
            code: nullable("code"),
        }
    }

    /// Checks the status and the envelope together.
    pub fn expect_error(&self, status: u16) -> ApiError {
        self.expect_status(status);
        self.api_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m listening"),
            "2026  INFO listening"
        );
    }

    #[test]
    fn finds_the_listening_address() {
        assert_eq!(
            listening_address(
                "2026-11-27T12:44:42Z  INFO steno: listening address=127.0.0.1:41651"
            )
            .as_deref(),
            Some("127.0.0.1:41651")
        );
        assert_eq!(
            listening_address(r#"{"fields":{"message":"listening","address":"127.0.0.1:8000"}}"#)
                .as_deref(),
            Some("127.0.0.1:8000")
        );
        assert_eq!(listening_address("model loaded address=x"), None);
    }

    #[test]
    fn keeps_the_last_header_block() {
        let dump = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Payload Too Large\r\n\
                    Content-Type: application/json\r\nX-Request-Id: abc\r\n\r\n";
        assert_eq!(
            parse_headers(dump),
            [
                ("content-type".to_string(), "application/json".to_string()),
                ("x-request-id".to_string(), "abc".to_string()),
            ]
        );
    }

    #[test]
    fn parses_sse() {
        let response = Response {
            status: 200,
            headers: Vec::new(),
            body: "data: {\"a\":1}\n\n: comment\r\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n".into(),
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            response.sse_events(),
            [serde_json::json!({"a":1}), serde_json::json!({"b":2})]
        );
    }

    #[test]
    fn checks_the_error_envelope() {
        let response = |body: &str| Response {
            status: 400,
            headers: Vec::new(),
            body: body.into(),
            elapsed: Duration::ZERO,
        };
        let good = response(
            r#"{"error":{"message":"no","type":"invalid_request_error","param":"file","code":null}}"#,
        );
        assert_eq!(
            good.api_error(),
            ApiError {
                message: "no".into(),
                kind: "invalid_request_error".into(),
                param: Some("file".into()),
                code: None,
            }
        );
        let missing_code =
            response(r#"{"error":{"message":"no","type":"invalid_request_error","param":null}}"#);
        assert!(std::panic::catch_unwind(|| missing_code.api_error()).is_err());
    }
}
