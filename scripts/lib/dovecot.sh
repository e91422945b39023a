# shellcheck shell=bash
# A private Dovecot for the demo and the benchmark (the Rust tests have their own, in
# tests/common/dovecot.rs; both follow the same recipe).
#
#   source scripts/lib/dovecot.sh
#   dc_start                # sets DC_ROOT (a new dir under /tmp) DC_POP3_PORT DC_POP3S_PORT DC_CA
#   dc_add_user NAME PASS   # prints the user's Maildir
#   dc_seed MAILDIR COUNT SIZE PREFIX   # COUNT generated messages of about SIZE bytes
#   dc_stop                 # stops Dovecot and removes DC_ROOT
#
# Mail belongs to uid/gid 8 (mail): Dovecot refuses to access mail as root.
# shellcheck disable=SC2034 # DC_* variables are for the scripts that source this file

DC_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DC_MAIL_UID=8

# Three distinct free loopback ports, space-separated.
dc_free_ports() {
    python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

dc_make_certs() {
    local dir=$1 ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -days 3650 -keyout "$dir/ca.key" -out "$dir/ca.pem" \
        -subj /CN=popbridge-demo-CA -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
    openssl req "${ec[@]}" -keyout "$dir/server.key" -out "$dir/server.csr" -subj /CN=localhost 2>/dev/null
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 3650 -out "$dir/server.pem" -extfile "$dir/server.ext" 2>/dev/null
}

dc_start() {
    # Under /tmp, mode 755: the mail user must reach the homes (a clone under /root is not
    # reachable for uid 8).
    DC_ROOT=$(mktemp -d /tmp/popbridge-dovecot.XXXXXX)
    local ports
    ports=$(dc_free_ports)
    read -r DC_POP3_PORT DC_POP3S_PORT DC_IMAP_PORT <<<"$ports"
    mkdir -p "$DC_ROOT"/{run,state,home,tls,users}
    chmod 755 "$DC_ROOT"
    chown "$DC_MAIL_UID:$DC_MAIL_UID" "$DC_ROOT/home"
    dc_make_certs "$DC_ROOT/tls"
    DC_CA=$DC_ROOT/tls/ca.pem
    cat >"$DC_ROOT/dovecot.conf" <<CONF
instance_name = popbridge-$$-$DC_POP3_PORT
base_dir = $DC_ROOT/run
state_dir = $DC_ROOT/state
log_path = $DC_ROOT/dovecot.log
protocols = pop3 imap
listen = 127.0.0.1
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = $DC_MAIL_UID
last_valid_uid = $DC_MAIL_UID
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
disable_plaintext_auth = no
auth_mechanisms = plain login
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
ssl = yes
ssl_cert = <$DC_ROOT/tls/server.pem
ssl_key = <$DC_ROOT/tls/server.key
# One passwd-file per user: Dovecot re-reads a changed file at most once a second.
passdb {
  driver = passwd-file
  args = scheme=PLAIN $DC_ROOT/users/%u
}
userdb {
  driver = passwd-file
  args = $DC_ROOT/users/%u
}
protocol pop3 {
  mail_max_userip_connections = 100
}
service pop3-login {
  inet_listener pop3 {
    port = $DC_POP3_PORT
  }
  inet_listener pop3s {
    port = $DC_POP3S_PORT
    ssl = yes
  }
}
service imap-login {
  inet_listener imap {
    port = $DC_IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
CONF
    local dovecot
    dovecot=$(command -v dovecot || echo /usr/sbin/dovecot)
    # Output to a file: a pipe would be held open by the daemon forever.
    if ! "$dovecot" -c "$DC_ROOT/dovecot.conf" >"$DC_ROOT/dovecot.out" 2>&1; then
        cat "$DC_ROOT/dovecot.out" "$DC_ROOT/dovecot.log" >&2 2>/dev/null
        return 1
    fi
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$DC_POP3_PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "dovecot did not start listening on $DC_POP3_PORT; log: $DC_ROOT/dovecot.log" >&2
    return 1
}

dc_add_user() {
    local name=$1 pass=$2 home=$DC_ROOT/home/$1
    mkdir -p "$home/Maildir"/{cur,new,tmp}
    chown -R "$DC_MAIL_UID:$DC_MAIL_UID" "$home"
    echo "$name:{PLAIN}$pass:$DC_MAIL_UID:$DC_MAIL_UID::$home::" >"$DC_ROOT/users/$name"
    echo "$home/Maildir"
}

dc_seed() {
    python3 "$DC_LIB_DIR/genmail.py" "$@" --uid "$DC_MAIL_UID"
}

dc_stop() {
    [ -n "${DC_ROOT:-}" ] || return 0
    local pid
    if pid=$(cat "$DC_ROOT/run/master.pid" 2>/dev/null) && kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -rf "$DC_ROOT"
    DC_ROOT=
}
