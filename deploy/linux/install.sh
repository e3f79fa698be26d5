#!/usr/bin/env bash
# Installs Steno as the systemd service deploy/linux/steno.service.
#
#   make build                                   # or: MLX_BACKEND=cuda make build
#   sudo deploy/linux/install.sh                 # or: sudo MLX_BACKEND=cuda deploy/linux/install.sh
#
# Installs /usr/local/bin/steno, the MLX runtime the binary was built against under
# /usr/local/lib/steno, the unit, /etc/steno/steno.toml (a copy of config/default.toml)
# and /etc/steno/steno.env (a copy of steno.env.example), both kept if present and both
# root-only (0600), and steno.env.example; then enables and starts the service, which
# returns once /health answers 200 (the unit's health gate).
#
# DESTDIR=/some/dir stages the same files under /some/dir and leaves systemd alone
# (packaging; the tests do this). STENO_BINARY overrides target/release/steno.
set -euo pipefail
cd "$(dirname "$0")/../.."

backend="${MLX_BACKEND:-cpu}"
binary="${STENO_BINARY:-target/release/steno}"
runtime="target/mlx/$backend"
root="${DESTDIR:-}"
lib="$root/usr/local/lib/steno"

[ -x "$binary" ] || { echo "no $binary: run \`make build\` first" >&2; exit 1; }
[ -d "$runtime/mlx/lib" ] || { echo "no MLX runtime in $runtime: run \`make setup\`" >&2; exit 1; }

install -d "$root/usr/local/bin" "$lib" "$root/etc/steno" "$root/etc/systemd/system"
install -m 0755 "$binary" "$root/usr/local/bin/steno"

# The MLX runtime in the wheel's layout: libmlx.so finds the libraries bundled beside it
# (mlx_cpu.libs/ and the like) through its $ORIGIN/../../ rpath.
rm -rf "$lib/mlx" "$lib"/mlx_*.libs
install -d "$lib/mlx"
cp -R "$runtime/mlx/lib" "$lib/mlx/lib"
for bundled in "$runtime"/mlx_*.libs; do
  if [ -d "$bundled" ]; then cp -R "$bundled" "$lib/"; fi
done

# The binary's rpath names this checkout's target/mlx/<backend>/mlx/lib. Point it at the
# installed runtime when patchelf is there; the unit also sets LD_LIBRARY_PATH to it.
if command -v patchelf >/dev/null; then
  patchelf --set-rpath /usr/local/lib/steno/mlx/lib "$root/usr/local/bin/steno"
fi

install -m 0644 deploy/linux/steno.service "$root/etc/systemd/system/steno.service"
install -m 0644 deploy/linux/steno.env.example "$root/etc/steno/steno.env.example"

# The config and the environment file may hold API keys and HF_TOKEN: root-only. systemd
# reads both as root for the service (LoadCredential=, EnvironmentFile=). chmod on every
# run: an upgrade tightens files that an older install left world-readable.
secrets=("$root/etc/steno/steno.toml" "$root/etc/steno/steno.env")
if [ ! -e "${secrets[0]}" ]; then
  install -m 0600 config/default.toml "${secrets[0]}"
fi
if [ ! -e "${secrets[1]}" ]; then
  install -m 0600 deploy/linux/steno.env.example "${secrets[1]}"
fi
chmod 0600 "${secrets[@]}"

if [ -z "$root" ]; then
  chown root:root "${secrets[@]}"
  systemctl daemon-reload
  systemctl enable steno.service
  # restart, not start: an upgrade must load the new binary.
  systemctl restart steno.service
  systemctl --no-pager status steno.service
fi
