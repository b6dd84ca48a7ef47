#!/bin/sh
# A fleet verifier's check of one appliance, with its public key only (never its HMAC key):
# a fresh nonce, a signed attestation fetched through whatever reaches the appliance's
# loopback (FETCH, default `ssh HOST`; MONITOR_URL, default http://127.0.0.1:8510), checked by
# `integrity-monitor verify-attestation` (VERIFY: its path, default from PATH).
#
#   contrib/fleet/check-appliance.sh HOST KEYS_DIR [verify-attestation options…]
#   e.g. check-appliance.sh appliance-01 /etc/fleet/keys --require-clean --min-generation 3
#
# KEYS_DIR/HOST.pub is the appliance's `integrity-monitor public-key --key …` output, taken
# once at enrolment. Exit 0: trusted and fresh; 1: anything else (printed on stderr).
set -eu
host=$1; keys=$2; shift 2
nonce=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
${FETCH:-ssh "$host"} "curl -s --max-time 30 ${MONITOR_URL:-http://127.0.0.1:8510}/api/v1/attestation?nonce=$nonce" |
  ${VERIFY:-integrity-monitor} verify-attestation --public-key "$keys/$host.pub" --nonce "$nonce" "$@"
