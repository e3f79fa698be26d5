//! The playground at `GET /` in a real headless Chromium (tests/src/browser.rs), against
//! one `steno serve` with tiny.en and an API key, which the test types into the page as a
//! user would:
//!
//! * the page itself is public and served with a strict Content-Security-Policy, while
//!   the API behind it still wants the key;
//! * the file flow: jfk.wav picked in the file input, transcribed through
//!   `/v1/audio/transcriptions` as verbose_json; the transcript reads "ask not what your
//!   country can do for you" and the segment table has its times;
//! * the microphone flow: Chromium's fake capture device plays jfk.wav into
//!   `getUserMedia`, the page streams it to `/v1/realtime` and its captions read the same
//!   sentence.
//!
//! Each flow writes a screenshot (target/screenshots/playground-*.png, in the README).
//! Chromium missing is a broken setup (`make setup` installs it), so the test fails then.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use steno_e2e::browser::Browser;
use steno_e2e::server::{Request, Server};
use steno_e2e::{assets, wer};

const API_KEY: &str = "playground-test-key";
/// What JFK says in the middle of the clip, normalised (wer::normalize).
const PHRASE: &str = "ask not what your country can do for you";
/// Each flow, from its first action to its answer.
const FLOW_TIMEOUT: Duration = Duration::from_secs(60);

fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/screenshots")
        .join(name)
}

fn normalised(text: &str) -> String {
    wer::normalize(text).join(" ")
}

/// Chromium's fake microphone playing `wav` once (`%noloop`: then silence, so the
/// server's VAD ends the last turn), and its permission prompt answered yes.
fn fake_microphone(wav: &Path) -> Vec<String> {
    vec![
        "--use-fake-ui-for-media-stream".into(),
        "--use-fake-device-for-media-stream".into(),
        format!("--use-file-for-fake-audio-capture={}%noloop", wav.display()),
    ]
}

#[test]
fn playground_transcribes_a_file_and_live_speech_in_chromium() {
    let jfk = assets::jfk();
    let server = Server::start(&["--api-key", API_KEY]);
    page_is_public_and_locked_down(&server);

    let flags = fake_microphone(&jfk.path);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut browser = Browser::start(&flags);
    browser.navigate(&server.url("/"));
    enter_api_key(&mut browser);

    let started = Instant::now();
    file_flow(&mut browser, &jfk.path);
    eprintln!("file flow: {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    live_flow(&mut browser);
    eprintln!("live flow: {:.1} s", started.elapsed().as_secs_f64());
}

/// `GET /` needs no key and carries its policy; the API it calls still needs the key.
fn page_is_public_and_locked_down(server: &Server) {
    let page = server.get("/");
    page.expect_status(200);
    assert_eq!(page.content_type(), "text/html");
    let policy = page.header("content-security-policy").unwrap_or_default();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            policy.contains(directive),
            "CSP {policy:?} lacks {directive}"
        );
    }
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    for asset in [
        "/playground/app.js",
        "/playground/capture.js",
        "/playground/style.css",
    ] {
        server.get(asset).expect_status(200);
    }
    server.get("/v1/models").expect_error(401);
    Request::get(server.url("/v1/models"))
        .bearer(API_KEY)
        .send()
        .expect_status(200);
}

/// Types the key into the settings and waits until the page reports the server ready
/// (which takes /health and /v1/models with the key).
fn enter_api_key(browser: &mut Browser) {
    browser.evaluate(&format!(
        "(() => {{ const k = document.querySelector('#key'); k.value = {}; \
         k.dispatchEvent(new Event('change')); }})()",
        serde_json::json!(API_KEY)
    ));
    browser.wait_for(
        "document.querySelector('#status').className === 'ok'",
        Duration::from_secs(15),
    );
    let status = browser.text("#status");
    assert!(status.contains("Server ready"), "{status}");
}

fn file_flow(browser: &mut Browser, wav: &Path) {
    browser.choose_file("#file", wav);
    let timeout = FLOW_TIMEOUT.as_millis();
    browser.wait_for(
        "document.querySelector('#file-state').textContent.includes('done') \
         || document.querySelector('#file-error').textContent",
        Duration::from_millis(timeout as u64),
    );
    let error = browser.text("#file-error");
    assert!(error.is_empty(), "the page shows an error: {error}");
    let transcript = browser.text("#transcript");
    assert!(
        normalised(&transcript).contains(PHRASE),
        "transcript: {transcript:?}"
    );
    let rows = browser.evaluate(
        "[...document.querySelectorAll('#segments tbody tr')]\
         .map(r => [...r.cells].map(c => c.textContent))",
    );
    check_segment_rows(&rows);
    browser.screenshot(&screenshot_path("playground-file.png"));
}

/// Rows of `m:ss.ss` start, end and text: in order, within the 11 s clip, with words.
fn check_segment_rows(rows: &Value) {
    let rows = rows.as_array().expect("segment rows");
    assert!(!rows.is_empty(), "no segment table");
    let seconds = |cell: &Value| -> f64 {
        let text = cell.as_str().unwrap_or_default();
        let (minutes, seconds) = text.split_once(':').expect("m:ss.ss");
        minutes.parse::<f64>().unwrap() * 60.0 + seconds.parse::<f64>().unwrap()
    };
    let mut last_end = 0.0;
    for row in rows {
        let (start, end) = (seconds(&row[0]), seconds(&row[1]));
        assert!(
            last_end - 0.01 <= start && start < end && end <= 11.5,
            "{row}"
        );
        assert!(!row[2].as_str().unwrap_or_default().is_empty(), "{row}");
        last_end = end;
    }
}

fn live_flow(browser: &mut Browser) {
    browser.click("#record");
    let deadline = Instant::now() + FLOW_TIMEOUT;
    let mut seen_pending = false;
    let final_text = loop {
        let error = browser.text("#live-error");
        assert!(error.is_empty(), "the page shows an error: {error}");
        // A caption still being spoken (deltas) before its turn completed.
        seen_pending |= !browser.text("#captions li.pending").is_empty();
        let done = browser.evaluate(
            "[...document.querySelectorAll('#captions li:not(.pending)')]\
             .map(li => li.textContent).join(' ')",
        );
        let done = done.as_str().unwrap_or_default().to_string();
        if normalised(&done).contains(PHRASE) {
            break done;
        }
        assert!(
            Instant::now() < deadline,
            "no completed caption with {PHRASE:?} in {FLOW_TIMEOUT:?}; captions: {:?}, state: {:?}\n{}",
            browser.text("#captions"),
            browser.text("#live-state"),
            browser.console_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("captions: {final_text:?} (interim text seen: {seen_pending})");
    browser.evaluate("document.querySelector('#live-title').scrollIntoView()");
    browser.screenshot(&screenshot_path("playground-live.png"));

    browser.click("#record"); // Stop
    browser.wait_for(
        "document.querySelector('#record').textContent === 'Record' \
         && !document.querySelector('#record').disabled",
        Duration::from_secs(15),
    );
    let error = browser.text("#live-error");
    assert!(error.is_empty(), "stopping shows an error: {error}");
}
