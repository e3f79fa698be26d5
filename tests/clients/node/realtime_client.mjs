// Streams speech to a running Steno with the official OpenAI Node SDK's realtime WebSocket
// client (`openai/beta/realtime/ws`, OpenAIRealtimeWS, on the `ws` package).
//
// Usage: node realtime_client.mjs --base-url http://HOST:PORT/v1 --api-key KEY
//                                 [--speed X] CLIP.pcm [CLIP.pcm ...]
//
// The SDK opens `wss://<base URL>/realtime?model=whisper-1` with `Authorization: Bearer` and
// `OpenAI-Beta: realtime=v1`. It always writes the scheme `wss` (buildRealtimeURL), so against
// a plain-HTTP server its `options` (handed to `ws` unchanged) carry a `createConnection` that
// opens a plain TCP socket; behind TLS (deploy/nginx) nothing but the base URL and key would
// change. The session is the beta transcription session (`transcription_session.update`,
// pcm16, server_vad); turns end by the server's turn detection.
//
// Each CLIP.pcm is raw mono 16-bit little-endian PCM at 24 kHz, appended in 100 ms chunks X
// times faster than real time (0: no pause), each clip followed by a second of silence.
// Prints one JSON object for tests/tests/clients.rs: the clips' offsets in the stream and,
// per turn, its audio span, deltas and completed transcript.

import fs from 'node:fs';
import net from 'node:net';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/beta/realtime/ws';

const { values: args, positionals: clipPaths } = parseArgs({
  allowPositionals: true,
  options: {
    'base-url': { type: 'string' },
    'api-key': { type: 'string' },
    speed: { type: 'string', default: '1' },
  },
});
for (const name of ['base-url', 'api-key']) {
  if (!args[name]) throw new Error(`--${name} is required`);
}
if (clipPaths.length === 0) throw new Error('no clips');

const MODEL = 'whisper-1';
const RATE = 24_000;
const CHUNK_MS = 100;
const SILENCE_MS = 1_000;
// A turn starts up to its prefix padding (300 ms) before the speech the VAD heard.
const LAST_TURN_SLACK_MS = 1_000;
const speed = Number(args.speed);

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** ws's own connector for a `wss` URL is TLS; this one is the plain TCP socket it uses for `ws`. */
function plainSocket(options) {
  return net.connect({ host: options.host, port: options.port });
}

function chunks(pcm) {
  const size = (RATE * 2 * CHUNK_MS) / 1000;
  const out = [];
  for (let start = 0; start < pcm.length; start += size) out.push(pcm.subarray(start, start + size));
  return out;
}

class Turns {
  constructor() {
    this.items = new Map();
    this.events = [];
    this.errors = [];
    this.speechOpen = false;
    this.sentAll = false;
    this.lastOffsetMs = 0;
  }

  item(id) {
    if (!this.items.has(id)) this.items.set(id, { item_id: id, deltas: [], transcript: null });
    return this.items.get(id);
  }

  take(event) {
    this.events.push(event.type);
    switch (event.type) {
      case 'error':
        this.errors.push(event.error);
        break;
      case 'input_audio_buffer.speech_started':
        this.speechOpen = true;
        this.item(event.item_id).audio_start_ms = event.audio_start_ms;
        break;
      case 'input_audio_buffer.speech_stopped':
        this.speechOpen = false;
        this.item(event.item_id).audio_end_ms = event.audio_end_ms;
        break;
      case 'input_audio_buffer.committed':
        this.item(event.item_id).committed = true;
        break;
      case 'conversation.item.input_audio_transcription.delta':
        this.item(event.item_id).deltas.push(event.delta);
        break;
      case 'conversation.item.input_audio_transcription.completed':
        Object.assign(this.item(event.item_id), {
          transcript: event.transcript,
          usage: event.usage ?? null,
          logprobs: (event.logprobs ?? []).length,
        });
        break;
      case 'conversation.item.input_audio_transcription.failed':
        this.item(event.item_id).failed = event.error;
        break;
    }
  }

  /** Every turn transcribed, and one of them started inside the last clip. */
  done() {
    const turns = [...this.items.values()];
    return (
      this.sentAll &&
      !this.speechOpen &&
      turns.some((t) => (t.audio_start_ms ?? -1) + LAST_TURN_SLACK_MS >= this.lastOffsetMs) &&
      turns.every((t) => t.transcript !== null || t.failed)
    );
  }
}

/** Resolves with the first event of one of `types` (`rt.on` for each). */
function nextEvent(rt, types) {
  return new Promise((resolve, reject) => {
    for (const type of types) rt.on(type, resolve);
    rt.on('error', reject);
  });
}

async function stream(rt, turns, clips) {
  const offsets = [];
  let atMs = 0;
  const silence = Buffer.alloc((RATE * 2 * SILENCE_MS) / 1000);
  for (const pcm of clips) {
    offsets.push(atMs);
    for (const chunk of [...chunks(pcm), ...chunks(silence)]) {
      rt.send({ type: 'input_audio_buffer.append', audio: chunk.toString('base64') });
      atMs += (chunk.length * 1000) / (RATE * 2);
      if (speed > 0) await sleep(CHUNK_MS / speed);
    }
  }
  turns.lastOffsetMs = offsets[offsets.length - 1];
  turns.sentAll = true;
  return offsets;
}

const started = performance.now();
const clips = clipPaths.map((p) => fs.readFileSync(p));
const client = new OpenAI({ baseURL: args['base-url'], apiKey: args['api-key'] });
const rt = new OpenAIRealtimeWS({ model: MODEL, options: { createConnection: plainSocket } }, client);
const out = {
  sdk_version: JSON.parse(fs.readFileSync(new URL('./node_modules/openai/package.json', import.meta.url), 'utf8')).version,
  url: rt.url.toString(),
};
const turns = new Turns();
const created = nextEvent(rt, ['transcription_session.created', 'session.created']);
rt.on('event', (event) => turns.take(event));
out.created = (await created).type;

const updated = nextEvent(rt, ['transcription_session.updated']);
rt.send({
  type: 'transcription_session.update',
  session: {
    input_audio_format: 'pcm16',
    input_audio_transcription: { model: MODEL, language: 'en' },
    turn_detection: { type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 },
  },
});
out.updated = await updated;

let settle;
const finished = new Promise((resolve, reject) => {
  settle = () => turns.done() && resolve();
  rt.on('event', settle);
  rt.on('error', reject);
  rt.socket.on('close', (code) => reject(new Error(`closed (${code}) before the last transcript`)));
});
out.offsets_ms = await stream(rt, turns, clips);
settle();
await finished;
rt.close();
expect(turns.errors.length === 0, `errors: ${JSON.stringify(turns.errors)}`);
Object.assign(out, {
  errors: turns.errors,
  turns: [...turns.items.values()],
  events: turns.events,
  seconds: (performance.now() - started) / 1000,
});
console.log(JSON.stringify(out));
