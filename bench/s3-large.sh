#!/usr/bin/env bash
# A large artifact through an S3-compatible store (moto on loopback): a task writes SIZE bytes
# (2 GiB by default), weir uploads it in streamed parts, the next task downloads it; prints
# weir's own peak RSS (the artifact must never be held in memory).
#   bench/s3-large.sh [BYTES]     needs moto[server] from PyPI
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-2147483648}"
cargo build --release -q -p weir
weir="$PWD/target/release/weir"
work=$(mktemp -d /var/tmp/weir-s3.XXXXXX)
trap 'kill "$moto" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 -c "import sys
from moto.server import ThreadedMotoServer
s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
s.start()
print(s.get_host_and_port()[1], flush=True)
sys.stdin.read()" > "$work/port" 2>/dev/null < <(sleep 100000) &
moto=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")
curl -fsS -X PUT "http://127.0.0.1:$port/big" >/dev/null
cat > "$work/secrets.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: s3}
stringData: {accessKey: k, secretKey: s}
YAML
loc="{bucket: big, key: blob, endpoint: \"127.0.0.1:$port\", insecure: true, accessKeySecret: {name: s3, key: accessKey}, secretKeySecret: {name: s3, key: secretKey}}"
cat > "$work/wf.yaml" <<YAML
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: big}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: write, template: write}
    - - {name: read, template: read}
  - name: write
    outputs: {artifacts: [{name: blob, path: /tmp/blob, archive: {none: {}}, s3: $loc}]}
    script: {image: alpine, command: [sh], source: "head -c $size /dev/urandom > /tmp/blob"}
  - name: read
    inputs: {artifacts: [{name: blob, path: /tmp/blob, s3: $loc}]}
    script: {image: alpine, command: [sh], source: "stat -c %s /tmp/blob"}
YAML
start=$(date +%s.%N)
WEIR_DB="$work/weir.db" WEIR_RUSAGE_FILE="$work/rusage" "$weir" run "$work/wf.yaml" --with "$work/secrets.yaml" -o json > "$work/out.json"
end=$(date +%s.%N)
read -r _ _ rss < "$work/rusage"
read_size=$(python3 -c "import json; w=json.load(open('$work/out.json')); print([n['outputs']['result'] for n in w['status']['nodes'].values() if n['displayName']=='read'][0])")
echo "artifact: $size bytes written, uploaded, downloaded; the reading task saw $read_size bytes"
awk -v r="$rss" -v s="$start" -v e="$end" 'BEGIN { printf "weir peak RSS: %.1f MiB; wall: %.1f s\n", r / 1024, e - s }'
[ "$read_size" = "$size" ]
