#!/usr/bin/env bash
# Stops and removes the launchd daemon com.steno.server and what install.sh installed.
# The configuration (/usr/local/etc/steno), the log, the model cache and the _steno user
# stay unless --purge is given.
set -euo pipefail

label=com.steno.server

# SIGTERM: Steno drains admitted requests (up to ExitTimeOut) before exiting.
launchctl bootout "system/$label" 2>/dev/null || true
rm -f "/Library/LaunchDaemons/$label.plist" /usr/local/bin/steno
rm -rf /usr/local/lib/steno

if [ "${1:-}" = --purge ]; then
  rm -rf /usr/local/etc/steno /usr/local/var/log/steno /usr/local/var/cache/steno \
    /usr/local/var/steno
  dscl . -delete /Users/_steno 2>/dev/null || true
  dscl . -delete /Groups/_steno 2>/dev/null || true
fi
