#!/usr/bin/env bash
# One full pass over many mailboxes (a few messages each, `delete: never`) by `popbridge run`:
# on SQLite with one replica, and on one PostgreSQL with 1 and with 3 replicas. For each: wall
# time until every message is in the Maildir, CPU (user+sys) and peak RSS of each replica (from
# /usr/bin/time), and the CPU PostgreSQL spent (postmaster and every backend, from /proc).
#
# Usage: bench/replicas.sh   (as root; installs dovecot, postgresql, time)
#        MAILBOXES=2000 MESSAGES=3 SCENARIOS="sqlite pg1 pg3" bench/replicas.sh
# Output: markdown on stdout and in bench/out/replicas.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
N=${MAILBOXES:-10000}
M=${MESSAGES:-3}
SIZE=${SIZE:-2048}
read -r -a SCENARIOS <<<"${SCENARIOS:-sqlite pg1 pg3}"
PGBIN=/usr/lib/postgresql/15/bin

# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh
# shellcheck source=scripts/lib/dovecot.sh
source scripts/lib/dovecot.sh
ensure_packages dovecot-core dovecot-pop3d dovecot-imapd openssl python3 postgresql time

echo "building popbridge (release)..." >&2
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/popbridge

OUT=$REPO/bench/out
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/pb-replicas.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -f "$WORK/pg/data/postmaster.pid" ]; then
        (cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1) || true
    fi
    dc_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
dc_start
PASS=bench-$RANDOM$RANDOM
export PB_BENCH_PASS=$PASS

echo "seeding $N mailboxes x $M messages..." >&2
python3 - "$DC_ROOT" "$N" "$M" "$SIZE" "$PASS" <<'PY'
import os, sys
root, n, m, size, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
body = ("x" * 76 + "\r\n") * max(1, size // 78)
for i in range(1, n + 1):
    user = f"u{i}"
    home = f"{root}/home/{user}"
    for d in ("cur", "new", "tmp"):
        os.makedirs(f"{home}/Maildir/{d}", exist_ok=True)
    for j in range(m):
        msg = (f"From: a@example.org\r\nTo: {user}@example.org\r\nSubject: {user} {j}\r\n"
               f"Message-ID: <{user}.{j}@bench>\r\n\r\n{body}")
        with open(f"{home}/Maildir/new/{j}.{user}.bench", "w", newline="") as f:
            f.write(msg)
    with open(f"{root}/users/{user}", "w") as f:
        f.write(f"{user}:{{PLAIN}}{password}:8:8::{home}::\n")
PY
chown -R 8:8 "$DC_ROOT/home"
sleep 1.1

echo "starting PostgreSQL..." >&2
mkdir -p "$WORK/pg/sock"
chown -R postgres:postgres "$WORK/pg"
read -r PG_PORT _ < <(dc_free_ports)
(cd / && runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg/data" -U popbridge -A trust -E UTF8 \
    --locale=C.UTF-8 --no-sync >/dev/null)
# Durable defaults (fsync, synchronous_commit on): the cost a real deployment pays.
(cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $PG_PORT -k $WORK/pg/sock -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null)
PG_MASTER=$(head -1 "$WORK/pg/data/postmaster.pid")

# CPU seconds (user+sys) of PostgreSQL so far: the postmaster, its live children, and the
# children that ended (reaped into the postmaster's cutime/cstime).
pg_cpu() {
    python3 - "$PG_MASTER" <<'PY'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
master = sys.argv[1]
def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()
total = 0
s = stat(master)
total += sum(int(x) for x in s[11:15])
for pid in os.listdir("/proc"):
    if not pid.isdigit() or pid == master:
        continue
    try:
        s = stat(pid)
    except OSError:
        continue
    if s[1] == master:
        total += int(s[11]) + int(s[12])
print(f"{total / hz:.2f}")
PY
}

# config DIR STATE_YAML REPLICA: a config for every mailbox.
config() {
    local dir=$1 state=$2 r=$3 i
    {
        printf '%b' "$state"
        echo "  spool_dir: ./spool$r"
        echo "http: { listen: 127.0.0.1:0 }"
        # Totals: with 3 replicas on PostgreSQL each keeps a third.
        echo "limits: { max_concurrent_polls: 12, max_connections_per_server: 12 }"
        echo "mailboxes:"
        for i in $(seq "$N"); do
            # shellcheck disable=SC2016 # ${PB_BENCH_PASS} is for popbridge's config, not the shell
            printf '  - { name: u%s, pop3: { host: 127.0.0.1, port: %s, tls: none, allow_plaintext_auth: true, username: u%s, password: "${PB_BENCH_PASS}", timeout: 120s }, schedule: { every: 1h }, delete: never, sinks: [archive] }\n' \
                "$i" "$DC_POP3_PORT" "$i"
        done
        echo 'sinks: [ { name: archive, type: maildir, path: "./mail/{mailbox}" } ]'
    } >"$dir/r$r.yaml"
}

ROWS=$OUT/replicas.rows
: >"$ROWS"

# scenario LABEL REPLICAS STATE_YAML
scenario() {
    local label=$1 replicas=$2 state=$3 dir r start wall db0 db1 expected=$((N * M)) n
    dir=$WORK/$label
    mkdir -p "$dir/mail"
    for r in $(seq "$replicas"); do config "$dir" "$state" "$r"; done
    echo "  $label: $replicas replica(s)..." >&2
    db0=$(pg_cpu)
    start=$(date +%s.%N)
    PIDS=()
    for r in $(seq "$replicas"); do
        (cd "$dir" && exec /usr/bin/time -f "%U %S %M" -o "$dir/time.$r" "$BIN" run -c "r$r.yaml" 2>"$dir/log.$r" >/dev/null) &
        PIDS+=($!)
    done
    while :; do
        n=$(find "$dir/mail" -path '*/new/*' -type f | wc -l)
        [ "$n" -ge "$expected" ] && break
        sleep 0.5
    done
    wall=$(awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN { printf "%.1f", a - b }')
    # SIGTERM each popbridge (the child of its `time` wrapper), then wait for the wrappers.
    for p in "${PIDS[@]}"; do
        for c in $(ps -o pid= --ppid "$p"); do kill -TERM "$c" 2>/dev/null || true; done
    done
    wait
    PIDS=()
    sleep 1
    db1=$(pg_cpu)
    local per=""
    for r in $(seq "$replicas"); do
        read -r u s rss <"$dir/time.$r"
        per+="$(awk -v u="$u" -v s="$s" -v r="$rss" 'BEGIN { printf "%.1f s / %.0f MB", u + s, r / 1024 }'), "
    done
    local db="-"
    [ "$label" = SQLite ] || db=$(awk -v a="$db1" -v b="$db0" 'BEGIN { printf "%.1f", a - b }')
    printf '| %s | %s | %s | %s | %s |\n' "$label" "$replicas" "$wall" "${per%, }" "$db" >>"$ROWS"
    rm -rf "$dir"
}

for s in "${SCENARIOS[@]}"; do
    case $s in
    sqlite) scenario "SQLite" 1 "state:\n  path: ./state/popbridge.db\n" ;;
    pg1 | pg3)
        db=bench_$s
        (cd / && runuser -u postgres -- "$PGBIN/createdb" -h "$WORK/pg/sock" -p "$PG_PORT" -U popbridge "$db")
        scenario "PostgreSQL" "${s#pg}" "state:\n  url: postgres://popbridge@127.0.0.1:$PG_PORT/$db?sslmode=disable\n  lease_ttl: 30s\n"
        ;;
    esac
done

{
    echo "popbridge $("$BIN" --version 2>/dev/null | awk '{print $2}'), release build; Dovecot $(dovecot --version | awk '{print $1}'); PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') (fsync and synchronous_commit on); $(nproc) cores"
    echo "$N mailboxes x $M messages of about $SIZE bytes, delete: never, max_concurrent_polls and max_connections_per_server 12 in all (each of 3 replicas keeps 4)"
    echo "load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| state | replicas | wall for one pass (s) | CPU (user+sys) / peak RSS per replica | PostgreSQL CPU (s) |"
    echo "|---|---|---|---|---|"
    cat "$ROWS"
} | tee "$OUT/replicas.md"
