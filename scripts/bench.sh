#!/usr/bin/env bash
# Benchmarks (not tests): print throughput ratios against baselines measured in the same run.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
bash scripts/build.sh
export TMPDIR="$(mktemp -d)"
trap 'rm -rf "$TMPDIR"' EXIT
DISOT_ARTIFACTS="$ARTIFACTS" node tests/bench/cas.bench.js
DISOT_ARTIFACTS="$ARTIFACTS" node tests/bench/p2p.bench.js
DISOT_ARTIFACTS="$ARTIFACTS" node tests/bench/trust.bench.js
DISOT_ARTIFACTS="$ARTIFACTS" node tests/bench/sync.bench.js
