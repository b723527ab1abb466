#!/usr/bin/env bash
# The dashboard's suite, as CI runs it: rebuilds dist/ and src/gen/ with the pinned tools and
# fails if they differ from what is committed (cargo build embeds dist/ and never runs Node),
# then drives the page in headless chromium against a real jobwire (JOBWIRE_BIN, default
# ../target/debug/jobwire). Screenshots land in test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --ignore-scripts --silent
./build.sh
if ! git diff --quiet --exit-code -- dist src/gen || [[ -n "$(git ls-files --others --exclude-standard -- dist src/gen)" ]]; then
  echo "ui/test.sh: dist/ or src/gen/ differ from what build.sh makes; run ui/build.sh and commit" >&2
  git --no-pager diff --stat -- dist src/gen >&2
  exit 1
fi
export JOBWIRE_BIN="${JOBWIRE_BIN:-$PWD/../target/debug/jobwire}"
node --test --test-concurrency=1 --test-timeout=120000 test/
