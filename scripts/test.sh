#!/usr/bin/env bash
# The whole test suite, on a fresh Debian/Ubuntu machine as root (the README's test command;
# `.ci/run` calls it).
#
# 1. Installs what the tests need if it is missing, with apt: Dovecot, the peer tools whose state
#    `state import` reads (mpop, fetchmail, getmail6, and safecat to deliver for fetchmail),
#    openssl, python3, GNU mailutils pop3d (tests/interop_mailutils.rs runs it privately), the
#    script linter, promtool (package prometheus, for tests/daemon.rs), npm and python3-venv
#    (for scripts/check-chart.sh), PostgreSQL (for the PostgreSQL state backend's tests), the C
#    toolchain and OpenSSL headers. No service is started (policy-rc.d): the tests run their
#    own private Dovecot instances and PostgreSQL clusters (initdb + pg_ctl as the postgres
#    user) on free loopback ports.
#    The Python test oracles (standardwebhooks, jsonschema) go into a venv with pip.
# 2. cargo fmt --check, shellcheck on every script, no import circles between modules
#    (scripts/import-circles.py, between files and between top-level modules), cargo clippy
#    --all-targets -D warnings.
# 3. cargo test --all-targets (every test binary, even after a failure). We use `cargo test`,
#    not nextest, because the end-to-end tests start one Dovecot per test binary and share it
#    between that binary's tests (threads); nextest would start one per test.
# 4. scripts/check-chart.sh (the Helm chart, Dockerfile and systemd unit, offline).
#
# CI defaults to true here: with everything installed, a test that cannot find Dovecot must
# fail rather than skip. Set CI=false to allow skips.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh
packages=(dovecot-core dovecot-pop3d dovecot-imapd openssl python3 python3-venv shellcheck
    ca-certificates build-essential pkg-config libssl-dev postgresql
    mpop fetchmail getmail6 safecat
    mailutils-pop3d)
# By command: a machine may have them from elsewhere (NodeSource's nodejs ships npm and
# conflicts with Debian's npm package).
command -v npm >/dev/null || packages+=(npm)
command -v promtool >/dev/null || packages+=(prometheus)
ensure_packages "${packages[@]}"

command -v cargo >/dev/null || {
    echo "cargo not found: install Rust 1.95 (https://rustup.rs), then rerun" >&2
    exit 1
}
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || { echo "cargo $component is missing" >&2; exit 1; }
        rustup component add "$component"
    fi
done

# Python test oracles, pinned, in a venv whose python3 comes first in PATH: the reference
# Standard Webhooks implementation and jsonschema (tests/support/receiver.rs), and Google's
# official API client with its bundled Gmail discovery document (tests/gmail_contract.rs).
ORACLES=${POPBRIDGE_TOOLS_DIR:-$HOME/.cache/popbridge-tools}/test-venv
if ! "$ORACLES/bin/python3" -c 'import standardwebhooks, jsonschema, googleapiclient' 2>/dev/null; then
    echo "installing the Python test oracles into $ORACLES" >&2
    python3 -m venv "$ORACLES"
    "$ORACLES/bin/pip" install --quiet --disable-pip-version-check \
        standardwebhooks==1.1.0 jsonschema==4.23.0 google-api-python-client==2.202.0
fi
export PATH="$ORACLES/bin:$PATH"

# Courier-IMAP and Courier POP3, unpacked privately (scripts/lib/courier.sh); tests/common/courier.rs
# finds them here.
# shellcheck source=scripts/lib/courier.sh
source scripts/lib/courier.sh
export PB_COURIER_DIR=${PB_COURIER_DIR:-${POPBRIDGE_TOOLS_DIR:-$HOME/.cache/popbridge-tools}/courier}
courier_install "$PB_COURIER_DIR"
# Cyrus IMAP, the same way (scripts/lib/cyrus.sh); tests/common/cyrus.rs finds it here.
# shellcheck source=scripts/lib/cyrus.sh
source scripts/lib/cyrus.sh
export PB_CYRUS_DIR=${PB_CYRUS_DIR:-${POPBRIDGE_TOOLS_DIR:-$HOME/.cache/popbridge-tools}/cyrus}
cyrus_install "$PB_CYRUS_DIR"

export CI=${CI:-true}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
start=$SECONDS
step() { echo "==> $* ($((SECONDS - start))s)" >&2; }

step "cargo fmt --check"
cargo fmt --all --check

step "shellcheck"
mapfile -t scripts < <(find scripts bench .ci -type f \( -name '*.sh' -o -path .ci/run \) | sort)
shellcheck -x "${scripts[@]}"

step "import circles"
python3 scripts/import-circles.py

step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test"
cargo test --locked --all-targets --no-fail-fast

step "scripts/check-chart.sh"
scripts/check-chart.sh

step "all passed"
