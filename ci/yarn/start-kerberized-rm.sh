#!/usr/bin/env bash
# Start a second, Kerberized YARN ResourceManager on 127.0.0.1 (no NodeManager): its
# web UI and REST API require SPNEGO (Hadoop's AuthenticationFilter, type kerberos,
# principal HTTP/127.0.0.1@REALM), while Hadoop RPC security stays "simple". It proves
# kernelyard's Negotiate client against Hadoop's own server side.
# Writes $STATE/env (KY_YARN_KRB_RM_URL, KY_YARN_KRB_RM_PRINCIPAL...).
# Usage: bash ci/yarn/start-kerberized-rm.sh
#        (after ci/yarn/install.sh and ci/kdc/start.sh; as root: kadmin.local)
# State: ${KY_YARN_KRB_STATE:-/tmp/kernelyard-yarn-krb}
# Env:   KY_KDC_STATE  the KDC's state dir (default /tmp/kernelyard-kdc)
#
# Running it again while the RM runs is a no-op, unless the KDC was restarted since
# (a fresh realm: new keys), which restarts the RM. No password, key or ticket is
# ever printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/lib.sh
. "$here/../lib.sh"
state=${KY_YARN_KRB_STATE:-/tmp/kernelyard-yarn-krb}
kdc_state=${KY_KDC_STATE:-/tmp/kernelyard-kdc}
cp_file="$here/.cache/classpath.txt"
t_start=$(date +%s.%N)
PATH=$PATH:/usr/sbin

# is_ours PID: alive and a java process running with our conf dir (PIDs get reused).
is_ours() { [ -n "$1" ] && [[ $(tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline") == *"$state/conf"* ]]; }

[ -f "$kdc_state/env" ] || { echo "no KDC ($kdc_state/env missing): run ci/kdc/start.sh" >&2; exit 1; }
[ -s "$cp_file" ] || { echo "$cp_file missing: run ci/yarn/install.sh" >&2; exit 1; }
pid=$(cat "$state/rm.pid" 2>/dev/null || true)
if is_ours "$pid" && [ -f "$state/env" ] && [ "$state/env" -nt "$kdc_state/env" ]; then
  echo "kerberized rm already running (pid $pid, state in $state)"
  exit 0
fi
bash "$here/stop-kerberized-rm.sh" >/dev/null

kdc_var() { sed -n "s/^$1=//p" "$kdc_state/env"; }
realm=$(kdc_var KY_KDC_REALM)
krb5_conf=$(kdc_var KRB5_CONFIG)
KRB5_KDC_PROFILE=$(kdc_var KRB5_KDC_PROFILE)
export KRB5_CONFIG=$krb5_conf KRB5_KDC_PROFILE
principal="HTTP/127.0.0.1@$realm"
java_home=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}

# Only our own subdirs and files are wiped, never $state itself.
for d in conf logs tmp; do rm -rf "${state:?}/$d"; done
rm -f "$state"/{rm-http.keytab,http-signature.secret,probe.ccache}
mkdir -p "$state"/{conf,logs,tmp}
chmod 755 "$state"
set -E
trap 'bash "$here/stop-kerberized-rm.sh" >/dev/null 2>&1' ERR
fail() {  # message [log]: say what failed with the log's tail, stop, exit 1
  echo "$1" >&2
  if [ -s "${2:-}" ]; then echo "--- last lines of $2" >&2; tail -n 30 "$2" >&2; fi
  trap - ERR
  bash "$here/stop-kerberized-rm.sh" >/dev/null 2>&1
  exit 1
}

# The RM's own keytab, with only its principal. -norandkey exports the current key:
# the KDC's shared http.keytab (and tickets others hold) stay valid.
(umask 077; kadmin.local -r "$realm" -q "ktadd -norandkey -k $state/rm-http.keytab $principal" \
   > "$state/logs/kadmin.log" 2>&1) || fail "kadmin.local failed" "$state/logs/kadmin.log"
klist -k "$state/rm-http.keytab" 2>/dev/null | grep -q " $principal\$" \
  || fail "kadmin.local exported no key for $principal" "$state/logs/kadmin.log"
# The secret that signs the hadoop.auth cookie (0600, random).
(umask 077; head -c 32 /dev/urandom | base64 > "$state/http-signature.secret")

# Free ports on 127.0.0.1, all picked at once so they differ from each other.
read -r p_rm p_sched p_track p_admin p_web p_webs < <(free_ports 6)

conf="$state/conf"
{
  echo '<?xml version="1.0"?>'
  echo '<configuration>'
  prop fs.defaultFS file:///
  prop hadoop.tmp.dir "$state/tmp"
  # RPC stays unauthenticated; only the web layer (UI and REST) needs SPNEGO.
  prop hadoop.security.authentication simple
  prop hadoop.http.filter.initializers org.apache.hadoop.security.AuthenticationFilterInitializer
  prop hadoop.http.authentication.type kerberos
  prop hadoop.http.authentication.kerberos.principal "$principal"
  prop hadoop.http.authentication.kerberos.keytab "$state/rm-http.keytab"
  prop hadoop.http.authentication.signature.secret.file "$state/http-signature.secret"
  echo '</configuration>'
} > "$conf/core-site.xml"
{
  echo '<?xml version="1.0"?>'
  echo '<configuration>'
  rm_props "$p_rm" "$p_sched" "$p_track" "$p_admin" "$p_web" "$p_webs"
  echo '</configuration>'
} > "$conf/yarn-site.xml"
{
  echo '<?xml version="1.0"?>'
  echo '<configuration>'
  prop yarn.scheduler.capacity.root.queues default
  prop yarn.scheduler.capacity.root.default.capacity 100
  echo '</configuration>'
} > "$conf/capacity-scheduler.xml"
cat > "$conf/log4j.properties" <<'LOG'
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{1}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
LOG

# The JVM reads the KDC's private krb5.conf (realm, default_realm for auth_to_local).
jvm_opts=(-Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.net.preferIPv4Stack=true
          -Djava.security.krb5.conf="$krb5_conf"
          -Dhadoop.log.dir="$state/logs" -Dyarn.log.dir="$state/logs")
# setsid: a Ctrl-C in the calling shell doesn't reach the daemon.
HADOOP_CONF_DIR=$conf setsid "$java_home/bin/java" "${jvm_opts[@]}" -Dproc_krbrm \
  -cp "$conf:$(cat "$cp_file")" org.apache.hadoop.yarn.server.resourcemanager.ResourceManager \
  > "$state/logs/rm.log" 2>&1 < /dev/null &
echo $! > "$state/rm.pid"

rm_url="http://127.0.0.1:$p_web"
# Ready when the REST API refuses a request without a ticket (401 Negotiate).
code=000
for _ in $(seq 1 240); do
  # gone, not "not java yet": right after `&` the pid may still be this shell's fork, whose
  # command line isn't the RM's until it has exec'd (seen on a loaded CI machine)
  kill -0 "$(cat "$state/rm.pid")" 2>/dev/null || fail "the kerberized rm died while starting" "$state/logs/rm.log"
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "$rm_url/ws/v1/cluster/info" 2>/dev/null || true)
  [ "$code" = 401 ] && break
  [ "$code" = 200 ] && fail "$rm_url answered 200 without a ticket: SPNEGO is not enforced" "$state/logs/rm.log"
  sleep 0.25
done
[ "$code" = 401 ] || fail "no 401 from $rm_url/ws/v1/cluster/info after 60 s (last: $code)" "$state/logs/rm.log"
t_ready=$(date +%s.%N)

# And it accepts a real ticket: the RM's own principal as a client, from its keytab
# (no user password needed), through curl's SPNEGO.
probe="FILE:$state/probe.ccache"
KRB5CCNAME=$probe kinit -k -t "$state/rm-http.keytab" "$principal" > "$state/logs/kinit.log" 2>&1 \
  || fail "kinit from $state/rm-http.keytab failed" "$state/logs/kinit.log"
code=$(KRB5CCNAME=$probe curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --negotiate -u : \
         "$rm_url/ws/v1/cluster/info" 2>/dev/null || true)
rm -f "$state/probe.ccache"
[ "$code" = 200 ] || fail "$rm_url refused a valid Kerberos ticket (HTTP $code)" "$state/logs/rm.log"

cat > "$state/env" <<ENV
KY_YARN_KRB_STATE=$state
KY_YARN_KRB_RM_URL=$rm_url
KY_YARN_KRB_RM_PRINCIPAL=$principal
KY_YARN_KRB_RM_PID=$(cat "$state/rm.pid")
KY_KDC_STATE=$kdc_state
KRB5_CONFIG=$krb5_conf
ENV
trap - ERR
rss=$(awk '/^VmRSS/ { printf "%d MB", $2 / 1024 }' "/proc/$(cat "$state/rm.pid")/status")
awk -v t0="$t_start" -v t1="$t_ready" -v t2="$(date +%s.%N)" -v u="$rm_url" -v p="$principal" \
    -v st="$state" -v rss="$rss" \
  'BEGIN { printf "kerberized rm up in %.1f s (401 after %.1f s): %s as %s, RSS %s (state: %s)\n",
           t2 - t0, t1 - t0, u, p, rss, st }'
