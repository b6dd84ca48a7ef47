#!/bin/bash
# first-boot-check snippet: "integrity monitor baseline established" means the state is
# trusted and the baseline is HMAC-signed (not "unsigned"). Sends the service token when it can
# read it, so it works with require_token_for_reads too.
set -euo pipefail
url="${INTEGRITY_MONITOR_URL:-http://127.0.0.1:8510}"
first() { for f in "$@"; do [ -e "$f" ] && { echo "$f"; return; }; done; echo "$1"; }
token_file="${INTEGRITY_MONITOR_TOKEN_FILE:-${INTEGRITY_MONITOR_TOKEN_PATH:-$(first \
    /var/lib/secure-ai/credentials/integrity-monitor.token /run/secure-ai/service-token)}}"
header=
if [ -r "$token_file" ]; then
    header="Authorization: Bearer $(tr -d '[:space:]' <"$token_file")"
fi
# The appliance's first-boot check gives the status read 5 s.
status=$(curl -sf --max-time 5 -H @- "$url/api/v1/status" <<<"$header") || { echo "FAIL integrity monitor unreachable"; exit 1; }
state=$(jq -r '.state' <<<"$status")
signed=$(jq -r '.baseline.signed // false' <<<"$status")
if [ "$state" = trusted ] && [ "$signed" = true ]; then
    echo "PASS integrity monitor baseline established (trusted, signed)"
else
    echo "FAIL integrity monitor baseline: state=$state signed=$signed"
    exit 1
fi
