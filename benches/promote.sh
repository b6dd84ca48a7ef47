#!/usr/bin/env bash
# What a model promotion costs (#37): the registry writes a model (SIZE_MIB, default 512) into
# a staging dir, renames it into the model dir and updates its manifest (write, rename). Taken
# per case: the hasher's bytes read from the write's start to /verify 200 again (/proc/PID/io
# rchar, as a multiple of the model's size) and the time from the manifest's rename to /verify
# 200. Cases, alternated RUNS times (default 3) in the same run, medians:
#   fsync'd   - the registry fsyncs the model before the rename (as it should)
#   unsynced  - it does not: the model's pages are still dirty when the hasher reads it
#   reference - fsync'd, with `settle_window` set to the kernel's writeback window: each change
#               read once more after the window, as every change was before proving reads (#29)
#   benches/promote.sh                 # 512 MiB, 3 runs
#   SIZE_MIB=64 RUNS=1 benches/promote.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=$PWD/target/release
SIZE_MIB=${SIZE_MIB:-512}; RUNS=${RUNS:-3}
work=$(mktemp -d /var/tmp/im-promote.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work" "$work.secret"' EXIT
mkdir -p "$work/models" "$work/staging" "$work/registry" "$work/bin" "$work.secret"
head -c 1000 /dev/urandom > "$work/bin/svc"
(umask 077; head -c 32 /dev/urandom > "$work.secret/key"; echo bench-token-0123456789abcdef > "$work.secret/token")
head -c $((SIZE_MIB << 20)) /dev/urandom > "$work/model.src"
digest=$(sha256sum "$work/model.src" | cut -d' ' -f1)
size=$((SIZE_MIB << 20))
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rchar() { awk '/^rchar/ {print $2}' /proc/"$1"/io; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
manifest() { # models JSON -> the manifest, replaced by rename
  printf '{"version":1,"models":[%s]}\n' "$1" > "$work/registry/manifest.json.new"
  mv "$work/registry/manifest.json.new" "$work/registry/manifest.json"
}
window=$(( ($(cat /proc/sys/vm/dirty_expire_centisecs) + $(cat /proc/sys/vm/dirty_writeback_centisecs)) / 100 + 2 ))
run() { # case -> "bytes_read/size ms_from_rename_to_200"
  local port=$((20000 + RANDOM % 20000)) st=$work/state-$RANDOM extra=""
  [ "$1" = reference ] && extra="settle_window: ${window}s"
  rm -f "$work/models/"*
  manifest ""
  cat > "$work/policy.yaml" <<Y
scan_interval: 30s
service_binaries: [$work/bin/svc]
model_dirs: [$work/models]
registry_manifest: $work/registry/manifest.json
hmac_key_path: $work.secret/key
$extra
Y
  "$bin/integrity-monitor" --policy "$work/policy.yaml" --listen 127.0.0.1:$port \
    --token-file "$work.secret/token" --audit-log "$work/audit-$port.jsonl" --state-dir "$st" \
    --hasher "$bin/integrity-hasher" 2>/dev/null & local api=$!
  local url=http://127.0.0.1:$port
  for _ in $(seq 300); do [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 $url/api/v1/verify)" = 200 ] && break; sleep 0.1; done
  local h; h=$(cat /proc/$api/task/*/children | tr ' ' '\n' | grep . | head -1)
  sleep 1
  local b0; b0=$(rchar "$h")
  # The registry's promotion: write (fsync'd or not), rename into place, manifest updated.
  if [ "$1" = unsynced ]; then
    cat "$work/model.src" > "$work/staging/m.gguf"
  else
    dd if="$work/model.src" of="$work/staging/m.gguf" bs=4M conv=fsync status=none
  fi
  mv "$work/staging/m.gguf" "$work/models/m.gguf"
  manifest "{\"name\":\"m\",\"filename\":\"m.gguf\",\"sha256\":\"$digest\",\"size_bytes\":$size}"
  local t0; t0=$(now_ms)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 $url/api/v1/verify)" = 200 ]; do sleep 0.02; done
  local t1; t1=$(now_ms)
  sleep 1 # anything read after the verdict counts too
  awk -v b="$(( $(rchar "$h") - b0 ))" -v s="$size" -v ms="$((t1 - t0))" 'BEGIN {printf "%.3f %d\n", b/s, ms}'
  kill $api; wait $api 2>/dev/null || true
}
echo "| case (${SIZE_MIB} MiB model promoted; medians of $RUNS, alternated) | hasher bytes read / model size | manifest's rename → /verify 200, ms |"
echo "|---|---|---|"
declare -A res
for _ in $(seq "$RUNS"); do
  for c in fsynced unsynced reference; do res[$c]+="$(run $c)"$'\n'; done
done
for c in fsynced unsynced reference; do
  label=$c
  [ $c = reference ] && label="reference: fsync'd, settle_window: ${window}s (each change read again after the window)"
  echo "| $label | $(printf '%s' "${res[$c]}" | grep . | awk '{print $1}' | median)× | $(printf '%s' "${res[$c]}" | grep . | awk '{print $2}' | median) |"
done
