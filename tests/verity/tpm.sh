# The TPM counter against a real kernel TPM device: the payload of tests/verity/boot-vm.sh with
# TPM=1 (a vTPM; the guest's kernel makes /dev/tpmrm0). Two boots of one disk and one TPM
# state: `tpm-prepare` initializes, enrols, rebaselines twice, puts the store, the audit log
# and the api's memory back as they were at generation 1, and sees recovery_required naming
# the counter; `tpm-reboot` is the next boot, the same TPM: still caught. Each check prints
# PASS or FAIL; tests/verity.rs counts them.
# shellcheck shell=busybox
phase=$(cat /args)
echo
D=/d
P=$D/etc/monitor.yaml
URL=http://127.0.0.1:8510
check() { name=$1; shift; if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fi; }
hex32() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo; }
get() { curl -s --max-time 30 "$URL$1"; }
start() {
  integrity-monitor --policy $P --token-file $D/secret/token --audit-log $D/logs/audit.jsonl \
    --state-dir $D/state --listen 127.0.0.1:8510 > "$1" 2>&1 &
  monitor=$!
  for i in $(seq 1 150); do get /api/v1/status | grep -q '"scan_count":[1-9]' && break; sleep 0.2; done
}
stop() { kill $monitor; while kill -0 $monitor 2>/dev/null; do sleep 0.2; done; }
enrol() { integrity-monitor tpm-enroll --policy $P --state-dir $D/state "$@"; }
# The ceremony as a script runs it (no terminal: --yes), the token where the service has it.
rebaseline() { integrity-monitor rebaseline --key $D/secret/key --token-file $D/secret/token --yes --url $URL >/dev/null 2>&1; }
anchor_is() { get /api/v1/status | grep -q "\"anchor\":\"$1\""; }
counter() { get /api/v1/status | grep -o '"tpm_counter":[0-9]*' | head -1 | cut -d: -f2; }
generation_is() { get /api/v1/status | grep -q "\"generation\":$1"; }
caught() {
  get /api/v1/status > /tmp/s
  grep -q '"state":"recovery_required"' /tmp/s && grep -q 'NV counter 0x013f4d49' /tmp/s &&
    grep -q 'generation 1 needs' /tmp/s
}

if [ "$phase" = tpm-prepare ]; then
  check "the kernel made /dev/tpmrm0" test -c /dev/tpmrm0
  e2mk -q -t ext4 -b 4096 /dev/nvme0n1 && mkdir -p $D && mount /dev/nvme0n1 $D
  mkdir -p $D/bin $D/etc $D/state $D/logs $D/secret $D/old
  chmod 700 $D/secret
  hex32 > $D/secret/key; hex32 > $D/secret/token; chmod 600 $D/secret/key $D/secret/token
  printf 'tool v1\n' > $D/bin/tool
  printf 'service_binaries:\n  - %s/bin/tool\nhmac_key_path: %s/secret/key\nsettle_window: 0s\n' $D $D > $P
  chmod 644 $P
  start /tmp/m1.log
  check "first start, not enrolled: the audit log is the anchor" anchor_is audit-log
  stop
  enrol > /tmp/enrol 2>&1
  check "tpm-enroll pins generation 1 to the counter on /dev/tpmrm0" \
    sh -c "grep -q 'generation 1 pinned' /tmp/enrol && grep -q /dev/tpmrm0 /tmp/enrol"
  enrol > /tmp/enrol2 2>&1
  check "tpm-enroll again: already enrolled" grep -q "already enrolled" /tmp/enrol2
  cp $D/state/* $D/old/; mkdir -p $D/old/logs; cp $D/logs/* $D/old/logs/
  start /tmp/m2.log
  check "enrolled: the TPM is the anchor" anchor_is tpm
  before=$(counter)
  printf 'tool v2\n' > $D/bin/tool; rebaseline
  printf 'tool v3\n' > $D/bin/tool; rebaseline
  after=$(counter)
  check "two rebaselines, two increments ($before to $after)" test "$after" = "$((${before:-0} + 2))"
  check "generation 3 adopted" generation_is 3
  stop
  # The attack: the store, the audit log and the api's memory as they were at generation 1,
  # and the binary generation 1 blessed.
  rm -f $D/state/* $D/logs/*; cp $D/old/*.json $D/state/; cp $D/old/logs/* $D/logs/
  printf 'tool v1\n' > $D/bin/tool
  start /tmp/m3.log
  check "store and audit log rolled back together: recovery_required naming the counter" caught
  stop
  sed 's/^settle_window/tpm: require\nsettle_window/' $P > /tmp/require.yaml; chmod 644 /tmp/require.yaml
  integrity-hasher --policy /tmp/require.yaml --state-dir /tmp/nostate --tpm-device /dev/tpm-none \
    > /tmp/require.log 2>&1 </dev/null
  code=$?
  check "tpm: require without a TPM refuses to start (exit 78)" test "$code" = 78
  umount $D
fi

if [ "$phase" = tpm-reboot ]; then
  mkdir -p $D && mount /dev/nvme0n1 $D
  start /tmp/m4.log
  check "after a reboot with the same TPM state: still caught" caught
  stop
  umount $D
fi
