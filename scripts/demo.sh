#!/usr/bin/env bash
# The main job, for real (the README's demo command): builds popbridge (release), starts a
# private Dovecot with sample mail, writes a config, runs `popbridge once` into ./demo/mail over
# POP3S with a private CA, shows what arrived, runs it again to show nothing arrives twice, and
# stops Dovecot. Run from a fresh clone as root (it installs Dovecot if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh
# shellcheck source=scripts/lib/dovecot.sh
source scripts/lib/dovecot.sh
ensure_packages dovecot-core dovecot-pop3d dovecot-imapd openssl python3 \
    ca-certificates build-essential pkg-config libssl-dev

echo "==> building popbridge (release)"
cargo build --release --locked --quiet
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/popbridge

trap dc_stop EXIT
echo "==> starting a private Dovecot"
dc_start

DEMO_POP3_PASSWORD=demo-$RANDOM$RANDOM
export DEMO_POP3_PASSWORD
maildir=$(dc_add_user alice "$DEMO_POP3_PASSWORD")
dc_seed "$maildir" 40 4000 "Demo"
dc_seed "$maildir" 2 2000000 "Big"
echo "    alice has $(find "$maildir/new" -type f | wc -l) messages on the server"

rm -rf demo
mkdir -p demo
cp "$DC_CA" demo/ca.pem
cat >demo/popbridge.yaml <<YAML
# Written by scripts/demo.sh. Paths are relative to this file.
state:
  path: ./state/popbridge.db
mailboxes:
  - name: alice
    pop3:
      host: 127.0.0.1
      port: $DC_POP3S_PORT
      tls: implicit
      ca_file: ./ca.pem
      username: alice
      password: \${DEMO_POP3_PASSWORD}
      timeout: 10s
    schedule: { every: 60s }
    delete: never
    sinks: [archive]
sinks:
  - name: archive
    type: maildir
    path: ./mail/{mailbox}
YAML

echo "==> popbridge check --connect"
"$BIN" check -c demo/popbridge.yaml --connect
echo "==> popbridge once"
"$BIN" once -c demo/popbridge.yaml

echo "==> what arrived in demo/mail/alice/new"
count=$(find demo/mail/alice/new -type f | wc -l)
bytes=$(du -sh demo/mail/alice/new | cut -f1)
echo "    $count messages, $bytes"
find demo/mail/alice/new -type f | sort | head -3 | while read -r f; do
    echo "    $(basename "$f")  $(grep -m1 '^Subject:' "$f" | tr -d '\r')"
done

echo "==> popbridge once, again: nothing is delivered twice"
"$BIN" once -c demo/popbridge.yaml
echo "    still $(find demo/mail/alice/new -type f | wc -l) messages"
echo "==> done; config and mail are in ./demo, Dovecot is stopped"
