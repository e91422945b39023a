# shellcheck shell=bash
# Courier-IMAP and Courier's POP3 server for the tests (tests/common/courier.rs), run privately
# next to Dovecot: their packages conflict with Dovecot's on the virtual packages imap-server and
# pop3-server, so only the libraries and courier-authlib's authdaemond/userdb are apt-installed
# and the server packages are unpacked (apt-get download + dpkg-deb -x) into a cache directory.
# Nothing is started here and nothing lands in /etc.
#
#   source scripts/lib/deps.sh scripts/lib/courier.sh
#   courier_install DIR     # DIR/root/usr/bin/imapd, DIR/root/usr/sbin/couriertcpd and
#                           # DIR/root/usr/lib/courier/courier/courierpop3{login,d}
courier_install() {
    local dir=$1
    ensure_packages libcourier-unicode4 libgamin0 courier-authlib courier-authdaemon \
        courier-authlib-userdb
    if [ -x "$dir/root/usr/bin/imapd" ] && [ -x "$dir/root/usr/sbin/couriertcpd" ] &&
        [ -x "$dir/root/usr/lib/courier/courier/courierpop3login" ]; then
        return 0
    fi
    mkdir -p "$dir/debs" "$dir/root"
    # apt-get download writes into the current directory; _apt cannot write to root's.
    chmod 777 "$dir/debs"
    (cd "$dir/debs" && apt-get download -q courier-imap courier-base courier-pop) >&2
    local deb
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
    done
    [ -x "$dir/root/usr/bin/imapd" ] || { echo "courier: imapd missing after unpacking" >&2; return 1; }
    [ -x "$dir/root/usr/lib/courier/courier/courierpop3login" ] ||
        { echo "courier: courierpop3login missing after unpacking" >&2; return 1; }
}
