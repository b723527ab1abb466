#!/usr/bin/env bash
# Regenerates gen/jobwire/v1 (package jobwirev1) from proto/jobwire/v1.
#
# This is the only way the generated code is made: never edit gen/ by hand. The tools are pinned
# here: buf is the @bufbuild/buf of clients/typescript's package-lock.json (the one the other
# generators and the contract checks use), and the two protoc plugins are built with
# `go install` at the versions below into .bin/ (gitignored). test.sh regenerates and fails when
# the committed copy differs.
#
# Usage: clients/go/generate.sh   (needs Go and network for the plugin modules on first run;
# run `npm ci --ignore-scripts` in clients/typescript once for buf)
set -euo pipefail

PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
buf="$here/../typescript/node_modules/.bin/buf"
if [[ ! -x "$buf" ]]; then
    echo "generate.sh: $buf missing; run 'npm ci --ignore-scripts' in clients/typescript first" >&2
    exit 1
fi

# install PKG@VERSION BINARY: builds the plugin into .bin/ unless that version is already there.
install() {
    local want=${1##*@} have
    # protoc-gen-go says "protoc-gen-go v1.36.12", protoc-gen-go-grpc "protoc-gen-go-grpc 1.6.2".
    have="$("$here/.bin/$2" --version 2>/dev/null || true)"
    if [[ "$have" != *" $want" && "$have" != *" ${want#v}" ]]; then
        GOBIN="$here/.bin" go install "$1"
    fi
}
install "$PROTOC_GEN_GO" protoc-gen-go
install "$PROTOC_GEN_GO_GRPC" protoc-gen-go-grpc

rm -rf gen
"$buf" generate --template buf.gen.yaml
echo "generate.sh: wrote $(find gen -name '*.go' | LC_ALL=C sort | tr '\n' ' ')"
