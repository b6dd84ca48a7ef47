#!/bin/bash
# greenboot required check (/etc/greenboot/check/required.d/01-integrity-monitor.sh):
# force a scan with the service token, then require /api/v1/verify to answer 2xx.
# A non-zero exit fails the boot and greenboot rolls the deployment back.
set -euo pipefail
url="${INTEGRITY_MONITOR_URL:-http://127.0.0.1:8510}"
token_file="${INTEGRITY_MONITOR_TOKEN_FILE:-/run/secure-ai/service-token}"

if [ ! -r "$token_file" ]; then
    echo "integrity-monitor: token file $token_file is not readable" >&2
    exit 1
fi
# The header comes from a here-string, so the token never shows on a command line.
if ! curl -sf --max-time "${INTEGRITY_MONITOR_SCAN_TIMEOUT:-300}" -X POST \
        -H @- "$url/api/v1/scan" >/dev/null <<<"Authorization: Bearer $(tr -d '[:space:]' <"$token_file")"; then
    echo "integrity-monitor: forced scan failed" >&2
    exit 1
fi
if ! body=$(curl -sf --max-time 10 "$url/api/v1/verify"); then
    echo "integrity-monitor: not trusted: $(curl -s --max-time 10 "$url/api/v1/verify")" >&2
    exit 1
fi
echo "integrity-monitor: $body"
