#!/usr/bin/env bash
# S3 throughput: 1000 x 5 KB, 20 x 5 MB and 1 x 100 MB from a private Dovecot to a local S3
# server (s3s-fs, the tests' dev-dependency, built as `examples/s3_server.rs`; SigV4 checked),
# with peak RSS from /usr/bin/time. The 100 MB message goes up as a multipart upload (8 MiB
# parts), so its RSS shows the bounded part buffering.
#
# Usage: bench/s3.sh   (as root; installs dovecot, python3, time if missing)
# Output: a markdown table on stdout and in bench/out/s3.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
REPS=${REPS:-3}

# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh
# shellcheck source=scripts/lib/dovecot.sh
source scripts/lib/dovecot.sh
ensure_packages dovecot-core dovecot-pop3d openssl python3 time

echo "building popbridge and the S3 server (release)..." >&2
cargo build --release --quiet --bin popbridge --example s3_server
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/popbridge
S3_SERVER=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/s3_server
OUT=$REPO/bench/out
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/popbridge-s3-bench.XXXXXX)
S3_PID=
cleanup() {
    if [ -n "$S3_PID" ]; then kill "$S3_PID" 2>/dev/null || true; fi
    dc_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
dc_start

PASS=bench-$RANDOM$RANDOM
export PB_BENCH_PASS=$PASS
PB_S3_SECRET=$(head -c 24 /dev/urandom | base64)
export PB_S3_SECRET
ACCESS=AKIAPOPBRIDGEBENCH01

# workload NAME COUNT SIZE: a user seeded with COUNT messages of SIZE bytes.
declare -A COUNTS
workload() {
    local maildir
    maildir=$(dc_add_user "$1" "$PASS")
    dc_seed "$maildir" "$2" "$3" "$1"
    COUNTS[$1]=$2
}
workload s3small 1000 5120
workload s3large 20 5242880
workload s3huge 1 104857600

read -r PORT _ < <(dc_free_ports)

# run USER: one timed `popbridge once` into an empty bucket; prints "wall rss_kb".
run() {
    local user=$1 count=${COUNTS[$1]} dir
    dir=$(mktemp -d "$WORK/run.XXXXXX")
    mkdir -p "$dir/s3"
    "$S3_SERVER" "$dir/s3" "$PORT" "$ACCESS" "$PB_S3_SECRET" mail >"$dir/s3.log" 2>&1 &
    S3_PID=$!
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
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
      username: $user
      password: \${PB_BENCH_PASS}
    schedule: { every: 60s }
    delete: never
    sinks: [archive]
sinks:
  - name: archive
    type: s3
    bucket: mail
    endpoint: http://127.0.0.1:$PORT
    access_key_id: $ACCESS
    secret_access_key: \${PB_S3_SECRET}
    concurrency: 8
YAML
    (cd "$dir" && /usr/bin/time -f '%e %M' -o "$dir/time" "$BIN" once -c popbridge.yaml >"$dir/out" 2>&1) || {
        cat "$dir/out" >&2
        return 1
    }
    grep -Eq " $count .* ok$" "$dir/out" || {
        cat "$dir/out" >&2
        echo "popbridge did not deliver all $count messages" >&2
        return 1
    }
    kill "$S3_PID" 2>/dev/null || true
    wait "$S3_PID" 2>/dev/null || true
    S3_PID=
    cat "$dir/time"
    rm -rf "$dir"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

{
    echo "S3: from Dovecot $(dovecot --version | awk '{print $1}') to s3s-fs 0.14.1 on loopback, $(nproc) cores, median of $REPS runs, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "| workload | wall s | objects/s | MB/s | peak RSS MB |"
    echo "|---|---|---|---|---|"
    for spec in "s3small:1000 x 5 KB:5120" "s3large:20 x 5 MB:5242880" "s3huge:1 x 100 MB:104857600"; do
        IFS=: read -r user label size <<<"$spec"
        : >"$WORK/$user.times"
        run "$user" >/dev/null # warm-up
        for _ in $(seq "$REPS"); do
            run "$user" >>"$WORK/$user.times"
        done
        wall=$(awk '{print $1}' "$WORK/$user.times" | median)
        rss=$(awk '{print $2}' "$WORK/$user.times" | median)
        count=${COUNTS[$user]}
        echo "| $label | $wall | $(awk -v n="$count" -v w="$wall" 'BEGIN { printf "%.0f", n / w }') | $(awk -v n="$count" -v s="$size" -v w="$wall" 'BEGIN { printf "%.1f", n * s / 1048576 / w }') | $(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }') |"
    done
} | tee "$OUT/s3.md"
