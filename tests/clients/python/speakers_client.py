"""Diarization through the official OpenAI Python SDK, against a running Steno.

Usage: speakers_client.py --base-url http://HOST:PORT/v1 --api-key KEY --audio CONVERSATION
       [--long LONG_AUDIO] [--known NAME=CLIP ...]

Reads `diarized_json` (TranscriptionDiarized) with and without known speakers, the
streamed events (TranscriptionTextDeltaEvent with segment_id, TranscriptionTextSegmentEvent,
TranscriptionTextDoneEvent with usage) and OpenAI's refusals for diarizing models
(BadRequestError), checking the SDK's own types here, and prints one JSON object for
tests/tests/speakers.rs to check the content.
"""

import argparse
import base64
import json
import mimetypes

import openai
from openai import OpenAI
from openai.types.audio import (
    TranscriptionDiarized,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionTextSegmentEvent,
)

MODEL = "gpt-4o-transcribe-diarize"


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def data_url(path):
    kind = mimetypes.guess_type(path)[0] or "audio/wav"
    with open(path, "rb") as f:
        return f"data:{kind};base64,{base64.b64encode(f.read()).decode()}"


def segments(result):
    expect(isinstance(result, TranscriptionDiarized), f"not TranscriptionDiarized: {type(result)}")
    expect(result.task == "transcribe", f"task {result.task}")
    return {
        "text": result.text,
        "duration": result.duration,
        "usage": result.usage.model_dump() if result.usage else None,
        "segments": [s.model_dump() for s in result.segments],
    }


def stream(client, audio):
    events = []
    with open(audio, "rb") as f:
        for event in client.audio.transcriptions.create(
            model=MODEL, file=f, response_format="diarized_json", stream=True
        ):
            kinds = {
                "transcript.text.delta": TranscriptionTextDeltaEvent,
                "transcript.text.segment": TranscriptionTextSegmentEvent,
                "transcript.text.done": TranscriptionTextDoneEvent,
            }
            expect(isinstance(event, kinds[event.type]), f"{event.type} is {type(event)}")
            events.append(event.model_dump())
    return events


def refusal(call):
    try:
        call()
    except openai.BadRequestError as error:
        return {"status": error.status_code, "message": error.message, "param": error.param,
                "code": error.code}
    raise AssertionError("expected BadRequestError")


def refusals(client, audio, long_audio):
    def create(path=audio, **fields):
        with open(path, "rb") as f:
            return client.audio.transcriptions.create(model=MODEL, file=f, **fields)

    cases = {
        "verbose_json": lambda: create(response_format="verbose_json"),
        "prompt": lambda: create(prompt="A call."),
        "logprobs": lambda: create(include=["logprobs"]),
        "timestamp_granularities": lambda: create(timestamp_granularities=["segment"]),
    }
    if long_audio:
        cases["unchunked"] = lambda: create(path=long_audio)
    return {name: refusal(call) for name, call in cases.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--audio", required=True)
    parser.add_argument("--long")
    parser.add_argument("--known", action="append", default=[])
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=120)
    out = {}
    with open(args.audio, "rb") as f:
        out["diarized"] = segments(client.audio.transcriptions.create(
            model=MODEL, file=f, response_format="diarized_json"))
    if args.known:
        names, clips = zip(*(k.split("=", 1) for k in args.known))
        with open(args.audio, "rb") as f:
            out["known"] = segments(client.audio.transcriptions.create(
                model=MODEL, file=f, response_format="diarized_json",
                known_speaker_names=list(names),
                known_speaker_references=[data_url(c) for c in clips]))
    out["stream"] = stream(client, args.audio)
    out["refusals"] = refusals(client, args.audio, args.long)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
