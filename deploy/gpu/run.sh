#!/usr/bin/env bash
# On the GPU host, after unpack.sh: runs the measurements of deploy/gpu/RESULTS.md.
#
#   run.sh STEP...     STEP: info smoke wer server live model turbo clips peer steps beam
#                      encoder trace (or all)
#
# Reports (Markdown/logs, a few files per step) go to $OUT (default ./gpu-out); bulky
# intermediates (16 kHz WAVs, converted weights, transcripts) to $STENO_WORK
# (default /root/steno-work). STENO_GPU is the unpacked bundle (default /root/steno-gpu).
# Knobs: CLIENTS (1,8,32,64), REQUESTS (128), BATCH_ROWS (64), BATCHES (1,8,32,64),
# SESSIONS (1,32,64: live sessions per level), PY (python3: the one with torch and transformers),
# STEP_ROWS (1,8,32,64: decoder rows of `steps`), BEAM_ROWS (32: max batch rows of `beam`),
# PEER_CONFIGS ("default static static-default": the transformers configurations `peer` runs).
set -uo pipefail
gpu=${STENO_GPU:-/root/steno-gpu}
# shellcheck disable=SC1091
. "$gpu/env.sh"
out=${OUT:-$PWD/gpu-out}
work=${STENO_WORK:-/root/steno-work}
mkdir -p "$out" "$work"
models="$STENO_ASSETS/models"
clients=${CLIENTS:-1,8,32,64}
requests=${REQUESTS:-128}
batch_rows=${BATCH_ROWS:-64}
batches=${BATCHES:-1,8,32,64}
sessions=${SESSIONS:-1,32,64}
live_model=${LIVE_MODEL:-base-ct2}   # live: tiny.en-ct2 for a quick check on a CPU
live_turns=${LIVE_TURNS:-6}          # live: clips (turns) each session streams per level
live_stride=${LIVE_WER_STRIDE:-1}    # live: every n-th English clip live vs files (0 skips)
step_rows=${STEP_ROWS:-1,8,32,64}
beam_rows=${BEAM_ROWS:-32}
py=${PY:-python3}
command -v "$py" >/dev/null || py=/opt/torch/.venv/bin/python3
step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%T)"; }
status=0
check() { "$@" || { echo "FAILED ($?): $*"; status=1; }; }

info() {
  step info
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  ldd "$gpu/bin/steno" | grep -E "mlx|cublas|cudnn|nvrtc|cufft|nccl|libcuda" || true
  echo "CUDA_HOME=${CUDA_HOME:-unset}"
  $py -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' || true
  nproc; free -g | head -2
}

smoke() {
  step smoke
  for m in tiny.en-ct2 base-ct2; do
    RUST_LOG=info,steno_whisper=debug check steno transcribe --model "$models/$m" --language en \
      "$STENO_ASSETS/speech/jfk.wav" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tail -4
  done
}

wer() {
  step "wer (full English set: tiny.en and base through transcribe_many, the CLI's path, 16 rows)"
  for m in tiny.en-ct2 base-ct2; do
    check whisper-bench --clips "$models/$m" 16 "$work/wer-$m" 2>&1 | grep -v "^rows" | tee -a "$out/wer.log"
    echo "reference implementation (openai-whisper, same weights) on the same clips:" | tee -a "$out/wer.log"
    (cd "$gpu/fixtures/reference" && whisper-bench --score "$m.tsv") 2>&1 | tee -a "$out/wer.log"
  done
}

server() {
  step "server: steno-bench base, clients $clients, $requests requests, batching on ($batch_rows rows) and off"
  check steno-bench --model base-ct2 --clients "$clients" --requests "$requests" \
    --batch-rows "$batch_rows" --out "$out/server.md" 2>&1 | grep -v "^\s*$" | tail -25
}

live() {
  step "live: steno-bench live $live_model, sessions $sessions at real-time pace while 4 clients send files; English set (every ${live_stride}th clip) through 16 sessions"
  # The level rows go to stderr as each level ends; the report's tables are printed last.
  check steno-bench live --model "$live_model" --sessions "$sessions" --turns "$live_turns" --file-clients 4 \
    --batch-rows "$batch_rows" --wer-sessions 16 --wer-stride "$live_stride" --out "$out/live.md" \
    >/dev/null 2>"$work/live.err"
  grep -E "panicked|rror" "$work/live.err" | head -5
  grep -E "^\||^Live|session error" "$out/live.md" | head -40
}

model() {
  step "model: whisper-bench base (GEMM, encoder, decoder steps, one long file, short clips)"
  (cd "$work" && check whisper-bench "$models/base-ct2" >"$out/model-base.md" 2>"$work/model.err")
  cat "$out/model-base.md"; tail -5 "$work/model.err"
}

turbo() {
  step "turbo: large-v3-turbo dimensions, random weights"
  check whisper-bench --turbo-random "$out/turbo.md" 2>/dev/null | tail -40
}

clips() {
  step "clips: steno transcribe_many, base, every English clip, max rows $batches"
  check whisper-bench --clips "$models/base-ct2" "$batches" "$work/clips" 2>&1 | tail -12
  cp "$work/clips/steno-clips.md" "$out/"
}

steps() {
  step "steps: whisper-bench --steps base, decoder step ms at $step_rows rows: dynamic caches, static, compiled (#16)"
  (cd "$work" && check env STENO_BENCH_STEP_ROWS="$step_rows" whisper-bench --steps "$models/base-ct2") |
    tee "$out/steps.md"
}

beam() {
  step "beam: base, every English clip, $beam_rows rows: greedy then beam 5, back to back (#16: WER -0.3 points at <= 2x greedy's wall time)"
  check env STENO_BENCH_BEAMS=1,5 whisper-bench --clips "$models/base-ct2" "$beam_rows" "$work/beam" 2>&1 | tail -8
  cp "$work/beam/steno-clips.md" "$out/beam.md"
}

peer() {
  step "peer: transformers pipeline (fp16, sdpa), base converted from the same CT2 weights"
  [ -f "$work/wavs16/clips.tsv" ] || check whisper-bench --wavs16 "$work/wavs16"
  [ -f "$work/hf-base/model.safetensors" ] ||
    check "$py" "$gpu/peers/hf.py" "$models/base-ct2" "$work/hf-base" --dtype float16
  # PEER_CONFIGS: default (the pipeline as is), static (static cache, generate() compiling
  # with CUDA graphs) and/or static-default (the same compiled without CUDA graphs).
  for config in ${PEER_CONFIGS:-default static static-default}; do
    flag=()
    case "$config" in
      static) flag=(--static-compile) ;;
      static-default) flag=(--static-compile --compile-mode default) ;;
    esac
    check "$py" "$gpu/gpu/hf_peer.py" --model "$work/hf-base" --clips "$work/wavs16/clips.tsv" \
      --batch-sizes "$batches" --out "$work/hf" "${flag[@]}" 2>&1 | grep -vE "Warning|warn|^\s*$" | tail -15
  done
  cp "$work"/hf/hf*.json "$out/" 2>/dev/null
  (cd "$work/hf" && check whisper-bench --score hf-*.tsv) | tee "$out/hf-wer.txt"
}

encoder() {
  step "encoder: the turbo-shaped encoder alone at batch 8 and 32 (#16)"
  STENO_BENCH_TURBO_STEPS=0 STENO_BENCH_TURBO_BATCHES=8,32 check whisper-bench --turbo-random 2>/dev/null |
    grep -E "roofline|^\| (8|32) \|" | tee "$out/encoder.md"
}

trace() {
  step "trace: the kernels of two turbo encoder layers at batch 8, six calls (Nsight Compute)"
  local ncu
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  [ -n "$ncu" ] || { echo "no ncu"; return; }
  STENO_BENCH_TURBO_LAYERS=2 STENO_BENCH_TURBO_STEPS=0 STENO_BENCH_TURBO_ROOFLINE=0 STENO_BENCH_TURBO_BATCHES=8 \
    "$ncu" --clock-control none --cache-control none --metrics gpu__time_duration.sum \
    --csv --page raw --print-units base whisper-bench --turbo-random >"$work/trace.csv" 2>"$work/trace.err"
  check "$py" "$gpu/gpu/kernels.py" "$work/trace.csv" 20 | tee "$out/trace.md"
}

[ $# -gt 0 ] || set -- all
for s in "$@"; do
  case "$s" in
    all) info; smoke; wer; server; live; model; turbo; clips; steps; beam; peer ;;
    info | smoke | wer | server | live | model | turbo | clips | steps | beam | peer | encoder | trace) "$s" ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
exit $status
