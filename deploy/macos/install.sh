#!/usr/bin/env bash
# Installs Steno as the launchd system daemon com.steno.server (Apple silicon, Metal).
#
# Requirements for the Metal backend:
#   * an Apple silicon Mac (M1 or newer): MLX's Metal kernels do not run on Intel Macs;
#   * macOS 14 (Sonoma) or newer, which the mlx-metal wheel's libmlx.dylib targets;
#   * a binary built against the mlx-metal 0.32.2 wheel that `make setup` installs into
#     target/mlx/metal (libmlx.dylib and mlx.metallib, the precompiled Metal kernels,
#     which MLX looks for beside libmlx.dylib). MLX_BACKEND=metal is the default on macOS:
#
#   make build
#   sudo deploy/macos/install.sh
#   tail -f /usr/local/var/log/steno/steno.log
#
# Installs /usr/local/bin/steno, the runtime under /usr/local/lib/steno,
# /usr/local/etc/steno/steno.toml (a copy of config/default.toml, kept if present: set
# models.model there) and /Library/LaunchDaemons/com.steno.server.plist, then starts it.
# The daemon runs as the hidden system user _steno (deploy/macos/user.sh creates it), not
# as root. Running it again upgrades in place.
set -euo pipefail
cd "$(dirname "$0")/../.."

label=com.steno.server
plist="/Library/LaunchDaemons/$label.plist"
binary="${STENO_BINARY:-target/release/steno}"
runtime=target/mlx/metal/mlx/lib
# UserName and GroupName in the plist; its home holds the daemon's state.
user=_steno
home=/usr/local/var/steno
config=/usr/local/etc/steno/steno.toml

[ "$(uname -s)/$(uname -m)" = Darwin/arm64 ] || { echo "Metal needs an Apple silicon Mac" >&2; exit 1; }
[ "$(sw_vers -productVersion | cut -d. -f1)" -ge 14 ] || { echo "MLX's Metal backend needs macOS 14 or newer" >&2; exit 1; }
[ -x "$binary" ] || { echo "no $binary: run \`make build\` first" >&2; exit 1; }
[ -f "$runtime/libmlx.dylib" ] || { echo "no $runtime/libmlx.dylib: run \`make setup\`" >&2; exit 1; }

# Stop a running copy (upgrade); fine when there is none.
launchctl bootout "system/$label" 2>/dev/null || true

deploy/macos/user.sh "$user" "$home"

install -d /usr/local/bin /usr/local/lib/steno /usr/local/etc/steno
# What the daemon writes: its home, the model cache (HF_HOME) and the log. chown -R: an
# older install ran it as root, which left these root's.
install -d -m 0750 -o "$user" -g "$user" "$home" /usr/local/var/log/steno \
  /usr/local/var/cache/steno
chown -R "$user:$user" "$home" /usr/local/var/log/steno /usr/local/var/cache/steno
install -m 0755 "$binary" /usr/local/bin/steno
cp -R "$runtime/" /usr/local/lib/steno/

# The binary's rpath names this checkout's target/mlx/metal/mlx/lib; add the installed
# copy so it starts after the checkout is gone. Editing load commands voids the ad-hoc
# code signature, which Apple silicon enforces: sign it again.
install_name_tool -add_rpath /usr/local/lib/steno /usr/local/bin/steno
codesign --force --sign - /usr/local/bin/steno

# The config may hold API keys: readable by root and the daemon's group only, writable by
# root only (the daemon reads it itself after dropping to _steno, and must not be able to
# rewrite its own settings). chown/chmod on every run: an older install left it 0644.
if [ ! -e "$config" ]; then
  install -m 0640 -o root -g "$user" config/default.toml "$config"
fi
chown "root:$user" "$config"
chmod 0640 "$config"

# launchd wants system daemons owned by root:wheel and not writable by others.
install -m 0644 -o root -g wheel "deploy/macos/$label.plist" "$plist"
launchctl bootstrap system "$plist"
echo "started $label; log: /usr/local/var/log/steno/steno.log"
