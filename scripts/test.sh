#!/usr/bin/env bash
# Every check CI makes, in order: the contract (buf lint, format, breaking), format, lint, Rust
# tests (unit + integration against real redis-server and jobwire processes), the dashboard
# (ui/test.sh: its build diffed, then headless chromium), then each client's own suite
# (clients/*/test.sh), then the conformance suite (tests/conformance/run.sh: every client's
# driver through every scenario, producers and workers of different languages on one server, a
# worker killed mid-job and finished in another language).
# Needs: a Rust toolchain and redis-server; python3, node, go, java and maven for the clients;
# chromium for the dashboard.
set -euo pipefail
cd "$(dirname "$0")/.."

stage() { printf '\n== %s ==\n' "$1"; SECONDS=0; }
done_stage() { printf -- '-- %s took %ss\n' "$1" "$SECONDS"; }

stage "contract (buf lint, format, breaking)"
# buf is the @bufbuild/buf pinned in clients/typescript's package-lock.json (the one its generator
# uses), installed from the registry like that client's own test.sh does.
(cd clients/typescript && npm ci --no-audit --no-fund --ignore-scripts --silent)
buf=clients/typescript/node_modules/.bin/buf
"$buf" lint proto
"$buf" format --diff --exit-code proto
# proto/baseline.binpb is the contract as last accepted; a change that breaks it fails here. To
# break it on purpose, rebuild the baseline in the same commit and say why in its message:
#   "$buf" build proto --exclude-source-info -o proto/baseline.binpb
"$buf" breaking proto --against proto/baseline.binpb
done_stage "contract (buf lint, format, breaking)"

stage "format and lint"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
done_stage "format and lint"

stage "rust tests"
# nextest (installed by .ci/run) runs the process-killing tests one at a time and ends a hung
# test (.config/nextest.toml); plain `cargo test` would run them all at once.
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "cargo-nextest is missing: cargo install cargo-nextest --locked (or run .ci/run)" >&2
  exit 1
fi
cargo nextest run
done_stage "rust tests"

# The dashboard: its build is redone and diffed against the committed dist/ (embedded by cargo
# build), then the page is driven in headless chromium against a real server.
stage "ui/test.sh (dashboard build and browser tests)"
JOBWIRE_BIN="$PWD/target/debug/jobwire" bash ui/test.sh
done_stage "ui/test.sh (dashboard build and browser tests)"

for suite in clients/*/test.sh tests/conformance/run.sh; do
  [ -e "$suite" ] || continue
  stage "$suite"
  JOBWIRE_BIN="$PWD/target/debug/jobwire" bash "$suite"
  done_stage "$suite"
done
