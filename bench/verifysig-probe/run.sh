#!/bin/sh
# Run the probe once in a real Envoy (nice 19, one worker, a random base id and ports) and print
# its `verifysig:` log lines. Usage: bench/verifysig-probe/run.sh ["<rounds> <per_block>" | "diff <n>"]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
envoy=${ENVOY_BIN:-envoy}
wasm=$root/target/wasm32-wasip1/release/missiongate_bench_verifysig.wasm
config=${1:-40 20}
dir=$(mktemp -d)
port=$(shuf -i 40000-49999 -n 1)
admin=$((port + 1))
base=$(shuf -i 1000-60000 -n 1)
sed -e "s|ADMIN_PORT|$admin|; s|PORT|$port|; s|WASM|$wasm|; s|CONFIG|$config|" "$here/envoy.yaml" > "$dir/envoy.yaml"
nice -n 19 "$envoy" -c "$dir/envoy.yaml" --base-id "$base" --concurrency 1 -l warn --log-path "$dir/envoy.log" &
pid=$!
rounds=${config%% *}
i=0
while [ $i -lt 600 ]; do
  if grep -qE "verifysig: (rounds|diff)" "$dir/envoy.log" 2>/dev/null; then break; fi
  if ! kill -0 $pid 2>/dev/null; then break; fi
  sleep 1
  i=$((i + 1))
done
cpu=$(awk '{print $14 + $15}' /proc/$pid/stat 2>/dev/null || echo "?")
kill $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
grep -o "verifysig:.*" "$dir/envoy.log" | sed 's/ | /\n  /g'
echo "envoy cpu ticks (utime+stime): $cpu; rounds $rounds"
rm -rf "$dir"
