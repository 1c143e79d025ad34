#!/usr/bin/env bash
# The core issue's scale check: a 10,000-task withSequence fan-out of `true`, next to
# `seq 10000 | xargs -P2 -n1 true` measured in the same run. Prints wall time and peak RSS.
# Usage: bench/fanout-10k.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
cargo build --release -q -p weir
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/fanout.yaml" <<YAML
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: fanout-}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: t, template: noop, withSequence: {count: "$n"}}
  - name: noop
    container: {image: busybox, command: ["true"]}
YAML
base=$( { /usr/bin/time -f "%e %M" sh -c "seq $n | xargs -P2 -n1 true" ; } 2>&1 | tail -1)
weir=$( { WEIR_DB="$dir/weir.db" /usr/bin/time -f "%e %M" ./target/release/weir run "$dir/fanout.yaml" --no-logs >/dev/null ; } 2>&1 | tail -1)
read -r bw brss <<<"$base"
read -r ww wrss <<<"$weir"
printf "%-28s %10s %14s\n" "workload ($n tasks)" "wall s" "peak RSS KiB"
printf "%-28s %10s %14s\n" "xargs -P2 (baseline)" "$bw" "$brss"
printf "%-28s %10s %14s\n" "weir run (SQLite, processes)" "$ww" "$wrss"
awk -v w="$ww" -v b="$bw" -v n="$n" 'BEGIN { printf "ratio %.2fx, weir overhead %.2f ms per task\n", w / b, (w - b) * 1000 / n }'
