#!/usr/bin/env bash
# Checks the Java client end to end; exits non-zero on any failure. Called by the repository's
# scripts/test.sh (its clients/*/test.sh loop).
#
#   1. Java 17+ and Maven are there
#   2. the server binary: $JOBWIRE_BIN, else <repo>/target/debug/jobwire (built here with
#      `cargo build` when JOBWIRE_BIN is unset; a no-op when it is up to date); redis-server on PATH
#   3. `mvn verify`: protoc generates the contract's classes (target/, never committed), the
#      client and the examples compile, and the JUnit 5 tests run against real jobwire servers
#      and a private redis-server each (see src/test/java/io/jobwire/client/Stack.java)
#
# Needs: Java 17+, Maven 3.8+, network access to Maven Central the first time (dependencies and
# protoc go to ~/.m2; later runs work offline), openssl (the TLS tests make their certificates).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"
started=$SECONDS

step() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - started)); }

step "java and maven"
command -v java >/dev/null || { echo "FAIL: java is not on PATH (Java 17+ needed)" >&2; exit 1; }
command -v mvn >/dev/null || { echo "FAIL: mvn is not on PATH (Maven 3.8+ needed)" >&2; exit 1; }
version="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
if [[ -z "$version" || "${version%%.*}" -lt 17 ]]; then
    echo "FAIL: the Java client needs Java 17+, found ${version:-unknown}" >&2
    exit 1
fi
echo "java $version, $(mvn -v 2>/dev/null | head -n 1 | sed 's/\x1b\[[0-9;]*m//g')"

step "server binary"
if [[ -z "${JOBWIRE_BIN:-}" ]]; then
    (cd "$repo" && cargo build --quiet --bin jobwire)
    export JOBWIRE_BIN="$repo/target/debug/jobwire"
fi
[[ -x "$JOBWIRE_BIN" ]] || { echo "FAIL: $JOBWIRE_BIN is not an executable" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "FAIL: redis-server is not on PATH" >&2; exit 1; }
command -v openssl >/dev/null || { echo "FAIL: openssl is not on PATH" >&2; exit 1; }
echo "$JOBWIRE_BIN"

step "mvn verify (generate, compile, examples, tests)"
# A hard bound, so a hang fails the run instead of stalling CI (each test has its own timeout).
rm -rf target/surefire-reports # the summary below counts this run's reports only
timeout --kill-after=10 900 mvn -B -q --no-transfer-progress verify "$@"
printf '%s\n' target/surefire-reports/*.txt | xargs cat | grep -h "Tests run" |
    awk -F'[:,]' '{run+=$2; fail+=$4+$6; skip+=$8} END {printf "%d passed, %d failed, %d skipped\n", run-fail-skip, fail, skip}'

step "done"
