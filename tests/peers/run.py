"""Runs a peer Whisper implementation over WAV files for `make bench` (tests/src/bench/).

usage: python run.py --impl faster-whisper|mlx-whisper --model CT2_DIR --out RESULT.json
                     [--compute-type int8|float32] [--processes N] [--mlx-dir DIR] [--batch-size N]
                     [--warmup WAV] FILE.wav ...

The files are 16 kHz mono 16-bit WAVs (the bench writes them with Steno's own decoder, so
every implementation sees the same samples). `--processes N` starts N worker processes,
each with its own model (N clients of a one-model-per-process peer); they pull the next
file from a shared queue, like the bench's HTTP clients do. Each worker loads its model
and transcribes the warm-up file before the clock starts; the result's `wall_seconds` runs
from releasing the workers to the last transcript.

Decoding matches Steno's defaults: language "en", greedy at T = 0 with OpenAI's
temperature fallback (0.0, 0.2, ..., 1.0; one sample per temperature), compression-ratio
2.4 / log-prob -1.0 / no-speech 0.6 thresholds, conditioning on previous text, no word
timestamps, no VAD (except `--batch-size N`: faster-whisper's BatchedInferencePipeline,
which needs its VAD to cut the file, as Steno's batched mode does). faster-whisper runs on
the CTranslate2 directory itself; mlx-whisper on the same weights written in its layout by
ct2.write_mlx (float32, as Steno runs them on the CPU) and on MLX's CPU backend with
OpenBLAS preloaded, as Steno links it.

Writes {"impl", "compute_type", "processes", "threads_per_process", "wall_seconds",
"load_seconds", "texts": [...], "versions": {...}}.
"""
import argparse
import ctypes.util
import importlib.metadata as md
import json
import multiprocessing as mp
import os
import sys
import time
import wave

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getframerate() != 16000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16 kHz mono 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


class FasterWhisper:
    def __init__(self, args, threads):
        from faster_whisper import WhisperModel

        self.model = WhisperModel(args.model, device="cpu", compute_type=args.compute_type, cpu_threads=threads)
        self.batch_size = args.batch_size
        if self.batch_size:
            from faster_whisper import BatchedInferencePipeline

            self.batched = BatchedInferencePipeline(self.model)

    def __call__(self, audio):
        common = dict(
            language="en",
            beam_size=1,
            best_of=1,
            temperature=list(TEMPERATURES),
            compression_ratio_threshold=2.4,
            log_prob_threshold=-1.0,
            no_speech_threshold=0.6,
            word_timestamps=False,
            without_timestamps=False,
        )
        if self.batch_size:
            # Its own VAD (Silero, shipped in the wheel) cuts the file into chunks decoded
            # `batch_size` at a time, like Steno's batched mode.
            segments, _ = self.batched.transcribe(audio, batch_size=self.batch_size, **common)
        else:
            segments, _ = self.model.transcribe(audio, condition_on_previous_text=True, vad_filter=False, **common)
        return "".join(s.text for s in segments).strip()


class MlxWhisper:
    def __init__(self, args, threads):
        import mlx.core as mx
        from mlx_whisper import transcribe
        from mlx_whisper.load_models import load_model

        mx.set_default_device(mx.cpu)
        self.transcribe = transcribe
        self.path = args.mlx_dir
        load_model(self.path, mx.float32)

    def __call__(self, audio):
        result = self.transcribe(
            audio,
            path_or_hf_repo=self.path,
            language="en",
            temperature=TEMPERATURES,
            best_of=None,
            compression_ratio_threshold=2.4,
            logprob_threshold=-1.0,
            no_speech_threshold=0.6,
            condition_on_previous_text=True,
            word_timestamps=False,
            fp16=False,
            verbose=None,
        )
        return result["text"].strip()


IMPLS = {"faster-whisper": FasterWhisper, "mlx-whisper": MlxWhisper}


def worker(args, threads, files, queue, results, ready, go):
    try:
        t0 = time.perf_counter()
        model = IMPLS[args.impl](args, threads)
        if args.warmup:
            model(read_wav(args.warmup))
        ready.put(time.perf_counter() - t0)
        go.wait()
        while True:
            i = queue.get()
            if i is None:
                break
            results.put((i, model(read_wav(files[i]))))
    except BaseException as e:  # the parent waits on these queues: tell it instead of hanging
        message = f"{type(e).__name__}: {e}"
        ready.put((None, message))
        results.put((None, message))
        raise


def get(q, what, timeout):
    """The next item of `q`; exits when a worker failed or nothing came within `timeout`."""
    try:
        item = q.get(timeout=timeout)
    except Exception:
        raise SystemExit(f"run.py: no {what} within {timeout} s")
    if item is None or (isinstance(item, tuple) and item[0] is None):
        raise SystemExit(f"run.py: a worker failed ({item})")
    return item


def threads_per_process(processes):
    return max(1, (os.cpu_count() or 1) // processes)


def preload_openblas():
    """Re-executes this script with OpenBLAS preloaded ahead of the mlx-cpu wheel's
    reference BLAS (~50x slower GEMM), as Steno's binaries link it."""
    if os.environ.get("STENO_PEERS_PRELOADED"):
        return
    name = ctypes.util.find_library("openblas")
    if not name:
        print("run.py: OpenBLAS not found; mlx-whisper runs with the wheel's reference BLAS", file=sys.stderr)
        return
    env = dict(os.environ, STENO_PEERS_PRELOADED="1")
    env["LD_PRELOAD"] = " ".join(p for p in (name, env.get("LD_PRELOAD", "")) if p)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def versions(impl):
    packages = {"faster-whisper": ("faster-whisper", "ctranslate2"), "mlx-whisper": ("mlx-whisper", "mlx", "mlx-cpu")}
    return {p: md.version(p) for p in packages[impl]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=sorted(IMPLS), required=True)
    ap.add_argument("--model", required=True, help="CTranslate2 model directory")
    ap.add_argument("--mlx-dir", help="mlx-whisper layout (written from --model when absent)")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=0, help="faster-whisper's BatchedInferencePipeline")
    ap.add_argument("--warmup")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for any one result")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    if args.impl == "mlx-whisper":
        preload_openblas()
        if not args.mlx_dir:
            raise SystemExit("--mlx-dir is required for mlx-whisper")
        if not os.path.exists(os.path.join(args.mlx_dir, "weights.npz")):
            sys.path.insert(0, HERE)
            import ct2

            ct2.write_mlx(args.model, args.mlx_dir)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = threads_per_process(args.processes)
    if args.impl == "mlx-whisper":
        # MLX's CPU backend threads its BLAS calls; one process per core when there are many.
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)

    ctx = mp.get_context("spawn")
    queue, results, ready, go = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    for i in range(len(args.files)):
        queue.put(i)
    for _ in range(args.processes):
        queue.put(None)
    if args.processes == 1:
        # In this process: no extra interpreter in the memory figure.
        import threading

        procs = [threading.Thread(daemon=True, target=worker, args=(args, threads, args.files, queue, results, ready, go))]
    else:
        procs = [
            ctx.Process(target=worker, args=(args, threads, args.files, queue, results, ready, go))
            for _ in range(args.processes)
        ]
    for p in procs:
        p.start()
    load = max(get(ready, "ready worker", args.timeout) for _ in procs)
    start = time.perf_counter()
    go.set()
    texts = [None] * len(args.files)
    for _ in args.files:
        i, text = get(results, "transcript", args.timeout)
        texts[i] = text
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    out = {
        "impl": args.impl,
        "compute_type": args.compute_type if args.impl == "faster-whisper" else "float32",
        "processes": args.processes,
        "batch_size": args.batch_size,
        "threads_per_process": threads,
        "wall_seconds": wall,
        "load_seconds": load,
        "texts": texts,
        "versions": versions(args.impl),
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
