#!/usr/bin/env bash
# `make bench-setup`: the peers' Python environment (target/venv-bench) from
# requirements/bench.txt (pinned, sha256-checked, no dependency resolution: every
# transitive dependency is listed there), and a TrueType font for the chart's text.
# Idempotent: a stamp named after the requirements' hash skips the install next time.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=${BENCH_VENV:-target/venv-bench}
requirements=requirements/bench.txt

have_font() {
  [ -n "${BENCH_FONT:-}" ] && [ -f "$BENCH_FONT" ] && return 0
  for f in /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/TTF/DejaVuSans.ttf \
           /usr/share/fonts/dejavu/DejaVuSans.ttf /System/Library/Fonts/Supplemental/Arial.ttf; do
    [ -f "$f" ] && return 0
  done
  return 1
}

if ! have_font; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y --no-install-recommends fonts-dejavu-core \
      || { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends fonts-dejavu-core; }
  else
    echo "bench-setup: no TrueType font found; set BENCH_FONT=/path/to/font.ttf for the chart" >&2
  fi
fi

python=${BENCH_PYTHON_BASE:-python3}
tag=$("$python" -c 'import platform, sys; print(f"{sys.implementation.name}{sys.version_info[0]}{sys.version_info[1]}-{platform.system()}-{platform.machine()}")')
if [ "$tag" != "cpython311-Linux-x86_64" ]; then
  echo "bench-setup: $requirements pins wheels for CPython 3.11 on Linux x86_64, not $tag;" >&2
  echo "             the peers are skipped (BENCH_PEERS=none), Steno's rows still run." >&2
  exit 0
fi
stamp="$venv/.installed-$(sha256sum "$requirements" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r "$requirements"
  "$venv/bin/python" -c 'import faster_whisper, mlx_whisper, mlx.core'
  touch "$stamp"
fi
echo "bench-setup: $venv ready"
