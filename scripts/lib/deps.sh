# shellcheck shell=bash
# Installs Debian/Ubuntu packages that are missing, without ever starting their services.
# Usage: source scripts/lib/deps.sh; ensure_packages dovecot-core openssl ...

# Prints the packages from "$@" that are not installed.
missing_packages() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
    done
}

ensure_packages() {
    local missing
    missing=$(missing_packages "$@")
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: $missing; run as root or install them: apt-get install $missing" >&2
        return 1
    fi
    # policy-rc.d exit 101: package scripts must not start Dovecot's system service.
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created=1
    fi
    echo "installing: $missing" >&2
    local rc=0 list
    read -r -a list <<<"$(echo "$missing" | tr '\n' ' ')"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${list[@]}"; } >&2; then
        rc=1
    fi
    [ "$created" = 1 ] && rm -f "$policy"
    # Some images start services anyway (no policy-rc.d support): stop a system Dovecot if one runs.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet dovecot 2>/dev/null; then
        systemctl stop dovecot || true
    fi
    return "$rc"
}
