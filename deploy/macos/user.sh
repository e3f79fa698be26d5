#!/usr/bin/env bash
# Creates the hidden system user and group that the launchd daemon runs as (UserName and
# GroupName in com.steno.server.plist), or completes them when a run was cut short. Running
# it again changes nothing: ids are chosen only for a record that has none. install.sh runs
# it; it needs root (dscl writes the local directory).
#
#   deploy/macos/user.sh [NAME [HOME]]        defaults: _steno /usr/local/var/steno
#
# The user has no password and no login shell, and macOS shows ids below 500 nowhere
# (login window, System Settings): it only owns Steno's state, cache and log.
set -euo pipefail

user="${1:-_steno}"
home="${2:-/usr/local/var/steno}"

# The first id in 300-499 that no user and no group has (Apple's own daemons use lower
# ones).
free_system_id() {
  local taken id
  taken=$({ dscl . -list /Users UniqueID; dscl . -list /Groups PrimaryGroupID; } | awk '{print $2}')
  for id in $(seq 300 499); do
    if ! grep -qx "$id" <<<"$taken"; then
      echo "$id"
      return
    fi
  done
  echo "no free user or group id in 300-499 for $user" >&2
  return 1
}

# `dscl . -create` sets an attribute whether or not it was there: safe to repeat.
set_attributes() {
  local record=$1
  shift
  while [ $# -gt 0 ]; do
    dscl . -create "$record" "$1" "$2"
    shift 2
  done
}

group="/Groups/$user"
if ! dscl . -read "$group" PrimaryGroupID >/dev/null 2>&1; then
  dscl . -create "$group" PrimaryGroupID "$(free_system_id)"
fi
gid=$(dscl . -read "$group" PrimaryGroupID | awk '{print $2}')
set_attributes "$group" RealName "Steno server" Password '*'

record="/Users/$user"
if ! dscl . -read "$record" UniqueID >/dev/null 2>&1; then
  dscl . -create "$record" UniqueID "$(free_system_id)"
fi
set_attributes "$record" PrimaryGroupID "$gid" UserShell /usr/bin/false \
  NFSHomeDirectory "$home" RealName "Steno server" Password '*' IsHidden 1
