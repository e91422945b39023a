# shellcheck shell=bash
# Courier-IMAP for the tests (tests/common/courier.rs), run privately next to Dovecot: its
# packages conflict with Dovecot's on the virtual package imap-server, so only its libraries
# are apt-installed and the server package is unpacked (apt-get download + dpkg-deb -x) into
# a cache directory. Nothing is started here and nothing lands in /etc.
#
#   source scripts/lib/deps.sh scripts/lib/courier.sh
#   courier_install DIR     # DIR/root/usr/bin/imapd and DIR/root/usr/sbin/couriertcpd
courier_install() {
    local dir=$1
    ensure_packages libcourier-unicode4 libgamin0 courier-authlib
    if [ -x "$dir/root/usr/bin/imapd" ] && [ -x "$dir/root/usr/sbin/couriertcpd" ]; then
        return 0
    fi
    mkdir -p "$dir/debs" "$dir/root"
    # apt-get download writes into the current directory; _apt cannot write to root's.
    chmod 777 "$dir/debs"
    (cd "$dir/debs" && apt-get download -q courier-imap courier-base) >&2
    local deb
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
    done
    [ -x "$dir/root/usr/bin/imapd" ] || { echo "courier: imapd missing after unpacking" >&2; return 1; }
}
