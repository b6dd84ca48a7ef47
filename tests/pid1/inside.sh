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
install -d -m0755 /run/secure-ai   # 0755: the api (a dynamic user) must reach the socket in it
(umask 077; head -c 32 /dev/urandom > /run/secure-ai/integrity-hmac-key
 echo "pid1-token-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" > /run/secure-ai/service-token)
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
check "Type=notify READY (active) with STATUS '$st'" sh -c "[ '$(prop ActiveState $A)' = active ] && echo '$st' | grep -q 'state=trusted'"

# --- first-boot check of the appliance
out=$(/usr/libexec/secure-ai/first-boot-check.d/integrity-monitor.sh 2>&1)
check "first-boot check: $out" sh -c "echo '$out' | grep -q '^PASS'"

# --- credentials: each in its own unit only
H=$(hasher_unit)
check "hasher instance $H running" test -n "$H"
check "key and token credentials in the hasher unit" sh -c "[ -s /run/credentials/$H/integrity-hmac-key ] && [ -s /run/credentials/$H/service-token ]"
check "no credential at all in the api unit" sh -c "[ ! -e /run/credentials/$A/service-token ] && [ ! -e /run/credentials/$A/integrity-hmac-key ]"
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

# --- a tampered watched binary is seen by the running service, and its restore too
T=$(cat /run/secure-ai/service-token)
cp /usr/libexec/secure-ai/registry /tmp/registry.orig
printf 'tampered' >> /usr/libexec/secure-ai/registry
for _ in $(seq 50); do [ "$(code /api/v1/verify)" = 503 ] && break; sleep 0.1; done
check "tampered service binary -> 503" test "$(code /api/v1/verify)" = 503
check "violation recorded in the audit log" grep -q '"event":"violation".*"path":"/usr/libexec/secure-ai/registry"' $AUDIT
cat /tmp/registry.orig > /usr/libexec/secure-ai/registry
for _ in $(seq 50); do [ "$(code /api/v1/verify)" = 200 ] && break; sleep 0.1; done
check "restored -> 200" test "$(code /api/v1/verify)" = 200

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
check "hasher killed: $c1, new instance $H2, $c2" sh -c "[ $c1 = 503 ] && [ $c2 = 200 ] && [ -n '$H2' ] && [ '$H2' != '$H' ]"
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
env MONITOR_POLICY_PATH=/etc/secure-ai/policy/integrity-monitor.yaml BIND_ADDR=127.0.0.1:8597 \
  AUDIT_LOG_PATH=$AUDIT SERVICE_TOKEN_PATH=/run/secure-ai/service-token \
  HMAC_KEY_PATH=/run/secure-ai/integrity-hmac-key BASELINE_PATH=/var/lib/secure-ai/integrity/baseline.json \
  /usr/libexec/secure-ai/integrity-monitor --initialize-baseline >/tmp/firstboot.log 2>&1; rc=$?
check "firstboot: integrity-monitor --initialize-baseline exits 0 ($(tail -1 /tmp/firstboot.log | cut -c1-120))" test $rc = 0
check "firstboot: a signed baseline of generation 1 is stored" sh -c "grep -q '\"generation\":1' /var/lib/secure-ai/integrity/baseline.json && [ -s /var/lib/secure-ai/integrity/generation.json ]"
systemctl start secure-ai-integrity-monitor.socket secure-ai-integrity-hasher.socket
for _ in $(seq 100); do [ "$(code /api/v1/verify 30)" = 200 ] && break; sleep 0.2; done
check "the service adopts the firstboot baseline (its store moved to the hasher's user) and is trusted" sh -c "[ '$(code /api/v1/verify)' = 200 ] && tail -20 $AUDIT | grep -q '\"event\":\"baseline_loaded\"'"
systemctl stop secure-ai-integrity-monitor.socket $A secure-ai-integrity-hasher.socket

echo "--- warnings and errors of the run"
journalctl -b --no-pager -o short-monotonic -u 'secure-ai-*' -p warning | grep -v 'incident report' | tail -15
exit $fail
