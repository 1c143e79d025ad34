#!/usr/bin/env bash
# Scale-out throughput (a benchmark, not a test): N trivial tasks (`true`, default 20,000, in
# runs of 1,000 parallel tasks) through one `weir server --no-worker` and W `weir worker`
# processes (default 4) against a private local PostgreSQL. In the same run it measures the
# baseline: PostgreSQL's single-row-commit rate (pgbench, one INSERT per transaction, 1 client
# and W clients), and prints tasks/s beside it.
#   bash bench/pg-throughput.sh [TASKS] [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-20000}
workers=${2:-4}
per_run=1000
runs=$(( (tasks + per_run - 1) / per_run ))
cargo build --release -q -p weir
weir=$PWD/target/release/weir
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /var/tmp/weir-bench.XXXXXX)
chmod 755 "$dir" # the PostgreSQL cluster inside belongs to the postgres user
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    scripts/pg-stop "$dir/pg" || true
    rm -rf "$dir"
}
trap cleanup EXIT
# PG_STATS=1: also print the statements PostgreSQL spent most time on (pg_stat_statements)
[ -n "${PG_STATS:-}" ] && export PG_OPTS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on"
url=$(scripts/pg-start "$dir/pg")
base=${url%/*}

# baseline: one-row commits
psql -q "$url" -c "CREATE DATABASE bench" -c "CREATE DATABASE weir"
psql -q "$base/bench" -c "CREATE TABLE one (id bigserial PRIMARY KEY, v bigint)"
echo "INSERT INTO one (v) VALUES (1);" > "$dir/one.sql"
tps() { "$bin/pgbench" -n -c "$1" -j "$1" -T 10 -f "$dir/one.sql" "$base/bench" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
tps1=$(tps 1)
tpsw=$(tps "$workers")

# weir: a server that only dispatches, and the workers
export WEIR_DB="$base/weir" WEIR_DATA_DIR="$dir/data"
"$weir" migrate >/dev/null
"$weir" server --insecure-local --no-worker --listen 127.0.0.1:0 > "$dir/server.out" 2> "$dir/server.err" &
pids+=($!)
for _ in $(seq 1 "$workers"); do
    "$weir" worker --slots tasks=${SLOTS:-512} --batch ${BATCH:-256} >/dev/null 2>"$dir/worker.err" &
    pids+=($!)
done
for _ in $(seq 1 100); do grep -q listening "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/.*http:\/\/\([0-9.:]*\).*/\1/p' "$dir/server.out")
cat > "$dir/fan.yaml" <<YAML
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: fan-
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: t
        template: nop
        withSequence: {count: "$per_run"}
  - name: nop
    container: {image: none, command: ["true"]}
YAML
cpu() { local t=0; for p in "$@"; do t=$(( t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0) )); done; echo "scale=2; $t / $(getconf CLK_TCK)" | bc; }
pg_before=$(cpu $(pgrep -u postgres | tr '\n' ' '))
idle() { awk '/^cpu /{print $5 + $6}' /proc/stat; }
idle_before=$(idle)
start=$(date +%s.%N)
for _ in $(seq 1 "$runs"); do
    curl -fsS -o /dev/null -H 'content-type: application/yaml' --data-binary @"$dir/fan.yaml" "http://$addr/api/v1/workflows/default"
done
# One psql session polls, and the waits between polls fork nothing: a process per poll (psql,
# its server backend, sleep, date) would take its CPU from the machine the benchmark measures.
coproc POLL { psql -qtA "$base/weir"; }
deadline=$(( ${EPOCHREALTIME%.*} + 600 ))
while :; do
    echo "SELECT count(*) FROM runs WHERE finished_at IS NULL;" >&"${POLL[1]}"
    read -r left <&"${POLL[0]}"
    [ "$left" = 0 ] && break
    if (( ${EPOCHREALTIME%.*} > deadline )); then
        echo "bench/pg-throughput.sh: $left runs still unfinished after 600 s; the workers said:" >&2
        tail -5 "$dir/worker.err" >&2
        exit 1
    fi
    read -r -t 0.02 -u "${POLL[0]}" _ || true
done
end=$(date +%s.%N)
idle_after=$(idle)
kill "$POLL_PID" 2>/dev/null || true
# CPU seconds each kind of process spent (user + system) while the tasks ran
server_cpu=$(cpu "${pids[0]}")
worker_cpu=$(cpu "${pids[@]:1}")
pg_cpu=$(echo "$(cpu $(pgrep -u postgres | tr '\n' ' ')) - $pg_before" | bc)
echo "CPU seconds: server $server_cpu, workers $worker_cpu (tasks' own processes not included), PostgreSQL $pg_cpu"
echo "machine idle while the tasks ran: $(echo "scale=2; ($idle_after - $idle_before) / $(getconf CLK_TCK)" | bc) core-seconds of $(echo "scale=2; ($end - $start) * $(nproc)" | bc)"
ok=$(psql -qtA "$base/weir" -c "SELECT count(*) FROM runs WHERE phase = 'Succeeded'")
if [ -n "${PG_STATS:-}" ]; then
    psql -q "$base/weir" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
        -c "SELECT calls, round(total_exec_time::numeric) AS exec_ms, round(total_plan_time::numeric) AS plan_ms, rows, shared_blks_hit + shared_blks_read AS blocks, wal_bytes / 1024 AS wal_kib, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'weir') ORDER BY shared_blks_hit + shared_blks_read DESC LIMIT 25"
fi
python3 - "$tasks" "$runs" "$ok" "$start" "$end" "$tps1" "$tpsw" "$workers" <<'PY'
import sys
tasks, runs, ok = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
start, end, tps1, tpsw, w = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]), sys.argv[8]
secs = end - start
rate = runs * 1000 / secs
print(f"PostgreSQL single-row commits: {tps1:,.0f}/s with 1 client, {tpsw:,.0f}/s with {w} clients")
print(f"weir: {runs * 1000:,} tasks in {runs} runs ({ok} succeeded) through {w} workers: {secs:.1f} s, {rate:,.0f} tasks/s")
print(f"ratio: {rate / tps1:.2f} tasks per single-row commit (1 client), {rate / tpsw:.2f} ({w} clients)")
PY
