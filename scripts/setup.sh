#!/usr/bin/env bash
# Idempotent setup: system packages, the pinned MLX runtime, the mlx-c sources and the
# test assets. Every download is pinned by version and checked by sha256 (pip
# --require-hashes, Cargo.lock checksums, scripts/fetch-assets.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

backend="${MLX_BACKEND:-}"
if [ -z "$backend" ]; then
  if [ "$(uname -s)" = Darwin ]; then backend=metal; else backend=cpu; fi
fi
say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

install_system_packages() {
  if [ "$(uname -s)" = Darwin ]; then
    command -v brew >/dev/null || { echo "Homebrew is required on macOS (https://brew.sh)"; exit 1; }
    for pkg in cmake espeak-ng sox ffmpeg; do brew list "$pkg" >/dev/null 2>&1 || brew install "$pkg"; done
    command -v npm >/dev/null || brew install node
    return
  fi
  local wanted=(cmake libclang-dev libfmt-dev libopenblas0-pthread pkg-config
                python3 python3-venv python3-pip curl ca-certificates xz-utils
                espeak-ng sox ffmpeg nginx python3-yaml openssl shellcheck
                chromium)
  # chromium: the playground's tests drive it headless (tests/src/browser.rs, over the
  # DevTools protocol, so no chromedriver).
  local missing=()
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  # Node.js (>= 18) and npm for the OpenAI Node SDK tests; any install will do
  # (NodeSource's nodejs bundles npm).
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  [ ${#missing[@]} -eq 0 ] && return
  command -v apt-get >/dev/null || { echo "install these packages: ${missing[*]}"; exit 1; }
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  say "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_mlx_runtime() {
  local prefix="target/mlx/$backend"
  local stamp="$prefix/.installed-$(sha256sum "requirements/mlx-$backend.txt" | cut -c1-16)"
  [ -f "$stamp" ] && return
  say "MLX runtime ($backend) into $prefix"
  rm -rf "$prefix"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
    --target "$prefix" -r "requirements/mlx-$backend.txt"
  touch "$stamp"
}

fetch_mlx_c_sources() {
  # Downloads the registry's mlx-sys 0.7.0 (checksum in the lock file) for its mlx-c.
  cargo fetch --locked --manifest-path crates/mlx-sys/upstream/Cargo.toml
}

install_clients() {
  # The official OpenAI SDKs tests/tests/clients.rs drives Steno with: Python's into
  # a venv (every package pinned by hash), Node's with `npm ci` (package-lock.json
  # integrity hashes). Stamps are keyed on the pins, so a change reinstalls.
  local venv="target/venv-clients"
  local stamp="$venv/.installed-$(sha256sum requirements/clients.txt | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    say "OpenAI Python SDK into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      --require-hashes -r requirements/clients.txt
    touch "$stamp"
  fi
  local node="tests/clients/node"
  local node_stamp="$node/node_modules/.installed-$(cat "$node/package.json" "$node/package-lock.json" | sha256sum | cut -c1-16)"
  if [ ! -f "$node_stamp" ]; then
    say "OpenAI Node SDK into $node/node_modules"
    (cd "$node" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    touch "$node_stamp"
  fi
}

install_system_packages
install_mlx_runtime
install_clients
fetch_mlx_c_sources
say "ok (backend: $backend)"
