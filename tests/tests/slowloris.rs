//! Slow and silent clients against one real `steno serve` (tiny.en), with short time
//! bounds set through the configuration: 64 connections trickle an upload a byte every
//! 2 s (as many as `server.max_concurrent_requests`: before the fix they held every
//! transcription permit and every other client got 429), a few trickle a request head
//! or send nothing, and meanwhile a normal jfk.wav request comes every second. Every
//! normal request must get 200 with the right text; every slow connection must be
//! answered 408 or closed within its bound; an idle kept-alive connection must outlive
//! the header timeout and be closed at the idle timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use steno_e2e::rawhttp::RawRequest;
use steno_e2e::server::Server;
use steno_e2e::stress;
use steno_e2e::wer::assert_wer;
use steno_e2e::{assets, prometheus};

/// Connections trickling an upload: the server's default `max_concurrent_requests`.
const TRICKLING_UPLOADS: usize = 64;
/// Connections trickling a request head, and connections sending nothing.
const TRICKLING_HEADS: usize = 3;
const SILENT: usize = 3;
/// One byte per this long.
const TRICKLE_EVERY: Duration = Duration::from_secs(2);
/// Normal requests, one every [`NORMAL_EVERY`] (without waiting for the previous
/// answer) from the moment the slow ones are connected.
const NORMAL_REQUESTS: usize = 12;
const NORMAL_EVERY: Duration = Duration::from_secs(1);
/// The bounds configured for the test (seconds).
const HEADER_READ: u64 = 2;
const IDLE: u64 = 6;
const UPLOAD_GRACE: u64 = 3;
/// Slack for the connection watchdog's one-second check and a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(3);
/// A slow connection still open after this long is a failure.
const GIVE_UP: Duration = Duration::from_secs(30);
const JFK_WER: f64 = 0.1;

/// How a slow connection ended, seconds after it started.
#[derive(Debug)]
enum Ending {
    /// The server answered with this status (then closed).
    Answered(u16, Duration),
    /// The server closed it without an answer.
    Closed(Duration),
    /// Still open at [`GIVE_UP`].
    Open,
}

/// Keeps `socket` alive a byte every [`TRICKLE_EVERY`] (`next_byte` says which) until
/// the server answers or closes it.
fn trickle(mut socket: TcpStream, started: Instant, next_byte: impl Fn(usize) -> u8) -> Ending {
    socket.set_read_timeout(Some(TRICKLE_EVERY)).unwrap();
    let mut reply = Vec::new();
    let mut sent = 0;
    while started.elapsed() < GIVE_UP {
        let mut buffer = [0u8; 4096];
        match socket.read(&mut buffer) {
            Ok(0) => return ending(&reply, started),
            Ok(n) => reply.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !reply.is_empty() {
                    continue;
                }
                if socket.write_all(&[next_byte(sent)]).is_err() {
                    return ending(&reply, started);
                }
                sent += 1;
            }
            Err(_) => return ending(&reply, started),
        }
    }
    Ending::Open
}

fn ending(reply: &[u8], started: Instant) -> Ending {
    let text = String::from_utf8_lossy(reply);
    match text.split(' ').nth(1).and_then(|s| s.parse().ok()) {
        Some(status) => Ending::Answered(status, started.elapsed()),
        None => Ending::Closed(started.elapsed()),
    }
}

/// An upload sent up to its first 200 bytes of body, then trickled.
fn trickling_upload(address: SocketAddr, form: RawRequest) -> JoinHandle<Ending> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let socket = form
            .without_expect()
            .send_partial(address, 200)
            .unwrap_or_else(|e| panic!("trickling upload: {e}"));
        trickle(socket, started, |_| b'x')
    })
}

/// A request head sent a byte at a time, or (`head` empty) nothing at all.
fn trickling_head(address: SocketAddr, head: &'static [u8]) -> JoinHandle<Ending> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut socket = TcpStream::connect(address).expect("connect");
        socket.write_all(head).unwrap();
        if head.is_empty() {
            // Silent: only reads, never writes.
            socket.set_read_timeout(Some(GIVE_UP)).unwrap();
            let mut byte = [0u8; 1];
            return match socket.read(&mut byte) {
                Ok(0) | Err(_) if started.elapsed() < GIVE_UP => Ending::Closed(started.elapsed()),
                Ok(_) => Ending::Answered(0, started.elapsed()),
                _ => Ending::Open,
            };
        }
        trickle(socket, started, |n| if n % 2 == 0 { b'a' } else { b'b' })
    })
}

/// `GET /health` on a kept-alive connection, then silence: how long the server keeps it.
fn idle_keep_alive(address: SocketAddr) -> JoinHandle<Ending> {
    std::thread::spawn(move || {
        let mut socket = TcpStream::connect(address).expect("connect");
        socket
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        socket.set_read_timeout(Some(GIVE_UP)).unwrap();
        let mut buffer = [0u8; 4096];
        let n = socket.read(&mut buffer).unwrap();
        assert!(
            buffer[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buffer[..n])
        );
        let answered = Instant::now();
        match socket.read(&mut buffer) {
            Ok(0) | Err(_) if answered.elapsed() < GIVE_UP => Ending::Closed(answered.elapsed()),
            _ => Ending::Open,
        }
    })
}

#[test]
fn slow_clients_cannot_lock_out_normal_ones() {
    let server = Server::start_with_env(
        &[],
        &[
            (
                "STENO_HEADER_READ_TIMEOUT_SECONDS",
                &HEADER_READ.to_string(),
            ),
            ("STENO_IDLE_TIMEOUT_SECONDS", &IDLE.to_string()),
            ("STENO_UPLOAD_GRACE_SECONDS", &UPLOAD_GRACE.to_string()),
        ],
    );
    let address = server.address();
    let jfk = assets::jfk();
    let form = stress::transcription_form(&jfk.path, "whisper-1");
    let started = Instant::now();

    let uploads: Vec<_> = (0..TRICKLING_UPLOADS)
        .map(|_| trickling_upload(address, form.clone()))
        .collect();
    let heads: Vec<_> = (0..TRICKLING_HEADS)
        .map(|_| {
            trickling_head(
                address,
                b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            )
        })
        .chain((0..SILENT).map(|_| trickling_head(address, b"")))
        .collect();
    let idle = idle_keep_alive(address);

    // Normal requests, each on its own, while the slow ones are connected.
    let normal: Vec<_> = (0..NORMAL_REQUESTS)
        .map(|i| {
            std::thread::sleep(NORMAL_EVERY);
            let request = form.clone().header("x-request-id", &format!("normal-{i}"));
            std::thread::spawn(move || {
                let sent_at = started.elapsed();
                let response = request.send(address, Duration::from_secs(45));
                (sent_at, started.elapsed() - sent_at, response)
            })
        })
        .collect();
    let normal: Vec<_> = normal.into_iter().map(|h| h.join().unwrap()).collect();

    let uploads: Vec<Ending> = uploads.into_iter().map(|h| h.join().unwrap()).collect();
    let heads: Vec<Ending> = heads.into_iter().map(|h| h.join().unwrap()).collect();
    let idle = idle.join().unwrap();

    let ok = normal
        .iter()
        .filter(|(_, _, r)| r.as_ref().is_ok_and(|r| r.status == 200))
        .count();
    let slowest = normal.iter().map(|(_, took, _)| *took).max().unwrap();
    let cut: Vec<Duration> = uploads
        .iter()
        .filter_map(|e| match e {
            Ending::Answered(408, at) | Ending::Closed(at) => Some(*at),
            _ => None,
        })
        .collect();
    let answered_408 = uploads
        .iter()
        .filter(|e| matches!(e, Ending::Answered(408, _)))
        .count();
    eprintln!(
        "{ok}/{NORMAL_REQUESTS} normal requests answered 200 (sent at {:.1}..{:.1} s, slowest {:.2} s); \
         {} of {TRICKLING_UPLOADS} trickling uploads cut ({answered_408} with 408) after {:.1}..{:.1} s; \
         heads and silent connections: {heads:?}; idle keep-alive: {idle:?}",
        normal[0].0.as_secs_f64(),
        normal[NORMAL_REQUESTS - 1].0.as_secs_f64(),
        slowest.as_secs_f64(),
        cut.len(),
        cut.iter().min().map_or(0.0, Duration::as_secs_f64),
        cut.iter().max().map_or(0.0, Duration::as_secs_f64),
    );

    for (i, (sent_at, _, response)) in normal.iter().enumerate() {
        let response = response
            .as_ref()
            .unwrap_or_else(|e| panic!("normal request {i} (sent at {sent_at:?}): {e}"));
        assert_eq!(
            response.status, 200,
            "normal request {i} (sent at {sent_at:?}): {}",
            response.body
        );
        assert_jfk(response, &jfk.reference, &format!("normal request {i}"));
    }
    let upload_bound = Duration::from_secs(UPLOAD_GRACE) + SLACK;
    for (i, ending) in uploads.iter().enumerate() {
        match ending {
            Ending::Answered(408, at) | Ending::Closed(at) if *at <= upload_bound => {}
            other => panic!(
                "trickling upload {i}: {other:?}, expected 408 or closed within {upload_bound:?}"
            ),
        }
    }
    let head_bound = Duration::from_secs(HEADER_READ) + SLACK;
    for (i, ending) in heads.iter().enumerate() {
        match ending {
            Ending::Closed(at) if *at <= head_bound => {}
            other => panic!("slow head or silent connection {i}: {other:?}, expected closed within {head_bound:?}"),
        }
    }
    match idle {
        Ending::Closed(at)
            if at >= Duration::from_secs(IDLE - 1) && at <= Duration::from_secs(IDLE) + SLACK => {}
        other => {
            panic!("idle keep-alive connection: {other:?}, expected closed after about {IDLE} s")
        }
    }

    // Every request counted once; nothing left holding a slot.
    stress::wait_until_idle(&server, Duration::from_secs(10));
    let counted = |status| answered(&server, status);
    assert_eq!(
        counted("408"),
        TRICKLING_UPLOADS,
        "every trickling upload answered 408 ({answered_408} read it before the close)"
    );
    assert_eq!(counted("200"), NORMAL_REQUESTS, "200s counted vs received");
    eprintln!("whole test {:.1} s", started.elapsed().as_secs_f64());
}

/// Upload slots for this server.
const UPLOAD_SLOTS: usize = 2;
/// Open connections for this server.
const CONNECTIONS: usize = 4;

/// `server.max_uploads_in_progress` and `server.max_connections`, on one server with
/// two of one and four of the other. Two uploads held half-sent take both upload slots:
/// a third is answered 429 with `Retry-After` in OpenAI's envelope at once (counted
/// under `uploads`), and once the held ones leave a new upload gets its transcript.
/// Then four kept-alive connections fill the cap: a fifth connects (the kernel's
/// backlog takes it) but is not served while they stay, and is served within a few
/// seconds once one of them closes.
#[test]
fn upload_slots_and_the_connection_cap_bound_what_clients_hold() {
    let started = Instant::now();
    let server = Server::start_with_env(
        &[],
        &[
            ("STENO_MAX_UPLOADS_IN_PROGRESS", &UPLOAD_SLOTS.to_string()),
            ("STENO_MAX_CONNECTIONS", &CONNECTIONS.to_string()),
        ],
    );
    let address = server.address();
    let jfk = assets::jfk();
    let form = stress::transcription_form(&jfk.path, "whisper-1");

    let held: Vec<TcpStream> = (0..UPLOAD_SLOTS)
        .map(|_| {
            form.clone()
                .without_expect()
                .send_partial(address, 200)
                .unwrap()
        })
        .collect();
    stress::wait_for_metrics(&server, Duration::from_secs(10), "uploads held", |m| {
        stress::value(m, "steno_requests_in_flight") == UPLOAD_SLOTS as f64
    });
    let refused = form.clone().send(address, Duration::from_secs(10)).unwrap();
    let error = refused.expect_error(429);
    assert_eq!(error.kind, "rate_limit_exceeded", "{refused:?}");
    assert_eq!(error.code.as_deref(), Some("rate_limit_exceeded"));
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a Retry-After in seconds: {refused:?}"));
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        stress::metric_with(&server, "steno_rejections_total", "reason", "uploads"),
        1.0
    );
    drop(held);
    let admitted = form.clone().send(address, Duration::from_secs(30)).unwrap();
    assert_eq!(admitted.status, 200, "{}", admitted.body);
    assert_jfk(
        &admitted,
        &jfk.reference,
        "the upload after the slots came back",
    );
    let slots_done = started.elapsed();
    // Every answer counted once: the held uploads left unanswered (their client went).
    stress::wait_until_idle(&server, Duration::from_secs(10));
    let counted = |status| answered(&server, status);
    assert_eq!((counted("429"), counted("200")), (1, 1));

    // The cap: CONNECTIONS kept alive, each after one answered request.
    let health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut open: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| {
            let mut socket = TcpStream::connect(address).expect("connect");
            socket.write_all(health).unwrap();
            assert!(read_status(&mut socket, Duration::from_secs(10)).is_some());
            socket
        })
        .collect();
    let mut waiting = TcpStream::connect(address).expect("the backlog takes the connection");
    waiting.write_all(health).unwrap();
    let unserved = read_status(&mut waiting, Duration::from_secs(2));
    assert_eq!(unserved, None, "served past server.max_connections");
    let closed = Instant::now();
    drop(open.pop());
    let served = read_status(&mut waiting, Duration::from_secs(5));
    let after = closed.elapsed();
    assert_eq!(
        served,
        Some(200),
        "not served {after:?} after a connection closed"
    );
    eprintln!(
        "upload slots: 429 with Retry-After {retry_after} s, then 200 ({slots_done:.1?}); \
         connection cap: the fifth waited 2 s unserved, served {after:.2?} after one closed; \
         whole test {:.1?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// The status of the next answer on `socket`, or `None` when none starts within `within`.
fn read_status(socket: &mut TcpStream, within: Duration) -> Option<u16> {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0u8; 4096];
    let n = socket.read(&mut buffer).ok().filter(|&n| n > 0)?;
    let text = String::from_utf8_lossy(&buffer[..n]);
    text.split(' ').nth(1).and_then(|s| s.parse().ok())
}

/// The transcription in `response` is jfk.wav's (`reference`) within [`JFK_WER`].
fn assert_jfk(response: &steno_e2e::server::Response, reference: &str, what: &str) {
    let text = response.json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_wer(reference, &text, JFK_WER, what);
}

/// Transcription requests `/metrics` counts as answered with `status`.
fn answered(server: &Server, status: &str) -> usize {
    prometheus::samples(&server.metrics(), "steno_requests_total")
        .iter()
        .filter(|s| {
            s.label("route") == Some(stress::TRANSCRIPTIONS) && s.label("status") == Some(status)
        })
        .map(|s| s.value as usize)
        .sum()
}
