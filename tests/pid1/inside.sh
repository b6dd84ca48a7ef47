#!/bin/bash
# Runs inside the container, under systemd 252 as PID 1, with the units and paths exactly as
# shipped. Prints one PASS or FAIL line per check; exits 1 if any failed.
set -u
fail=0; T0=$(date +%s)
ok() { echo "PASS $*"; }
ko() { echo "FAIL $*"; fail=1; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else ko "$what"; fi; }
code() { curl -s -o /dev/null -m "${2:-10}" -w '%{http_code}' "http://127.0.0.1:8510$1"; }
A=secure-ai-integrity-monitor.service
AUDIT=/var/lib/secure-ai/logs/integrity-monitor-audit.jsonl
hasher_unit() { systemctl list-units --plain --no-legend 'secure-ai-integrity-hasher@*' | awk '$3=="active"{print $1; exit}'; }
prop() { systemctl show -p "$1" --value "$2"; }

systemd-sysusers
# Credentials as the appliance provisions them (secure-ai-credentials.service): a root-only
# store, each secret 64 lower-case hex digits and a newline, 0600 root, one link. Nothing under
# /run/secure-ai: the units load from the store.
C=/var/lib/secure-ai/credentials
install -d -m0700 -o root -g root $C
for n in integrity-monitor.token integrity-hmac.key incident-reporter-integrity-monitor.token; do
  (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > $C/$n; echo >> $C/$n)
done
check "credentials as the appliance makes them: $(stat -c '%a:%u:%h:%s' $C/* | sort -u | tr '\n' ' ')" \
  sh -c "[ \"\$(stat -c '%a:%u:%h:%s' $C/* | sort -u)\" = '600:0:1:65' ] && [ \"\$(stat -c %a $C)\" = 700 ]"
# The appliance's boot check, as a oneshot with its own LoadCredential= of the token.
cat > /etc/systemd/system/im-health-check.service <<'U'
[Service]
Type=oneshot
ExecStart=/root/health-check.sh
Environment=INTEGRITY_MONITOR_TOKEN_PATH=%d/integrity-monitor-token
LoadCredential=integrity-monitor-token:/var/lib/secure-ai/credentials/integrity-monitor.token
U
health() { systemctl start im-health-check.service 2>/dev/null; local rc=$?
  journalctl -b -u im-health-check.service --no-pager -o cat | grep '^\[health-check\]' | tail -1; return $rc; }
# A stand-in incident recorder that demands the reporter token.
systemd-socket-activate -l 127.0.0.1:8515 -a --inetd /root/recorder.sh >/dev/null 2>&1 &
RECORDER=$!
systemctl daemon-reload

# --- the units as shipped pass systemd's own checks
check "systemd-analyze verify" sh -c 'cd /usr/lib/systemd/system && systemd-analyze verify secure-ai-integrity-*.s* 2>&1 | tee /dev/stderr | (! grep -q .)'

# --- greenboot's required check is the very first request: it socket-activates the api
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
check "nothing started before the first request" test "$(prop ActiveState $A)" = inactive
out=$(/etc/greenboot/check/required.d/01-integrity-monitor.sh 2>&1); rc=$?
check "greenboot check passes on first boot, as the activating request (rc=$rc: $out)" test $rc = 0

# --- Type=notify: READY with a STATUS line
st=$(prop StatusText $A)
check "Type=notify READY (active) with STATUS '$st', through the notify socket bound into the api's /run" sh -c "[ '$(prop ActiveState $A)' = active ] && echo '$st' | grep -q 'state=trusted'"

# --- first-boot check of the appliance
out=$(/usr/libexec/secure-ai/first-boot-check.d/integrity-monitor.sh 2>&1)
check "first-boot check: $out" sh -c "echo '$out' | grep -q '^PASS'"

# --- credentials: each in its own unit only
H=$(hasher_unit)
check "hasher instance $H running" test -n "$H"
check "key and token credentials in the hasher unit" sh -c "[ -s /run/credentials/$H/integrity-hmac-key ] && [ -s /run/credentials/$H/service-token ]"
check "the hasher's credentials are the store's key and token" sh -c "cmp -s /run/credentials/$H/integrity-hmac-key $C/integrity-hmac.key && cmp -s /run/credentials/$H/service-token $C/integrity-monitor.token"
check "the api unit holds the reporter token only: no service token, no key" sh -c "cmp -s /run/credentials/$A/incident-reporter-token $C/incident-reporter-integrity-monitor.token && [ \"\$(ls /run/credentials/$A)\" = incident-reporter-token ]"
check "no secret under /run/secure-ai ($(ls /run/secure-ai | tr '\n' ' '))" test -z "$(find /run/secure-ai -type f)"
huid=$(awk '/^Uid:/{print $2}' /proc/$(prop MainPID "$H")/status)
check "the baseline store is the hasher's (uid $huid), 0700, baseline and generation record" sh -c "[ \"\$(stat -L -c '%a %u' /var/lib/secure-ai/integrity)\" = '700 $huid' ] && [ -s /var/lib/secure-ai/integrity/baseline.json ] && [ -s /var/lib/secure-ai/integrity/generation.json ]"
auid=$(awk '/^Uid:/{print $2}' /proc/$(prop MainPID $A)/status)
check "the api runs as another user ($auid) than the store's owner ($huid)" sh -c "[ -n '$auid' ] && [ '$auid' != '$huid' ]"

# --- both processes: dynamic user, no capabilities, no_new_privs, seccomp on every thread, Landlock
walls() { # unit
  local pid; pid=$(prop MainPID "$1")
  [ "${pid:-0}" -gt 0 ] || { echo "no main pid"; return 1; }
  local uid; uid=$(awk '/^Uid:/{print $2}' /proc/$pid/status)
  [ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ] || { echo "uid $uid is not a dynamic user"; return 1; }
  for t in /proc/$pid/task/*; do
    awk '/^(CapInh|CapPrm|CapEff|CapBnd|CapAmb):/ && $2 != "0000000000000000" {bad=1; print} /^NoNewPrivs:/ && $2 != 1 {bad=1; print} /^Seccomp:/ && $2 != 2 {bad=1; print} END{exit bad}' "$t/status" || { echo "thread $t"; return 1; }
  done
  journalctl -b -u "$1" --no-pager -o cat | grep -q 'sandbox installed landlock="FullyEnforced"' || { echo "no Landlock line"; return 1; }
}
check "api walls: $(walls $A 2>&1 | tr '\n' ' ')" walls $A
check "hasher walls: $(walls "$H" 2>&1 | tr '\n' ' ')" walls "$H"

# --- issue #38: the api reaches no Unix socket but its hasher's and systemd's. Each target is
# live, proven from outside the unit in the same run; each probe runs the api's unit as shipped
# (a copy under another name, same dynamic user, Type=oneshot, its ExecStart + --sandbox-probe).
probe_unit() { # ACT ARG -> allowed | errno=N | SIGSYS | other:CODE/STATUS (a unit per call: the start limit)
  local PN; PN=$(( $(cat /tmp/im-probe/n 2>/dev/null || echo 0) + 1 )); echo $PN > /tmp/im-probe/n
  local u=im-probe-$PN.service
  sed -e 's/^Type=notify/Type=oneshot/' -e '/^WatchdogSec=/d' -e '/^ExecReload=/d' -e '/^Restart=/d' \
      -e "/^ExecStart=/s|integrity-monitor-audit.jsonl|probe-$PN.jsonl|" -e "/^ExecStart=/s|\$| --sandbox-probe $1 $2|" \
      -e '/^\[Service\]/a User=secure-ai-integrity-monitor\nRemainAfterExit=yes' /usr/lib/systemd/system/$A > /run/systemd/system/$u
  systemctl daemon-reload; systemctl start $u 2>/dev/null
  local c s e; c=$(prop ExecMainCode $u); s=$(prop ExecMainStatus $u)
  if [ "$c" -ge 2 ] && [ "$s" = 31 ]; then echo SIGSYS
  elif [ "$c" = 1 ] && [ "$s" = 0 ]; then echo allowed
  elif [ "$c" = 1 ] && [ "$s" = 3 ]; then
    for _ in $(seq 20); do e=$(journalctl -b -u $u -o cat --no-pager | grep -o 'errno=[0-9]*' | head -1); [ -n "$e" ] && break; sleep 0.1; done
    echo "${e:-errno=?}"
  else echo "other:$c/$s"; fi
}
# The same probe outside the unit (the container's root, no namespace): walled by the same
# seccomp and Landlock as under --hasher-socket, or unwalled (--insecure-no-sandbox).
probe_here() { # FLAGS ACT ARG
  /usr/libexec/secure-ai/integrity-monitor $1 --policy /root/probe.yaml --audit-log /tmp/im-probe/audit.jsonl \
    --sandbox-probe "$2" "$3" >/tmp/im-probe/out 2>&1; local rc=$?
  case $rc in 0) echo allowed ;; 159) echo SIGSYS ;; 3) grep -o 'errno=[0-9]*' /tmp/im-probe/out | head -1 ;; *) echo "other:$rc" ;; esac
}
install -d /run/im-probe /tmp/im-probe
systemd-socket-activate -a --inetd -l /run/im-probe/stream.sock -l @im-probe-stream /bin/echo reached >/dev/null 2>&1 &
P1=$!
systemd-socket-activate -a --inetd --seqpacket -l /run/im-probe/seqpacket.sock -l @im-probe-seqpacket /bin/sleep 2 >/dev/null 2>&1 &
P2=$!
systemd-socket-activate --datagram -l /run/im-probe/dgram.sock /bin/sh -c 'exec cat <&3 >> /run/im-probe/dgram.got' >/dev/null 2>&1 &
P3=$!
# Under load the listeners, the datagram's reader and the journal lag: each is waited for (5 s).
eventually() { for _ in $(seq 50); do "$@" && return 0; sleep 0.1; done; return 1; }
export -f eventually
eventually test -S /run/im-probe/stream.sock -a -S /run/im-probe/seqpacket.sock -a -S /run/im-probe/dgram.sock
check "#38 targets live from outside: stream by path and abstract (curl), datagram (logger), D-Bus, /dev/log into the journal" bash -c "
  eventually sh -c 'curl -s --http0.9 -m 3 --unix-socket /run/im-probe/stream.sock http://x/ | grep -q reached' &&
  eventually sh -c 'curl -s --http0.9 -m 3 --abstract-unix-socket im-probe-stream http://x/ | grep -q reached' &&
  logger -d -u /run/im-probe/dgram.sock im-probe-outside && eventually grep -q im-probe-outside /run/im-probe/dgram.got &&
  test -S /run/dbus/system_bus_socket && logger -u /dev/log im-probe-devlog &&
  eventually sh -c 'journalctl -b -o cat --no-pager | grep -q im-probe-devlog'"
g=$(probe_here '--hasher-socket /run/im-probe/seqpacket.sock' unix-seqpacket /run/im-probe/seqpacket.sock)
check "#38 control: outside the unit, the same walls under --hasher-socket reach another SEQPACKET socket: the namespace is the wall below ($g)" test "$g" = allowed
g=$(probe_here --insecure-no-sandbox unix-seqpacket @im-probe-seqpacket)
check "#38 control: unwalled, the abstract SEQPACKET socket is reached ($g)" test "$g" = allowed
g=$(probe_unit unix-stream /run/im-probe/stream.sock)
check "#38 in the api's unit: stream to a named socket -> $g" test "$g" = SIGSYS
g=$(probe_unit unix-stream @im-probe-stream)
check "#38 in the api's unit: stream to an abstract socket -> $g" test "$g" = SIGSYS
g=$(probe_unit unix-dgram /run/im-probe/dgram.sock)
check "#38 in the api's unit: datagram to a named socket -> $g" test "$g" = SIGSYS
g=$(probe_unit unix-stream /run/dbus/system_bus_socket)
check "#38 in the api's unit: D-Bus -> $g" test "$g" = SIGSYS
g=$(probe_unit unix-dgram /dev/log)
check "#38 in the api's unit: /dev/log -> $g" test "$g" = SIGSYS
g=$(probe_unit unix-seqpacket /run/im-probe/seqpacket.sock)
check "#38 in the api's unit: SEQPACKET to another named socket -> $g (ENOENT: hidden)" test "$g" = errno=2
g=$(probe_unit unix-seqpacket @im-probe-seqpacket)
check "#38 in the api's unit: SEQPACKET to an abstract socket -> $g (EPERM: Landlock scope)" test "$g" = errno=1
g=$(for p in /run/im-probe/stream.sock /run/dbus/system_bus_socket /dev/log /run/systemd/journal/socket /run/systemd/journal/stdout; do probe_unit stat $p; done | sort -u | tr '\n' ' ')
check "#38 in the api's unit: the other sockets are not there to be seen: $g" test "$g" = "errno=2 "
g=$(probe_unit stat /run/secure-ai/integrity-hasher.sock)$(probe_unit stat /run/systemd/notify)
check "#38 in the api's unit: the hasher's and systemd's sockets are ($g)" test "$g" = allowedallowed
g=$(probe_unit notify-connect /run/systemd/journal/socket)
check "#38 in the api's unit: its notify socket cannot be pointed elsewhere -> $g" test "$g" = SIGSYS
check "#38 nothing the walled probes sent arrived" sh -c "! grep -q '^probe' /run/im-probe/dgram.got"
kill $P1 $P2 $P3 2>/dev/null
systemctl stop 'im-probe-*'; systemctl reset-failed 'im-probe-*'
rm -f /run/systemd/system/im-probe-*.service /var/lib/secure-ai/logs/probe-*; systemctl daemon-reload

# --- a tampered watched binary is seen by the running service, and its restore too
cp /usr/libexec/secure-ai/registry /tmp/registry.orig
printf 'tampered' >> /usr/libexec/secure-ai/registry
for _ in $(seq 50); do [ "$(code /api/v1/verify)" = 503 ] && break; sleep 0.1; done
check "tampered service binary -> 503" test "$(code /api/v1/verify)" = 503
check "violation recorded in the audit log" grep -q '"event":"violation".*"path":"/usr/libexec/secure-ai/registry"' $AUDIT
cat /tmp/registry.orig > /usr/libexec/secure-ai/registry
# A change is proven by its one read, made after the hasher wrote the file's pages back itself
# (sync_file_range on its read-only descriptor, as its DynamicUser on a root-owned file): no
# writeback window to wait out (it was 37 s here: ProcSubset=pid hides /proc/sys).
t_restore=$(date +%s%N)
for _ in $(seq 100); do [ "$(code /api/v1/verify)" = 200 ] && break; sleep 0.1; done
check "restored -> 200 within 10 s, not after the 37 s window ($(( ($(date +%s%N) - t_restore) / 1000000 )) ms)" test "$(code /api/v1/verify)" = 200
check "restored: nothing left pending (unsettled 0)" sh -c "curl -s -m 5 http://127.0.0.1:8510/api/v1/status | jq -e '.last_report.report.unsettled == 0' >/dev/null"
check "the hasher wrote back and read as its DynamicUser, not refused (no 'not proven' in its log)" sh -c "! journalctl -q -u 'secure-ai-integrity-hasher@*' | grep -q 'not proven\\|writeback before a proving read failed'"

# --- the appliance's boot check: passes; a tampered model fails it and reaches the recorder
out=$(health); rc=$?
check "appliance health check (token from its LoadCredential, curl --max-time 30) passes: $out" test $rc = 0
MODEL=/var/lib/secure-ai/vault/models/sd-turbo/unet/weights.bin
cp $MODEL /tmp/weights.orig
printf 'X' | dd of=$MODEL bs=1 seek=100 conv=notrunc status=none
out=$(health); rc=$?
check "a model tampered inside a directory artifact fails the health check: $out" test $rc != 0
check "the violation names the artifact" sh -c "curl -s -m 5 http://127.0.0.1:8510/api/v1/status | jq -e '.active_violations[] | select(.path == \"/var/lib/secure-ai/vault/models/sd-turbo\" and .category == \"model_file\")' >/dev/null"
for _ in $(seq 50); do [ -s /run/im-recorder/accepted.jsonl ] && break; sleep 0.1; done
check "the recorder received the incident with the reporter token" sh -c "jq -e 'select(.source == \"integrity-monitor\" and .class == \"manifest_mismatch\")' /run/im-recorder/accepted.jsonl >/dev/null"
check "the recorder refused nothing ($(cat /run/im-recorder/refused.log 2>/dev/null | tr '\n' ' '))" test ! -e /run/im-recorder/refused.log
cat /tmp/weights.orig > $MODEL
for _ in $(seq 25); do out=$(health); rc=$?; [ $rc = 0 ] && break; sleep 2; done
check "restored: the health check passes again once settled: $out" test $rc = 0

# --- IPAddressDeny= on the listener: a non-loopback peer on the container's own network is refused
# A veth pair inside the container's own network namespace (192.0.2.0/24 is TEST-NET-1): the
# peer address is local, so the packets never leave the namespace.
ip link add im-a type veth peer name im-b && ip addr add 192.0.2.10/32 dev im-a && ip link set im-a up && ip link set im-b up
systemd-socket-activate -l 127.0.0.1:8599 -a --inetd /bin/echo control >/dev/null 2>&1 &
ctl=$!; sleep 0.3
check "control: the same peer reaches a listener without IPAddressDeny=" sh -c "curl -s --http0.9 -m 3 --interface 192.0.2.10 127.0.0.1:8599 | grep -q control"
kill $ctl 2>/dev/null
check "loopback peer reaches the api" test "$(code /health)" = 200
check "non-loopback peer is refused by IPAddressDeny=" test "$(curl -s -o /dev/null -m 3 -w '%{http_code}' --interface 192.0.2.10 http://127.0.0.1:8510/health)" = 000

# --- a killed hasher instance: 503, a new instance, 200, and the system not degraded
kill -9 "$(prop MainPID "$H")"; sleep 0.05
c1=$(code /api/v1/verify)
for _ in $(seq 50); do c2=$(code /api/v1/verify); [ "$c2" = 200 ] && break; sleep 0.2; done
H2=$(hasher_unit)
check "hasher killed: $c1, new instance $H2 reached through the api's namespace, $c2" sh -c "[ $c1 = 503 ] && [ $c2 = 200 ] && [ -n '$H2' ] && [ '$H2' != '$H' ]"
sleep 0.5
check "system not degraded by the killed instance ($(systemctl is-system-running))" test "$(systemctl is-system-running)" = running

# --- systemctl reload reopens the audit log (no kill(1) in this image)
check "no kill(1) in this image" sh -c '[ ! -e /usr/bin/kill ] && [ ! -e /bin/kill ]'
mv $AUDIT $AUDIT.1
check "systemctl reload" systemctl reload $A
for _ in $(seq 30); do [ -s $AUDIT ] && break; sleep 0.1; done
check "reload: new log at the path starts with audit_reopened" sh -c "head -1 $AUDIT | grep -q '\"event\":\"audit_reopened\"'"
check "reload: the chain holds across the rotation" /usr/libexec/secure-ai/integrity-monitor verify-audit $AUDIT.1 $AUDIT

# --- errors reach the journal at their priority
systemd-run --quiet --wait --unit im-nolandlock -p DynamicUser=yes \
  -p SystemCallFilter='~landlock_create_ruleset' -p SystemCallErrorNumber=ENOSYS \
  /usr/libexec/secure-ai/integrity-monitor --policy /etc/secure-ai/policy/integrity-monitor.yaml \
  --listen 127.0.0.1:8598 --state-dir /tmp/im-nl --audit-log /tmp/im-nl/audit.jsonl >/dev/null 2>&1
sleep 0.3
check "journalctl -p err shows 'sandbox could not be installed'" sh -c "journalctl -b -p err --no-pager -o cat -u im-nolandlock | grep -q 'sandbox could not be installed'"
check "journalctl -p err leaves info lines out" sh -c "! journalctl -b -p err --no-pager -o cat -u $A | grep -q 'scan accepted'"
check "info lines are there at -p info" sh -c "journalctl -b -p info --no-pager -o cat -u $A | grep -q 'scan accepted'"

# --- the watchdog (WatchdogSec=30s) keeps the api alive for 65 s without a restart
pid=$(prop MainPID $A)
left=$(( 65 - ($(date +%s) - T0) )); [ $left -gt 0 ] && sleep $left
check "watchdog: no restart in $(( $(date +%s) - T0 )) s" sh -c "[ '$(prop NRestarts $A)' = 0 ] && [ '$(prop MainPID $A)' = '$pid' ]"

# --- a clean stop: exit 0 and a stop record
systemctl stop $A
check "clean stop (Result=$(prop Result $A) status=$(prop ExecMainStatus $A))" sh -c "[ '$(prop Result $A)' = success ] && [ '$(prop ExecMainStatus $A)' = 0 ]"
check "stop record last in the audit log" sh -c "tail -1 $AUDIT | grep -q '\"event\":\"stop\"'"

# --- first boot as the appliance runs it: the Go service's flag, configured by the environment
systemctl stop secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
rm -rf /var/lib/private/secure-ai/integrity /var/lib/secure-ai/integrity
# The store emptied under a log that recorded a baseline: a rollback, not a first boot.
env MONITOR_POLICY_PATH=/etc/secure-ai/policy/integrity-monitor.yaml BIND_ADDR=127.0.0.1:8597 \
  AUDIT_LOG_PATH=$AUDIT BASELINE_PATH=/var/lib/secure-ai/integrity/baseline.json \
  /usr/libexec/secure-ai/integrity-monitor --initialize-baseline >/tmp/firstboot.log 2>&1; rc=$?
check "an emptied store under the old audit log is refused, not initialised (rc=$rc)" sh -c "[ $rc != 0 ] && tail -5 $AUDIT | grep -q rollback"
rm -rf /var/lib/private/secure-ai/integrity /var/lib/secure-ai/integrity
# A real first boot has no audit log yet, nor a rotated one, nor the api's memory record.
mkdir -p /tmp/before-firstboot
mv $AUDIT $AUDIT.[0-9]* ${AUDIT%.jsonl}.adopted.json /tmp/before-firstboot/
# As root, with no key or token path given: the credential store is where they are found.
env MONITOR_POLICY_PATH=/etc/secure-ai/policy/integrity-monitor.yaml BIND_ADDR=127.0.0.1:8597 \
  AUDIT_LOG_PATH=$AUDIT BASELINE_PATH=/var/lib/secure-ai/integrity/baseline.json \
  /usr/libexec/secure-ai/integrity-monitor --initialize-baseline >/tmp/firstboot.log 2>&1; rc=$?
check "firstboot: integrity-monitor --initialize-baseline exits 0 ($(tail -1 /tmp/firstboot.log | cut -c1-120))" test $rc = 0
check "firstboot: a signed baseline of generation 1 is stored" sh -c "grep -q '\"generation\":1' /var/lib/secure-ai/integrity/baseline.json && [ -s /var/lib/secure-ai/integrity/generation.json ]"
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
for _ in $(seq 100); do [ "$(code /api/v1/verify 30)" = 200 ] && break; sleep 0.2; done
check "the service adopts the firstboot baseline (its store moved to the hasher's user) and is trusted" sh -c "[ '$(code /api/v1/verify)' = 200 ] && tail -20 $AUDIT | grep -q '\"event\":\"baseline_loaded\"'"
check "check-config passes the appliance's policy with its credentials" /usr/libexec/secure-ai/integrity-monitor check-config --policy /etc/secure-ai/policy/integrity-monitor.yaml
systemctl stop secure-ai-integrity-monitor.socket $A secure-ai-integrity-hasher.socket

# --- the operations guide's older layout, by the drop-in docs/replacing-go.md shows: /run/secure-ai
# secrets, the token group-readable (0640) as the guide's rotation leaves it
install -d -m0755 /run/secure-ai
(umask 077; cp $C/integrity-hmac.key /run/secure-ai/integrity-hmac-key
 od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > /run/secure-ai/service-token; echo >> /run/secure-ai/service-token)
chmod 0640 /run/secure-ai/service-token
install -d /etc/systemd/system/secure-ai-integrity-hasher@.service.d
sed -n '/^# BEGIN legacy-run-secure-ai.conf/,/^# END/p' /root/replacing-go.md | sed '1d;$d' \
  > /etc/systemd/system/secure-ai-integrity-hasher@.service.d/legacy-run-secure-ai.conf
systemctl daemon-reload
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
LT=$(tr -d '[:space:]' < /run/secure-ai/service-token)
lc=$(curl -s -o /dev/null -m 30 -w '%{http_code}' -X POST -H "Authorization: Bearer $LT" http://127.0.0.1:8510/api/v1/scan)
check "legacy drop-in ($(wc -l < /etc/systemd/system/secure-ai-integrity-hasher@.service.d/legacy-run-secure-ai.conf) lines): the /run/secure-ai token (0640) authorises a scan ($lc)" test "$lc" = 200
sc=$(curl -s -o /dev/null -m 30 -w '%{http_code}' -X POST -H "Authorization: Bearer $(tr -d '[:space:]' < $C/integrity-monitor.token)" http://127.0.0.1:8510/api/v1/scan)
check "legacy drop-in: the store's token no longer does ($sc)" test "$sc" = 403
check "legacy drop-in: trusted with the /run/secure-ai key" test "$(code /api/v1/verify)" = 200
systemctl stop secure-ai-integrity-monitor.socket $A secure-ai-integrity-hasher.socket
rm -rf /etc/systemd/system/secure-ai-integrity-hasher@.service.d /run/secure-ai/integrity-hmac-key /run/secure-ai/service-token
systemctl daemon-reload

# --- a credential the store lacks: the units still start, and the journal says in one line what is missing
mv $C/integrity-monitor.token /tmp/token.away
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
mc=$(code /api/v1/verify 30)
mp=$(curl -s -o /dev/null -m 30 -w '%{http_code}' -X POST -H "Authorization: Bearer x" http://127.0.0.1:8510/api/v1/scan)
check "token missing from the store: verify $mc, POST /scan closed ($mp)" sh -c "[ '$mc' = 200 ] && [ '$mp' = 503 ]"
check "token missing: the journal names the file" sh -c "journalctl -b -p err --no-pager -o cat -u 'secure-ai-integrity-hasher@*' | grep -q 'credentials/integrity-monitor.token was not there'"
systemctl stop secure-ai-integrity-monitor.socket $A secure-ai-integrity-hasher.socket
mv /tmp/token.away $C/integrity-monitor.token
mv $C/integrity-hmac.key /tmp/key.away
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
kc=$(code /api/v1/verify 30)
check "key missing from the store: not trusted ($kc)" test "$kc" = 503
check "key missing: the journal names the file" sh -c "journalctl -b -p err --no-pager -o cat -u 'secure-ai-integrity-hasher@*' | grep -q 'credentials/integrity-hmac.key was not there'"
systemctl stop secure-ai-integrity-monitor.socket $A secure-ai-integrity-hasher.socket
mv /tmp/key.away $C/integrity-hmac.key

# --- recovery: a whole store rolled back, then a key change: each stays up in
# recovery_required (no restart, no start-limit) and the ceremony recovers it above every
# generation seen
S=/var/lib/private/secure-ai/integrity
st() { curl -s -m 30 http://127.0.0.1:8510/api/v1/status | jq -r "$1"; }
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
for _ in $(seq 100); do [ "$(code /api/v1/verify 30)" = 200 ] && break; sleep 0.2; done
rm -rf /tmp/store.old; mkdir /tmp/store.old; cp -a $S/. /tmp/store.old/
printf 'an update' >> /usr/libexec/secure-ai/registry
out=$(/usr/libexec/secure-ai/integrity-monitor rebaseline --yes --key $C/integrity-hmac.key </dev/null 2>&1); rc=$?
g2=$(st .baseline.generation)
check "the ceremony blesses an update (rc=$rc, generation $g2)" sh -c "[ $rc = 0 ] && [ '$g2' -ge 2 ]"
systemctl stop secure-ai-integrity-monitor.socket $A secure-ai-integrity-hasher.socket
find $S -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} +
cp -a /tmp/store.old/. $S/
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
rc1=$(code /api/v1/verify 30)
bp=$(st .baseline_problem); rb=no; case "$bp" in rollback*) rb=yes ;; esac
check "a whole store rolled back: $rc1, $(st .state), ${bp:0:60}" sh -c "[ $rc1 = 503 ] && [ '$(st .state)' = recovery_required ] && [ $rb = yes ]"
pid=$(prop MainPID $A); sleep 60
check "rolled back: still active a minute later, no restart (NRestarts=$(prop NRestarts $A)), scans go on ($(st .scan_count))" sh -c "[ '$(prop ActiveState $A)' = active ] && [ '$(prop NRestarts $A)' = 0 ] && [ '$(prop MainPID $A)' = '$pid' ] && [ '$(st .hasher)' = up ] && [ '$(st .state)' = recovery_required ] && [ '$(code /api/v1/verify)' = 503 ]"
out=$(/usr/libexec/secure-ai/integrity-monitor rebaseline --yes --key $C/integrity-hmac.key </dev/null 2>&1); rc=$?
g3=$(st .baseline.generation)
check "rolled back: the ceremony recovers it (rc=$rc) at generation $g3 > $g2, trusted" sh -c "[ $rc = 0 ] && [ '$g3' -gt '$g2' ] && [ '$(st .state)' = trusted ] && [ '$(code /api/v1/verify)' = 200 ]"
systemctl stop secure-ai-integrity-monitor.socket $A secure-ai-integrity-hasher.socket
cp $C/integrity-hmac.key /tmp/key.before
(umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > $C/integrity-hmac.key; echo >> $C/integrity-hmac.key)
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
rc1=$(code /api/v1/verify 30); pid=$(prop MainPID $A); sleep 20
check "a new key: $rc1, stays up in $(st .state) comparing with the $(st .reference.store) store (NRestarts=$(prop NRestarts $A))" sh -c "[ $rc1 = 503 ] && [ '$(st .state)' = recovery_required ] && [ '$(st .reference.store)' = unverified ] && [ '$(prop NRestarts $A)' = 0 ] && [ '$(prop MainPID $A)' = '$pid' ]"
out=$(/usr/libexec/secure-ai/integrity-monitor rebaseline --yes --key $C/integrity-hmac.key </dev/null 2>&1); rc=$?
g4=$(st .baseline.generation)
check "a new key: the ceremony with it recovers (rc=$rc) at generation $g4 > $g3, trusted" sh -c "[ $rc = 0 ] && [ '$g4' -gt '$g3' ] && [ '$(st .state)' = trusted ] && [ '$(code /api/v1/verify)' = 200 ]"
systemctl stop secure-ai-integrity-monitor.socket $A secure-ai-integrity-hasher.socket

# --- an OS update: the image ships its release baseline; the next boot's health check passes
# with no person there, and fails when a binary was tampered beyond the release
REL=/usr/share/secure-ai/integrity/release-baseline.json
REG=/usr/libexec/secure-ai/registry
release() { # COMMIT: the release file listing the registry binary as it is now
  install -d /usr/share/secure-ai/integrity
  printf '{"version":1,"source_commit":"%s","files":[{"path":"%s","sha256":"%s","size":%s}]}\n' \
    "$1" $REG "$(sha256sum < $REG | cut -d' ' -f1)" "$(stat -c %s $REG)" > $REL; }
booted() { printf '{"timestamp":"%s","status":"pass","warnings":[],"checks":{"ostree_signature":{"state":"valid","commit":"c","image_ref":"r","detail":""}}}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)" > /var/lib/secure-ai/logs/boot-verify-last.json; }
release A; booted
echo "release_baseline: $REL" >> /etc/secure-ai/policy/integrity-monitor.yaml
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
code /api/v1/verify 30 >/dev/null
out=$(/usr/libexec/secure-ai/integrity-monitor rebaseline --yes --key $C/integrity-hmac.key </dev/null 2>&1); rc=$?
check "the policy naming the release, blessed by the ceremony (rc=$rc): release $(st .release.in_force) in force" sh -c "[ $rc = 0 ] && [ '$(st .release.in_force)' = A ]"
g5=$(st .baseline.generation)
systemctl stop secure-ai-integrity-monitor.socket $A secure-ai-integrity-hasher.socket
printf '#!/bin/sh\necho registry B\n' > $REG; release B; booted
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
out=$(health); rc=$?
check "after the update to B the health check passes on its own: $out" test $rc = 0
check "release B in force at generation $(st .baseline.generation) > $g5, the transition audited" sh -c "[ '$(st .release.in_force)' = B ] && [ '$(st .baseline.generation)' -gt '$g5' ] && grep -q '\"event\":\"release_transition\".*\"from\":\"A\".*\"to\":\"B\"' $AUDIT"
systemctl stop secure-ai-integrity-monitor.socket $A secure-ai-integrity-hasher.socket
printf '#!/bin/sh\necho registry C\n' > $REG; release C; booted
printf 'print("tampered")\n' > /usr/libexec/secure-ai/secure-tpm-attestation.py
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
out=$(health); rc=$?
check "an update to C with a binary tampered beyond it fails the health check: $out" test $rc != 0
check "the violation names the tampered binary, not C's own" sh -c "curl -s -m 5 http://127.0.0.1:8510/api/v1/status | jq -e '[.active_violations[].path] | index(\"/usr/libexec/secure-ai/secure-tpm-attestation.py\") != null and index(\"$REG\") == null' >/dev/null"
systemctl stop secure-ai-integrity-monitor.socket $A secure-ai-integrity-hasher.socket
kill $RECORDER 2>/dev/null

echo "--- warnings and errors of the run"
journalctl -b --no-pager -o short-monotonic -u 'secure-ai-*' -p warning | grep -v 'incident report' | tail -15
exit $fail
