#!/usr/bin/env bash
# popbridge beside mpop, fetchmail and getmail6 on the same private Dovecot, in the same run.
#
# Workloads (each tool delivers into a Maildir, keeps the mail on the server):
#   1000 x 5 KB                one mailbox, everything new
#   20 x 5 MB                  one mailbox, everything new
#   1 x 100 MB                 peak RSS must not grow with the message
#   no new mail, 10,000 msgs   state primed by an untimed run; the timed run finds nothing new
#   1000 x 5 KB, +50 ms RTT    through bench/delay_proxy.py: pipelining decides everything
#   1000 mailboxes x 10        one pass over many accounts
#   10,000 mailboxes x 5       (WORKLOADS=fleet, not in the default set: about 10 minutes)
# Each tool runs with its own fresh state per measurement. One untimed warm-up per tool, then
# REPS alternating runs (default 3; getmail6 GETMAIL_REPS, default 1, it is slow); the table
# shows medians of wall time, CPU time (user+sys) and peak RSS from /usr/bin/time, each with
# its ratio to mpop (below 1: less than mpop). The delivered file count is checked every run,
# so a failed run cannot look fast. The machine's load is printed before and after.
#
# Usage: bench/run.sh   (as root; installs dovecot, mpop, fetchmail, getmail6, safecat, time)
#        TOOLS="popbridge mpop" WORKLOADS="small large" bench/run.sh   to run a subset
# Output: markdown on stdout and in bench/out/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
REPS=${REPS:-3}
GETMAIL_REPS=${GETMAIL_REPS:-1}
read -r -a TOOLS <<<"${TOOLS:-popbridge mpop fetchmail getmail6}"
read -r -a WORKLOADS <<<"${WORKLOADS:-small large huge idle rtt many}"

# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh
# shellcheck source=scripts/lib/dovecot.sh
source scripts/lib/dovecot.sh
ensure_packages dovecot-core dovecot-pop3d dovecot-imapd openssl python3 mpop fetchmail \
    getmail6 safecat time util-linux

echo "building popbridge (release)..." >&2
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/popbridge

OUT=$REPO/bench/out
rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/popbridge-bench.XXXXXX)
chmod 755 "$WORK"
PROXY_PID=
cleanup() {
    if [ -n "$PROXY_PID" ]; then kill "$PROXY_PID" 2>/dev/null || true; fi
    dc_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
dc_start
PASS=bench-$RANDOM$RANDOM
export PB_BENCH_PASS=$PASS

# configure TOOL RUN PORT USER...: writes TOOL's config for USERs into RUN; prints the command.
configure() {
    local tool=$1 run=$2 port=$3 u
    shift 3
    mkdir -p "$run/mail"
    case $tool in
    popbridge)
        {
            echo "state: { path: ./state/popbridge.db }"
            echo "mailboxes:"
            for u in "$@"; do
                cat <<YAML
  - name: $u
    pop3:
      host: 127.0.0.1
      port: $port
      tls: none
      allow_plaintext_auth: true
      username: $u
      password: \${PB_BENCH_PASS}
      timeout: 120s
    schedule: { every: 60s }
    delete: never
    sinks: [archive]
YAML
            done
            echo 'sinks: [ { name: archive, type: maildir, path: "./mail/{mailbox}" } ]'
        } >"$run/popbridge.yaml"
        echo "cd $run && $BIN once -c popbridge.yaml"
        ;;
    mpop)
        {
            printf 'defaults\ntls off\nauth user\npipelining on\nkeep on\nonly_new on\n'
            printf 'received_header off\nhost 127.0.0.1\nport %s\ntimeout 120\n' "$port"
            for u in "$@"; do
                mkdir -p "$run/mail/$u"/{cur,new,tmp}
                printf 'account %s\nuser %s\npassword %s\nuidls_file %s\ndelivery maildir %s\n' \
                    "$u" "$u" "$PASS" "$run/uidls.$u" "$run/mail/$u"
            done
        } >"$run/mpoprc"
        chmod 600 "$run/mpoprc"
        echo "mpop -C $run/mpoprc -q -a"
        ;;
    fetchmail)
        {
            printf 'set no syslog\nset invisible\n'
            for u in "$@"; do
                mkdir -p "$run/mail/$u"/{cur,new,tmp}
                printf 'poll 127.0.0.1 service %s proto pop3 uidl timeout 120\n' "$port"
                printf '  user "%s" password "%s" sslproto %s no sslcertck keep\n' "$u" "$PASS" "''"
                printf '  mda "/usr/bin/safecat %s/tmp %s/new"\n' "$run/mail/$u" "$run/mail/$u"
            done
        } >"$run/fetchmailrc"
        chmod 600 "$run/fetchmailrc"
        # Exit code 1 means "no new mail", which the idle workload expects.
        echo "fetchmail -f $run/fetchmailrc -i $run/fetchids --pidfile $run/fetchmail.pid --nosyslog; [ \$? -le 1 ]"
        ;;
    getmail6)
        # getmail6 refuses to deliver as root: everything it touches belongs to nobody.
        mkdir -p "$run/getmail"
        local args=""
        for u in "$@"; do
            mkdir -p "$run/mail/$u"/{cur,new,tmp}
            cat >"$run/getmail/$u.rc" <<RC
[retriever]
type = SimplePOP3Retriever
server = 127.0.0.1
port = $port
username = $u
password = $PASS
timeout = 120
[destination]
type = Maildir
path = $run/mail/$u/
[options]
read_all = false
delete = false
received = false
delivered_to = false
message_log_syslog = false
verbose = 0
RC
            args+=" --rcfile $u.rc"
        done
        chown -R nobody:nogroup "$run/getmail" "$run/mail"
        echo "setpriv --reuid=nobody --regid=nogroup --clear-groups getmail --getmaildir $run/getmail$args"
        ;;
    esac
}

count_delivered() { find "$1/mail" -type f -path '*/new/*' | wc -l; }

# measure TOOL PORT EXPECTED PRIME OUTFILE USER...: one timed run in a fresh directory; when
# PRIME is 1, an untimed run first records the tool's state, and the timed run must add
# nothing. Appends "wall cpu rss_kb" to OUTFILE.
measure() {
    local tool=$1 port=$2 expected=$3 prime=$4 file=$5 run cmd
    shift 5
    run=$(mktemp -d "$WORK/run.XXXXXX")
    chmod 755 "$run"
    cmd=$(configure "$tool" "$run" "$port" "$@")
    if [ "$prime" = 1 ]; then
        bash -c "$cmd" >"$run/prime.out" 2>&1 || { cat "$run/prime.out" >&2; return 1; }
    fi
    if ! /usr/bin/time -f '%e %U %S %M' -o "$run/time" bash -c "$cmd" >"$run/out" 2>&1; then
        tail -20 "$run/out" >&2
        echo "$tool failed" >&2
        return 1
    fi
    local got
    got=$(count_delivered "$run")
    if [ "$got" != "$expected" ]; then
        tail -20 "$run/out" >&2
        echo "$tool delivered $got messages, expected $expected" >&2
        return 1
    fi
    awk '{ printf "%s %.2f %s\n", $1, $2 + $3, $4 }' "$run/time" >>"$file"
    rm -rf "$run"
}

median() { sort -n -k"$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# users PREFIX N COUNT SIZE: N seeded mailboxes; prints their names.
users() {
    local prefix=$1 n=$2 count=$3 size=$4 i u maildir
    for i in $(seq "$n"); do
        u=$prefix$i
        maildir=$(dc_add_user "$u" "$PASS")
        dc_seed "$maildir" "$count" "$size" "$u" >&2
        echo "$u"
    done
    sleep 1.1 # Dovecot re-reads a changed passwd-file at most once a second
}

# workload LABEL PORT EXPECTED PRIME USER...
workload() {
    local label=$1 port=$2 expected=$3 prime=$4 tool key reps
    shift 4
    key=$(echo "$label" | tr -c 'a-zA-Z0-9' '_')
    for round in $(seq "$REPS"); do
        for tool in "${TOOLS[@]}"; do
            reps=$REPS
            [ "$tool" = getmail6 ] && reps=$GETMAIL_REPS
            [ "$round" -le "$reps" ] || continue
            echo "  $label: $tool ($round)" >&2
            # A peer that fails is reported in the table, not allowed to stop the run.
            if ! measure "$tool" "$port" "$expected" "$prime" "$OUT/$key.$tool" "$@"; then
                echo "  $label: $tool run $round FAILED" >&2
                echo failed >>"$OUT/$key.$tool.failed"
            fi
        done
    done
    local mw="" mc="" mr="" w c r
    if [ -s "$OUT/$key.mpop" ]; then
        mw=$(median "$OUT/$key.mpop" 1)
        mc=$(median "$OUT/$key.mpop" 2)
        mr=$(median "$OUT/$key.mpop" 3)
    fi
    for tool in "${TOOLS[@]}"; do
        local failed=""
        if [ -f "$OUT/$key.$tool.failed" ]; then
            failed=" ($(wc -l <"$OUT/$key.$tool.failed") run(s) failed)"
        fi
        if [ ! -s "$OUT/$key.$tool" ]; then
            printf '| %s | %s | failed | | | | | |\n' "$label" "$tool" >>"$OUT/rows.md"
            continue
        fi
        w=$(median "$OUT/$key.$tool" 1)
        c=$(median "$OUT/$key.$tool" 2)
        r=$(median "$OUT/$key.$tool" 3)
        printf '| %s | %s%s | %s | **%s** | %s | **%s** | %s | **%s** |\n' "$label" "$tool" "$failed" \
            "$w" "$(ratio "$w" "$mw")" "$c" "$(ratio "$c" "$mc")" "$(mb "$r")" \
            "$(ratio "$r" "$mr")" >>"$OUT/rows.md"
    done
}

echo "seeding..." >&2
SMALL=$(users small 1 1000 5120)

# Warm-up: page cache, Dovecot's index files.
for tool in "${TOOLS[@]}"; do
    measure "$tool" "$DC_POP3_PORT" 1000 0 /dev/null "$SMALL" || echo "warm-up of $tool failed" >&2
done

for w in "${WORKLOADS[@]}"; do
    case $w in
    small) workload "1000 x 5 KB" "$DC_POP3_PORT" 1000 0 "$SMALL" ;;
    large) workload "20 x 5 MB" "$DC_POP3_PORT" 20 0 "$(users large 1 20 5242880)" ;;
    huge) workload "1 x 100 MB" "$DC_POP3_PORT" 1 0 "$(users huge 1 1 104857600)" ;;
    idle) workload "no new mail, 10,000 messages" "$DC_POP3_PORT" 10000 1 "$(users idle 1 10000 2048)" ;;
    rtt)
        read -r PROXY_PORT _ < <(dc_free_ports)
        python3 bench/delay_proxy.py "$PROXY_PORT" "$DC_POP3_PORT" 50 &
        PROXY_PID=$!
        sleep 0.5
        workload "1000 x 5 KB, +50 ms RTT" "$PROXY_PORT" 1000 0 "$SMALL"
        kill "$PROXY_PID"
        PROXY_PID=
        ;;
    many)
        mapfile -t MANY < <(users many 1000 10 5120)
        workload "1000 mailboxes x 10" "$DC_POP3_PORT" 10000 0 "${MANY[@]}"
        ;;
    fleet)
        mapfile -t FLEET < <(users fleet 10000 5 5120)
        workload "10,000 mailboxes x 5" "$DC_POP3_PORT" 50000 0 "${FLEET[@]}"
        ;;
    esac
done

{
    echo "popbridge $("$BIN" --version 2>/dev/null | awk '{print $2}'), $(mpop --version | head -1),"
    echo "fetchmail $(fetchmail --version 2>/dev/null | head -1 | awk '{print $5}' | cut -d+ -f1), getmail $(getmail --version 2>&1 | awk '{print $2}'),"
    echo "Dovecot $(dovecot --version | awk '{print $1}'); $(nproc) cores; medians of $REPS runs (getmail6: $GETMAIL_REPS)"
    echo "after a warm-up; $(date -u +%Y-%m-%dT%H:%MZ); load average before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| workload | tool | wall s | wall / mpop | CPU s | CPU / mpop | peak RSS MB | RSS / mpop |"
    echo "|---|---|---|---|---|---|---|---|"
    cat "$OUT/rows.md"
} | tee "$OUT/results.md"
