#!/usr/bin/env bash
# Checks the Python client end to end; exits non-zero on any failure. Called by the repo's .ci/run.
#
#   1. a venv in clients/python/.venv (gitignored) with the pinned tools of requirements-dev.txt
#   2. generate.sh, then fail if the generated code differs from what is committed
#   3. ruff check (ruff's default rules), ruff format --check and mypy --strict on the package,
#      examples and tests (generated code excluded)
#   4. pytest against a real jobwire server and a private redis-server
#
# Needs: python3 (3.11+) with venv and pip, redis-server on PATH, git, and the server binary:
# $JOBWIRE_BIN, else <repo>/target/debug/jobwire (built here with `cargo build` when JOBWIRE_BIN
# is unset; a no-op when it is up to date).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"
python="${PYTHON:-python3}"
venv="$here/.venv"

step() { printf '\n== %s\n' "$*"; }

step "python venv ($venv)"
"$python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"the Python client needs Python 3.11+, found {sys.version.split()[0]}")
PY
if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
export PATH="$venv/bin:$PATH"

step "generated code is up to date"
if ! out="$(PYTHON="$venv/bin/python" ./generate.sh 2>&1)"; then
    echo "$out" >&2
    exit 1
fi
gen="clients/python/jobwire/_gen"
untracked="$(cd "$repo" && git ls-files --others --exclude-standard -- "$gen")"
if ! (cd "$repo" && git diff --exit-code --stat -- "$gen") || [[ -n "$untracked" ]]; then
    [[ -n "$untracked" ]] && printf 'not committed:\n%s\n' "$untracked"
    echo "FAIL: $gen is not what generate.sh makes: run clients/python/generate.sh, commit" >&2
    exit 1
fi
echo "ok"

step "ruff check"
ruff check

step "ruff format --check"
ruff format --check

step "mypy --strict"
mypy --strict

step "server binary"
if [[ -z "${JOBWIRE_BIN:-}" ]]; then
    (cd "$repo" && cargo build --quiet)
    export JOBWIRE_BIN="$repo/target/debug/jobwire"
fi
[[ -x "$JOBWIRE_BIN" ]] || { echo "FAIL: $JOBWIRE_BIN is not an executable" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "FAIL: redis-server is not on PATH" >&2; exit 1; }
echo "$JOBWIRE_BIN"

step "pytest"
# See tests/conftest.py: no gRPC fork handlers in the children that become servers.
export GRPC_ENABLE_FORK_SUPPORT=false
# A hard bound, so a hang fails the run instead of stalling CI.
timeout --kill-after=10 170 python -m pytest -q -p no:cacheprovider "$@"
