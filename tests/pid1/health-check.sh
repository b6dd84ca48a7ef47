#!/usr/bin/env bash
# The appliance's post-update health check (SecAI_OS 01-secure-ai-health.sh), its
# integrity-monitor part written to the same shape: the token from a LoadCredential= copy
# (INTEGRITY_MONITOR_TOKEN_PATH=%d/...), checked to be a regular file with one link and 64
# lower-case hex digits, sent from a curl config on stdin (never on a command line), each
# request with --max-time 30 --max-filesize 1048576. Any failure fails the boot.
set -euo pipefail
INTEGRITY_MONITOR_TOKEN_PATH="${INTEGRITY_MONITOR_TOKEN_PATH:-/var/lib/secure-ai/credentials/integrity-monitor.token}"
fail() { echo "[health-check] FAIL: $*"; exit 1; }
credential_request() {
    local token_path="$1" method="$2" url="$3" token
    if [ ! -f "$token_path" ] || [ -L "$token_path" ] || [ ! -s "$token_path" ] || \
       [ "$(stat -c '%h' -- "$token_path" 2>/dev/null)" != "1" ]; then
        return 1
    fi
    IFS= read -r token < "$token_path"
    [[ "$token" =~ ^[0-9a-f]{64}$ ]] || return 1
    printf 'header = "Authorization: Bearer %s"\n' "$token" |
        curl --config - --fail --silent --show-error --max-time 30 \
            --max-filesize 1048576 \
            --request "$method" "$url"
}
credential_request "$INTEGRITY_MONITOR_TOKEN_PATH" POST \
    "http://127.0.0.1:8510/api/v1/scan" >/dev/null || fail "continuous integrity scan failed"
credential_request "$INTEGRITY_MONITOR_TOKEN_PATH" GET \
    "http://127.0.0.1:8510/api/v1/verify" >/dev/null || fail "continuous integrity state is not trusted"
echo "[health-check] continuous integrity: verified"
