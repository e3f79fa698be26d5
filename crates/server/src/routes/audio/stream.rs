//! `stream=true`: the reply as server-sent events, `transcript.text.delta` per
//! finished stretch of text, then one `transcript.text.done` (or the error envelope).

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use steno_engine::{Delta, ReplyReceiver};
use tokio::sync::mpsc;

use super::Permit;
use crate::api::{Logprob, TextDeltaEvent, TextDoneEvent};
use crate::error::ApiError;

/// Deltas as they come, then `transcript.text.done` (or the error envelope). The
/// stream owns the permit and the reply receiver: a client that goes away drops
/// both, which frees its rows in the worker.
pub(super) fn events(
    deltas: mpsc::UnboundedReceiver<Delta>,
    reply: ReplyReceiver,
    permit: Permit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // After the drain deadline the worker may still be inside a step: the deltas end
    // and the error event goes out at once.
    let aborted = reply.aborted();
    let delta_events = stream::unfold(deltas, |mut deltas| async move {
        let delta = deltas.recv().await?;
        Some((Ok(delta_event(delta)), deltas))
    })
    .take_until(aborted);
    // The engine drops the delta sender when the job ends, so the final event follows
    // the last delta.
    let done = stream::once(async move {
        let _permit = permit;
        let body = match reply.recv().await {
            Ok(reply) => event(&TextDoneEvent {
                kind: "transcript.text.done",
                text: reply.transcript.text.trim().to_string(),
                logprobs: Logprob::list(reply.logprobs),
            }),
            Err(e) => event(&ApiError::from(e).body()),
        };
        Ok(body)
    });
    Sse::new(delta_events.chain(done))
}

fn delta_event(delta: Delta) -> Event {
    event(&TextDeltaEvent {
        kind: "transcript.text.delta",
        delta: delta.text,
        logprobs: Logprob::list(delta.logprobs),
    })
}

fn event<T: serde::Serialize>(body: &T) -> Event {
    Event::default().data(serde_json::to_string(body).unwrap_or_default())
}
