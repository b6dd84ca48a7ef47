#!/usr/bin/env bash
# The same-run comparison a change that must not move the speed bars is judged by: runs
# benches/files.sh on the tree at REV and on this working tree, alternately, ROUNDS times, so
# both sides meet the same machine state (this machine is noisy: compare pairs, not one run).
#
#   benches/ab.sh REV                     # e.g. the commit before the change; ROUNDS=2
#   BENCH_COUNTS=100000 BENCH_BIG_GIB=0 BENCH_CYCLES=5 ROUNDS=2 benches/ab.sh e1c0cdf
# files.sh's settings pass through. Prints each side's table in turn; paste into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: benches/ab.sh REV}
rounds=${ROUNDS:-2}
wt=$(mktemp -d /var/tmp/im-ab.XXXXXX)
trap 'git worktree remove --force "$wt" > /dev/null 2>&1 || true; rm -rf "$wt"' EXIT
git worktree add -q --detach "$wt" "$rev"
for round in $(seq "$rounds"); do
    for side in "$rev" working-tree; do
        dir=$PWD
        [ "$side" = "$rev" ] && dir=$wt
        echo "### $side, round $round"
        (cd "$dir" && BENCH_PLOT=/dev/null benches/files.sh 2> /dev/null)
    done
done
