// The playground's AudioWorklet: microphone samples at the AudioContext's rate →
// 24 kHz mono PCM16 (what the Realtime session's `audio/pcm` format says), posted to
// the page in chunks of CHUNK_MS.
//
// Downsampling averages the input samples that fall into each output sample (a box
// filter): cheap, and it keeps most of what lies above 12 kHz from folding back into
// the speech band, which plain decimation would not. Input below 24 kHz repeats samples.

const OUTPUT_RATE = 24000;
const CHUNK_MS = 100;
const CHUNK_SAMPLES = (OUTPUT_RATE * CHUNK_MS) / 1000;

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    // Input samples per output sample (`sampleRate` is the context's, a worklet global).
    this.step = sampleRate / OUTPUT_RATE;
    this.phase = 0;
    this.sum = 0;
    this.count = 0;
    this.chunk = new Int16Array(CHUNK_SAMPLES);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
    };
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      this.sum += channel[i];
      this.count += 1;
      this.phase += 1;
      if (this.phase < this.step) continue;
      const mean = this.sum / this.count;
      while (this.phase >= this.step) {
        this.push(mean);
        this.phase -= this.step;
      }
      this.sum = 0;
      this.count = 0;
    }
    return true;
  }

  push(sample) {
    const clamped = Math.max(-1, Math.min(1, sample));
    this.chunk[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === CHUNK_SAMPLES) this.flush();
  }

  // Posts what is filled (the buffer moves to the page, no copy) and starts a new chunk.
  flush() {
    if (this.filled === 0) return;
    const full = this.filled === CHUNK_SAMPLES ? this.chunk : this.chunk.slice(0, this.filled);
    this.port.postMessage(full.buffer, [full.buffer]);
    // Not this.chunk.length: a transferred buffer leaves its array empty.
    this.chunk = new Int16Array(CHUNK_SAMPLES);
    this.filled = 0;
  }
}

registerProcessor("pcm-capture", PcmCapture);
