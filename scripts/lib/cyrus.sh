# shellcheck shell=bash
# Cyrus IMAP 3.6 for the tests (tests/common/cyrus.rs), run privately next to Dovecot: its
# packages conflict with Dovecot's on the virtual packages imap-server/pop3-server, so only
# its libraries are apt-installed and the server packages (and sasl2-bin, for saslpasswd2,
# rather than touching the libsasl2 of running processes) are unpacked (apt-get download +
# dpkg-deb -x) into a cache directory. Nothing is started here and nothing lands in /etc.
#
#   source scripts/lib/deps.sh scripts/lib/cyrus.sh
#   cyrus_install DIR   # DIR/root/usr/lib/cyrus/bin/{master,imapd,pop3d,mkimap}, DIR/root/usr/sbin/saslpasswd2
cyrus_install() {
    local dir=$1
    # What master, imapd, pop3d, ctl_cyrusdb and saslpasswd2 link (ldd), plus the SASL plugins.
    ensure_packages libical3 libicu72 libjansson4 libpcre3 libpq5 libxapian30 libxml2 libwrap0 \
        libldap-2.5-0 libkrb5-3 libgssapi-krb5-2 libnsl2 libsqlite3-0 libdb5.3 \
        libsasl2-2 libsasl2-modules libsasl2-modules-db
    if [ -x "$dir/root/usr/lib/cyrus/bin/imapd" ] && [ -x "$dir/root/usr/lib/cyrus/bin/pop3d" ] &&
        [ -x "$dir/root/usr/sbin/saslpasswd2" ]; then
        return 0
    fi
    mkdir -p "$dir/debs" "$dir/root"
    # apt-get download writes into the current directory; _apt cannot write to root's.
    chmod 777 "$dir/debs"
    (cd "$dir/debs" && apt-get download -q cyrus-common cyrus-imapd cyrus-pop3d sasl2-bin) >&2
    local deb
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
    done
    [ -x "$dir/root/usr/lib/cyrus/bin/imapd" ] || { echo "cyrus: imapd missing after unpacking" >&2; return 1; }
}
