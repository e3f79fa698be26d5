//! One accepted connection: HTTP/1 through hyper, closed when it is idle too long or
//! sends its request head too slowly.
//!
//! hyper's own `header_read_timeout` starts as soon as the connection waits for a
//! head, so on a kept-alive connection it also bounds the idle time between requests:
//! one knob cannot keep idle connections for a proxy's keep-alive (a minute) and cut a
//! head trickled a byte at a time (seconds). So the connection's bytes and requests
//! are watched here ([`Activity`]) and [`Activity::expired`] ends the connection:
//! * no request on it: [`Timeouts::idle`] after the last answer, or
//!   [`Timeouts::header_read`] after the next head's first byte (or the accept, for
//!   the first request: a connection that sends nothing is cut as a slow head);
//! * a request on it (its head read, its answer not yet sent whole): never here; the
//!   route bounds the upload (`routes::audio`), the engine the work.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tower::ServiceExt;

use crate::config::ServerConfig;

/// How often an idle connection's deadline is looked at again (a head's first byte
/// moves it earlier).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// No byte of a next head yet.
const NONE: u64 = u64::MAX;

/// The time bounds of a connection without a request.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

impl Timeouts {
    pub fn of(config: &ServerConfig) -> Self {
        Self {
            header_read: Duration::from_secs(config.header_read_timeout_seconds),
            idle: Duration::from_secs(config.idle_timeout_seconds),
        }
    }
}

/// Serves `stream` until the client closes it, a timeout ends it, or the graceful
/// shutdown (`closing` turns true) has closed it; `watcher` is held until then, so
/// that the shutdown waits for this connection; `slot` is its place under
/// `server.max_connections`.
///
/// A request may upgrade the connection (a live session's WebSocket): the upgraded
/// socket then leaves this function's bounds (the session has its own) and the slot
/// comes free.
pub async fn serve(
    stream: TcpStream,
    router: Router,
    timeouts: Timeouts,
    (watcher, mut closing): (Watcher, watch::Receiver<bool>),
    slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |request: hyper::Request<Incoming>| {
            let busy = Busy::begin(activity.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(Body::new)).await?;
                Ok::<_, Infallible>(response.map(|body| Body::new(Answer { body, _busy: busy })))
            }
        }
    });
    // hyper_util's graceful watcher cannot watch a connection that may upgrade, so the
    // shutdown signal comes on `closing` and the watcher only counts the connection.
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = activity.expired(timeouts) => {
            tracing::debug!("closed an idle or slow connection");
            Ok(())
        }
        () = async { let _ = closing.wait_for(|c| *c).await; } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    drop(watcher);
    drop(slot);
}

/// What the watchdog knows of a connection, in milliseconds since its accept.
struct Activity {
    accepted: Instant,
    /// Requests whose head was read and whose answer is not sent whole.
    busy: AtomicUsize,
    /// When the last answer ended (0: the accept).
    idle_since: AtomicU64,
    /// The first byte read since then ([`NONE`]: none yet). The accept counts as
    /// the first request's first byte.
    head_started: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes came in: between requests, they start a head.
    fn read(&self) {
        if self.busy.load(Ordering::SeqCst) == 0 {
            let _ = self.head_started.compare_exchange(
                NONE,
                self.now(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// When the connection is due to close; `None` while a request is on it.
    fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let at = |millis: u64, timeout: Duration| {
            self.accepted + Duration::from_millis(millis) + timeout
        };
        match self.head_started.load(Ordering::SeqCst) {
            NONE => Some(at(self.idle_since.load(Ordering::SeqCst), timeouts.idle)),
            started => Some(at(started, timeouts.header_read)),
        }
    }

    /// Resolves when the connection has been idle, or reading a head, too long.
    async fn expired(&self, timeouts: Timeouts) {
        loop {
            let now = Instant::now();
            let wake = match self.deadline(timeouts) {
                Some(deadline) if deadline <= now => return,
                Some(deadline) => deadline.min(now + CHECK_EVERY),
                None => now + CHECK_EVERY,
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// A request on the connection, from its head to the end of its answer.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::SeqCst);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now(), Ordering::SeqCst);
        activity.head_started.store(NONE, Ordering::SeqCst);
        activity.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request [`Busy`] until hyper has taken it whole
/// (or dropped it): a streamed answer (SSE) may be quiet for long.
struct Answer {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, telling [`Activity`] when bytes come in.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_secs(2),
        idle: Duration::from_secs(60),
    };

    fn after(activity: &Activity, deadline: Option<Instant>) -> Option<u64> {
        deadline.map(|d| (d - activity.accepted).as_secs())
    }

    #[test]
    fn a_connection_is_bounded_by_the_head_then_the_idle_time_then_the_head_again() {
        let activity = Arc::new(Activity::new());
        assert_eq!(
            after(&activity, activity.deadline(TIMEOUTS)),
            Some(2),
            "a new connection: a head within header_read of the accept"
        );
        let busy = Busy::begin(activity.clone());
        activity.read();
        assert_eq!(
            activity.deadline(TIMEOUTS),
            None,
            "a request on it: no bound here"
        );
        drop(busy);
        assert_eq!(
            after(&activity, activity.deadline(TIMEOUTS)),
            Some(60),
            "after the answer: idle"
        );
        activity.read();
        assert_eq!(
            after(&activity, activity.deadline(TIMEOUTS)),
            Some(2),
            "the next head's first byte"
        );
    }
}
