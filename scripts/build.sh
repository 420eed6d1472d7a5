#!/usr/bin/env bash
# Build everything: the native node and the extension for each browser.
#   dist/chrome/, dist/firefox/                 unpacked extensions
#   dist/disot-peer-chrome.zip, dist/disot-peer-firefox.xpi   packages
# The default bootstrap nodes baked into the build come from $DISOT_BOOTSTRAP (space separated
# multiaddrs); the options page overrides them.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "${DISOT_SKIP_SETUP:-}" = 1 ] || bash "$ROOT/scripts/setup.sh"
cd "$ROOT"

log "building disot-node"
cargo build -p disot-node --bins --examples --quiet

log "building the wasm node"
cargo build -p disot-wasm --target wasm32-unknown-unknown --release --quiet
pkg="$CARGO_TARGET_DIR/disot-pkg"
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/disot_wasm.wasm"
# Bindings and wasm-opt (minutes) run again only when the module or the tools changed.
stamp="$(sha256sum "$wasm" | cut -d' ' -f1) $(wasm-bindgen --version) $(node_modules/.bin/wasm-opt --version)"
if [ "$(cat "$pkg/.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$pkg"
  wasm-bindgen --target web --no-typescript --out-dir "$pkg" "$wasm"
  node_modules/.bin/wasm-opt -Os --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
    --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue \
    "$pkg/disot_wasm_bg.wasm" -o "$pkg/disot_wasm_bg.opt.wasm"
  mv "$pkg/disot_wasm_bg.opt.wasm" "$pkg/disot_wasm_bg.wasm"
  printf '%s' "$stamp" > "$pkg/.stamp"
fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
bootstrap_json="$(node -e 'console.log(JSON.stringify({bootstrap: process.argv.slice(1)}))' ${DISOT_BOOTSTRAP:-})"
for browser in chrome firefox; do
  out="$DIST/$browser"
  rm -rf "$out"
  mkdir -p "$out/pkg"
  cp extension/common/* "$out/"
  cp extension/"$browser"/* "$out/"
  cp "$pkg/disot_wasm.js" "$pkg/disot_wasm_bg.wasm" "$out/pkg/"
  sed "s/__VERSION__/$version/" "manifest/$browser.json" > "$out/manifest.json"
  printf '%s\n' "$bootstrap_json" > "$out/config.json"
done

log "linting the Firefox build"
node_modules/.bin/web-ext lint --source-dir "$DIST/firefox" --self-hosted --output json > "$CARGO_TARGET_DIR/web-ext-lint.json" || true
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  for (const m of [...r.errors, ...r.warnings]) console.error(`  ${m._type}: ${m.code} ${m.message} (${m.file ?? ""})`);
  console.error(`  web-ext lint: ${r.summary.errors} errors, ${r.summary.warnings} warnings`);
  process.exit(r.summary.errors === 0 ? 0 : 1);
' "$CARGO_TARGET_DIR/web-ext-lint.json"

log "packaging"
node_modules/.bin/web-ext build --source-dir "$DIST/chrome" --artifacts-dir "$DIST" \
  --filename disot-peer-chrome.zip --overwrite-dest >/dev/null
node_modules/.bin/web-ext build --source-dir "$DIST/firefox" --artifacts-dir "$DIST" \
  --filename disot-peer-firefox.xpi --overwrite-dest >/dev/null

raw=$(stat -c %s "$DIST/chrome/pkg/disot_wasm_bg.wasm")
gz=$(gzip -9c "$DIST/chrome/pkg/disot_wasm_bg.wasm" | wc -c)
log "built dist/chrome, dist/firefox and their packages (wasm $raw bytes, $gz gzipped)"
