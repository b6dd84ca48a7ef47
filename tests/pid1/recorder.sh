#!/bin/bash
# A stand-in for the appliance's incident recorder on 127.0.0.1:8515, one connection per run
# (systemd-socket-activate --inetd): it demands the monitor's reporter token, as the real one
# does, records what it accepts in /run/im-recorder/accepted.jsonl and the Authorization header
# of what it refuses in refused.log.
set -u
want="Bearer $(tr -d '[:space:]' < /var/lib/secure-ai/credentials/incident-reporter-integrity-monitor.token)"
auth="(none)"; len=0
while IFS= read -r line; do
  line=${line%$'\r'}
  [ -z "$line" ] && break
  case "${line,,}" in
    authorization:*) auth=${line#*: } ;;
    content-length:*) len=${line#*: } ;;
  esac
done
body=$(head -c "$len")
mkdir -p /run/im-recorder
if [ "$auth" = "$want" ]; then
  printf '%s\n' "$body" >> /run/im-recorder/accepted.jsonl
  printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}'
else
  printf '%s\n' "$auth" >> /run/im-recorder/refused.log
  printf 'HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
fi
