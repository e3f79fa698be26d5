#!/usr/bin/env bash
# `make gpu-bundle`: packs what a GPU run needs for a host that reaches no package registry
# into compressed parts (gzip by default: every host can unpack it) of at most 45 MB each, with their sha256, under .gpu-bundle/
# (ignored through .git/info/exclude, so a device call can `carry` one part at a time).
#
#   steno-gpu/bin/        steno, steno-bench, whisper-bench (crates/whisper/examples/bench.rs)
#   steno-gpu/lib/        mlx/lib/libmlx.so (CUDA), mlx/include (for MLX's run-time kernel
#                         compilation) and the wheel's mlx_cuda_13.libs/
#   steno-gpu/assets/     models/{base-ct2,tiny.en-ct2}, speech/ (English set + manifest)
#   steno-gpu/fixtures/   tests/fixtures/reference (the reference implementation's transcripts)
#   steno-gpu/peers/      tests/peers/{ct2,hf}.py; gpu/ = deploy/gpu/*.{sh,py}
#
# The CUDA libraries themselves (cuBLAS, cuDNN, NVRTC, cuFFT, NCCL) are not packed: the
# host's (a CUDA 13 toolkit or PyTorch's nvidia-* wheels) are used; see unpack.sh.
#
# Inputs: a CUDA build in $CARGO_TARGET_DIR (default target/cuda) — `make gpu-bundle` builds
# it — and the assets in $STENO_ASSETS. Env: GPU_BUNDLE_DIR (.gpu-bundle),
# GPU_BUNDLE_PART_BYTES (45000000), GPU_BUNDLE_COMPRESS (gzip, zstd or xz; the fp16 weights
# and CUDA kernels inside libmlx.so barely compress, so the part count hardly differs).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
target=${CARGO_TARGET_DIR:-target/cuda}
profile=${PROFILE:-release}
assets=${STENO_ASSETS:-$HOME/.cache/steno/assets}
out=${GPU_BUNDLE_DIR:-.gpu-bundle}
part_bytes=${GPU_BUNDLE_PART_BYTES:-45000000}
compress=${GPU_BUNDLE_COMPRESS:-gzip}
case "$compress" in
  gzip) ext=gz; cmd=(gzip -6 -c) ;;
  zstd) ext=zst; cmd=(zstd -T0 -12 -q -c) ;;
  xz) ext=xz; cmd=(xz -T0 -6 -c) ;;
  *) echo "GPU_BUNDLE_COMPRESS must be gzip, zstd or xz"; exit 1 ;;
esac
runtime=${GPU_BUNDLE_MLX:-target/mlx/cuda}
say() { printf '\033[1mgpu-bundle:\033[0m %s\n' "$*"; }

bin="$target/$profile"
for f in "$bin/steno" "$bin/steno-bench" "$bin/examples/bench" "$runtime/mlx/lib/libmlx.so"; do
  [ -f "$f" ] || { echo "missing $f: run MLX_BACKEND=cuda make gpu-bundle (it builds first)"; exit 1; }
done

# Keep the bundle out of git (and so out of the working tree a device call copies).
exclude="$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)"
grep -qxF "/$out/" "$exclude" 2>/dev/null || echo "/$out/" >>"$exclude"

stage="$out/stage/steno-gpu"
rm -rf "$out/stage" "$out"/steno-gpu.tar.* "$out/SHA256SUMS"
mkdir -p "$stage"/{bin,lib/mlx/lib,assets/models,assets/speech,fixtures,peers,gpu}
strip -o "$stage/bin/steno" "$bin/steno"
strip -o "$stage/bin/steno-bench" "$bin/steno-bench"
strip -o "$stage/bin/whisper-bench" "$bin/examples/bench"
cp "$runtime/mlx/lib/libmlx.so" "$stage/lib/mlx/lib/"
# MLX compiles fused kernels at run time (NVRTC) and includes its own headers and CCCL's
# (cuda/std/...) from <libmlx dir>/../include: without them every fused op fails.
cp -r "$runtime/mlx/include" "$stage/lib/mlx/"
# The wheel's bundled libraries (reference BLAS/LAPACK, gfortran), found through libmlx's rpath
# ($ORIGIN/../../mlx_cuda_13.libs) and through env.sh.
for libs in "$runtime"/*.libs; do cp -r "$libs" "$stage/lib/"; done
for m in base-ct2 tiny.en-ct2; do
  cp -r "$assets/models/$m" "$stage/assets/models/"
done
cp -r "$assets/speech/en-manifest.tsv" "$assets/speech/jfk.wav" "$assets/speech/librivox" \
  "$assets/speech/asterisk" "$stage/assets/speech/"
cp -r tests/fixtures/reference "$stage/fixtures/"
cp tests/peers/ct2.py tests/peers/hf.py "$stage/peers/"
cp deploy/gpu/*.sh deploy/gpu/*.py "$stage/gpu/"
git rev-parse HEAD >"$stage/COMMIT" 2>/dev/null || true
du -sh "$stage" | awk '{print "gpu-bundle: staged " $1}'

say "${cmd[*]}, parts of $part_bytes bytes"
tar -C "$out/stage" -cf - steno-gpu | "${cmd[@]}" | split -b "$part_bytes" -d -a 2 - "$out/steno-gpu.tar.$ext."
rm -rf "$out/stage"
(cd "$out" && sha256sum steno-gpu.tar.$ext.* >SHA256SUMS)
ls -l "$out"/steno-gpu.tar.$ext.* | awk '{print "  " $NF " " $5}'
say "$(ls "$out"/steno-gpu.tar.$ext.* | wc -l) parts in $root/$out (SHA256SUMS beside them)"
