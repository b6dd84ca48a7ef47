#!/bin/bash
# first-boot-check snippet: "integrity monitor baseline established" means the state is
# trusted and the baseline is HMAC-signed (not "unsigned").
set -euo pipefail
url="${INTEGRITY_MONITOR_URL:-http://127.0.0.1:8510}"
status=$(curl -sf --max-time 10 "$url/api/v1/status") || { echo "FAIL integrity monitor unreachable"; exit 1; }
state=$(jq -r '.state' <<<"$status")
signed=$(jq -r '.baseline.signed // false' <<<"$status")
if [ "$state" = trusted ] && [ "$signed" = true ]; then
    echo "PASS integrity monitor baseline established (trusted, signed)"
else
    echo "FAIL integrity monitor baseline: state=$state signed=$signed"
    exit 1
fi
