#!/usr/bin/env bash
# Checks that every configuration key of both services is documented in deploy/README.md
# with its environment variable and default, that the guide documents no key the code
# lacks, and that the Kubernetes and image config files and environment variables use
# only real keys.
#
#   bash deploy/check-config-keys.sh                 # cargo run -q -p <svc> -- config keys
#   bash deploy/check-config-keys.sh BIN_DIR         # use BIN_DIR/<svc> (e.g. target/release)
#
# Needs only python3 (3.11+, for tomllib) and cargo. Exits non-zero on any difference.
set -euo pipefail

DEPLOY="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$DEPLOY")"
BIN_DIR="${1:-}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
status=0

for svc in population-registry civil-registry; do
    echo "--- $svc"
    keys="$WORK/$svc.keys"
    if [ -n "$BIN_DIR" ]; then
        "$BIN_DIR/$svc" config keys >"$keys"
    else
        (cd "$ROOT" && cargo run -q -p "$svc" -- config keys) >"$keys"
    fi
    python3 "$DEPLOY/lib/config_keys.py" "$svc" "$keys" || status=1
done
exit "$status"
