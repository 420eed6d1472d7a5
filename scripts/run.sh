#!/usr/bin/env bash
# The run command: install what is missing, build, start a local disot-node, and launch a
# browser with the extension pointed at it and the demo page open.
#
#   scripts/run.sh [--firefox] [--headless] [--no-build] [--ice-server URL[,USER,CREDENTIAL]]...
#
# --ice-server adds a STUN/TURN server for direct browser-to-browser connections (repeatable;
# TURN needs the user and credential), e.g. --ice-server stun:stun.example.org:3478.
# Chromium is the default browser. Stop with Ctrl-C: the browser, the node and the page server
# are stopped with it. Environment: DISOT_NODE_DIR (node data dir, default
# ~/.local/share/disot-node), DISOT_WS_PORT / DISOT_WEBRTC_PORT (4401 / 4402), DISOT_DEMO_PORT
# (4480).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

browser=chromium headless=0 build=1
ice=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  arg="${args[$i]}"
  case "$arg" in
    --ice-server) i=$((i + 1)); ice+=("${args[$i]:-}") ;;
    --firefox) browser=firefox ;;
    --chromium) browser=chromium ;;
    --headless) headless=1 ;;
    --headed) headless=0 ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $arg (try --help)" ;;
  esac
done
if [ "$headless" = 0 ] && [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  log "no display found: running headless"
  headless=1
fi

[ "$build" = 0 ] || bash scripts/build.sh
[ -x "$NODE_BIN" ] || die "$NODE_BIN is missing: run without --no-build"

work="$(mktemp -d)"
pids=()
stop() {
  trap - EXIT INT TERM
  set +e
  log "stopping"
  # web-ext closes its browser on SIGINT; the others stop on SIGTERM. Only our own PIDs.
  if [ -n "${webext_pid:-}" ]; then
    kill -INT "$webext_pid" 2>/dev/null
    wait "$webext_pid" 2>/dev/null
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  [ -n "${DISOT_KEEP_RUN_DIR:-}" ] || rm -rf "$work"
  exit 0
}
trap stop EXIT INT TERM
# Job control: background jobs get their own process groups and keep SIGINT (a non-interactive
# shell would otherwise make them ignore it, and web-ext could not be told to close its browser).
set -m

node_dir="${DISOT_NODE_DIR:-$HOME/.local/share/disot-node}"
"$NODE_BIN" --data-dir "$node_dir" --ws-port "${DISOT_WS_PORT:-4401}" \
  --webrtc-port "${DISOT_WEBRTC_PORT:-4402}" > "$work/node.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [ "$(grep -c '^listening on' "$work/node.log")" -ge 2 ] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/node.log"; die "disot-node did not start"; }
  sleep 0.1
done
mapfile -t addrs < <(sed -n 's/^listening on //p' "$work/node.log")
[ "${#addrs[@]}" -ge 1 ] || die "disot-node printed no address"

# Point the unpacked extension at this node (the options page can change it later).
dist_dir="$DIST/chrome"
[ "$browser" = firefox ] && dist_dir="$DIST/firefox"
DISOT_ICE="$(printf '%s\n' "${ice[@]}")" node -e '
  const iceServers = (process.env.DISOT_ICE || "").split("\n").filter(Boolean).map((s) => {
    const [urls, username, credential] = s.split(",");
    return username ? { urls, username, credential } : { urls };
  });
  console.log(JSON.stringify({ bootstrap: process.argv.slice(1), iceServers }));
' "${addrs[@]}" > "$dist_dir/config.json"

demo_port="${DISOT_DEMO_PORT:-4480}"
node tests/lib/serve.js "$demo_port" > "$work/http.log" 2>&1 &
pids+=($!)
sleep 0.3
kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/http.log" >&2; die "the demo page server did not start"; }
demo="http://127.0.0.1:$demo_port/demo.html"

webext=(node node_modules/web-ext/bin/web-ext.js run --source-dir "$dist_dir" --no-input --no-reload --start-url "$demo")
if [ "$browser" = chromium ]; then
  webext+=(--target chromium --chromium-binary /usr/lib/chromium/chromium --chromium-profile "$work/profile" --profile-create-if-missing
    --arg=--no-first-run --arg=--disable-background-networking --arg=--disable-component-update --arg=--disable-sync)
  [ "$(id -u)" -ne 0 ] || webext+=(--arg=--no-sandbox)
  [ "$headless" = 0 ] || webext+=(--arg=--headless=new --arg=--disable-gpu)
else
  webext+=(--target firefox-desktop --firefox /usr/bin/firefox-esr --firefox-profile "$work/profile" --profile-create-if-missing)
  [ "$headless" = 0 ] || export MOZ_HEADLESS=1
fi

log "disot-node is listening on:"
printf '    %s\n' "${addrs[@]}" >&2
log "launching $browser$([ "$headless" = 1 ] && echo ' (headless)') with the demo page $demo"
log "Ctrl-C stops everything; the node's events follow"
TMPDIR="$work" "${webext[@]}" > "$work/web-ext.log" 2>&1 &
webext_pid=$!
tail -n +1 -f "$work/node.log" --pid "$webext_pid" | grep --line-buffered -v '^listening on' &
pids+=($!)
wait "$webext_pid" || true
webext_pid=""
