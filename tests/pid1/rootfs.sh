#!/bin/bash
# Makes (once) the Debian 12 minbase rootfs the PID 1 tests boot, and prints its path.
# Cached at $IM_PID1_CACHE (default /var/cache/integrity-monitor/pid1-rootfs): built in a
# temporary directory and renamed, so an interrupted run never leaves half a rootfs behind.
# procps is left out on purpose: the units must not need /bin/kill (ExecReload=).
set -euo pipefail
cache=${IM_PID1_CACHE:-/var/cache/integrity-monitor/pid1-rootfs}
stamp="$cache/.integrity-monitor-rootfs-v1"
if [ -f "$stamp" ]; then echo "$cache"; exit 0; fi
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
mirror=${MIRROR:-$(grep -rhE '^[^#]*https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ \
         2>/dev/null | grep -oE 'https?://[^ ]+/debian' | head -1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$(dirname "$cache")"
tmp=$(mktemp -d "$cache.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "debootstrap of a Debian 12 minbase rootfs into $cache (once; ~1 min)" >&2
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,jq,iproute2 \
  bookworm "$tmp" "$mirror" >"$tmp.log" 2>&1 || { tail -20 "$tmp.log" >&2; exit 1; }
rm -f "$tmp.log"
# A minimal image has no kill(1) unless procps comes in by dependency: make sure it does not.
rm -f "$tmp/usr/bin/kill" "$tmp/bin/kill"
chmod 0755 "$tmp"   # mktemp made it 0700: the container's / must be searchable by every user
touch "$tmp/.integrity-monitor-rootfs-v1"
rm -rf "$cache"; mv "$tmp" "$cache"; trap - EXIT
echo "$cache"
