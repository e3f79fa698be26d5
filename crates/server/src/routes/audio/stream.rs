//! `stream=true`: the reply as server-sent events, `transcript.text.delta` per
//! finished stretch of text, then one `transcript.text.done` (or the error envelope).
//! A diarizing request's events come once its speakers are known
//! ([`diarized_events`]): each segment's text as a delta carrying its `segment_id`,
//! then (with `diarized_json`) its `transcript.text.segment`, then the done event.

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use steno_engine::{Delta, Reply, ReplyReceiver};
use tokio::sync::mpsc;

use super::Permit;
use crate::api::{Language, Logprob, TextDeltaEvent, TextDoneEvent, Usage};
use crate::error::ApiError;
use crate::speakers;

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
        Some((Ok(delta_event(delta.text, delta.logprobs, None)), deltas))
    })
    .take_until(aborted);
    // The engine drops the delta sender when the job ends, so the final event follows
    // the last delta.
    let done = stream::once(async move {
        let _permit = permit;
        let body = match reply.recv().await {
            Ok(mut reply) => {
                let logprobs = Logprob::list(reply.logprobs.take());
                done_event(&reply, logprobs)
            }
            Err(e) => event(&ApiError::from(e).body()),
        };
        Ok(body)
    });
    Sse::new(delta_events.chain(done))
}

/// A diarizing request's events, all at once when the reply comes: the segment ids a
/// delta carries are only known once the speakers are. `segment_events`: also a
/// `transcript.text.segment` after each segment's delta (`diarized_json`).
pub(super) fn diarized_events(
    reply: ReplyReceiver,
    permit: Permit,
    segment_events: bool,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let all = stream::once(async move {
        let _permit = permit;
        let events = match reply.recv().await {
            Ok(reply) => diarized_list(&reply, segment_events),
            Err(e) => vec![event(&ApiError::from(e).body())],
        };
        stream::iter(events.into_iter().map(Ok))
    })
    .flatten();
    Sse::new(all)
}

fn diarized_list(reply: &Reply, segment_events: bool) -> Vec<Event> {
    let turns = reply.speakers.as_deref().unwrap_or_default();
    let mut events = Vec::new();
    for segment in speakers::diarized_segments(&reply.transcript, turns) {
        // Pieces after the first are separated from the one before by a space, so that
        // the deltas join to the whole text.
        let delta = if events.is_empty() {
            segment.text.clone()
        } else {
            format!(" {}", segment.text)
        };
        events.push(delta_event(delta, None, Some(segment.id.clone())));
        if segment_events {
            events.push(event(&segment));
        }
    }
    events.push(done_event(reply, None));
    events
}

fn delta_event(
    delta: String,
    logprobs: Option<Vec<steno_whisper::TokenLogprob>>,
    segment_id: Option<String>,
) -> Event {
    event(&TextDeltaEvent {
        kind: "transcript.text.delta",
        delta,
        logprobs: Logprob::list(logprobs),
        segment_id,
    })
}

fn done_event(reply: &Reply, logprobs: Option<Vec<Logprob>>) -> Event {
    let transcript = &reply.transcript;
    event(&TextDoneEvent {
        kind: "transcript.text.done",
        text: transcript.text.trim().to_string(),
        languages: Language::list(&transcript.language),
        logprobs,
        usage: Usage::duration(transcript.duration),
    })
}

fn event<T: serde::Serialize>(body: &T) -> Event {
    Event::default().data(serde_json::to_string(body).unwrap_or_default())
}
