#!/bin/bash
# Boots systemd 252 as PID 1 of a systemd-nspawn container (this host's PID 1 is not systemd),
# installs the project's units, binaries and boot checks at the paths they ship for, runs
# tests/pid1/inside.sh there, and tears everything down. Run as root.
# Env: BIN (dir holding integrity-monitor and integrity-hasher), SRC (the checkout).
# Never plain `unshare` + systemd instead: /proc/sys is not protected there and
# systemd-sysctl would change the host's sysctls.
# Not testable here: MemoryMax=, CPUQuota=, TasksMax= (accepted, not enforced: the host's cgroup
# v1 controllers are read-only inside the container and its v2 tree has no memory/cpu/pids).
set -euo pipefail
BIN=${BIN:?dir with the binaries}; SRC=${SRC:?checkout}
cache=$("$SRC/tests/pid1/rootfs.sh")
WORK=$(mktemp -d /var/tmp/im-pid1.XXXXXX); R=$WORK/rootfs; NAME=im-pid1-$$
NSPAWN=; LEADER=
teardown() {
  [ -n "$LEADER" ] && nsenter -t "$LEADER" -a systemctl poweroff 2>/dev/null || true
  for _ in $(seq 150); do [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.2; done
  if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then kill -9 "${LEADER:-$NSPAWN}" "$NSPAWN" 2>/dev/null || true; sleep 1; fi
  find /sys/fs/cgroup -maxdepth 12 -type d -name "$NAME" 2>/dev/null | while read -r d; do
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap teardown EXIT
cp -a "$cache" "$R"; chmod 0755 "$R"

# The project, where the units expect it.
install -D -m0755 "$BIN/integrity-monitor" "$R/usr/libexec/secure-ai/integrity-monitor"
install -D -m0755 "$BIN/integrity-hasher" "$R/usr/libexec/secure-ai/integrity-hasher"
for u in secure-ai-integrity-monitor.socket secure-ai-integrity-monitor.service \
         secure-ai-integrity-hasher.socket secure-ai-integrity-hasher@.service; do
  install -D -m0644 "$SRC/systemd/$u" "$R/usr/lib/systemd/system/$u"; done
install -D -m0644 "$SRC/systemd/secure-ai-integrity.sysusers.conf" "$R/usr/lib/sysusers.d/secure-ai-integrity.conf"
install -D -m0755 "$SRC/contrib/greenboot/01-integrity-monitor.sh" "$R/etc/greenboot/check/required.d/01-integrity-monitor.sh"
install -D -m0755 "$SRC/contrib/first-boot/integrity-monitor.sh" "$R/usr/libexec/secure-ai/first-boot-check.d/integrity-monitor.sh"
install -D -m0755 "$SRC/tests/pid1/inside.sh" "$R/root/inside.sh"

install -D -m0755 "$SRC/tests/pid1/health-check.sh" "$R/root/health-check.sh"
# The docs' page on replacing the Go service: the legacy-layout drop-in is taken from it, as
# an operator would copy it.
install -D -m0644 "$SRC/docs/replacing-go.md" "$R/root/replacing-go.md"
install -D -m0755 "$SRC/tests/pid1/recorder.sh" "$R/root/recorder.sh"

# The appliance as its image ships today: the policy's shape (version, quoted interval, a .py
# service binary, this policy among the policy files, units under /usr/lib/systemd/system, the
# cosign key under /etc/pki/containers, the old /run/secure-ai key path that HMAC_KEY_PATH
# overrides), models in the vault and the registry manifest outside it, enrolling a file and a
# directory artifact (its SecAI-Directory-Hash-v1 computed here by hand).
install -d "$R/etc/secure-ai/policy" "$R/var/lib/secure-ai/registry" "$R/etc/pki/containers" \
  "$R/var/lib/secure-ai/vault/models/sd-turbo/unet"
printf '#!/bin/sh\necho registry\n' > "$R/usr/libexec/secure-ai/registry"; chmod 0755 "$R/usr/libexec/secure-ai/registry"
printf 'print("attest")\n' > "$R/usr/libexec/secure-ai/secure-tpm-attestation.py"
echo "test-cosign-pub" > "$R/etc/pki/containers/secai-cosign.pub"
M=$R/var/lib/secure-ai/vault/models
head -c 1048576 /dev/urandom > "$M/model.gguf"
head -c 65536 /dev/urandom > "$M/sd-turbo/unet/weights.bin"
be64() { local i; for i in 7 6 5 4 3 2 1 0; do printf "\\$(printf '%03o' $(( ($1 >> (i * 8)) & 255 )))"; done; }
dirhash() { # SecAI-Directory-Hash-v1 of a directory holding one file: REL, CONTENT FILE
  { printf 'SecAI-Directory-Hash-v1\0'; be64 "${#1}"; printf '%s' "$1"
    be64 "$(stat -c %s "$2")"; cat "$2"; } | sha256sum | cut -d' ' -f1; }
cat > "$R/var/lib/secure-ai/registry/manifest.json" <<J
{"version":1,"models":[
 {"name":"model","filename":"model.gguf","sha256":"$(sha256sum < "$M/model.gguf" | cut -d' ' -f1)","size_bytes":1048576},
 {"name":"sd-turbo","filename":"sd-turbo","sha256":"$(dirhash unet/weights.bin "$M/sd-turbo/unet/weights.bin")","size_bytes":65536}]}
J
cat > "$R/etc/secure-ai/policy/integrity-monitor.yaml" <<'Y'
version: 1
scan_interval: "30s"
service_binaries:
  - /usr/libexec/secure-ai/registry
  - /usr/libexec/secure-ai/secure-tpm-attestation.py
  - /usr/libexec/secure-ai/integrity-monitor
  - /usr/libexec/secure-ai/integrity-hasher
policy_files:
  - /etc/secure-ai/policy/integrity-monitor.yaml
model_dirs:
  - /var/lib/secure-ai/vault/models
registry_manifest: /var/lib/secure-ai/registry/manifest.json
systemd_units:
  - /usr/lib/systemd/system/secure-ai-integrity-monitor.service
  - /usr/lib/systemd/system/secure-ai-integrity-hasher@.service
trust_material:
  - /etc/pki/containers/secai-cosign.pub
hmac_key_path: /run/secure-ai/integrity-hmac-key
degradation_threshold: 3
Y
chmod -R a+rX "$R/etc/secure-ai" "$R/etc/pki" "$R/var/lib/secure-ai"

# Boot. The host has cgroup v1 controllers plus a v2 "unified" tree and no systemd to ask for a
# scope: move into child cgroups of our current ones (v1 cpuset needs cpus/mems copied), then
# --register=no --keep-unit. nspawn's own seccomp allowlist lacks landlock_* (the binaries'
# sandbox), bpf (IPAddressDeny=, silently unenforced without it) and openat2 (the hasher opens
# watched paths with RESOLVE_NO_SYMLINKS; without it, its slower fallback runs): add them.
boot() {
  local d
  while IFS=: read -r _ ctrl path; do
    case "$ctrl" in "") d=/sys/fs/cgroup/unified ;; name=systemd) d=/sys/fs/cgroup/systemd ;; *) d=/sys/fs/cgroup/$ctrl ;; esac
    [ -d "$d" ] || continue; d=$d${path%/}/$NAME; mkdir -p "$d"
    if [ "$ctrl" = cpuset ]; then cat "${d%/*}/cpuset.cpus" > "$d/cpuset.cpus"; cat "${d%/*}/cpuset.mems" > "$d/cpuset.mems"; fi
    echo $BASHPID > "$d/cgroup.procs"
  done < /proc/self/cgroup
  exec systemd-nspawn --quiet -D "$R" --boot --register=no --keep-unit --private-network \
    --machine="$NAME" --console=pipe \
    --system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self bpf openat2"
}
( boot ) >"$WORK/nspawn.log" 2>&1 </dev/null & NSPAWN=$!
T0=$(date +%s%N)
for _ in $(seq 100); do LEADER=$(pgrep -P "$NSPAWN" -x systemd || true); [ -n "$LEADER" ] && break; sleep 0.1; done
[ -n "$LEADER" ] || { echo "FAIL systemd did not start:"; cat "$WORK/nspawn.log"; exit 1; }
IN() { nsenter -t "$LEADER" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_PAGER= "$@"; }
for _ in $(seq 300); do s=$(IN systemctl is-system-running 2>/dev/null || true)
  case "$s" in running|degraded) break ;; esac; sleep 0.1; done
echo "systemd $(IN systemctl --version | head -1 | awk '{print $2}') is PID 1, system $s after $(( ($(date +%s%N)-T0)/1000000 )) ms"
[ "$s" = running ] || { echo "FAIL boot: $s"; IN systemctl --failed --no-pager; exit 1; }
IN bash /root/inside.sh
