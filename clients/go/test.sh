#!/usr/bin/env bash
# Checks the Go client end to end; exits non-zero on the first failure. Called by the repo's
# scripts/test.sh (clients/*/test.sh).
#
#   1. generate.sh (buf of clients/typescript, protoc plugins at pinned versions in .bin/), then
#      fail if gen/ differs from what is committed
#   2. go.mod and go.sum tidy; gofmt; go vet; staticcheck (pinned below, built into .bin/)
#   3. go build of the package and its examples
#   4. go test -race against a real jobwire server and a private redis-server
#
# Needs: Go 1.26+, network for the Go module proxy on a first run (modules and tools are cached
# after), node + npm for buf (installed here with npm ci when missing), redis-server on PATH,
# git, and the server binary: $JOBWIRE_BIN, else <repo>/target/debug/jobwire (built here with
# `cargo build` when JOBWIRE_BIN is unset).
set -euo pipefail

STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"
started=$SECONDS
step() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - started)); }

step "go $(go env GOVERSION)"
if [[ ! -x ../typescript/node_modules/.bin/buf ]]; then
    (cd ../typescript && npm ci --no-audit --no-fund --ignore-scripts --silent)
fi

step "generated code is up to date"
./generate.sh
gen="clients/go/gen"
untracked="$(cd "$repo" && git ls-files --others --exclude-standard -- "$gen")"
if ! (cd "$repo" && git diff --exit-code --stat -- "$gen") || [[ -n "$untracked" ]]; then
    [[ -n "$untracked" ]] && printf 'not committed:\n%s\n' "$untracked"
    echo "FAIL: $gen is not what generate.sh makes: run clients/go/generate.sh, commit" >&2
    exit 1
fi
echo ok

step "go mod tidy -diff"
go mod tidy -diff

step "gofmt"
unformatted="$(gofmt -l .)"
if [[ -n "$unformatted" ]]; then
    printf 'FAIL: not gofmt-ed:\n%s\n' "$unformatted" >&2
    exit 1
fi
echo ok

step "go vet"
go vet ./...

step "staticcheck (${STATICCHECK##*@})"
if [[ "$(.bin/staticcheck -version 2>/dev/null)" != *"(${STATICCHECK##*@v})" ]]; then
    GOBIN="$here/.bin" go install "$STATICCHECK"
fi
.bin/staticcheck ./...

step "go build (package and examples)"
go build ./...

step "server binary"
if [[ -z "${JOBWIRE_BIN:-}" ]]; then
    (cd "$repo" && cargo build --quiet --bin jobwire)
    export JOBWIRE_BIN="$repo/target/debug/jobwire"
fi
[[ -x "$JOBWIRE_BIN" ]] || { echo "FAIL: $JOBWIRE_BIN is not an executable" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "FAIL: redis-server is not on PATH" >&2; exit 1; }
echo "$JOBWIRE_BIN"

step "go test -race"
# A hard bound, so a hang fails the run instead of stalling CI.
timeout --kill-after=10 170 go test -race -count=1 "$@" ./...

step "done"
