#!/usr/bin/env bash
# Boots Debian's cloud kernel (6.1: CONFIG_FS_VERITY=y, Landlock ABI 2; this machine's own
# kernel has no fs-verity) under qemu with TCG (no KVM), with an initramfs of busybox-static,
# mke2fs, fsverity and the binaries named in BINS, and runs PAYLOAD as the payload of /init;
# prints the console. Adapted from the recipe in shared/verity-vm/boot-vm.sh: DISK adds a raw
# image as an NVMe disk (/dev/nvme0n1; the NVMe driver is built into that kernel), which
# outlives the VM, so a second boot is a real reboot (a new boot id, an empty page cache).
#
#   PAYLOAD=inside.sh BINS="integrity-monitor integrity-hasher" DISK=disk.img tests/verity/boot-vm.sh
#
# Inside: /proc, /sys, /dev and a tmpfs on /tmp are mounted, loopback is up, and
# `mkverityfs DIR` makes and mounts a verity ext4 on a loop file in memory (VERITY_MIB, 400).
# Env: CACHE (kernel cache, ~/.cache/verity-vm), MEM (MiB, 1200), SMP (2), TIMEOUT (s, 280),
# ARGS (words the payload finds in /args), TPM=1 (a vTPM: swtpm on the host, `tpm-tis` in the
# guest, whose kernel has TPM TIS/CRB built in: /dev/tpmrm0 appears, 0600 root),
# TPM_STATE=DIR (the vTPM's NV memory, kept across boots as a real TPM's is).
set -euo pipefail
: "${PAYLOAD:?PAYLOAD=script to run inside the VM}"
cache=${CACHE:-$HOME/.cache/verity-vm}; mkdir -p "$cache"
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v fsverity >/dev/null || need+=(fsverity)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
export DEBIAN_FRONTEND=noninteractive
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi
if ! ls "$cache"/vmlinuz-* >/dev/null 2>&1; then
  # The metapackage names the current image; apt-get download fetches the .deb as any package.
  img=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  if [ -z "$img" ]; then
    apt-get update -qq
    img=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  fi
  (cd "$cache" && apt-get download "$img" >/dev/null 2>&1)
  dpkg-deb -x "$cache"/linux-image-*.deb "$cache/x"
  cp "$cache"/x/boot/vmlinuz-* "$cache/"
  cp "$(find "$cache/x" -name loop.ko | head -1)" "$cache/loop.ko"
  rm -rf "$cache/x" "$cache"/*.deb
fi
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
r=$w/root; mkdir -p "$r"/{bin,lib64,lib/x86_64-linux-gnu,proc,sys,dev,tmp,mnt}
cp /bin/busybox "$r/bin/"
for a in sh ash mount umount insmod ifconfig cat echo poweroff ls dd mkdir sync head tail sleep kill \
         wget grep sed tr rm cp mv chmod awk printf ln stat od wc cut date seq expr test true false \
         sha256sum xargs find touch; do ln -sf busybox "$r/bin/$a"; done
# busybox's own mke2fs applet lacks -O verity: the real one goes in under another name.
cp "$(command -v mke2fs)" "$r/bin/e2mk"; cp "$(command -v fsverity)" "$r/bin/fsverity"
for b in ${BINS:-}; do
  cp "$b" "$r/bin/"
  # Debug builds carry ~50 MB of debug info each: the initramfs needs none of it.
  command -v strip >/dev/null && strip --strip-debug "$r/bin/$(basename "$b")" 2>/dev/null || true
done
libs=$(ldd "$(command -v mke2fs)" "$(command -v fsverity)" ${BINS:-} 2>/dev/null | awk '/=>/ {print $3}' | sort -u)
for l in $libs; do cp "$l" "$r/lib/x86_64-linux-gnu/"; done
cp /lib64/ld-linux-x86-64.so.2 "$r/lib64/"; cp "$cache/loop.ko" "$r/"
cp "$PAYLOAD" "$r/payload.sh"
echo "${ARGS:-}" > "$r/args"
cat > "$r/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs -o size=700m tmp /tmp; insmod /loop.ko; ifconfig lo 127.0.0.1 up
mkverityfs() { dd if=/dev/zero of=/tmp/verity.img bs=1M count=${VERITY_MIB:-400} 2>/dev/null &&
  /bin/e2mk -q -t ext4 -O verity -b 4096 /tmp/verity.img && mkdir -p "$1" && mount -o loop /tmp/verity.img "$1"; }
. /payload.sh
sync
poweroff -f
INIT
chmod +x "$r/init"
(cd "$r" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$w/initrd.gz")
tpm=()
if [ "${TPM:-0}" = 1 ]; then
  command -v swtpm >/dev/null || apt-get install -y -qq --no-install-recommends swtpm swtpm-tools >/dev/null
  ts=${TPM_STATE:-$w/tpm}; mkdir -p "$ts"
  swtpm socket --tpm2 --tpmstate dir="$ts" --ctrl type=unixio,path="$w/tpm.sock" \
    --flags not-need-init --pid file="$w/tpm.pid" --daemon
  for _ in $(seq 50); do [ -S "$w/tpm.sock" ] && break; sleep 0.1; done
  trap 'kill "$(cat "$w/tpm.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$w"' EXIT
  tpm=(-chardev socket,id=chrtpm,path="$w/tpm.sock" -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0)
fi
disk=()
if [ -n "${DISK:-}" ]; then
  disk=(-drive "file=$DISK,if=none,id=d0,format=raw" -device "nvme,drive=d0,serial=im0")
fi
timeout "${TIMEOUT:-280}" qemu-system-x86_64 -accel tcg -cpu max -smp "${SMP:-2}" -m "${MEM:-1200}" \
  -nographic -no-reboot -kernel "$(ls "$cache"/vmlinuz-* | head -1)" -initrd "$w/initrd.gz" \
  "${disk[@]}" "${tpm[@]}" -append "console=ttyS0 quiet panic=-1" 2>&1 | tr -d '\r'
