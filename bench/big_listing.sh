#!/usr/bin/env bash
# Idle poll of one huge mailbox (default 1,000,000 messages) from bench/big_listing.py, a scripted
# POP3 server that only lists: `state baseline` records the listing as delivered, then a timed
# `once` finds nothing new. Prints wall, CPU and peak RSS, and the same for N/10 messages, so
# memory can be seen to follow the listing.
# Usage: bench/big_listing.sh [N]   (BIN=path/to/popbridge to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/popbridge
fi
WORK=$(mktemp -d /tmp/popbridge-big.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $((N / 10)) "$N"; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    python3 bench/big_listing.py "$port" "$n" &
    PIDS+=($!)
    sleep 2
    run=$WORK/$n
    mkdir -p "$run"
    cat >"$run/c.yaml" <<YAML
state: { path: ./state/popbridge.db }
mailboxes:
  - name: big
    pop3: { host: 127.0.0.1, port: $port, tls: none, allow_plaintext_auth: true, username: u, password: p, timeout: 300s }
    schedule: { every: 60s }
    delete: never
    sinks: [archive]
sinks: [ { name: archive, type: maildir, path: "./mail/{mailbox}" } ]
YAML
    (cd "$run" && "$BIN" state baseline -c c.yaml --mailbox big >/dev/null)
    for i in 1 2 3; do
        (cd "$run" && /usr/bin/time -f '%e %U %S %M' -o time.$i "$BIN" once -c c.yaml >/dev/null 2>&1)
    done
    sort -n "$run"/time.* | sed -n 2p | awk -v n="$n" \
        '{ printf "| %d messages, idle poll | %s s | %.2f s | %.1f MB |\n", n, $1, $2 + $3, $4 / 1024 }'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
