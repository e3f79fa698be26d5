"""Drives a running Steno with the official OpenAI Python SDK.

Usage: openai_client.py SCENARIO --base-url http://HOST:PORT/v1 --api-key KEY --audio jfk.wav

Scenarios:
  api       every transcription format and option, streaming, translation, models and the
            SDK's exception types for 401, 400 and 404;
  overload  against a server with max_concurrent_requests = 1: RateLimitError with
            max_retries=0, then the SDK's own retries honouring Retry-After.

Checks what only Python can see (the SDK's return and exception types) with assertions
and prints one JSON object on stdout for tests/tests/clients.rs to check the rest.
"""

import argparse
import json
import socket
import sys
import threading
import time
import urllib.parse

import openai
from openai import OpenAI
from openai.types.audio import (
    Transcription,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionVerbose,
    Translation,
)

MODEL = "whisper-1"


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def api_error(error, cls):
    """The fields of an SDK exception, after checking its class."""
    expect(type(error) is cls, f"expected {cls.__name__}, got {type(error).__name__}: {error}")
    return {
        "class": type(error).__name__,
        "status": error.status_code,
        "message": error.message,
        "type": error.type,
        "param": error.param,
        "code": error.code,
        "body": error.body,
        "retry_after": error.response.headers.get("retry-after"),
    }


def raises(cls, call):
    try:
        result = call()
    except openai.APIStatusError as error:
        return api_error(error, cls)
    raise AssertionError(f"expected {cls.__name__}, the call returned {result!r}")


def api(args):
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=120)
    audio = open(args.audio, "rb").read()
    jfk = ("jfk.wav", audio, "audio/wav")
    transcribe = client.audio.transcriptions.create
    out = {"sdk_version": openai.__version__}

    result = transcribe(model=MODEL, file=jfk)
    expect(isinstance(result, Transcription), f"json: {type(result)}")
    out["json"] = result.model_dump()

    # text, srt and vtt come back as the body itself.
    for fmt in ("text", "srt", "vtt"):
        result = transcribe(model=MODEL, file=jfk, response_format=fmt)
        expect(isinstance(result, str), f"{fmt}: {type(result)}")
        out[fmt] = result

    result = transcribe(
        model=MODEL,
        file=jfk,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    expect(isinstance(result, TranscriptionVerbose), f"verbose_json: {type(result)}")
    expect(result.words and result.segments, "verbose_json without words or segments")
    out["verbose_json"] = result.model_dump()

    # Also response_format=json given explicitly.
    result = transcribe(model=MODEL, file=jfk, response_format="json", include=["logprobs"])
    expect(isinstance(result, Transcription), f"logprobs: {type(result)}")
    expect(result.logprobs, "include=logprobs gave no logprobs")
    out["logprobs"] = result.model_dump()

    # Streaming: the SDK's own Stream of typed events.
    stream = transcribe(model=MODEL, file=jfk, stream=True)
    expect(isinstance(stream, openai.Stream), f"stream: {type(stream)}")
    events = []
    for event in stream:
        if event.type == "transcript.text.delta":
            expect(isinstance(event, TranscriptionTextDeltaEvent), f"delta event: {type(event)}")
        elif event.type == "transcript.text.done":
            expect(isinstance(event, TranscriptionTextDoneEvent), f"done event: {type(event)}")
        events.append(event.model_dump())
    out["stream"] = events

    result = transcribe(
        model=MODEL,
        file=jfk,
        language="en",
        prompt="President Kennedy's inaugural address.",
        temperature=0.2,
    )
    expect(isinstance(result, Transcription), f"options: {type(result)}")
    out["options"] = result.text

    result = client.audio.translations.create(model=MODEL, file=jfk)
    expect(isinstance(result, Translation), f"translation: {type(result)}")
    out["translation"] = result.text

    page = client.models.list()
    out["models"] = [model.model_dump() for model in page]
    out["model"] = client.models.retrieve(MODEL).model_dump()

    bad_key = OpenAI(base_url=args.base_url, api_key="sk-wrong", max_retries=0, timeout=60)
    out["errors"] = {
        "bad_key": raises(
            openai.AuthenticationError,
            lambda: bad_key.audio.transcriptions.create(model=MODEL, file=jfk),
        ),
        "bad_key_models": raises(openai.AuthenticationError, lambda: bad_key.models.list()),
        "garbage_audio": raises(
            openai.BadRequestError,
            lambda: transcribe(model=MODEL, file=("noise.wav", b"not audio at all " * 64, "audio/wav")),
        ),
        "unknown_model": raises(
            openai.NotFoundError,
            lambda: transcribe(model="whisper-does-not-exist", file=jfk),
        ),
        "unknown_model_retrieve": raises(
            openai.NotFoundError,
            lambda: client.models.retrieve("whisper-does-not-exist"),
        ),
    }
    return out


def slow_upload(base_url, api_key, audio, hold_seconds, result):
    """Uploads jfk.wav over a raw socket, pausing mid-body for hold_seconds.

    The request holds an upload slot from its headers on, so with
    max_uploads_in_progress = 1 everyone else gets 429 for as long as it lasts.
    """
    url = urllib.parse.urlsplit(base_url)
    host, port = url.hostname, url.port
    boundary = "steno-slow-upload"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{MODEL}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"jfk.wav\"\r\n"
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + len(audio) + len(tail)
    request = (
        f"POST {url.path.rstrip('/')}/audio/transcriptions HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nAuthorization: Bearer {api_key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=120) as sock:
        sock.sendall(request + head + audio[:1000])
        result["sent_head"] = time.monotonic()
        time.sleep(hold_seconds)
        sock.sendall(audio[1000:] + tail)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    result["done"] = time.monotonic()
    status_line, _, rest = reply.partition(b"\r\n")
    result["status"] = int(status_line.split()[1])
    result["body"] = rest.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


def overload(args):
    audio = open(args.audio, "rb").read()
    jfk = ("jfk.wav", audio, "audio/wav")
    hold = args.hold_seconds
    blocker = {}
    thread = threading.Thread(target=slow_upload, args=(args.base_url, args.api_key, audio, hold, blocker))
    thread.start()
    while "sent_head" not in blocker and thread.is_alive():
        time.sleep(0.01)
    time.sleep(0.2)
    out = {"hold_seconds": hold}

    # max_retries=0: the 429 surfaces as the SDK's RateLimitError.
    no_retries = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=60)
    started = time.monotonic()
    out["rate_limited"] = raises(
        openai.RateLimitError,
        lambda: no_retries.audio.transcriptions.create(model=MODEL, file=jfk),
    )
    out["rate_limited"]["seconds"] = time.monotonic() - started

    # max_retries > 0: the SDK retries by itself, waiting as Retry-After says. Every
    # attempt is recorded by httpx's event hooks.
    attempts = []

    def on_request(request):
        attempts.append({"sent": time.monotonic()})

    def on_response(response):
        attempts[-1].update(
            status=response.status_code,
            answered=time.monotonic(),
            retry_after=response.headers.get("retry-after"),
        )

    http_client = openai.DefaultHttpxClient(event_hooks={"request": [on_request], "response": [on_response]})
    retrying = OpenAI(
        base_url=args.base_url,
        api_key=args.api_key,
        max_retries=args.max_retries,
        timeout=120,
        http_client=http_client,
    )
    started = time.monotonic()
    result = retrying.audio.transcriptions.create(model=MODEL, file=jfk)
    expect(isinstance(result, Transcription), f"retried: {type(result)}")
    out["retried"] = {"text": result.text, "seconds": time.monotonic() - started, "max_retries": args.max_retries}
    out["attempts"] = [
        {**attempt, "sent": attempt["sent"] - started, "answered": attempt.get("answered", 0) - started}
        for attempt in attempts
    ]
    thread.join(timeout=120)
    expect(not thread.is_alive(), "the slow upload did not finish")
    out["blocker"] = {
        "status": blocker.get("status"),
        "body": blocker.get("body"),
        "finished": blocker["done"] - started,
    }
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["api", "overload"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--audio", required=True)
    parser.add_argument("--hold-seconds", type=float, default=3.0)
    parser.add_argument("--max-retries", type=int, default=20)
    args = parser.parse_args()
    out = {"api": api, "overload": overload}[args.scenario](args)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
