#!/usr/bin/env bash
# Time to trusted after a reboot, sealed (fs-verity) vs unsealed models, at two sizes (the
# larger 4x the smaller) and with no model (the fixed cost), under a kernel with fs-verity: Debian's cloud kernel under qemu TCG
# (tests/verity/boot-vm.sh; this machine's kernel has none). Boot 1 makes five trees on an
# NVMe disk image and their baselines; boot 2 (a real reboot: cold cache, new boot id) times
# the forced scan on each, ROUNDS times (later rounds drop the cache and versions.bin first).
# Prints medians as a Markdown table for BENCHMARKS.md. TCG runs SHA-256 many times slower
# than the host: compare rows with each other and with the floor measured in the same VM.
#
#   benches/verity.sh                  # S = 256 MiB (sealed: 256 MiB and 1 GiB of real bytes)
#   SIZE_MIB=64 ROUNDS=3 benches/verity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
size=$(( ${SIZE_MIB:-256} * 1048576 ))
rounds=${ROUNDS:-3}
work=$(mktemp -d /var/tmp/im-verity.XXXXXX); trap 'rm -rf "$work"' EXIT
truncate -s $(( 6 * size + 256 * 1048576 )) "$work/disk.img"
bins="target/release/integrity-monitor target/release/integrity-hasher $(command -v curl)"
vm() { ARGS="$1 $size $rounds" DISK=$work/disk.img PAYLOAD=benches/verity-inside.sh BINS="$bins" \
  MEM=1500 TIMEOUT=3000 tests/verity/boot-vm.sh; }
vm prepare | grep -E "FAIL|m.gguf" >&2 || true
vm measure | tee "$work/out" | grep -E "^(RESULT|FLOOR)" >&2
python3 - "$work/out" "$size" <<'PY'
import re, statistics, sys
rows = {}
floor = {}
for line in open(sys.argv[1]):
    m = re.match(r"RESULT (\S+) (\d+) wall_ms=(\d+) hasher_cpu_ms=(\d+) bytes=(\S+) scan=(\d+) verify=(\d+)", line)
    if m:
        rows.setdefault(m[1], []).append((int(m[3]), int(m[4]), float(m[5] or 0), m[6], m[7]))
    f = re.match(r"FLOOR (\S+) u4 wall_ms=(\d+)", line)
    if f:
        floor[f[1]] = int(f[2])
size = int(sys.argv[2])
names = {"e0": ("none (start + scan alone)", 0), "s1": ("sealed", 1), "s4": ("sealed", 4), "u1": ("unsealed", 1), "u4": ("unsealed", 4)}
print("| models | size | time to trusted (median) | hasher CPU (median) | bytes read | verdict |")
print("|---|---|---|---|---|---|")
for key in ["e0", "s1", "s4", "u1", "u4"]:
    r = rows.get(key, [])
    if not r:
        print(f"| {names[key][0]} | - | no result | | | |"); continue
    wall = statistics.median(x[0] for x in r) / 1000
    cpu = statistics.median(x[1] for x in r) / 1000
    read = statistics.median(x[2] for x in r)
    ok = all(x[3] == "200" and x[4] == "200" for x in r)
    mib = names[key][1] * size / 1048576
    print(f"| {names[key][0]} | {mib:.0f} MiB | {wall:.2f} s | {cpu:.3f} s | {read:.0f} | {'trusted' if ok else 'NOT trusted'} ({len(r)} runs) |")
for tool, ms in floor.items():
    print(f"| floor: `{tool}` cold, unsealed | {4 * size / 1048576:.0f} MiB | {ms / 1000:.2f} s | | | |")
PY
