#!/usr/bin/env bash
# IMAP APPEND throughput into a private Dovecot: popbridge (POP3 fetch + APPEND, the whole
# migration path) beside Python's imaplib appending the same messages from disk (APPEND only,
# one synchronising literal each) and beside popbridge's own POP3 -> Maildir on the same
# data, in the same run, each into a fresh target account / directory.
# Workloads: 1000 x 5 KB and 20 x 5 MB. Median of REPS (default 3) runs after a warm-up.
#
# Usage: bench/imap.sh   (as root; installs dovecot, python3, time if missing)
# Output: a markdown table on stdout and in bench/out/imap.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
REPS=${REPS:-3}

# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh
# shellcheck source=scripts/lib/dovecot.sh
source scripts/lib/dovecot.sh
ensure_packages dovecot-core dovecot-pop3d dovecot-imapd openssl python3 time

echo "building popbridge (release)..." >&2
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/popbridge
OUT=$REPO/bench/out
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/popbridge-imap-bench.XXXXXX)
chmod 755 "$WORK"
trap 'dc_stop; rm -rf "$WORK"' EXIT
dc_start
PASS=bench-$RANDOM$RANDOM
export PB_BENCH_PASS=$PASS
SEQ=0

# fresh_user: a new empty account, named in $DST (not a subshell: SEQ must advance).
fresh_user() {
    SEQ=$((SEQ + 1))
    DST=dst$SEQ
    dc_add_user "$DST" "$PASS" >/dev/null
}

# popbridge_run SRC DST [maildir]: prints "wall rss_kb"; with "maildir", into a Maildir
# ($WORK/maildir-DST) instead of the IMAP account.
popbridge_run() {
    local src=$1 dst=$2 kind=${3:-imap} run sink
    run=$(mktemp -d "$WORK/run.XXXXXX")
    if [ "$kind" = maildir ]; then
        sink="  - name: target
    type: maildir
    path: $WORK/maildir-$dst"
    else
        sink="  - name: target
    type: imap
    host: 127.0.0.1
    port: $DC_IMAP_PORT
    tls: none
    allow_plaintext_auth: true
    username: $dst
    password: \${PB_BENCH_PASS}
    timeout: 120s"
    fi
    cat >"$run/popbridge.yaml" <<YAML
state: { path: ./state/popbridge.db }
mailboxes:
  - name: $src
    pop3:
      host: 127.0.0.1
      port: $DC_POP3_PORT
      tls: none
      allow_plaintext_auth: true
      username: $src
      password: \${PB_BENCH_PASS}
      timeout: 120s
    delete: never
    sinks: [target]
sinks:
$sink
YAML
    (cd "$run" && /usr/bin/time -f '%e %M' -o "$run/time" "$BIN" once -c popbridge.yaml >"$run/out" 2>&1) || {
        cat "$run/out" >&2
        return 1
    }
    cat "$run/time"
    rm -rf "$run"
}

# imaplib_run MAILDIR DST: prints "wall rss_kb".
imaplib_run() {
    local maildir=$1 dst=$2 run
    run=$(mktemp -d "$WORK/run.XXXXXX")
    cat >"$run/append.py" <<'PY'
import imaplib, os, sys
maildir, port, user, password = sys.argv[1:5]
imap = imaplib.IMAP4("127.0.0.1", int(port))
imap.login(user, password)
# Dovecot's POP3 moves messages from new/ to cur/ once they have been seen.
paths = sorted(os.path.join(maildir, sub, name) for sub in ("new", "cur")
               for name in os.listdir(os.path.join(maildir, sub)))
for path in paths:
    with open(path, "rb") as f:
        typ, _ = imap.append("INBOX", None, None, f.read())
    assert typ == "OK"
imap.logout()
PY
    /usr/bin/time -f '%e %M' -o "$run/time" python3 "$run/append.py" "$maildir" "$DC_IMAP_PORT" "$dst" "$PASS"
    cat "$run/time"
    rm -rf "$run"
}

# count DST: messages in the account's INBOX (Dovecot's Maildir on disk).
count() { find "$DC_ROOT/home/$1/Maildir" \( -path '*/new/*' -o -path '*/cur/*' \) -type f | grep -c . || true; }
# count_maildir DST: messages popbridge wrote into its Maildir sink.
count_maildir() { find "$WORK/maildir-$1" -path '*/new/*' -type f | grep -c . || true; }

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

workload() {
    local label=$1 n=$2 size=$3 src maildir tool dst got
    src=src$n
    maildir=$(dc_add_user "$src" "$PASS")
    dc_seed "$maildir" "$n" "$size" "$src"
    sleep 1.1 # Dovecot re-reads a new passwd-file at most once a second
    : >"$WORK/p.txt"
    : >"$WORK/i.txt"
    : >"$WORK/m.txt"
    for round in $(seq 0 "$REPS"); do
        for tool in popbridge imaplib maildir; do
            fresh_user
            dst=$DST
            sleep 1.1
            case $tool in
                popbridge) line=$(popbridge_run "$src" "$dst") ;;
                imaplib) line=$(imaplib_run "$maildir" "$dst") ;;
                maildir) line=$(popbridge_run "$src" "$dst" maildir) ;;
            esac
            if [ "$tool" = maildir ]; then got=$(count_maildir "$dst"); else got=$(count "$dst"); fi
            [ "$got" = "$n" ] || { echo "$tool delivered $got of $n" >&2; return 1; }
            rm -rf "$WORK/maildir-$dst"
            # Round 0 is the warm-up.
            [ "$round" = 0 ] || echo "$line" >>"$WORK/${tool:0:1}.txt"
        done
    done
    local pw pr iw ir mw
    pw=$(cut -d' ' -f1 "$WORK/p.txt" | median)
    pr=$(cut -d' ' -f2 "$WORK/p.txt" | median)
    iw=$(cut -d' ' -f1 "$WORK/i.txt" | median)
    ir=$(cut -d' ' -f2 "$WORK/i.txt" | median)
    mw=$(cut -d' ' -f1 "$WORK/m.txt" | median)
    awk -v l="$label" -v n="$n" -v pw="$pw" -v pr="$pr" -v iw="$iw" -v ir="$ir" -v mw="$mw" 'BEGIN {
        printf "| %s | %.2f | %.0f | %.1f | %.2f | %.0f | %.1f | %.2f | %.0f | **%.2f** | **%.2f** |\n",
            l, pw, n / pw, pr / 1024, iw, n / iw, ir / 1024, mw, n / mw, iw / pw, mw / pw }' >>"$WORK/rows.md"
}

: >"$WORK/rows.md"
LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)
workload "1000 x 5 KB" 1000 5120
[ -n "${SMALL_ONLY:-}" ] || workload "20 x 5 MB" 20 5242880
{
    echo "popbridge (POP3 fetch + IMAP APPEND) vs Python imaplib (APPEND from disk) vs popbridge POP3 -> Maildir, Dovecot $(dovecot --version | awk '{print $1}'),"
    echo "$(nproc) cores, median of $REPS runs after a warm-up, $(date -u +%Y-%m-%dT%H:%MZ), load before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| workload | popbridge IMAP s | msgs/s | RSS MB | imaplib s | msgs/s | RSS MB | popbridge Maildir s | msgs/s | IMAP rate / imaplib rate | IMAP rate / Maildir rate |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    cat "$WORK/rows.md"
} | tee "$OUT/imap.md"
