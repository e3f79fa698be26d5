#!/usr/bin/env bash
# Removes what deploy/linux/install.sh installed. Configuration (/etc/steno) and the
# downloaded models (/var/cache/steno) stay unless --purge is given.
set -euo pipefail

systemctl disable --now steno.service 2>/dev/null || true
rm -f /etc/systemd/system/steno.service /usr/local/bin/steno
rm -rf /usr/local/lib/steno
systemctl daemon-reload

if [ "${1:-}" = --purge ]; then
  rm -rf /etc/steno /var/lib/steno /var/cache/steno /var/lib/private/steno /var/cache/private/steno
fi
