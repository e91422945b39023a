#!/usr/bin/env bash
# CPU of idle polls over POP3S: MAILBOXES mailboxes (default 100) on one implicit-TLS server
# (bench/big_listing.py with a private CA, MESSAGES listed each, default 10, all recorded as
# delivered by `state baseline`), one `popbridge once` under callgrind. Prints the instructions
# of the whole run and per mailbox: what a poll costs in TLS setup, handshake and listing,
# independent of the machine's load.
# Usage: bench/tls_idle.sh   (BIN=path/to/popbridge to skip the build; needs valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
MAILBOXES=${MAILBOXES:-100}
MESSAGES=${MESSAGES:-10}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/popbridge
fi
WORK=$(mktemp -d /tmp/popbridge-tls.XXXXXX)
SERVER=
cleanup() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem \
    -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout leaf.key -out leaf.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out leaf.pem \
    -extfile leaf.ext 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$OLDPWD/bench/big_listing.py" "$port" "$MESSAGES" leaf.pem leaf.key &
SERVER=$!
sleep 1
{
    echo "state: { path: ./state/popbridge.db }"
    echo "limits: { max_concurrent_polls: 4 }"
    echo "mailboxes:"
    for i in $(seq "$MAILBOXES"); do
        cat <<YAML
  - name: m$i
    pop3: { host: localhost, port: $port, tls: implicit, ca_file: $WORK/ca.pem, username: u$i, password: p, timeout: 60s }
    schedule: { every: 60s }
    delete: never
    sinks: [archive]
YAML
    done
    echo 'sinks: [ { name: archive, type: maildir, path: "./mail/{mailbox}" } ]'
} >c.yaml
for i in $(seq "$MAILBOXES"); do "$BIN" state baseline -c c.yaml --mailbox "m$i" >/dev/null; done
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
${VALGRIND:-valgrind --tool=callgrind --callgrind-out-file=cg.out} "$BIN" once -c c.yaml >once.out 2>cg.log || { tail -5 once.out cg.log; }
total=$(awk '/^summary:/ { print $2 }' cg.out)
grep -q "0 fetched" once.out || grep -qi "fetched" once.out || true
printf '| %d mailboxes over POP3S, %d messages each, idle | %s instructions | %s per mailbox |\n' \
    "$MAILBOXES" "$MESSAGES" "$total" "$((total / MAILBOXES))"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${KEEP:-}" ]; then cp cg.out "$KEEP"; fi
