#!/usr/bin/env bash
# What a settle read costs (#29): over a tree of N small files, one file is rewritten in place
# and the hasher's read bytes (/proc/PID/io rchar) and CPU (schedstat) are taken over the next
# W seconds, with settle reads on (settle_window: 3s) and off (0s), and with no change at all.
# The settle read should add one read of the changed file and nothing else.
#   benches/settle.sh              # N=10000 files of 4 KiB, 3 runs each, medians
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=$PWD/target/release
N=${N:-10000}; RUNS=${RUNS:-3}; W=6
work=$(mktemp -d /var/tmp/im-settle.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work" "$work.secret"' EXIT
mkdir -p "$work/models/d" "$work/bin" "$work.secret"
for i in $(seq 1 "$N"); do head -c 4096 /dev/urandom > "$work/models/d/f$i"; done
head -c 1000 /dev/urandom > "$work/bin/svc"
(umask 077; head -c 32 /dev/urandom > "$work.secret/key"; echo bench-token-0123456789abcdef > "$work.secret/token")
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END {printf "%.0f\n", s}'; }
rchar() { awk '/^rchar/ {print $2}' /proc/"$1"/io; }
run() { # settle_window change(0/1) -> "bytes cpu_us"
  local port=$((20000 + RANDOM % 20000)) st=$work/state-$RANDOM
  cat > "$work/policy.yaml" <<Y
scan_interval: 1h
service_binaries: [$work/bin/svc]
model_dirs: [$work/models]
hmac_key_path: $work.secret/key
settle_window: $1
Y
  "$bin/integrity-monitor" --policy "$work/policy.yaml" --listen 127.0.0.1:$port \
    --token-file "$work.secret/token" --audit-log "$work/audit-$port.jsonl" --state-dir "$st" \
    --hasher "$bin/integrity-hasher" 2>/dev/null & local api=$!
  for _ in $(seq 200); do curl -sf -m 2 "http://127.0.0.1:$port/api/v1/verify" >/dev/null && break; sleep 0.1; done
  local h; h=$(cat /proc/$api/task/*/children | tr ' ' '\n' | grep . | head -1)
  sleep 1
  local b0 c0; b0=$(rchar "$h"); c0=$(cpu_ns "$h")
  if [ "$2" = 1 ]; then printf 'X' | dd of="$work/models/d/f7" bs=1 seek=9 conv=notrunc status=none; fi
  sleep $W
  echo "$(( $(rchar "$h") - b0 )) $(( ($(cpu_ns "$h") - c0) / 1000 ))"
  kill $api; wait $api 2>/dev/null || true
}
echo "| case ($N files of 4 KiB, ${W} s after the change) | hasher bytes read (median of $RUNS) | hasher CPU µs (median) |"
echo "|---|---|---|"
for c in "0s 0 no change, settle reads off" "3s 0 no change, settle reads on" "0s 1 one file rewritten, settle reads off" "3s 1 one file rewritten, settle reads on"; do
  set -- $c; w=$1; ch=$2; shift 2
  res=$(for _ in $(seq "$RUNS"); do run "$w" "$ch"; done)
  echo "| $* | $(echo "$res" | awk '{print $1}' | median) | $(echo "$res" | awk '{print $2}' | median) |"
done
