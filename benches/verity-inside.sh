# The payload of benches/verity.sh inside the verity VM (see there). `prepare` makes five
# appliance trees on the NVMe disk: s1/s4 hold one sealed model of S and 4*S random bytes,
# u1/u4 one unsealed sparse model of the same sizes, e0 no model at all (what starting and
# scanning cost with nothing to prove); each gets its baseline. `measure` (the
# next boot: a cold cache, a new boot id) starts the monitor on each tree in turn and times
# the forced scan to trusted, with the hasher's CPU; later rounds drop the page cache and
# versions.bin first, as a reboot does.
set -u
echo
read -r phase size rounds < /args
D=/d
gen() { # path bytes: random bytes without /dev/urandom's cost under TCG
  head -c 1048576 /dev/urandom > /tmp/block
  n=$(( $2 / 1048576 )); : > "$1"; i=0
  while [ $i -lt $n ]; do cat /tmp/block; i=$((i + 1)); done >> "$1"
  # Each MiB differs from the others in its first bytes: no two chunks alike.
  i=0; while [ $i -lt $n ]; do printf '%08d' $i | dd of="$1" bs=1 seek=$((i * 1048576)) conv=notrunc 2>/dev/null; i=$((i + 1)); done
}
tree() { # name model-bytes sealed?
  # The secrets sit outside every directory the hasher reads (the policy's own among them).
  t=$D/$1; mkdir -p $t/models $t/bin $t/state $t/logs $t.secret; chmod 700 $t.secret
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > $t.secret/key
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > $t.secret/token
  chmod 600 $t.secret/key $t.secret/token
  printf 'tool\n' > $t/bin/tool
  if [ "$3" = sealed ]; then gen $t/models/m.gguf $2; integrity-monitor seal $t/models/m.gguf >/dev/null
  elif [ "$2" -gt 0 ]; then dd if=/dev/zero of=$t/models/m.gguf bs=1 count=0 seek=$2 2>/dev/null; fi
  printf 'service_binaries: [%s]\nmodel_dirs: [%s]\nhmac_key_path: %s\nsettle_window: 0s\n' \
    $t/bin/tool $t/models $t.secret/key > $t/policy.yaml
  integrity-monitor --policy $t/policy.yaml --token-file $t.secret/token --audit-log \
    $t/logs/audit.jsonl --state-dir $t/state initialize-baseline >/tmp/init.log 2>&1 ||
    { echo "FAIL baseline $1"; tail -3 /tmp/init.log; }
}
uptime_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
hasher_pid() { for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = integrity-hashe ] && echo ${p#/proc/}; done; }
cpu_ms() { cat /proc/$1/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%d\n", s / 1000000}'; }
measure() { # name round
  t=$D/$1
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(uptime_ms)
  integrity-monitor --policy $t/policy.yaml --token-file $t.secret/token --audit-log \
    $t/logs/audit.jsonl --state-dir $t/state --listen 127.0.0.1:8510 > /tmp/$1.log 2>&1 &
  m=$!
  i=0; until curl -s -o /dev/null http://127.0.0.1:8510/health; do sleep 0.05; i=$((i+1)); [ $i -gt 2000 ] && break; done
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 600 -X POST \
    -H "Authorization: Bearer $(cat $t.secret/token)" http://127.0.0.1:8510/api/v1/scan)
  v=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8510/api/v1/verify)
  t1=$(uptime_ms)
  h=$(hasher_pid); c=$(cpu_ms $h)
  b=$(curl -s http://127.0.0.1:8510/metrics | awk '/^integrity_monitor_bytes_hashed_total / {print $2}')
  echo "RESULT $1 $2 wall_ms=$((t1 - t0)) hasher_cpu_ms=$c bytes=$b scan=$code verify=$v"
  kill $m; while kill -0 $m 2>/dev/null; do sleep 0.1; done
  rm -f $t/state/versions.bin
}
if [ "$phase" = prepare ]; then
  e2mk -q -t ext4 -O verity -b 4096 /dev/nvme0n1 && mkdir -p $D && mount /dev/nvme0n1 $D
  tree s1 $size sealed; tree s4 $((4 * size)) sealed; tree u1 $size unsealed; tree u4 $((4 * size)) unsealed
  tree e0 0 none
  ls -ls $D/*/models/m.gguf
  umount $D
fi
if [ "$phase" = measure ]; then
  mkdir -p $D && mount /dev/nvme0n1 $D
  r=1; while [ $r -le $rounds ]; do
    for t in e0 s1 s4 u1 u4; do measure $t $r; done
    r=$((r + 1))
  done
  # The read floor in the same VM, cold: cat and sha256sum of the larger unsealed model.
  for tool in cat sha256sum; do
    sync; echo 3 > /proc/sys/vm/drop_caches; t0=$(uptime_ms)
    $tool $D/u4/models/m.gguf > /dev/null; t1=$(uptime_ms)
    echo "FLOOR $tool u4 wall_ms=$((t1 - t0))"
  done
  umount $D
fi
