#!/usr/bin/env bash
# Routing rules decided from headers (`TOP n 0`) behind a slow link: one mailbox of N new
# messages (default 200) on a private Dovecot, reached through bench/delay_proxy.py (+50 ms
# RTT), with rules that match none of them and `unmatched: keep`, so a poll sends only TOPs (no
# RETR). The wall time of `once` is then the TOPs' round trips: one per message when they go
# one at a time, about one per window when pipelined. Medians of 3.
# Usage: bench/route_top.sh [N]   (as root; BIN=path/to/popbridge to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/popbridge
fi
# shellcheck source=scripts/lib/dovecot.sh
source scripts/lib/dovecot.sh
WORK=$(mktemp -d /tmp/popbridge-routetop.XXXXXX)
PROXY=
cleanup() {
    if [ -n "$PROXY" ]; then kill "$PROXY" 2>/dev/null || true; fi
    dc_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
dc_start
maildir=$(dc_add_user route1 routepass)
dc_seed "$maildir" "$N" 2048 route1 >/dev/null
sleep 1.1
read -r port _ < <(dc_free_ports)
python3 bench/delay_proxy.py "$port" "$DC_POP3_PORT" 50 &
PROXY=$!
sleep 0.5
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in 1 2 3; do
    run=$WORK/$i
    mkdir -p "$run"
    cat >"$run/c.yaml" <<YAML
state: { path: ./state/popbridge.db }
mailboxes:
  - name: route1
    pop3: { host: 127.0.0.1, port: $port, tls: none, allow_plaintext_auth: true, username: route1, password: routepass, timeout: 120s }
    schedule: { every: 60s }
    delete: never
    sinks: [archive]
    routes:
      unmatched: keep
      rules:
        - name: never
          match: { headers: { X-Bench-Never: '^yes$' } }
          to: [{ sink: archive }]
sinks: [ { name: archive, type: maildir, path: "./mail/{mailbox}" } ]
YAML
    (cd "$run" && /usr/bin/time -f '%e %U %S %M' -o time "$BIN" once -c c.yaml >out 2>&1) || true
    grep -q "kept on the server" "$run/out" || { tail "$run/out"; exit 1; }
    cat "$run/time"
done | sort -n | sed -n 2p | awk -v n="$N" \
    '{ printf "| %d new messages, rules on headers, +50 ms RTT | %s s | %.2f s | %.1f MB |\n", n, $1, $2 + $3, $4 / 1024 }'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
