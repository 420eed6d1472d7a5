#!/bin/sh
# Runs a browser whose profile (or a directory in it) lives on a small tmpfs of its own, in a
# private mount namespace: a full disk for that browser only. Used by tests/quota.test.js.
#   DISOT_SMALL_DISK_BROWSER  the real browser binary
#   DISOT_SMALL_DISK_SIZE     tmpfs size (e.g. 80m)
#   DISOT_SMALL_DISK_SUBDIR   directory inside the profile to mount on (default: the profile)
# The profile is found in the browser's arguments (--user-data-dir=DIR or -profile DIR).
set -eu
profile=""
previous=""
for a in "$@"; do
  case "$a" in --user-data-dir=*) profile="${a#--user-data-dir=}" ;; esac
  [ "$previous" = "-profile" ] && profile="$a"
  previous="$a"
done
# No profile (e.g. `--version`, which geckodriver asks first): the plain browser.
[ -n "$profile" ] || exec "$DISOT_SMALL_DISK_BROWSER" "$@"
target="$profile/${DISOT_SMALL_DISK_SUBDIR:-}"
mkdir -p "$target"
exec unshare -m -- sh -c 'target="$1"; shift; mount -t tmpfs -o size="$DISOT_SMALL_DISK_SIZE" tmpfs "$target" && exec "$DISOT_SMALL_DISK_BROWSER" "$@"' sh "$target" "$@"
