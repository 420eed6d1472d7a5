#!/usr/bin/env bash
# Install whatever is missing to build and test Disot Peer on a Debian machine: browsers,
# the wasm target, wasm-bindgen-cli at the pinned version, geckodriver and the npm tools.
# Safe to run again: each step checks before it installs.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt=()
[ -x /usr/lib/chromium/chromium ] || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v firefox-esr >/dev/null || need_apt+=(firefox-esr)
command -v ip >/dev/null || need_apt+=(iproute2)
# NAT traversal tests: network namespaces behind iptables masquerade, a real STUN/TURN server.
command -v iptables >/dev/null || need_apt+=(iptables)
command -v turnserver >/dev/null || need_apt+=(coturn)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

command -v cargo >/dev/null || die "cargo is missing: install Rust with rustup first"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$component-"; then
    log "adding the $component component"
    rustup component add "$component"
  fi
done

if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes, once)"
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked --quiet
fi

if ! command -v geckodriver >/dev/null; then
  log "installing geckodriver (a few minutes, once)"
  cargo install geckodriver --locked --quiet
fi

cd "$ROOT"
stamp="node_modules/.disot-installed"
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  log "installing npm packages"
  PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi
