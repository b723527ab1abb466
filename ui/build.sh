#!/usr/bin/env bash
# Builds the dashboard into dist/ (embedded in the binary by src/ui.rs): regenerates the API code
# from proto/ (protoc-gen-es), typechecks (tsc), bundles and minifies (esbuild), all pinned in
# package-lock.json. dist/ and src/gen/ are committed; test.sh fails when they differ from what
# this script makes, so cargo build never needs Node.
set -euo pipefail
cd "$(dirname "$0")"
if [[ ! -x node_modules/.bin/esbuild ]]; then
  npm ci --no-audit --no-fund --ignore-scripts --silent
fi
rm -rf src/gen
node_modules/.bin/buf generate --template buf.gen.yaml
node_modules/.bin/tsc -p tsconfig.json
mkdir -p dist
node_modules/.bin/esbuild src/main.ts --bundle --minify --format=iife --target=es2022 \
  --legal-comments=eof --log-level=warning --outfile=dist/app.js
node_modules/.bin/esbuild src/style.css --bundle --minify --log-level=warning --outfile=dist/app.css
cp src/index.html dist/index.html
echo "build.sh: dist/ $(wc -c < dist/app.js) B of script, $(wc -c < dist/app.css) B of style"
