// Drives a running Steno with the official OpenAI Node SDK.
//
// Usage: node client.mjs --base-url http://HOST:PORT/v1 --api-key KEY --audio jfk.wav
//
// Transcribes with response_format json and verbose_json (word and segment timestamps),
// streams with the SDK's own Stream, and checks the SDK's AuthenticationError on a bad
// key. Checks what only JavaScript can see (classes) here and prints one JSON object on
// stdout for tests/tests/clients.rs to check the rest.

import fs from 'node:fs';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';

const { values: args } = parseArgs({
  options: {
    'base-url': { type: 'string' },
    'api-key': { type: 'string' },
    audio: { type: 'string' },
  },
});
for (const name of ['base-url', 'api-key', 'audio']) {
  if (!args[name]) throw new Error(`--${name} is required`);
}

const MODEL = 'whisper-1';
const options = { baseURL: args['base-url'], maxRetries: 0, timeout: 120_000 };
const client = new OpenAI({ ...options, apiKey: args['api-key'] });
const file = () => fs.createReadStream(args.audio);

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

const sdkPackage = new URL('./node_modules/openai/package.json', import.meta.url);
const out = {
  sdk_version: JSON.parse(fs.readFileSync(sdkPackage, 'utf8')).version,
  node_version: process.version,
};

out.json = await client.audio.transcriptions.create({ model: MODEL, file: file() });
expect(typeof out.json.text === 'string', `json: ${JSON.stringify(out.json)}`);

out.verbose_json = await client.audio.transcriptions.create({
  model: MODEL,
  file: file(),
  response_format: 'verbose_json',
  timestamp_granularities: ['word', 'segment'],
});
expect(Array.isArray(out.verbose_json.words), 'verbose_json without words');

const stream = await client.audio.transcriptions.create({ model: MODEL, file: file(), stream: true });
expect(typeof stream[Symbol.asyncIterator] === 'function', 'stream is not async-iterable');
out.stream = [];
for await (const event of stream) {
  out.stream.push(event);
}

const badKey = new OpenAI({ ...options, apiKey: 'sk-wrong' });
try {
  await badKey.audio.transcriptions.create({ model: MODEL, file: file() });
  throw new Error('a wrong key was accepted');
} catch (error) {
  expect(error instanceof OpenAI.AuthenticationError, `bad key: ${error}`);
  out.bad_key = { status: error.status, type: error.type, code: error.code, param: error.param };
}

process.stdout.write(JSON.stringify(out) + '\n');
