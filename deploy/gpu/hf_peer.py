"""The Hugging Face transformers Whisper pipeline on the GPU: the peer Steno is measured against.

    python hf_peer.py --model HF_DIR --clips CLIPS_TSV --batch-sizes 1,8,32,64 --out DIR

HF_DIR is the CTranslate2 model converted by tests/peers/hf.py (same weights as Steno's);
CLIPS_TSV is written by `bench --wavs16` (key, 16 kHz WAV decoded by Steno, seconds), so
both see the same samples. The pipeline runs in float16 with PyTorch's SDPA attention,
`chunk_length_s=30` (clips over 30 s are cut into chunks) and `batch_size=B`, greedy,
language "en". Per batch size: wall seconds over all clips (after a warm-up pass over the
first B clips), audio seconds per wall second and peak CUDA memory; the transcripts go to
DIR/hf-B.tsv (`key<TAB>text`) for scoring with Steno's normaliser (`bench --score`).

--static-compile: transformers' fastest documented Whisper configuration on top of that —
a static KV cache (`generation_config.cache_implementation = "static"`), with which
generate() compiles the decoding forward (`CompileConfig(mode=--compile-mode)`, default
"reduce-overhead": CUDA graphs); the warm-up pass at each batch size pays the compilation.
Files get the `hf-static-MODE` prefix.
"""
import argparse
import json
import os
import time
import wave

import numpy as np
import torch
import transformers
from transformers import WhisperForConditionalGeneration, WhisperProcessor, pipeline


def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--clips", required=True)
    ap.add_argument("--batch-sizes", default="1,8,32,64")
    ap.add_argument("--out", required=True)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--static-compile", action="store_true")
    ap.add_argument("--compile-mode", default="reduce-overhead")
    args = ap.parse_args()
    prefix = f"hf-static-{args.compile_mode}" if args.static_compile else "hf"
    os.makedirs(args.out, exist_ok=True)

    rows = [line.rstrip("\n").split("\t") for line in open(args.clips, encoding="utf-8") if line.strip()]
    keys = [r[0] for r in rows]
    audio = [read_wav(r[1]) for r in rows]
    seconds = sum(len(a) for a in audio) / 16000.0

    t0 = time.perf_counter()
    processor = WhisperProcessor.from_pretrained(args.model)
    model = WhisperForConditionalGeneration.from_pretrained(
        args.model, dtype=torch.float16, attn_implementation=args.attn
    ).to("cuda:0")
    model.eval()
    if args.static_compile:
        # generate() compiles the decoding forward itself once the cache is static
        # (transformers' CompileConfig); wrapping model.forward in torch.compile as well
        # crashed in CUDA-graph trees on the cache's in-place update (torch 2.11).
        model.generation_config.cache_implementation = "static"
        model.generation_config.compile_config = transformers.CompileConfig(mode=args.compile_mode)
    multilingual = model.config.vocab_size >= 51865
    generate_kwargs = {"language": "en", "task": "transcribe"} if multilingual else {}
    pipe = pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=processor.tokenizer,
        feature_extractor=processor.feature_extractor,
        device="cuda:0",
        dtype=torch.float16,
    )
    load = time.perf_counter() - t0

    results = {
        "impl": "transformers",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "gpu": torch.cuda.get_device_name(0),
        "attn": args.attn,
        "static_compile": args.static_compile,
        "compile_mode": args.compile_mode if args.static_compile else None,
        "clips": len(audio),
        "audio_seconds": seconds,
        "load_seconds": load,
        "levels": [],
    }

    def run(batch, inputs):
        out = pipe(
            [{"raw": a, "sampling_rate": 16000} for a in inputs],
            batch_size=batch,
            chunk_length_s=30,
            generate_kwargs=generate_kwargs,
        )
        torch.cuda.synchronize()
        return [o["text"] for o in out]

    for batch in [int(b) for b in args.batch_sizes.split(",") if b.strip()]:
        run(batch, audio[: max(batch, 1)])  # warm-up at this batch size
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        texts = run(batch, audio)
        wall = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() / 2**20
        with open(os.path.join(args.out, f"{prefix}-{batch}.tsv"), "w", encoding="utf-8") as f:
            for k, text in zip(keys, texts):
                f.write(k + "\t" + " ".join(text.split()) + "\n")
        level = {"batch": batch, "wall_seconds": wall, "audio_per_wall": seconds / wall, "peak_mib": peak}
        results["levels"].append(level)
        print(f"{prefix} batch {batch}: {wall:.2f} s, {seconds / wall:.1f} audio s/wall s, peak {peak:.0f} MiB", flush=True)
    with open(os.path.join(args.out, f"{prefix}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
