#!/usr/bin/env bash
# Start a private MIT Kerberos KDC on 127.0.0.1 (a free port) for realm $KY_KDC_REALM,
# with users alice and bob (random passwords in 0600 files) and the services
# HTTP/localhost and HTTP/127.0.0.1 (keys in $STATE/http.keytab). Writes $STATE/env
# with what clients and tests need (KRB5_CONFIG, KY_KDC_KEYTAB, password file paths...).
# Usage: bash ci/kdc/start.sh          (run ci/kdc/install.sh first; as root)
# State: ${KY_KDC_STATE:-/tmp/kernelyard-kdc}; every start makes a fresh realm database.
# Env:   KY_KDC_REALM  realm name (default KERNELYARD.TEST)
#
# Nothing in /etc is read or written: krb5.conf and kdc.conf live in $STATE and are
# selected by KRB5_CONFIG and KRB5_KDC_PROFILE. Running it again while the KDC runs
# is a no-op. No password, key or ticket is ever printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=${KY_KDC_STATE:-/tmp/kernelyard-kdc}
realm=${KY_KDC_REALM:-KERNELYARD.TEST}
t_start=$(date +%s.%N)

# is_ours PID: the process is alive and is a krb5kdc (PIDs get reused).
is_ours() { [ -n "$1" ] && [[ $(tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline") == *krb5kdc* ]]; }

pid=$(cat "$state/kdc.pid" 2>/dev/null || true)
if is_ours "$pid" && [ -f "$state/env" ]; then
  echo "kdc already running (pid $pid, state in $state)"
  exit 0
fi
bash "$here/stop.sh" >/dev/null
for tool in krb5kdc kdb5_util kadmin.local kinit klist; do
  command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin
  command -v "$tool" >/dev/null || { echo "$tool missing: run ci/kdc/install.sh" >&2; exit 1; }
done

# Only our own files are wiped, never $state itself (it may be set to anything).
mkdir -p "$state"
chmod 755 "$state"
rm -rf "${state:?}/db" "$state"/{krb5.conf,kdc.conf,kadm5.acl,http.keytab,probe.ccache}
rm -f "$state"/*.password "$state"/{kdc.log,kdc.stderr,kadmin.log}
mkdir -m 700 "$state/db"
: > "$state/kadm5.acl"
# Whatever fails half-way is torn down again (set -E: also inside functions).
set -E
trap 'bash "$here/stop.sh" >/dev/null 2>&1' ERR

fail() {  # message log...: say what failed with the tail of each log, stop, exit 1
  echo "$1" >&2
  shift
  for f in "$@"; do
    [ -s "$f" ] && { echo "--- last lines of $f" >&2; tail -n 20 "$f" >&2; }
  done
  trap - ERR
  bash "$here/stop.sh" >/dev/null 2>&1
  exit 1
}

# A port free for both TCP and UDP on 127.0.0.1. Another process may take it before
# the KDC binds; the caller retries with a new one when the KDC can't bind.
free_port() {
  "$py" - <<'PY'
import socket
while True:
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        u.close()
        t.close()
    print(port)
    break
PY
}

write_conf() {  # port
  # rdns / dns_canonicalize_hostname off: a client asking for HTTP@localhost gets a
  # ticket for HTTP/localhost exactly (no reverse lookup to some other name).
  # udp_preference_limit=1: TCP first, as a KDC behind a proxy would need anyway.
  cat > "$state/krb5.conf" <<CONF
[libdefaults]
  default_realm = $realm
  dns_lookup_realm = false
  dns_lookup_kdc = false
  rdns = false
  dns_canonicalize_hostname = false
  udp_preference_limit = 1
  forwardable = true
  ticket_lifetime = 10h

[realms]
  $realm = {
    kdc = 127.0.0.1:$1
  }

[domain_realm]
  localhost = $realm
  127.0.0.1 = $realm

[logging]
  kdc = FILE:$state/kdc.log
  admin_server = FILE:$state/kadmin.log
CONF
  cat > "$state/kdc.conf" <<CONF
[kdcdefaults]
  kdc_listen = 127.0.0.1:$1
  kdc_tcp_listen = 127.0.0.1:$1

[realms]
  $realm = {
    database_name = $state/db/principal
    key_stash_file = $state/db/stash
    acl_file = $state/kadm5.acl
    max_life = 10h
    max_renewable_life = 1d
    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
  }
CONF
}

export KRB5_CONFIG=$state/krb5.conf KRB5_KDC_PROFILE=$state/kdc.conf
# Debian's python3 first: a pyenv shim costs ~0.4 s per call.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
random_secret() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }

# A fresh realm database. The master key and the passwords go through stdin (the
# prompts), never a command line; kadmin.local's output is kept for errors only.
write_conf 1
master_key=$(random_secret)  # stashed in db/stash; printf is a builtin, so no argv
printf '%s\n%s\n' "$master_key" "$master_key" \
  | kdb5_util create -s -r "$realm" > "$state/kadmin.log" 2>&1 \
  || fail "kdb5_util create failed" "$state/kadmin.log"
unset master_key
for user in alice bob; do
  (umask 077; random_secret > "$state/$user.password")
done
{
  for user in alice bob; do
    echo "addprinc $user"
    cat "$state/$user.password" "$state/$user.password"
  done
  # host/localhost exists so tests can get a ticket for a service other than HTTP.
  for svc in HTTP/localhost HTTP/127.0.0.1 host/localhost; do echo "addprinc -randkey $svc"; done
  echo "ktadd -k $state/http.keytab HTTP/localhost HTTP/127.0.0.1"
} | kadmin.local -r "$realm" >> "$state/kadmin.log" 2>&1 \
  || fail "kadmin.local failed" "$state/kadmin.log"
chmod 600 "$state/http.keytab" 2>/dev/null || fail "kadmin.local wrote no keytab" "$state/kadmin.log"
for p in HTTP/localhost HTTP/127.0.0.1; do
  klist -k "$state/http.keytab" | grep -q " $p@$realm\$" \
    || fail "$p@$realm missing in the keytab" "$state/kadmin.log"
done

# Start the KDC (foreground mode, in its own session) and wait until alice can log in.
# A port someone took meanwhile shows as a bind error in the log: try another one.
up=0
for _ in 1 2 3; do
  port=$(free_port)
  write_conf "$port"
  rm -f "$state/kdc.log"
  setsid krb5kdc -n -r "$realm" > "$state/kdc.stderr" 2>&1 < /dev/null &
  echo $! > "$state/kdc.pid"
  for _ in $(seq 1 100); do
    is_ours "$(cat "$state/kdc.pid")" || break
    if KRB5CCNAME=FILE:$state/probe.ccache kinit alice < "$state/alice.password" \
         > /dev/null 2>&1; then
      up=1
      break
    fi
    sleep 0.05
  done
  rm -f "$state/probe.ccache"
  [ "$up" = 1 ] && break
  grep -qi 'address already in use' "$state/kdc.log" "$state/kdc.stderr" 2>/dev/null \
    || fail "the KDC did not come up on 127.0.0.1:$port" "$state/kdc.stderr" "$state/kdc.log"
  bash "$here/stop.sh" >/dev/null
done
[ "$up" = 1 ] || fail "the KDC could not bind a free port after 3 tries" \
  "$state/kdc.stderr" "$state/kdc.log"

cat > "$state/env" <<ENV
KY_KDC_STATE=$state
KY_KDC_REALM=$realm
KY_KDC_PORT=$port
KY_KDC_KEYTAB=$state/http.keytab
KY_KDC_ALICE_PASSWORD_FILE=$state/alice.password
KY_KDC_BOB_PASSWORD_FILE=$state/bob.password
KRB5_CONFIG=$state/krb5.conf
KRB5_KDC_PROFILE=$state/kdc.conf
ENV
trap - ERR
awk -v t0="$t_start" -v t1="$(date +%s.%N)" -v r="$realm" -v p="$port" -v st="$state" \
  'BEGIN { printf "kdc up in %.2f s: realm %s on 127.0.0.1:%s (state: %s)\n", t1 - t0, r, p, st }'
