#!/usr/bin/env bash
# jobwire and BullMQ side by side: the table of issue "Faster than BullMQ" in one command.
#
# Runs `jobwire-bench --scenarios a,b,c --runs 1` and the BullMQ peer's `bench.mjs --only a,b,c
# --runs 1` one after the other, --runs times per pair, interleaved (jobwire first in odd pairs,
# BullMQ first in even ones), so that a machine whose speed drifts over minutes moves both sides
# of a pair alike; then prints one table: b at concurrency 1, 10 and 100 (jobs/s, and CPU µs per
# job of all processes), a's single adds (through the client library, and as raw AddJob calls)
# and c's latency, with the ratios jobwire ÷ BullMQ of the medians of each pair's runs. The peer runs from
# a temp copy of its folder (read-only where it lives) with its pinned dependencies (`npm ci`),
# against a private redis-server started with the settings jobwire-bench gives its own
# (jobwire::redis_server: no persistence, hz 10, bound to 127.0.0.1; TCP here, since bench.mjs
# takes a host and port) except the listpack sizes: jobwire's Redis keeps hashes and sorted sets
# of more than 16 entries as hash tables and skiplists (IN_FLIGHT_ENCODINGS), which makes
# BullMQ slower (each of its jobs is a hash of a dozen or more fields: BENCHMARKS.md, "Jobs in
# flight as hash tables"), so BullMQ's Redis keeps Redis's defaults. jobwire-bench starts its own.
# Both Redis servers and everything in the temp dir are gone when the script ends.
#
# Usage: scripts/bench-vs-bullmq.sh [options]
#   --pairs N          pairs of runs (default 2, as BENCHMARKS.md quotes them)
#   --runs N           runs of each bench per pair, interleaved; medians of these (default 3)
#   --prefetch N       jobwire workers' prefetch; b at concurrency 1 then has a row with and one
#                      without (default 0)
#   --protocol P       jobwire workers' protocol, work or unary (default work)
#   --threads N        tokio worker threads of the jobwire server and of the worker processes
#                      (default tokio's, one per core: the bench gives the server a Redis of its
#                      own, so README "Deploying"'s one fewer does not apply). The bench's
#                      producer (a, c) keeps tokio's default, as a user's application would.
#                      BullMQ's Node is one thread per process
#   --quick            jobwire's tenth sizes (BullMQ's bench has no smaller sizes): a smoke run
#   --debug            the debug build instead of release: a smoke run
#   --peer DIR         the BullMQ peer folder (default ../shared/peers/bullmq from the repo root)
#   --out DIR          keep every bench's JSON and log there (default: a temp dir, removed)
# Needs: a Rust toolchain, redis-server, redis-cli, node and npm.
# Smoke run (figures mean nothing): scripts/bench-vs-bullmq.sh --pairs 1 --runs 1 --quick --debug
set -euo pipefail
cd "$(dirname "$0")/.."

pairs=2 runs=3 prefetch=0 protocol=work threads="" quick="" profile=release
peer=../shared/peers/bullmq out=""
while (($#)); do
    case "$1" in
        --pairs) pairs=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --prefetch) prefetch=$2; shift 2 ;;
        --protocol) protocol=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --quick) quick=--quick; shift ;;
        --debug) profile=debug; shift ;;
        --peer) peer=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "unknown option $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done
[[ -f $peer/bench.mjs && -f $peer/package-lock.json ]] || { echo "no BullMQ peer at $peer (--peer DIR)" >&2; exit 2; }

tmp=$(mktemp -d)
redis_pid=""
cleanup() {
    if [[ -n $redis_pid ]]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
out=${out:-$tmp/results}
mkdir -p "$out"

echo "building jobwire ($profile)" >&2
if [[ $profile == release ]]; then
    cargo build --release --quiet --bin jobwire --bin jobwire-bench
else
    cargo build --quiet --bin jobwire --bin jobwire-bench
fi
bench="target/$profile/jobwire-bench"

echo "installing the BullMQ peer's pinned dependencies" >&2
cp -r "$peer" "$tmp/bullmq"
chmod -R u+w "$tmp/bullmq"
(cd "$tmp/bullmq" && npm ci --silent --no-audit --no-fund)

port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$tmp" --logfile "$tmp/redis.log" &
redis_pid=$!
for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$port" ping >/dev/null || { echo "the peer's redis-server did not start" >&2; cat "$tmp/redis.log" >&2; exit 1; }

# Each bench's progress goes to its log; a failure shows the log's end.
run_logged() {
    local log=$1; shift
    SECONDS=0
    if ! "$@" 2>"$log"; then
        echo "failed: $*" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    echo "  done in ${SECONDS}s" >&2
}
# One run of a bench: pair $1, run $2.
run_jobwire() {
    echo "pair $1, run $2: jobwire-bench a,b,c" >&2
    run_logged "$out/jobwire-$1-$2.log" "$bench" --scenarios a,b,c --runs 1 --json ${quick:+"$quick"} \
        --protocol "$protocol" --prefetch "$prefetch" \
        ${threads:+--server-threads "$threads" --worker-threads "$threads"} >"$out/jobwire-$1-$2.json"
}
run_bullmq() {
    echo "pair $1, run $2: BullMQ bench.mjs a,b,c" >&2
    run_logged "$out/bullmq-$1-$2.log" node "$tmp/bullmq/bench.mjs" --only a,b,c --runs 1 \
        --port "$port" --out "$out/bullmq-$1-$2.json" >/dev/null
}
for pair in $(seq "$pairs"); do
    for run in $(seq "$runs"); do
        if ((pair % 2)); then
            run_jobwire "$pair" "$run"; run_bullmq "$pair" "$run"
        else
            run_bullmq "$pair" "$run"; run_jobwire "$pair" "$run"
        fi
    done
done

node - "$out" "$pairs" "$runs" <<'EOF'
// One table from both benches' JSON: per pair the medians of its runs, and jobwire ÷ BullMQ.
const fs = require('node:fs');
const [dir, pairs, runsPerPair] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const read = (name) => JSON.parse(fs.readFileSync(`${dir}/${name}`, 'utf8'));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
// Each function takes the JSON files of one pair's runs of a bench and returns a value per run.
const jobwireRuns = (js, name) =>
  js.flatMap((j) => {
    const m = j.results.find((r) => r.metric === name);
    if (!m) throw new Error(`jobwire-bench has no "${name}"`);
    return m.runs;
  });
const bullmqRuns = (bs, scenario, field) => bs.flatMap((b) => b.raw[scenario].map((r) => r[field]));
// jobwire's CPU per job of all processes: Redis + server + worker, summed run by run.
const jobwireCpu = (js, label) => {
  const parts = ['redis-server CPU', 'jobwire server CPU', 'worker process CPU'].map((p) => jobwireRuns(js, `${label}: ${p}`));
  return parts[0].map((_, i) => parts.reduce((sum, p) => sum + p[i], 0));
};
// BullMQ's, as its README defines it: (redis_cpu_pct + node_cpu_pct) / 100 / jobs_per_s.
const bullmqCpu = (bs, scenario) =>
  bs.flatMap((b) => b.raw[scenario].map((r) => ((r.redis_cpu_pct + r.node_cpu_pct) / 100 / r.jobs_per_s) * 1e6));

const files = (bench, pair) => Array.from({ length: runsPerPair }, (_, r) => read(`${bench}-${pair}-${r + 1}.json`));
const runs = Array.from({ length: pairs }, (_, i) => ({ j: files('jobwire', i + 1), b: files('bullmq', i + 1) }));
const { protocol, prefetch } = runs[0].j[0].workers;
const threads = runs[0].j[0].tokio_threads.server ?? 'one per core';
const label = (c, p) => (p ? `concurrency ${c}, prefetch ${p}` : `concurrency ${c}`);
const rm = (c) => `b.process_c${c}_removeOnComplete`;
// [scenario, unit, jobwire runs of a pair, BullMQ runs of a pair, target on jobwire ÷ BullMQ]
const rows = [];
const processing = [[1, 0]];
if (prefetch) processing.push([1, prefetch]);
processing.push([10, prefetch], [100, prefetch]);
const targets = { 1: '≥ 1.5', 10: '≥ 2', 100: '≥ 2' };
for (const [c, p] of processing) {
  const name = `b ${label(c, p)}`;
  rows.push([`${name}, jobs/s`, (j) => jobwireRuns(j, `${label(c, p)}: throughput`), (b) => bullmqRuns(b, rm(c), 'jobs_per_s'), c === 1 && prefetch && !p ? 'reported, without prefetch' : targets[c]]);
}
for (const [c, p] of processing) {
  rows.push([`b ${label(c, p)}, CPU µs/job, all processes`, (j) => jobwireCpu(j, label(c, p)), (b) => bullmqCpu(b, rm(c)), c === 1 ? '' : '≤ 0.5']);
}
// BullMQ's `queue.add` against both: jobwire's client library (Client::add, whose concurrent
// adds share AddJobs calls, as ioredis pipelines BullMQ's), and the raw one-call-per-job AddJob.
rows.push(['a single adds through the client library (Client::add), ≤ 100 in flight, jobs/s', (j) => jobwireRuns(j, 'Client::add, ≤ 100 in flight'), (b) => bullmqRuns(b, 'a.add_100_inflight', 'jobs_per_s'), '≥ 1.5']);
rows.push(['a single adds, one raw AddJob call each, ≤ 100 in flight, jobs/s', (j) => jobwireRuns(j, 'AddJob, ≤ 100 in flight'), (b) => bullmqRuns(b, 'a.add_100_inflight', 'jobs_per_s'), 'reported: a gRPC call per job']);
rows.push(['c latency p50, ms (worker in another process)', (j) => jobwireRuns(j, 'latency p50'), (b) => bullmqRuns(b, 'c.latency_c10_separate_process', 'p50_ms'), '≤ 0.7']);
rows.push(['c latency p99, ms (worker in another process)', (j) => jobwireRuns(j, 'latency p99'), (b) => bullmqRuns(b, 'c.latency_c10_separate_process', 'p99_ms'), "jobwire's own: no worse than today"]);

const fmt = (v) => (Math.abs(v) >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(2));
const j0 = runs[0].j[0];
const b0 = runs[0].b[0];
console.log(
  `jobwire ${j0.jobwire_version} (${j0.build}${j0.quick ? ', quick sizes' : ''}; workers: ${protocol} protocol, prefetch ${prefetch}; tokio threads ${threads}) ` +
    `vs BullMQ ${b0.versions.bullmq} (node ${b0.versions.node}, removeOnComplete) on ${j0.machine.cpu}, ${j0.machine.cores} cores, ` +
    `redis ${j0.machine.redis_version}; ${pairs} pair(s) of runs, medians of ${runsPerPair} interleaved; load average ` +
    runs.map(({ j }) => `${j[0].load_average.start}–${j[j.length - 1].load_average.end}`).join(' / '),
);
if (j0.build !== 'release' || j0.quick) console.log('A smoke run (debug build or quick sizes): these figures mean nothing.');
console.log('');
const pairsTitle = Array.from({ length: pairs }, (_, i) => i + 1).join(' / ');
console.log(`| scenario | BullMQ, pair ${pairsTitle} | jobwire, pair ${pairsTitle} | jobwire ÷ BullMQ | target |`);
console.log('|---|---:|---:|---:|---|');
for (const [name, jobwire, bullmq, target] of rows) {
  const j = runs.map((r) => median(jobwire(r.j)));
  const b = runs.map((r) => median(bullmq(r.b)));
  const ratio = j.map((v, i) => (v / b[i]).toFixed(2));
  console.log(`| ${name} | ${b.map(fmt).join(' / ')} | ${j.map(fmt).join(' / ')} | ${ratio.join(' / ')} | ${target} |`);
}
EOF
