#!/usr/bin/env bash
# popbridge vs mpop on the same private Dovecot, in the same run.
#
# Workloads: 1000 x 5 KB, 20 x 5 MB, and 1 x 100 MB (peak RSS). Each tool fetches the whole
# mailbox every time (popbridge: fresh state directory, delete: never; mpop: keep on,
# only_new off, fresh uidls file, pipelining on). One warm-up run each, then REPS (default 3)
# alternating runs; the table shows medians of wall time, CPU time (user+sys) and peak RSS from
# /usr/bin/time, and popbridge/mpop ratios (below 1 means popbridge used less).
#
# Usage: bench/run.sh            (as root; installs dovecot, mpop, time if missing)
# Output: the markdown table on stdout and in bench/out/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
REPS=${REPS:-3}

# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh
# shellcheck source=scripts/lib/dovecot.sh
source scripts/lib/dovecot.sh
ensure_packages dovecot-core dovecot-pop3d dovecot-imapd openssl python3 mpop time

echo "building popbridge (release)..." >&2
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/popbridge

OUT=$REPO/bench/out
rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/popbridge-bench.XXXXXX)
trap 'dc_stop; rm -rf "$WORK"' EXIT
dc_start

PASS=bench-$RANDOM$RANDOM
export PB_BENCH_PASS=$PASS

# measure TOOL USER EXPECTED OUTFILE: one timed run; appends "wall cpu rss_kb" to OUTFILE.
measure() {
    local tool=$1 user=$2 expected=$3 file=$4 run
    run=$(mktemp -d "$WORK/run.XXXXXX")
    case $tool in
    popbridge)
        cat >"$run/popbridge.yaml" <<YAML
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
      timeout: 60s
    schedule: { every: 60s }
    delete: never
    sinks: [archive]
sinks:
  - name: archive
    type: maildir
    path: ./mail
YAML
        (cd "$run" && /usr/bin/time -f '%e %U %S %M' -o "$run/time" \
            "$BIN" once -c popbridge.yaml >"$run/out" 2>&1) || {
            cat "$run/out" >&2
            echo "popbridge failed" >&2
            return 1
        }
        ;;
    mpop)
        mkdir -p "$run/mail"/{cur,new,tmp}
        cat >"$run/mpoprc" <<RC
defaults
tls off
auth user
pipelining on
keep on
only_new off
received_header off
uidls_file $run/uidls
account bench
host 127.0.0.1
port $DC_POP3_PORT
user $user
password $PASS
delivery maildir $run/mail
RC
        chmod 600 "$run/mpoprc"
        /usr/bin/time -f '%e %U %S %M' -o "$run/time" \
            mpop -C "$run/mpoprc" -q bench >"$run/out" 2>&1 || {
            cat "$run/out" >&2
            echo "mpop failed" >&2
            return 1
        }
        ;;
    esac
    local got
    got=$(find "$run/mail" -type f -path '*/new/*' | wc -l)
    if [ "$got" != "$expected" ]; then
        echo "$tool delivered $got messages, expected $expected" >&2
        return 1
    fi
    awk '{ printf "%s %.2f %s\n", $1, $2 + $3, $4 }' "$run/time" >>"$file"
    rm -rf "$run"
}

# median FILE COLUMN
median() {
    sort -n -k"$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# workload LABEL COUNT SIZE
workload() {
    local label=$1 count=$2 size=$3 user maildir tool
    user=u$count-$size
    maildir=$(dc_add_user "$user" "$PASS")
    echo "seeding $label..." >&2
    dc_seed "$maildir" "$count" "$size" "$user"
    for tool in popbridge mpop; do
        measure "$tool" "$user" "$count" /dev/null # warm-up
    done
    for _ in $(seq "$REPS"); do
        for tool in popbridge mpop; do
            echo "  $label: $tool" >&2
            measure "$tool" "$user" "$count" "$OUT/$user.$tool"
        done
    done
    local pw pc pr mw mc mr
    pw=$(median "$OUT/$user.popbridge" 1)
    pc=$(median "$OUT/$user.popbridge" 2)
    pr=$(median "$OUT/$user.popbridge" 3)
    mw=$(median "$OUT/$user.mpop" 1)
    mc=$(median "$OUT/$user.mpop" 2)
    mr=$(median "$OUT/$user.mpop" 3)
    printf '| %s | %s / %s | **%s** | %s / %s | **%s** | %s / %s | **%s** |\n' \
        "$label" "$pw" "$mw" "$(ratio "$pw" "$mw")" "$pc" "$mc" "$(ratio "$pc" "$mc")" \
        "$(mb "$pr")" "$(mb "$mr")" "$(ratio "$pr" "$mr")" >>"$OUT/rows.md"
}

workload "1000 x 5 KB" 1000 5120
workload "20 x 5 MB" 20 5242880
workload "1 x 100 MB" 1 104857600

{
    echo "popbridge $("$BIN" --version 2>/dev/null | awk '{print $2}') vs $(mpop --version | head -1), Dovecot $(dovecot --version | awk '{print $1}'), $(nproc) cores, median of $REPS runs after one warm-up, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "| workload | wall s popbridge / mpop | ratio | CPU s (user+sys) popbridge / mpop | ratio | peak RSS MB popbridge / mpop | ratio |"
    echo "|---|---|---|---|---|---|---|"
    cat "$OUT/rows.md"
} | tee "$OUT/results.md"
