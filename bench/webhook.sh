#!/usr/bin/env bash
# Webhook throughput: 1000 x 5 KB from a private Dovecot to a local receiver, json and raw,
# beside the receiver's own ceiling measured with wrk (plain HTTP load, same body size) in the
# same run, and beside popbridge's own POP3 -> Maildir rate on the same mailbox (issue #14's
# target: webhook >= 0.8x Maildir). The receiver is bench/receiver.py (Python
# ThreadingHTTPServer, keep-alive). The load average is printed with the table.
#
# Usage: bench/webhook.sh   (as root; installs dovecot, wrk, python3, time if missing;
#        PB_BIN=path uses a release binary built already, REPS=n the runs per mode)
# Output: a markdown table on stdout and in bench/out/webhook.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
REPS=${REPS:-3}

# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh
# shellcheck source=scripts/lib/dovecot.sh
source scripts/lib/dovecot.sh
ensure_packages dovecot-core dovecot-pop3d openssl python3 wrk time

# PB_BIN: a release binary built already (skips the build).
if [ -n "${PB_BIN:-}" ]; then
    BIN=$PB_BIN
else
    echo "building popbridge (release)..." >&2
    cargo build --release --quiet
    BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/popbridge
fi
OUT=$REPO/bench/out
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/popbridge-webhook-bench.XXXXXX)
RECEIVER_PID=
cleanup() {
    if [ -n "$RECEIVER_PID" ]; then kill "$RECEIVER_PID" 2>/dev/null || true; fi
    dc_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
dc_start

PASS=bench-$RANDOM$RANDOM
export PB_BENCH_PASS=$PASS
PB_HOOK_SECRET=whsec_$(head -c 24 /dev/urandom | base64)
export PB_HOOK_SECRET
USER_NAME=hook1000
MAILDIR=$(dc_add_user "$USER_NAME" "$PASS")
dc_seed "$MAILDIR" 1000 5120 "$USER_NAME"

read -r PORT _ < <(dc_free_ports)
python3 bench/receiver.py "$PORT" 2>"$WORK/receiver.log" &
RECEIVER_PID=$!
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
URL=http://127.0.0.1:$PORT/hook

# The receiver's ceiling: wrk POSTing 5 KB bodies over keep-alive connections.
head -c 5120 /dev/zero | tr '\0' 'x' >"$WORK/body"
cat >"$WORK/post.lua" <<'LUA'
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
wrk.headers["Content-Type"] = "application/json"
LUA
CEILING=$(BODY_FILE=$WORK/body wrk -t2 -c8 -d5s -s "$WORK/post.lua" "$URL" | awk '/Requests\/sec/ { printf "%.0f", $2 }')

# run FORMAT: one timed `popbridge once` (FORMAT json, raw, or maildir); prints wall and RSS.
run() {
    local format=$1 dir sink
    dir=$(mktemp -d "$WORK/run.XXXXXX")
    if [ "$format" = maildir ]; then
        sink="  - name: hook
    type: maildir
    path: ./Maildir"
    else
        sink="  - name: hook
    type: webhook
    url: $URL
    format: $format
    secret: \${PB_HOOK_SECRET}
    concurrency: 8"
    fi
    cat >"$dir/popbridge.yaml" <<YAML
state:
  path: ./state/popbridge.db
mailboxes:
  - name: bench
    pop3:
      host: 127.0.0.1
      port: $DC_POP3_PORT
      tls: none
      allow_plaintext_auth: true
      username: $USER_NAME
      password: \${PB_BENCH_PASS}
    schedule: { every: 60s }
    delete: never
    sinks: [hook]
sinks:
$sink
YAML
    (cd "$dir" && /usr/bin/time -f '%e %M' -o "$dir/time" "$BIN" once -c popbridge.yaml >"$dir/out" 2>&1) || {
        cat "$dir/out" >&2
        return 1
    }
    grep -q ' 1000 .* ok$' "$dir/out" || {
        cat "$dir/out" >&2
        echo "popbridge did not deliver all 1000 messages" >&2
        return 1
    }
    cat "$dir/time"
    rm -rf "$dir"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

{
    echo "Webhook: 1000 x 5 KB from Dovecot $(dovecot --version | awk '{print $1}') to bench/receiver.py, $(nproc) cores, median of $REPS runs, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| mode | wall s | msg/s | peak RSS MB | / Maildir rate | receiver ceiling (wrk) req/s | popbridge / ceiling |"
    echo "|---|---|---|---|---|---|---|"
    MAILDIR_RATE=
    for format in maildir json raw; do
        : >"$WORK/$format.times"
        run "$format" >/dev/null # warm-up
        for _ in $(seq "$REPS"); do
            run "$format" >>"$WORK/$format.times"
        done
        wall=$(awk '{print $1}' "$WORK/$format.times" | median)
        rss=$(awk '{print $2}' "$WORK/$format.times" | median)
        rate=$(awk -v w="$wall" 'BEGIN { printf "%.0f", 1000 / w }')
        [ -n "$MAILDIR_RATE" ] || MAILDIR_RATE=$rate
        ratio=$(awk -v r="$rate" -v c="$CEILING" 'BEGIN { printf "%.2f", r / c }')
        vs=$(awk -v r="$rate" -v m="$MAILDIR_RATE" 'BEGIN { printf "%.2f", r / m }')
        if [ "$format" = maildir ]; then ratio="-"; fi
        echo "| $format | $wall | $rate | $(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }') | **$vs** | $CEILING | $ratio |"
    done
    echo
    echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/webhook.md"
