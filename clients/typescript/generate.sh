#!/usr/bin/env bash
# Regenerates src/gen/ from proto/jobwire/v1 with the pinned buf + ts-proto in node_modules.
# The output is committed; test.sh fails when it differs from what this script produces.
set -euo pipefail
cd "$(dirname "$0")"
if [[ ! -x node_modules/.bin/buf || ! -x node_modules/.bin/protoc-gen-ts_proto ]]; then
  echo "generate.sh: node_modules missing; run 'npm ci' first" >&2
  exit 1
fi
rm -rf src/gen
node_modules/.bin/buf generate --template buf.gen.yaml
echo "generate.sh: wrote $(find src/gen -name '*.ts' | wc -l) files under src/gen"
