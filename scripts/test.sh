#!/usr/bin/env bash
# The test command: install what is missing, build everything, run every test.
#   1. cargo tests of the native crates (core, node)
#   2. end-to-end tests of the built extension in headless Chromium and Firefox against a real
#      disot-node on loopback
# Screenshots, logs and measured figures are written to artifacts/ (or $DISOT_ARTIFACTS).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

bash scripts/build.sh
export DISOT_SKIP_SETUP=1

log "rustfmt"
cargo fmt --all --check || die "code is not formatted: run cargo fmt --all"

log "clippy"
cargo clippy -p disot-core -p disot-node --quiet -- -D warnings || die "clippy found problems in core or node"
cargo clippy -p disot-wasm --target wasm32-unknown-unknown --quiet -- -D warnings || die "clippy found problems in wasm"

log "cargo tests"
rc=0
cargo test --workspace > "$CARGO_TARGET_DIR/cargo-test.log" 2>&1 || rc=$?
grep -E '^(test |test result|error|failures:|---- )' "$CARGO_TARGET_DIR/cargo-test.log" || true
[ "$rc" -eq 0 ] || die "cargo tests failed (full output in $CARGO_TARGET_DIR/cargo-test.log)"

log "wasm tests in headless Chromium and Firefox (IndexedDB block store, data-channel messages)"
rc=0
(
  cd wasm
  export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
  CHROMEDRIVER="$(command -v chromedriver)" cargo test --target wasm32-unknown-unknown --test indexeddb --test datachannel
  GECKODRIVER="$(command -v geckodriver)" cargo test --target wasm32-unknown-unknown --test indexeddb --test datachannel
) > "$CARGO_TARGET_DIR/wasm-test.log" 2>&1 || rc=$?
grep -aoE '(Running headless tests in [A-Za-z]+|test [a-z_]+ \.\.\. [a-z]+|test result: .*)' "$CARGO_TARGET_DIR/wasm-test.log" || true
[ "$rc" -eq 0 ] || die "wasm tests failed (full output in $CARGO_TARGET_DIR/wasm-test.log)"

log "browser tests"
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
# Browsers and web-ext write profiles to TMPDIR: give this run its own and remove it after.
export TMPDIR="$(mktemp -d)"
trap 'rm -rf "$TMPDIR"' EXIT
export DISOT_ARTIFACTS="$ARTIFACTS" DISOT_NODE_BIN="$NODE_BIN"
node --test --test-concurrency=1 --test-reporter=spec tests/*.test.js
