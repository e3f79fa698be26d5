//! Drives a real headless Chromium (Debian's `chromium`, installed by `make setup`) through
//! the Chrome DevTools Protocol (CDP).
//!
//! Why CDP over its WebSocket rather than chromedriver (WebDriver): the tests need what
//! WebDriver has no command for — setting a file input from a path, page screenshots at a
//! set size, the page's console and exceptions for failure reports — and CDP needs only a
//! blocking WebSocket client (`tungstenite`, which the workspace pins anyway) instead of an
//! async WebDriver crate, a second process and a second version to keep in step.
//!
//! [`Browser::start`] runs Chromium in its own process group with a fresh profile and
//! `--remote-debugging-port=0`, reads the port it chose from the profile's
//! `DevToolsActivePort`, opens one page and attaches to it (flat sessions). Every call
//! has a deadline; the whole group is killed on drop.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// Flags for a quiet, reproducible headless Chromium: no GPU, no QUIC, no first-run UI, no
/// background traffic to Google (updates, sync, field trials).
pub const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
];

/// The page's size (CSS pixels), for layout and screenshots.
pub const VIEWPORT: (u32, u32) = (1000, 1000);
/// How long Chromium may take to open its DevTools port.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one CDP call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The Chromium executable: `chromium` on `PATH` (Debian's package), else `chromium-browser`
/// or `google-chrome`. Panics when none is installed: `make setup` installs it, so a missing
/// browser is a broken setup, not a reason to skip.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .expect("Chromium is not installed: run `make setup` (apt-get install chromium)")
}

/// A running headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    /// The fresh profile, removed once the browser is killed.
    _profile: tempfile::TempDir,
    socket: WebSocket<TcpStream>,
    /// The page's flat session id (sent with every page command).
    session: String,
    next_id: u64,
    /// The page's console messages and uncaught exceptions, printed when a test fails.
    console: Vec<String>,
}

impl Browser {
    /// Chromium with [`FLAGS`], a fresh profile and `extra` flags, showing `about:blank`.
    pub fn start(extra: &[&str]) -> Browser {
        let profile = tempfile::tempdir().expect("profile directory");
        let child = Command::new(binary())
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1))
            .args(extra)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its renderers and helpers join the group, which drop kills as a whole.
            .process_group(0)
            .spawn()
            .expect("spawn chromium");
        let mut browser = Browser {
            socket: connect(&debugging_url(profile.path())),
            child,
            _profile: profile,
            session: String::new(),
            next_id: 0,
            console: Vec::new(),
        };
        browser.attach_page();
        browser
    }

    /// Opens a page and attaches to it; enables what the tests read.
    fn attach_page(&mut self) {
        let target = self.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = self.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        self.call("Page.enable", json!({}));
        self.call("Runtime.enable", json!({}));
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": VIEWPORT.0, "height": VIEWPORT.1, "deviceScaleFactor": 1, "mobile": false}),
        );
    }

    /// Loads `url` and waits until the document and its scripts are in.
    pub fn navigate(&mut self, url: &str) {
        let answer = self.call("Page.navigate", json!({"url": url}));
        assert!(
            answer.get("errorText").is_none(),
            "navigate to {url}: {answer}"
        );
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        );
    }

    /// The value of the JavaScript `expression` (promises awaited); panics on an exception.
    pub fn evaluate(&mut self, expression: &str) -> Value {
        let answer = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
        );
        if let Some(exception) = answer.get("exceptionDetails") {
            panic!("{expression}: {exception}\n{}", self.console_text());
        }
        answer["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy; returns its value. Panics after `timeout`
    /// with the last value and the page's console.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.evaluate(expression);
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "not true after {timeout:?}: {expression} (last {value})\n{}",
                self.console_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The text of the element `selector`; empty when there is none.
    pub fn text(&mut self, selector: &str) -> String {
        let expression = format!(
            "document.querySelector({})?.textContent ?? ''",
            json!(selector)
        );
        self.evaluate(&expression)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Clicks the middle of the element `selector` with the mouse: a real user gesture,
    /// which the page needs to start audio (Chromium's autoplay policy).
    pub fn click(&mut self, selector: &str) {
        let centre = self.evaluate(&format!(
            "(() => {{ const e = document.querySelector({}); e.scrollIntoView({{block: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()",
            json!(selector)
        ));
        let (x, y) = (centre[0].clone(), centre[1].clone());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Sets the file input `selector` to `file`, as a user picking it would (`change` fires).
    pub fn choose_file(&mut self, selector: &str, file: &Path) {
        let element = self.call(
            "Runtime.evaluate",
            json!({"expression": format!("document.querySelector({})", json!(selector))}),
        );
        let object = element["result"]["objectId"].clone();
        assert!(object.is_string(), "no element {selector}: {element}");
        let file = file.canonicalize().expect("the file exists");
        self.call(
            "DOM.setFileInputFiles",
            json!({"files": [file], "objectId": object}),
        );
    }

    /// Writes a PNG of the page (the viewport) to `path`, creating its directory.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// The page's console and exceptions so far, one per line.
    pub fn console_text(&self) -> String {
        format!("--- page console ---\n{}", self.console.join("\n"))
    }

    /// A command to the page's session; its `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    /// A command to the browser itself; its `result`.
    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .unwrap_or_else(|e| panic!("CDP {method}: {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let message = self.receive(deadline, method);
            if message["id"] == json!(id) {
                if let Some(error) = message.get("error") {
                    panic!("CDP {method}: {error}\n{}", self.console_text());
                }
                return message["result"].clone();
            }
            self.note_event(&message);
        }
    }

    /// The next CDP message before `deadline`.
    fn receive(&mut self, deadline: Instant, method: &str) -> Value {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "CDP {method}: no answer in {CALL_TIMEOUT:?}"
            );
            self.socket
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(&text).expect("CDP sends JSON")
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("CDP {method}: {e}"),
            }
        }
    }

    /// Keeps the page's console lines and exceptions.
    fn note_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].to_string())
                    .collect();
                self.console
                    .push(format!("console.{}: {}", params["type"], args.join(" ")));
            }
            Some("Runtime.exceptionThrown") => self
                .console
                .push(format!("exception: {}", params["exceptionDetails"])),
            _ => {}
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the browser and every renderer, GPU and utility process.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.console_text());
        }
    }
}

/// The browser's DevTools WebSocket URL, from the `DevToolsActivePort` file Chromium
/// writes into its profile once it listens (first line the port, second the path).
fn debugging_url(profile: &Path) -> String {
    let file = profile.join("DevToolsActivePort");
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if let [port, path] = text.lines().collect::<Vec<_>>()[..] {
            return format!("ws://127.0.0.1:{port}{path}");
        }
        assert!(
            started.elapsed() < STARTUP_TIMEOUT,
            "Chromium wrote no {} within {STARTUP_TIMEOUT:?}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect(url: &str) -> WebSocket<TcpStream> {
    let address = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("host:port");
    let stream = TcpStream::connect(address).expect("connect to Chromium's DevTools port");
    stream
        .set_read_timeout(Some(CALL_TIMEOUT))
        .expect("set read timeout");
    let (socket, _) = tungstenite::client::client(url, stream)
        .unwrap_or_else(|e| panic!("DevTools handshake with {url}: {e}"));
    socket
}
