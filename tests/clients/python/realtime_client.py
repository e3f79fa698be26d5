"""Streams speech to a running Steno with the official OpenAI Python SDK's realtime client.

Usage: realtime_client.py API --base-url http://HOST:PORT/v1 --api-key KEY
                          [--speed X] CLIP.pcm [CLIP.pcm ...]

API:
  ga    `client.realtime.connect(extra_query={"intent": "transcription"})`, a `session.update`
        with a transcription session (`audio.input`: audio/pcm at 24 kHz, server_vad, logprobs
        included); turns end by the server's turn detection.
  beta  `client.beta.realtime.connect(model=...)` (the SDK adds `OpenAI-Beta: realtime=v1`), a
        `transcription_session.update` (`input_audio_format` pcm16, `turn_detection` null);
        each clip is one turn the client commits itself.

Each CLIP.pcm is raw mono 16-bit little-endian PCM at 24 kHz (tests/tests/clients.rs writes
them from the English set). They are appended in 100 ms chunks, X times faster than real
time (0: as fast as the socket takes them), each followed by a second of silence.

Only the base URLs and the key differ from a script written for OpenAI. Checks what only
Python can see (the SDK's event classes) with assertions and prints one JSON object for
tests/tests/clients.rs: the clips' offsets in the stream and, per turn, its audio span, its
deltas, its completed transcript, usage and logprob count.
"""

import argparse
import base64
import json
import sys
import threading
import time

import openai
from openai import OpenAI
from openai.types import realtime as ga_types
from openai.types.beta import realtime as beta_types

MODEL = "whisper-1"
RATE = 24_000
CHUNK_MS = 100
SILENCE_MS = 1_000
# How long to wait for the last turn's transcript once all audio is sent.
SETTLE_SECONDS = 120
# A turn starts up to its prefix padding (300 ms) before the speech the VAD heard.
LAST_TURN_SLACK_MS = 1_000


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def ws_url(base_url):
    """The SDK's `websocket_base_url`: the HTTP base URL with a ws scheme."""
    return "ws" + base_url[len("http"):] if base_url.startswith("http") else base_url


def chunks(pcm):
    size = RATE * 2 * CHUNK_MS // 1000
    for start in range(0, len(pcm), size):
        yield pcm[start:start + size]


def ga_session():
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": RATE},
                "transcription": {"model": MODEL, "language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                },
                "noise_reduction": None,
            }
        },
        "include": ["item.input_audio_transcription.logprobs"],
    }


def beta_session():
    return {
        "input_audio_format": "pcm16",
        "input_audio_transcription": {"model": MODEL, "language": "en"},
        "turn_detection": None,
    }


class Turns:
    """What the receiving loop saw, per item, and when every expected turn is done."""

    def __init__(self, types):
        self.types = types
        self.events = []
        self.items = {}
        self.order = []
        self.errors = []
        self.commits_sent = 0
        self.last_offset_ms = 0
        self.speech_open = False
        self.sent_all = threading.Event()
        self.failure = None

    def item(self, item_id):
        if item_id not in self.items:
            self.items[item_id] = {"item_id": item_id, "deltas": [], "transcript": None}
            self.order.append(item_id)
        return self.items[item_id]

    def done(self):
        finished = all(t["transcript"] is not None or t.get("failed") for t in self.items.values())
        committed = sum(1 for t in self.items.values() if t.get("committed"))
        # With server VAD nothing acknowledges an append: the stream is done once a turn
        # has started inside the last clip and every turn has its transcript.
        heard_last = any(
            t.get("audio_start_ms", -1) + LAST_TURN_SLACK_MS >= self.last_offset_ms
            for t in self.items.values()
        )
        return (
            self.sent_all.is_set()
            and not self.speech_open
            and committed >= self.commits_sent
            and (self.commits_sent > 0 or heard_last)
            and finished
        )

    def take(self, event):
        """Records one server event; checks it parsed into the SDK's own class."""
        self.events.append(event.type)
        t = self.types
        if event.type == "error":
            self.errors.append(event.error.model_dump())
        elif event.type == "input_audio_buffer.speech_started":
            expect(isinstance(event, t.InputAudioBufferSpeechStartedEvent), type(event))
            self.speech_open = True
            self.item(event.item_id)["audio_start_ms"] = event.audio_start_ms
        elif event.type == "input_audio_buffer.speech_stopped":
            expect(isinstance(event, t.InputAudioBufferSpeechStoppedEvent), type(event))
            self.speech_open = False
            self.item(event.item_id)["audio_end_ms"] = event.audio_end_ms
        elif event.type == "input_audio_buffer.committed":
            expect(isinstance(event, t.InputAudioBufferCommittedEvent), type(event))
            self.item(event.item_id)["committed"] = True
        elif event.type == "conversation.item.input_audio_transcription.delta":
            expect(isinstance(event, t.ConversationItemInputAudioTranscriptionDeltaEvent), type(event))
            self.item(event.item_id)["deltas"].append(event.delta)
        elif event.type == "conversation.item.input_audio_transcription.completed":
            expect(isinstance(event, t.ConversationItemInputAudioTranscriptionCompletedEvent), type(event))
            self.complete(event)
        elif event.type == "conversation.item.input_audio_transcription.failed":
            self.item(event.item_id)["failed"] = event.error.model_dump()

    def complete(self, event):
        turn = self.item(event.item_id)
        turn["transcript"] = event.transcript
        usage = getattr(event, "usage", None)
        turn["usage"] = usage.model_dump() if usage is not None else None
        turn["logprobs"] = len(event.logprobs or [])


def stream(connection, turns, clips, speed, commit_each):
    """Appends every clip and its silence at `speed` x real time; commits after each clip
    when the client detects turns itself. Returns each clip's start in the stream, ms."""
    offsets, at_ms = [], 0
    silence = bytes(RATE * 2 * SILENCE_MS // 1000)
    for pcm in clips:
        offsets.append(at_ms)
        for chunk in list(chunks(pcm)) + list(chunks(silence)):
            connection.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
            at_ms += len(chunk) * 1000 // (RATE * 2)
            if speed > 0:
                time.sleep(CHUNK_MS / 1000 / speed)
        if commit_each:
            turns.commits_sent += 1
            connection.input_audio_buffer.commit()
    turns.last_offset_ms = offsets[-1]
    turns.sent_all.set()
    return offsets


def session_event(connection, turns, wanted):
    """Receives until the first event of a type in `wanted`; returns it."""
    for event in connection:
        turns.events.append(event.type)
        if event.type == "error":
            raise AssertionError(f"error before the session: {event.error}")
        if event.type in wanted:
            return event
    raise AssertionError(f"closed before {wanted}")


def receive(connection, turns):
    """The receiving thread: records every event until the connection closes."""
    try:
        for event in connection:
            turns.take(event)
    except Exception as error:  # surfaced by wait_done on the main thread
        turns.failure = error


def wait_done(turns):
    deadline = time.monotonic() + SETTLE_SECONDS
    while not turns.done():
        if turns.failure is not None:
            raise turns.failure
        expect(time.monotonic() < deadline, f"no transcript within {SETTLE_SECONDS} s")
        time.sleep(0.02)


def run(connection, api, clips, speed):
    turns = Turns(ga_types if api == "ga" else beta_types)
    if api == "ga":
        created = session_event(connection, turns, {"session.created"})
        connection.session.update(session=ga_session())
        updated = session_event(connection, turns, {"session.updated"})
    else:
        created = session_event(connection, turns, {"transcription_session.created"})
        connection.transcription_session.update(session=beta_session())
        updated = session_event(connection, turns, {"transcription_session.updated"})
    threading.Thread(target=receive, args=(connection, turns), daemon=True).start()
    offsets = stream(connection, turns, clips, speed, api == "beta")
    wait_done(turns)
    return {
        "created": created.type,
        "updated": updated.to_dict(),
        "offsets_ms": offsets,
        "turns": [turns.items[i] for i in turns.order],
        "errors": turns.errors,
        "events": turns.events,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("api", choices=["ga", "beta"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("clips", nargs="+")
    args = parser.parse_args()
    clips = [open(path, "rb").read() for path in args.clips]
    client = OpenAI(base_url=args.base_url, websocket_base_url=ws_url(args.base_url),
                    api_key=args.api_key)
    if args.api == "ga":
        manager = client.realtime.connect(extra_query={"intent": "transcription"})
    else:
        manager = client.beta.realtime.connect(model=MODEL, extra_query={"intent": "transcription"})
    started = time.monotonic()
    with manager as connection:
        out = run(connection, args.api, clips, args.speed)
    out["sdk_version"] = openai.__version__
    out["seconds"] = round(time.monotonic() - started, 3)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
