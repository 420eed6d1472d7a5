# Shared settings for the scripts: paths, cached build outputs and the tool versions we pin.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Build outputs live outside the clone so they survive fresh clones on the same machine.
CACHE_DIR="${DISOT_CACHE_DIR:-$HOME/.cache/disot}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_DIR/target}"
DIST="$ROOT/dist"
ARTIFACTS="${DISOT_ARTIFACTS:-$ROOT/artifacts}"
WASM_BINDGEN_VERSION=0.2.108 # must equal the wasm-bindgen crate pinned in wasm/Cargo.toml
NODE_BIN="$CARGO_TARGET_DIR/debug/disot-node"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
