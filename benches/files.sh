#!/usr/bin/env bash
# Cost against file count: for trees of N small files under one model dir (BENCH_COUNTS,
# default "10000 100000"), the monitor's baseline, restart-to-trusted, full sweep, a change
# (tamper -> 503, -> violation recorded, restore -> 200, CPU per change), idle CPU and RSS of
# each process; AIDE's --init and --check on the same tree in the same run, beside them.
#
#   benches/files.sh                      # needs python3; AIDE if installed (apt-get install aide)
#   BENCH_COUNTS="10000" benches/files.sh # one size ("": none, only the large file)
#   BENCH_BIG_GIB=1 benches/files.sh      # the one-large-file table's size (default 8; 0: none)
#   BENCH_CYCLES=20 benches/files.sh      # change cycles per size (default 10)
#   BENCH_PLOT=out.png benches/files.sh   # where the plot goes (default benches/files.png)
# Prints a Markdown table (medians); paste into BENCHMARKS.md. With gnuplot installed
# (apt-get install gnuplot-nox) it also plots cost against file count.
# As root, the page cache is dropped before each baseline, restart and AIDE run, so the monitor
# and AIDE both start cold (as after a boot); otherwise both run on whatever the cache holds.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=$PWD/target/release
work=$(mktemp -d /var/tmp/im-files.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cycles=${BENCH_CYCLES:-10}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
p99() { sort -n | awk '{a[NR]=$1} END {i=int((NR*99+99)/100); if (i<1) i=1; print a[i]}'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
cpu_ms() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END {printf "%.3f\n", s/1e6}'; }
hwm_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/"$1"/status; }
code() { curl -s -o /dev/null -w '%{http_code}' "$url$1"; }
# CPU seconds (user + system) of the running hasher and api together.
# (utime + stime of /proc/PID/stat, which keep what exited threads used, in clock ticks.)
both_cpu_s() { cat /proc/"$hpid"/stat /proc/"$pid"/stat | sed 's/.*) //' | awk -v hz="$(getconf CLK_TCK)" '{s+=$12+$13} END {printf "%.2f", s/hz}'; }
# Runs a command (its output dropped, its failure ignored); prints its user + system CPU s.
cpu_of() { local TIMEFORMAT="%U %S"; { time "$@" > /dev/null 2>&1 || true; } 2>&1 | awk '{printf "%.2f", $1+$2}'; }
cache=warm
[ -w /proc/sys/vm/drop_caches ] && cache=cold
cold() { [ "$cache" = cold ] && sync && echo 3 > /proc/sys/vm/drop_caches; true; }
plot=${BENCH_PLOT:-$PWD/benches/files.png}
dat=$work/files.dat

make_tree() { # dir count
    python3 - "$1" "$2" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per = 1000
for d in range((n + per - 1) // per):
    dd = f"{root}/models/d{d:04}"
    os.makedirs(dd, exist_ok=True)
    for i in range(min(per, n - d * per)):
        with open(f"{dd}/f{i:04}", "wb") as f:
            f.write(os.urandom(512))
PY
    mkdir -p "$1/bin" "$1.secret"
    echo svc > "$1/bin/svc"
    (umask 077; head -c 32 /dev/urandom > "$1.secret/key"; echo "bench-token-0123456789abcdef0123456789" > "$1.secret/token")
    cat > "$1/policy.yaml" <<YAML
scan_interval: 30s
service_binaries: [$1/bin/svc]
model_dirs: [$1/models]
hmac_key_path: $1.secret/key
YAML
}

start() { # dir state -> sets pid, hpid; waits for /verify 200
    RUST_LOG=info,hasher=debug "$bin/integrity-monitor" --policy "$1/policy.yaml" --listen "127.0.0.1:$port" \
        --token-file "$1.secret/token" --audit-log "$1/log/audit.jsonl" --state-dir "$1/$2" 2>>"$1.err" &
    pid=$!
    until [ "$(code /api/v1/verify)" = 200 ]; do sleep "${poll:-0.01}"; done
    hpid=$(pgrep -P "$pid" -f integrity-hasher)
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }

echo "| files | baseline s | restart→trusted s (within the boot / after a reboot) | full sweep ms | change: →503 p50/p99 ms | →violation p50 ms | restore→200 p50 ms | hasher CPU per change ms | idle CPU % (30 s) | slowest sweep slice, CPU ms | hasher / api RSS MiB | hasher RSS at restart MiB (within / after a reboot) | GET /baseline | cat ×8, cold (read floor) s | AIDE --init s | AIDE --check s | CPU s, hasher + api: baseline / restart within / after a reboot | full sweep CPU ms | AIDE CPU s: --init / --check |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for n in ${BENCH_COUNTS-10000 100000}; do
    d=$work/t$n
    port=$((20000 + RANDOM % 20000)); url=http://127.0.0.1:$port
    echo "generating $n files ..." >&2
    make_tree "$d" "$n"
    token=$(cat "$d.secret/token")
    # Baseline: a first start on an empty store, to the first trusted verdict.
    cold; t0=$(now_ms); start "$d" state; t1=$(now_ms); base_cpu=$(both_cpu_s)
    base_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b-a)/1000}')
    sweeps=(); k0=$(cpu_ms "$hpid"); l0=$(cpu_ms "$pid")
    for r in 1 2 3; do
        s=$(now_ms); curl -s -XPOST -H "Authorization: Bearer $token" "$url/api/v1/scan" > /dev/null; e=$(now_ms)
        sweeps+=($((e - s)))
    done
    sweep_ms=$(printf '%s\n' "${sweeps[@]}" | median)
    sweep_cpu=$(awk -v a="$k0" -v b="$(cpu_ms "$hpid")" -v c="$l0" -v d="$(cpu_ms "$pid")" 'BEGIN {printf "%.0f", (b-a+d-c)/3}')
    # Idle for one scan interval (30 s): the sweep spread over it, in 100 ms slices.
    i0=$(cpu_ms "$hpid"); j0=$(cpu_ms "$pid"); sleep 30; i1=$(cpu_ms "$hpid"); j1=$(cpu_ms "$pid")
    idle=$(awk -v a="$i0" -v b="$i1" -v c="$j0" -v d="$j1" 'BEGIN {printf "%.2f", (b-a+d-c)/300}')
    hidle=$(awk -v a="$i0" -v b="$i1" 'BEGIN {printf "%.6f", (b-a)/30000}')
    # A cycle over a large tree outlasts the bench: new maxima are logged as they happen.
    slowest=$(grep 'spread sweep' "$d.err" | sed -n 's/.*slowest_cpu_us=\([0-9]*\).*/\1/p' | sort -n | tail -1)
    slowest=$(awk -v u="${slowest:-0}" 'BEGIN {printf "%.1f", u/1000}')
    f=$d/models/d0000/f0000; orig=$(mktemp); cp "$f" "$orig"
    t503=(); tviol=(); trest=()
    c0=$(cpu_ms "$hpid"); w0=$(now_ms)
    for i in $(seq 1 "$cycles"); do
        sleep 0.3
        s=$(now_ms); echo tamper >> "$f"
        until [ "$(code /api/v1/verify)" = 503 ]; do sleep 0.001; done; t503+=($(($(now_ms) - s)))
        until curl -s "$url/api/v1/status" | grep -q '"violation_count":1'; do sleep 0.001; done; tviol+=($(($(now_ms) - s)))
        sleep 0.3
        s=$(now_ms); cat "$orig" > "$f"
        until [ "$(code /api/v1/verify)" = 200 ]; do sleep 0.001; done; trest+=($(($(now_ms) - s)))
    done
    c1=$(cpu_ms "$hpid"); w1=$(now_ms)
    # Less what the spread sweep spent meanwhile (its rate measured idle, above).
    per_change=$(awk -v a="$c0" -v b="$c1" -v n="$cycles" -v w="$((w1 - w0))" -v r="$hidle" \
        'BEGIN {v=(b-a-r*w)/(2*n); if (v<0) v=0; printf "%.2f", v}')
    rss="$(hwm_mib "$hpid") / $(hwm_mib "$pid")"
    # The manifest relayed to a client: its size, the time, and the api's peak after it.
    s=$(now_ms); mbytes=$(curl -s "$url/api/v1/baseline" | wc -c); e=$(now_ms)
    relay="$((mbytes / 1048576)) MiB in $((e - s)) ms, api peak $(hwm_mib "$pid") MiB"
    stop
    # Restart to trusted on the stored baseline: within the boot (the versions verified before
    # are recalled: a stat per file), and as after a reboot (no versions kept: a read per file).
    cold; t0=$(now_ms); start "$d" state; t1=$(now_ms); restart_rss=$(hwm_mib "$hpid"); restart_cpu=$(both_cpu_s); stop
    restart_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b-a)/1000}')
    rm -f "$d/state/versions.bin"
    cold; t0=$(now_ms); start "$d" state; t1=$(now_ms); reboot_rss=$(hwm_mib "$hpid"); reboot_cpu=$(both_cpu_s); stop
    reboot_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b-a)/1000}')
    # The floor for any program that reads every file: cat on 8 processes, from a cold cache
    # (the kernel's cost per cold small-file read bounds it, not the reader).
    cold; t0=$(now_ms); (cd "$d" && find models bin -type f -print0 | xargs -0 -P 8 -n 1000 cat > /dev/null); t1=$(now_ms)
    floor_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b-a)/1000}')
    aide_init=n/a; aide_check=n/a; aide_cpu=n/a
    if command -v aide > /dev/null; then
        cat > "$d.aide.conf" <<CONF
database_in=file:$d.aide.db
database_out=file:$d.aide.db.new
$d/models sha256
$d/bin sha256
CONF
        cold; t0=$(now_ms); ci=$(cpu_of aide --init --config="$d.aide.conf"); t1=$(now_ms)
        mv "$d.aide.db.new" "$d.aide.db"
        aide_init=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b-a)/1000}')
        cold; t0=$(now_ms); cc=$(cpu_of aide --check --config="$d.aide.conf"); t1=$(now_ms)
        aide_check=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b-a)/1000}')
        aide_cpu="$ci / $cc"
    fi
    echo "| $n | $base_s | $restart_s / $reboot_s | $sweep_ms | $(printf '%s\n' "${t503[@]}" | median) / $(printf '%s\n' "${t503[@]}" | p99) | $(printf '%s\n' "${tviol[@]}" | median) | $(printf '%s\n' "${trest[@]}" | median) | $per_change | $idle | $slowest | $rss | $restart_rss / $reboot_rss | $relay | $floor_s | $aide_init | $aide_check | $base_cpu / $restart_cpu / $reboot_cpu | $sweep_cpu | $aide_cpu |"
    echo "$n $base_s $restart_s $sweep_ms $(printf '%s\n' "${t503[@]}" | p99) ${rss%% *} ${rss##* } $aide_init $aide_check $restart_rss $reboot_s $reboot_rss" >> "$dat"
    rm -rf "$d" "$d".*
done
big_gib=${BENCH_BIG_GIB:-8}
if [ "$big_gib" != 0 ]; then
    # One large file (BENCH_BIG_GIB, default 8; 0 skips): baseline, restarts, tamper -> 503,
    # and the re-verification by chunks on 2 threads against a read in order, beside
    # openssl dgst (1 process, and 2 at once on the two halves) and AIDE, cold; then the
    # restarts and openssl again warm.
    d=$work/big; port=$((20000 + RANDOM % 20000)); url=http://127.0.0.1:$port
    echo "generating one ${big_gib} GiB file ..." >&2
    make_tree "$d" 0
    f=$d/models/big.bin; mkdir -p "$d/models"
    head -c "$((big_gib * 1024 * 1024 * 1024))" /dev/urandom > "$f"
    echo "hash_threads: 2" >> "$d/policy.yaml"
    token=$(cat "$d.secret/token")
    secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b-a)/1000}'; }
    cold; t0=$(now_ms); start "$d" state; t1=$(now_ms); b_base=$(secs "$t0" "$t1")
    # Tamper: one byte written in place (size unchanged), then put back.
    t503=(); trest=()
    for i in 1 2 3; do
        old=$(dd if="$f" bs=1 skip=4096 count=1 status=none | od -An -tx1 | tr -d ' ')
        new=$(printf %02x $((0x$old ^ 1)))
        s=$(now_ms); printf "\x$new" | dd of="$f" bs=1 seek=4096 conv=notrunc status=none
        until [ "$(code /api/v1/verify)" = 503 ]; do sleep 0.001; done; t503+=($(($(now_ms) - s)))
        sleep 0.5
        s=$(now_ms); printf "\x$old" | dd of="$f" bs=1 seek=4096 conv=notrunc status=none
        until [ "$(code /api/v1/verify)" = 200 ]; do sleep "${poll:-0.01}"; done; trest+=($(($(now_ms) - s)))
    done
    b_rss=$(hwm_mib "$hpid"); stop
    cold; t0=$(now_ms); start "$d" state; t1=$(now_ms); stop; b_within=$(secs "$t0" "$t1")
    rm -f "$d/state/versions.bin"
    cold; t0=$(now_ms); start "$d" state; t1=$(now_ms); stop; b_chunks=$(secs "$t0" "$t1")
    rm -f "$d/state/versions.bin" "$d/state/chunks.bin"
    cold; t0=$(now_ms); start "$d" state; t1=$(now_ms); stop; b_order=$(secs "$t0" "$t1")
    cold; t0=$(now_ms); openssl dgst -sha256 "$f" > /dev/null; t1=$(now_ms); o1=$(secs "$t0" "$t1")
    half=$((big_gib * 8))
    cold; t0=$(now_ms)
    dd if="$f" bs=64M count="$half" status=none | openssl dgst -sha256 > /dev/null &
    dd if="$f" bs=64M skip="$half" status=none | openssl dgst -sha256 > /dev/null; wait %%
    t1=$(now_ms); o2=$(secs "$t0" "$t1")
    # Warm (the file in the page cache, where the disk no longer bounds it): what 2 threads
    # on its chunks gain over one thread is then the CPU's. The hasher drops the pages behind
    # its reads, so the file is read into the cache again before each run. Timed by the
    # hasher's own report (ms of its first scan), the readiness poll slowed to 0.2 s, so the
    # bench's curl forks do not take a core from the two threads; 3 alternating runs, medians.
    warm() { cat "$f" > /dev/null; }
    scan_s() { grep 'scan complete' "$d.err" | tail -1 | sed -n 's/.* ms=\([0-9]*\).*/\1/p' | awk '{printf "%.2f", $1/1000}'; }
    warm_run() { # hash_threads -> the first scan's seconds, chunks.bin kept
        sed -i "s/^hash_threads: .*/hash_threads: $1/" "$d/policy.yaml"
        warm; rm -f "$d/state/versions.bin"
        poll=0.2 start "$d" state > /dev/null; stop; scan_s
    }
    warm; rm -f "$d/state/versions.bin" "$d/state/chunks.bin"
    poll=0.2 start "$d" state; stop; w_order=$(scan_s)
    [ -s "$d/state/chunks.bin" ] || echo "warning: no chunks.bin kept after a read in order" >&2
    w2=(); w1=()
    for i in 1 2 3; do w2+=("$(warm_run 2)"); w1+=("$(warm_run 1)"); done
    sed -i 's/^hash_threads: .*/hash_threads: 2/' "$d/policy.yaml"
    w_chunks=$(printf '%s\n' "${w2[@]}" | median); w_one=$(printf '%s\n' "${w1[@]}" | median)
    warm; t0=$(now_ms); openssl dgst -sha256 "$f" > /dev/null; t1=$(now_ms); w_o1=$(secs "$t0" "$t1")
    warm; t0=$(now_ms)
    dd if="$f" bs=64M count="$half" status=none | openssl dgst -sha256 > /dev/null &
    dd if="$f" bs=64M skip="$half" status=none | openssl dgst -sha256 > /dev/null; wait %%
    t1=$(now_ms); w_o2=$(secs "$t0" "$t1")
    ai=n/a; ac=n/a
    if command -v aide > /dev/null; then
        printf 'database_in=file:%s\ndatabase_out=file:%s\n%s sha256\n' "$d.aide.db" "$d.aide.db.new" "$d/models" > "$d.aide.conf"
        cold; t0=$(now_ms); aide --init --config="$d.aide.conf" > /dev/null 2>&1 || true; t1=$(now_ms); ai=$(secs "$t0" "$t1")
        mv "$d.aide.db.new" "$d.aide.db"
        cold; t0=$(now_ms); aide --check --config="$d.aide.conf" > /dev/null 2>&1 || true; t1=$(now_ms); ac=$(secs "$t0" "$t1")
    fi
    echo
    echo "| 1 × $big_gib GiB, hash_threads 2 | baseline s | in-place 1-byte write →503 ms (each of 3) | put back →200 s (median) | restart within the boot s | after a reboot, by chunks on 2 threads s | after a reboot, no chunks (in order) s | 2 threads / in order | openssl dgst s | 2 × openssl dgst (halves at once) s | warm, the hasher's scan: first read in order (whole + chunk digests) / by chunks on 2 threads / 1 thread (medians of 3) s | warm: 2 threads / in order, / 1 thread | warm: openssl dgst ×1 / ×2 halves s | hasher RSS MiB | AIDE --init s | AIDE --check s |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
    echo "| | $b_base | ${t503[*]} | $(printf '%s\n' "${trest[@]}" | median | awk '{printf "%.2f", $1/1000}') | $b_within | $b_chunks | $b_order | $(ratio "$b_order" "$b_chunks")× | $o1 | $o2 | $w_order / $w_chunks / $w_one | $(ratio "$w_order" "$w_chunks")×, $(ratio "$w_one" "$w_chunks")× | $w_o1 / $w_o2 | $b_rss | $ai | $ac |"
    rm -rf "$d" "$d".*
fi
echo "page cache: $cache before each baseline, restart and AIDE run" >&2
if command -v gnuplot > /dev/null && [ -s "$dat" ]; then
    gnuplot <<GP
set terminal pngcairo size 1100,480 font ",10"
set output "$plot"
set multiplot layout 1,2 title "integrity-monitor against AIDE 0.18 by file count (page cache $cache; benches/files.sh)"
set logscale xy
set key top left
set grid
set xlabel "files"
set ylabel "seconds"
plot "$dat" u 1:2 w lp t "monitor: baseline", "" u 1:3 w lp t "monitor: restart to trusted (within the boot)", \
     "" u 1:11 w lp t "monitor: restart to trusted (after a reboot)", \
     "" u 1:8 w lp t "AIDE --init", "" u 1:9 w lp t "AIDE --check", \
     "" u 1:(\$4/1000) w lp t "monitor: full sweep (POST /scan)", "" u 1:(\$5/1000) w lp t "monitor: change to 503, p99"
set ylabel "MiB"
plot "$dat" u 1:6 w lp t "hasher peak RSS", "" u 1:10 w lp t "hasher peak RSS, restart within the boot", \
     "" u 1:12 w lp t "hasher peak RSS, restart after a reboot", "" u 1:7 w lp t "api peak RSS"
unset multiplot
GP
    echo "plot: $plot" >&2
fi
