#!/usr/bin/env bash
# Stop the ResourceManager started by start-kerberized-rm.sh (by PID). Safe when
# nothing runs. Logs stay in $STATE/logs; the keytab copy and cookie secret go.
set -euo pipefail
state=${KY_YARN_KRB_STATE:-/tmp/kernelyard-yarn-krb}
pid=$(cat "$state/rm.pid" 2>/dev/null || true)
rm -f "$state/env" "$state/rm-http.keytab" "$state/http-signature.secret" "$state/probe.ccache"
# Ours only while its command line names our conf dir (PIDs get reused).
if [ -z "$pid" ] || [[ $(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline") != *"$state/conf"* ]]; then
  rm -f "$state/rm.pid"
  echo "no kerberized rm running (state: $state)"
  exit 0
fi
kill "$pid" 2>/dev/null || true
for _ in $(seq 1 50); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if kill -0 "$pid" 2>/dev/null; then
  echo "kerberized rm (pid $pid) still running after 10 s: SIGKILL"
  kill -9 "$pid" 2>/dev/null || true
fi
rm -f "$state/rm.pid"
echo "kerberized rm stopped"
