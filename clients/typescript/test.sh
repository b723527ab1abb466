#!/usr/bin/env bash
# Checks the TypeScript client from a clean checkout (node 20 + npm): installs the pinned
# dependencies, verifies that src/gen/ is exactly what ./generate.sh produces, type-checks,
# builds, loads the package through its exports map by `require` and by `import`, and runs the
# tests against a real jobwire server and redis-server.
# Exits non-zero on the first failure. Called by the repository's .ci/run.
set -euo pipefail
cd "$(dirname "$0")"
repo_root="$(git rev-parse --show-toplevel)"
started=$SECONDS

step() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - started)); }

step "npm ci"
# Install scripts are not needed (buf, esbuild and tsc find their platform binaries without
# them) and are skipped so an install never downloads anything outside the registry.
npm ci --no-audit --no-fund --ignore-scripts

step "generated code is up to date"
./generate.sh
if ! git diff --exit-code --stat -- src/gen; then
  echo "test.sh: src/gen differs from what ./generate.sh produces; run it and commit the result" >&2
  exit 1
fi
untracked="$(git ls-files --others --exclude-standard -- src/gen)"
if [[ -n "$untracked" ]]; then
  echo "test.sh: ./generate.sh produced files that are not committed:" >&2
  echo "$untracked" >&2
  exit 1
fi

step "type-check (tsc --noEmit, strict)"
node_modules/.bin/tsc -p tsconfig.json --noEmit

step "build (dist/)"
rm -rf dist
node_modules/.bin/tsc -p tsconfig.build.json

step "the package loads by require and by import (exports map)"
# A package may name itself: these resolve "@jobwire/client" through package.json's exports.
node -e 'const c = require("@jobwire/client"); if (typeof c.Client !== "function" || typeof c.proto.WatchJobResponse !== "object") throw new Error("require: exports missing");'
node --input-type=module -e 'import { Client, proto } from "@jobwire/client"; import { createRequire } from "node:module"; const c = createRequire(import.meta.url)("@jobwire/client"); if (Client !== c.Client || proto !== c.proto) throw new Error("import: not the exports of require");'
echo ok

step "jobwire binary"
bin="${JOBWIRE_BIN:-$repo_root/target/debug/jobwire}"
if [[ ! -x "$bin" ]]; then
  if [[ -n "${JOBWIRE_BIN:-}" ]]; then
    echo "test.sh: JOBWIRE_BIN=$bin is not an executable" >&2
    exit 1
  fi
  (cd "$repo_root" && cargo build)
fi
echo "$bin"
command -v redis-server >/dev/null || { echo "test.sh: redis-server is not installed" >&2; exit 1; }

step "tests (node --test)"
JOBWIRE_BIN="$bin" node --import tsx --test --test-concurrency=1 --test-timeout=60000 test/*.test.ts

step "done"
