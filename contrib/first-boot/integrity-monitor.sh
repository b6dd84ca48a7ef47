#!/bin/bash
# first-boot-check snippet: "integrity monitor baseline established" means the state is
# trusted and the baseline is HMAC-signed (not "unsigned"). Sends the service token when it can
# read it, so it works with require_token_for_reads too.
set -euo pipefail
url="${INTEGRITY_MONITOR_URL:-http://127.0.0.1:8510}"
token_file="${INTEGRITY_MONITOR_TOKEN_FILE:-/run/secure-ai/service-token}"
header=
if [ -r "$token_file" ]; then
    header="Authorization: Bearer $(tr -d '[:space:]' <"$token_file")"
fi
status=$(curl -sf --max-time 10 -H @- "$url/api/v1/status" <<<"$header") || { echo "FAIL integrity monitor unreachable"; exit 1; }
state=$(jq -r '.state' <<<"$status")
signed=$(jq -r '.baseline.signed // false' <<<"$status")
if [ "$state" = trusted ] && [ "$signed" = true ]; then
    echo "PASS integrity monitor baseline established (trusted, signed)"
else
    echo "FAIL integrity monitor baseline: state=$state signed=$signed"
    exit 1
fi
