#!/bin/bash
# greenboot required check (/etc/greenboot/check/required.d/01-integrity-monitor.sh):
# force a scan with the service token, then require /api/v1/verify to answer 2xx, a signed
# baseline, and (with the key at hand) a clean attestation from the hasher.
# A non-zero exit fails the boot and greenboot rolls the deployment back.
# INTEGRITY_MONITOR_ALLOW_UNSIGNED=1 lets an appliance without an HMAC key pass (not advised).
set -euo pipefail
url="${INTEGRITY_MONITOR_URL:-http://127.0.0.1:8510}"
# The appliance's credential store first (or the LoadCredential= copy a unit points
# INTEGRITY_MONITOR_TOKEN_PATH at, as the appliance's health check unit does); the operations
# guide's /run/secure-ai files as the fallback.
first() { for f in "$@"; do [ -e "$f" ] && { echo "$f"; return; }; done; echo "$1"; }
token_file="${INTEGRITY_MONITOR_TOKEN_FILE:-${INTEGRITY_MONITOR_TOKEN_PATH:-$(first \
    /var/lib/secure-ai/credentials/integrity-monitor.token /run/secure-ai/service-token)}}"
key_file="${INTEGRITY_MONITOR_KEY_FILE:-$(first \
    /var/lib/secure-ai/credentials/integrity-hmac.key /run/secure-ai/integrity-hmac-key)}"
monitor="${INTEGRITY_MONITOR_BIN:-/usr/libexec/secure-ai/integrity-monitor}"

if [ ! -r "$token_file" ]; then
    echo "integrity-monitor: token file $token_file is not readable" >&2
    exit 1
fi
# The header comes from a here-string, so the token never shows on a command line. Every
# request carries it: with require_token_for_reads the GETs need it too.
auth() { printf 'Authorization: Bearer %s' "$(tr -d '[:space:]' <"$token_file")"; }
if ! curl -sf --max-time "${INTEGRITY_MONITOR_SCAN_TIMEOUT:-300}" -X POST \
        -H @- "$url/api/v1/scan" >/dev/null <<<"$(auth)"; then
    echo "integrity-monitor: forced scan failed" >&2
    exit 1
fi
# With the key at hand, rely on the hasher's signed word, not the api's: a fresh nonce, an HMAC
# only the hasher can make, and no violation in its latest scan.
if [ -r "$key_file" ] && [ -x "$monitor" ]; then
    nonce=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    if ! curl -sf --max-time 60 -H @- "$url/api/v1/attestation?nonce=$nonce" <<<"$(auth)" \
            | "$monitor" verify-attestation --key "$key_file" --nonce "$nonce" --max-age 300 --require-clean; then
        echo "integrity-monitor: not trusted: attestation failed" >&2
        exit 1
    fi
fi
if ! body=$(curl -sf --max-time 10 -H @- "$url/api/v1/verify" <<<"$(auth)"); then
    echo "integrity-monitor: not trusted: $(curl -s --max-time 10 -H @- "$url/api/v1/verify" <<<"$(auth)")" >&2
    exit 1
fi
# A baseline anyone could have written is no boot evidence.
status=$(curl -sf --max-time 10 -H @- "$url/api/v1/status" <<<"$(auth)") || status=
if [[ "$status" != *'"signing":"hmac-sha256"'* ]] && [ "${INTEGRITY_MONITOR_ALLOW_UNSIGNED:-0}" != 1 ]; then
    echo "integrity-monitor: not trusted: the baseline is unsigned (no HMAC key); set INTEGRITY_MONITOR_ALLOW_UNSIGNED=1 to accept that" >&2
    exit 1
fi
echo "integrity-monitor: $body"
