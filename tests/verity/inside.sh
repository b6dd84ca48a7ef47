# The sealed-model checks, run as the payload of tests/verity/boot-vm.sh under a kernel with
# fs-verity. Two boots of one disk (/dev/nvme0n1): `prepare` makes the appliance (sealed
# models, a baseline), `reboot` is the next boot: a new boot id, a cold page cache, the store
# as the last boot left it. Each check prints PASS or FAIL; tests/verity.rs counts them.
# shellcheck shell=busybox
phase=$(cat /args)
# The firmware's last screen reset has no newline: the checks start on lines of their own.
echo
D=/d
P=$D/etc/monitor.yaml
URL=http://127.0.0.1:8510
check() { name=$1; shift; if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fi; }
run() { integrity-monitor --policy $P --token-file $D/secret/token --audit-log $D/logs/audit.jsonl \
  --state-dir $D/state "$@"; }
policy() {
  cat > $P <<POLICY
service_binaries:
  - $D/bin/tool
model_dirs:
  - $D/models
hmac_key_path: $D/secret/key
settle_window: 0s
fsverity: $1
POLICY
  chmod 644 $P
}
hex32() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo; }
token() { cat $D/secret/token; }
# Starts the monitor in the background, logging to $1, on the tree at $2 (default $D: its
# etc/monitor.yaml, state/, logs/; the registry's tree keeps its policy at its top); $monitor
# is the monitor's own pid (not a subshell's: a function run with & would be one).
start() {
  t=${2:-$D}; pol=$t/etc/monitor.yaml; [ -f "$pol" ] || pol=$t/policy.yaml
  integrity-monitor --policy $pol --token-file $D/secret/token --audit-log $t/logs/audit.jsonl \
    --state-dir $t/state --listen 127.0.0.1:8510 > "$1" 2>&1 &
  monitor=$!
  for i in $(seq 1 100); do get /health >/dev/null && break; sleep 0.2; done
}
stop() { kill $monitor; while kill -0 $monitor 2>/dev/null; do sleep 0.2; done; }
get() { curl -s --max-time 30 "$URL$1"; }
post() { curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $(token)" "$URL$1"; }
scan() { test "$(post /api/v1/scan)" = 200; }
metric() { get /metrics | grep "^integrity_monitor_$1 " | cut -d' ' -f2; }
verify_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$URL/api/v1/verify"; }
status_has() { get /api/v1/status | grep -q "$1"; }
# The registry's tree: a directory artifact of two sealed shards, enrolled by its
# SecAI-Directory-Hash-v1 (SHA-256 over the domain, then per file in path order: u64 BE length
# of its relative path, the path, u64 BE size, the content).
R=$D/reg
be64() { for s in 56 48 40 32 24 16 8 0; do printf "\\$(printf %03o $(( ($1 >> s) & 255 )))"; done; }
dirhash() {
  { printf 'SecAI-Directory-Hash-v1\000'
    for f in a.bin b.bin; do be64 5; printf %s $f; be64 "$(stat -c %s "$1/$f")"; cat "$1/$f"; done
  } | sha256sum | cut -d' ' -f1
}
reg() { integrity-monitor --policy $R/policy.yaml --token-file $D/secret/token --audit-log \
  $R/logs/audit.jsonl --state-dir $R/state "$@"; }
sealed_files() { get /api/v1/status | grep -o '"sealed_files":[0-9]*' | head -1 | cut -d: -f2; }

if [ "$phase" = prepare ]; then
  e2mk -q -t ext4 -O verity -b 4096 /dev/nvme0n1 && mkdir -p $D && mount /dev/nvme0n1 $D
  mkdir -p $D/models $D/keep $D/bin $D/etc $D/state $D/logs $D/secret
  chmod 700 $D/secret
  hex32 > $D/secret/key; hex32 > $D/secret/token; chmod 600 $D/secret/key $D/secret/token
  printf 'tool v1\n' > $D/bin/tool
  head -c 33554432 /dev/urandom > $D/models/a.gguf
  head -c 8388608 /dev/urandom > $D/models/b.gguf
  head -c 1048576 /dev/urandom > $D/models/c.gguf
  cp $D/models/b.gguf $D/keep/b.gguf
  cp $D/models/b.gguf $D/keep/b.unsealed
  head -c 8388608 /dev/urandom > $D/keep/other.gguf
  policy auto
  run seal $D/models $D/keep/b.gguf $D/keep/other.gguf > /tmp/sealed
  check "seal sealed the three models and two spares" test "$(grep -c '^sha256:' /tmp/sealed)" = 5
  check "seal prints fsverity's own digest" \
    grep -q "^$(fsverity measure $D/models/a.gguf | cut -d' ' -f1) $D/models/a.gguf" /tmp/sealed
  check "a sealed file refuses writes" sh -c "! echo x >> $D/models/a.gguf"
  run seal $D/models/a.gguf > /tmp/again
  check "sealing again is no error" grep -q "already sealed" /tmp/again
  printf m > /tmp/m
  integrity-monitor seal /tmp/m 2> /tmp/seal.err
  check "seal refuses a filesystem without verity and says so" \
    sh -c "test $? = 1 && grep -q 'has no fs-verity' /tmp/seal.err"
  run initialize-baseline > /tmp/init 2>&1
  check "the first baseline is made and trusted" test $? = 0
  mkdir -p $R/models/shards $R/bin $R/state $R/logs
  printf 'tool v1\n' > $R/bin/tool
  head -c 2097152 /dev/urandom > $R/models/shards/a.bin
  head -c 1048576 /dev/urandom > $R/models/shards/b.bin
  run seal $R/models/shards > /dev/null
  printf '{"version":1,"models":[{"name":"shards","filename":"shards","sha256":"%s","size_bytes":3145728}]}\n' \
    "$(dirhash $R/models/shards)" > $R/manifest.json
  printf 'service_binaries: [%s]\nmodel_dirs: [%s]\nregistry_manifest: %s\nhmac_key_path: %s\nsettle_window: 0s\n' \
    $R/bin/tool $R/models $R/manifest.json $D/secret/key > $R/policy.yaml
  chmod 644 $R/policy.yaml $R/manifest.json
  reg initialize-baseline > /tmp/reg-init 2>&1
  check "a registry's sealed directory artifact is trusted" test $? = 0
  check "its directory binding is kept in the store" test -s $R/state/dirseals.bin
  check "the seal bindings are kept in the store" test -s $D/state/seals.bin
  # For the next boot: the physical block of c.gguf's 100th data block, edited offline then.
  debugfs -R "bmap /models/c.gguf 100" /dev/nvme0n1 2>/dev/null > $D/keep/c.block
  check "c.gguf's data block is located" grep -q '^[0-9][0-9]*$' $D/keep/c.block
  umount $D
fi

if [ "$phase" = reboot ]; then
  # Offline, before the filesystem is mounted: one data block of a sealed model rewritten
  # under its intact Merkle tree (what only a read, failing with EIO, can find).
  blk=$(debugfs -R "bmap /models/c.gguf 100" /dev/nvme0n1 2>/dev/null)
  dd if=/dev/urandom of=/dev/nvme0n1 bs=4096 seek="$blk" count=1 conv=notrunc 2>/dev/null
  mkdir -p $D && mount /dev/nvme0n1 $D
  mkdir -p /tmp/probe
  integrity-hasher --policy $P --state-dir /tmp/probe --sandbox-probe measure $D/models/a.gguf 2>/tmp/probe.out
  check "the hasher's filter admits FS_IOC_MEASURE_VERITY" test $? = 0
  integrity-hasher --policy $P --state-dir /tmp/probe --sandbox-probe ioctl $D/models/a.gguf 2>/dev/null
  check "any other ioctl is killed by the filter (SIGSYS)" test $? = 159
  # The registry's tree first: its sealed directory artifact is proven unread after the reboot.
  start /tmp/reg.log $R
  scan
  check "after the reboot the sealed directory artifact is trusted, 0 of its bytes read" \
    sh -c "test $(verify_code) = 200 && test $(metric bytes_hashed_total) = 8"
  # One shard replaced by an unsealed copy of itself: the artifact is read and judged.
  cp $R/models/shards/b.bin $R/b.copy && mv $R/b.copy $R/models/shards/b.bin
  scan
  check "an unsealed shard put in: the artifact is read and judged, trusted" \
    sh -c "test $(verify_code) = 200 && test $(metric bytes_hashed_total) -gt 8"
  printf 'fsverity: require\n' >> $R/policy.yaml
  post /api/v1/reload > /dev/null
  scan
  check "require: a directory artifact with an unsealed shard is not_sealed" \
    status_has '"actual_hash":"not_sealed"'
  stop
  start /tmp/monitor.log
  start=$(cut -d' ' -f1 /proc/uptime)
  scan; rc=$?
  end=$(cut -d' ' -f1 /proc/uptime)
  echo "INFO forced scan after the reboot: $start -> $end s of uptime"
  check "the forced scan after the reboot answers" test $rc = 0
  check "trusted after the reboot" test "$(verify_code)" = 200
  # Only the 8-byte tool was read: not a byte of the three sealed models (42 MiB).
  check "0 bytes of the sealed models read after the reboot" test "$(metric bytes_hashed_total)" = 8
  check "three watched files proven by their seal" test "$(sealed_files)" = 3
  mv $D/keep/other.gguf $D/models/b.gguf
  scan
  check "a sealed replacement with other content is seal_changed" status_has '"actual_hash":"seal_changed"'
  check "and untrusted at once" test "$(verify_code)" = 503
  check "found without a read" test "$(metric bytes_hashed_total)" = 8
  mv $D/keep/b.gguf $D/models/b.gguf
  scan
  check "the sealed original put back is trusted, unread" \
    sh -c "test $(verify_code) = 200 && test $(metric bytes_hashed_total) = 8"
  mv $D/keep/b.unsealed $D/models/b.gguf
  scan
  check "an unsealed copy is read and judged" \
    sh -c "test $(verify_code) = 200 && test $(metric bytes_hashed_total) = 8388616"
  check "two files sealed now" test "$(sealed_files)" = 2
  policy require
  check "reload to fsverity: require" test "$(post /api/v1/reload)" = 200
  scan
  check "require: the unsealed model is not_sealed" status_has '"actual_hash":"not_sealed"'
  check "require: untrusted" test "$(verify_code)" = 503
  # The backstop: a restart under a 2 s full_rehash_interval, so the bindings recalled from
  # the store fall due within 2 s; then the sealed models are read in full, through verity.
  stop
  policy auto; echo "full_rehash_interval: 2s" >> $P
  start /tmp/monitor2.log
  # Due 1-2 s after the hasher recalled them (it starts a moment after /health answers, longer
  # on a loaded machine): scan until the backstop has read them, for at most 30 s.
  for i in $(seq 1 30); do
    sleep 1; scan; get /api/v1/status > /tmp/status.json
    grep -q "\"actual_hash\":\"unreadable\"[^}]*\"path\":\"$D/models/c.gguf\"" /tmp/status.json &&
      [ "$(metric bytes_hashed_total)" -ge 33554432 ] && break
  done
  check "the backstop reads sealed models: the block edited offline is unreadable, named" \
    grep -q "\"actual_hash\":\"unreadable\"[^}]*\"path\":\"$D/models/c.gguf\"" /tmp/status.json
  check "the backstop read the intact sealed model in full" \
    test "$(metric bytes_hashed_total)" -ge 33554432
  stop
  umount $D 2>/dev/null
fi
