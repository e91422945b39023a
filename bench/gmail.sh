#!/usr/bin/env bash
# Gmail sink throughput against the Gmail test server (tests/support/gmail.rs, the server the
# tests check against Google's discovery document), in one process (examples/gmail_bench.rs):
# imports per second with the default quota pacing for one account and for several, beside
# Google's documented per-user limit (15,000 quota units a minute, 25 per import: 10 imports/s),
# and with pacing off (the sink and the test server's ceiling on this machine).
#
# Usage: bench/gmail.sh   (PACED=150 UNPACED=2000 ACCOUNTS=4 SIZE=5120 to change the work)
# Output: a markdown table on stdout and in bench/out/gmail.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PACED=${PACED:-150}
UNPACED=${UNPACED:-2000}
ACCOUNTS=${ACCOUNTS:-4}
SIZE=${SIZE:-5120}

echo "building the Gmail benchmark (release)..." >&2
cargo build --release --quiet --example gmail_bench
BENCH=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/gmail_bench
OUT=$REPO/bench/out
mkdir -p "$OUT"

{
    echo "popbridge $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ);"
    echo "messages of $SIZE bytes, 4 imports in flight (the sink's default concurrency);"
    echo "load average before $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    "$BENCH" "$PACED" "$UNPACED" "$ACCOUNTS" "$SIZE"
    echo
    echo "load average after $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/gmail.md"
