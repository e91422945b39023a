#!/usr/bin/env bash
# What a configured-but-idle mailbox costs in `popbridge run`: N mailboxes (default 10 and
# 10,000) whose server refuses connections, one Maildir sink. The daemon polls each once at start
# (each poll fails at connect); once every mailbox has reported its failed poll, the resident
# set (VmRSS) and its peak (VmHWM) are read from /proc, and the daemon is stopped with SIGTERM.
# Prints one row per N and the cost per mailbox between the smallest and the largest N.
# Usage: bench/idle_fleet.sh [N...]   (BIN=path/to/popbridge to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a COUNTS <<<"${*:-10 10000}"
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/popbridge
fi
WORK=$(mktemp -d /tmp/popbridge-idle.XXXXXX)
DAEMON=
cleanup() {
    if [ -n "$DAEMON" ]; then kill "$DAEMON" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| mailboxes | RSS after the first round MB | peak RSS MB |"
echo "|---|---|---|"
first_n='' first_rss=''
for n in "${COUNTS[@]}"; do
    run=$WORK/$n
    mkdir -p "$run"
    # Nothing listens on this port (bound and released): every connect is refused at once.
    closed=$(free_port)
    {
        echo "state: { path: ./state/popbridge.db }"
        echo "http: { listen: \"127.0.0.1:$(free_port)\" }"
        echo "mailboxes:"
        for i in $(seq "$n"); do
            cat <<YAML
  - name: m$i
    pop3: { host: 127.0.0.1, port: $closed, tls: none, allow_plaintext_auth: true, username: user$i, password: secret$i, timeout: 30s }
    schedule: { every: 3600s }
    delete: never
    sinks: [archive]
YAML
        done
        echo 'sinks: [ { name: archive, type: maildir, path: "./mail/{mailbox}" } ]'
    } >"$run/c.yaml"
    : >"$run/log"
    (cd "$run" && exec "$BIN" run -c c.yaml >"$run/log" 2>&1) &
    DAEMON=$!
    # Every mailbox's first poll has failed (at connect) and been logged.
    while [ "$(grep -c 'Poll failed' "$run/log" || true)" -lt "$n" ]; do
        kill -0 "$DAEMON" 2>/dev/null || { tail "$run/log"; exit 1; }
        sleep 0.5
    done
    sleep 1
    pid=$(pgrep -P "$DAEMON" popbridge || echo "$DAEMON")
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
    kill -TERM "$DAEMON"
    wait "$DAEMON" || true
    DAEMON=
    printf '| %d | %.1f | %.1f |\n' "$n" "$(echo "$rss / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)"
    if [ -z "$first_n" ]; then
        first_n=$n first_rss=$rss
    fi
    last_n=$n last_rss=$rss
done
if [ "$last_n" != "$first_n" ]; then
    echo
    printf 'per mailbox (RSS after the first round, %d to %d): %.2f KB\n' "$first_n" "$last_n" \
        "$(echo "($last_rss - $first_rss) / ($last_n - $first_n)" | bc -l)"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
