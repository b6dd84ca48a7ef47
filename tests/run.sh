#!/usr/bin/env bash
# The README's test command, and what CI runs: installs what the tests use from Debian when it
# is missing (as root, on Debian 12), then runs every test of the workspace.
#   python3          the README's HMAC check
#   curl, jq         the greenboot and first-boot scripts
#   systemd          systemd-analyze (unit checks), systemd-socket-activate (activation tests)
#   iproute2         ss reads the api's listen backlog
#   faketime         the clock-jump tests step both processes' wall clocks with libfaketime
#   systemd-container, debootstrap   the PID 1 test boots systemd in a container
#                    (tests/pid1/rootfs.sh; the rootfs is made once and cached)
#   prometheus       promtool checks and unit-tests the shipped rules and the live /metrics;
#                    the server scrapes a running monitor (tests/prometheus.rs)
#   qemu-system-x86, busybox-static, cpio, fsverity, e2fsprogs   the sealed-model test boots
#                    Debian's cloud kernel, which has fs-verity (tests/verity/boot-vm.sh; the
#                    kernel package is downloaded once and cached)
#   swtpm, swtpm-tools, tpm2-tools   the TPM counter's tests run against swtpm's socket
#                    (hasher/src/tpm, tests/tpm.rs) and check it from outside with tpm2-tools
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v ss >/dev/null || need+=(iproute2)
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need+=(faketime)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v promtool >/dev/null || need+=(prometheus)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v fsverity >/dev/null || need+=(fsverity)
command -v debugfs >/dev/null || need+=(e2fsprogs)
command -v swtpm >/dev/null || need+=(swtpm)
command -v swtpm_setup >/dev/null || need+=(swtpm-tools)
command -v tpm2_nvread >/dev/null || need+=(tpm2-tools)
command -v bindfs >/dev/null || need+=(bindfs)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: the tests need ${need[*]} and run as root (sandbox, fault and PID 1 tests)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The 10,000-connection test needs the hard fd limit at 12,000 or more.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# The sandbox tests drive both binaries' probe harness, compiled in for test builds only.
exec cargo test --workspace --features integrity-api/probe,integrity-hasher/probe "$@"
