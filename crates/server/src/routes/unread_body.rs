//! Reads what a handler left of the request body before the response goes out.
//!
//! A request can be answered before its upload is read: 401 (wrong key), 429 (at
//! capacity), 503 (draining), a 400 on an early form field. hyper then closes the
//! connection with the rest of the upload unread, the kernel resets it, and a client
//! still writing its body (Node's `http`, so the official OpenAI Node SDK) fails with
//! `EPIPE`/`ECONNRESET` and never sees the status, the error envelope or `Retry-After`.
//! This layer discards the unread rest first, within the body limit and
//! [`DISCARD_TIMEOUT`], as nginx's lingering close does. It leaves alone a request that
//! sent `Expect: 100-continue` whose body was never asked for: that client waits for
//! the answer without uploading.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::{Stream, StreamExt};

/// Longest time spent discarding an unread upload; past it the connection is closed.
pub const DISCARD_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request refused before it was authenticated may cost: at most this much of its
/// body is discarded, within [`REFUSED_DISCARD_TIMEOUT`]. Enough for a small upload's
/// client to see its 401 (the official Node SDK with a wrong key sees a reset connection
/// otherwise), far from the upload limit an authenticated client may send.
pub const REFUSED_DISCARD_BYTES: usize = 1024 * 1024;
pub const REFUSED_DISCARD_TIMEOUT: Duration = Duration::from_secs(1);

/// What a dropped body had left.
struct Leftover {
    stream: BodyDataStream,
    /// Bytes the handler read.
    seen: usize,
    /// Whether the handler asked for the body at all.
    polled: bool,
}

/// The request body, handing itself back through `slot` when dropped unfinished.
struct Tracked {
    stream: Option<BodyDataStream>,
    slot: Arc<Mutex<Option<Leftover>>>,
    seen: usize,
    polled: bool,
    finished: bool,
}

impl Stream for Tracked {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(None);
        };
        this.polled = true;
        let item = std::task::ready!(stream.poll_next_unpin(cx));
        match &item {
            Some(Ok(bytes)) => this.seen += bytes.len(),
            // A broken body is not worth discarding.
            Some(Err(_)) | None => this.finished = true,
        }
        Poll::Ready(item)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(stream) = self.stream.take() {
            let leftover = Leftover {
                stream,
                seen: self.seen,
                polled: self.polled,
            };
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(leftover);
        }
    }
}

/// The middleware; `limit` is the largest body the server reads at all.
pub async fn discard_unread_body(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let has_body = chunked || length.is_some_and(|n| n > 0);
    // An upload declared larger than the limit is refused unread, as before.
    if !has_body || length.is_some_and(|n| n > limit as u64) {
        return next.run(request).await;
    }
    let expects_continue = expects_continue(headers);
    let slot = Arc::new(Mutex::new(None));
    let tracked_slot = slot.clone();
    let request = request.map(move |body| {
        Body::from_stream(Tracked {
            stream: Some(body.into_data_stream()),
            slot: tracked_slot,
            seen: 0,
            polled: false,
            finished: false,
        })
    });
    let response = next.run(request).await;
    let leftover = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    // A response that closes the connection (408 to a slow upload) is not held back
    // behind the rest of the upload.
    let closes = response
        .headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let leftover = leftover.filter(|_| !closes);
    if let Some(leftover) = leftover {
        if leftover.polled || !expects_continue {
            let budget = limit.saturating_sub(leftover.seen);
            if tokio::time::timeout(DISCARD_TIMEOUT, discard(leftover.stream, budget))
                .await
                .is_err()
            {
                tracing::debug!("gave up discarding an unread upload");
            }
        }
    }
    response
}

/// Discards the body of a request refused unread (see [`REFUSED_DISCARD_BYTES`]); the
/// caller then answers with `Connection: close`. A client waiting for `100 Continue`
/// sends nothing and is not asked to.
pub async fn discard_refused_body(request: Request) {
    if expects_continue(request.headers()) {
        return;
    }
    let stream = request.into_body().into_data_stream();
    let discarded = discard(stream, REFUSED_DISCARD_BYTES);
    if tokio::time::timeout(REFUSED_DISCARD_TIMEOUT, discarded)
        .await
        .is_err()
    {
        tracing::debug!("gave up discarding a refused upload");
    }
}

fn expects_continue(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads and drops up to `budget` bytes; stops at the end, an error or the budget.
async fn discard(mut stream: BodyDataStream, mut budget: usize) {
    while let Some(Ok(bytes)) = stream.next().await {
        if bytes.len() > budget {
            return;
        }
        budget -= bytes.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;

    /// A server whose only route answers 401 without reading the body, or reads it all
    /// at `/read`.
    async fn serve() -> std::net::SocketAddr {
        let app = Router::new()
            .route("/reject", post(|| async { StatusCode::UNAUTHORIZED }))
            .route(
                "/refuse",
                post(|request: Request| async move {
                    discard_refused_body(request).await;
                    (StatusCode::UNAUTHORIZED, [(header::CONNECTION, "close")])
                }),
            )
            .route(
                "/read",
                post(|body: Body| async move {
                    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                    bytes.len().to_string()
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                8 * 1024 * 1024,
                discard_unread_body,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        address
    }

    /// Sends a POST with a `size`-byte body in 64 KiB writes, with a pause after the
    /// first so the server answers mid-upload; the status line, or the write/read error.
    fn upload(address: std::net::SocketAddr, path: &str, size: usize) -> Result<String, String> {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(address).map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        );
        socket
            .write_all(head.as_bytes())
            .map_err(|e| e.to_string())?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            let n = chunk.len().min(size - sent);
            socket.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
            if sent == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            sent += n;
        }
        let mut reply = Vec::new();
        socket.read_to_end(&mut reply).map_err(|e| e.to_string())?;
        let reply = String::from_utf8_lossy(&reply);
        Ok(reply.lines().next().unwrap_or_default().to_string())
    }

    async fn upload_blocking(
        address: std::net::SocketAddr,
        path: &'static str,
        size: usize,
    ) -> Result<String, String> {
        tokio::task::spawn_blocking(move || upload(address, path, size))
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_early_answer_reaches_a_client_still_uploading() {
        let address = serve().await;
        // 4 MiB is far more than the socket buffers hold: without discarding the writes
        // fail with a reset connection.
        let status = upload_blocking(address, "/reject", 4 * 1024 * 1024).await;
        assert_eq!(status.as_deref(), Ok("HTTP/1.1 401 Unauthorized"));
        let status = upload_blocking(address, "/read", 1024 * 1024).await;
        assert_eq!(status.as_deref(), Ok("HTTP/1.1 200 OK"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_upload_is_discarded_only_up_to_its_small_budget() {
        let address = serve().await;
        let small = upload_blocking(address, "/refuse", REFUSED_DISCARD_BYTES / 2).await;
        assert_eq!(small.as_deref(), Ok("HTTP/1.1 401 Unauthorized"));
        // Past the budget the server stops reading: this client's writes fail.
        let big = upload_blocking(address, "/refuse", 16 * REFUSED_DISCARD_BYTES).await;
        assert!(big.is_err(), "{big:?}");
    }
}
