#!/usr/bin/env bash
# Stop the KDC started by start.sh (by PID). Safe when nothing runs. The realm
# database, keytab and logs stay in $STATE until the next start.
set -uo pipefail
state=${KY_KDC_STATE:-/tmp/kernelyard-kdc}
pid=$(cat "$state/kdc.pid" 2>/dev/null || true)
rm -f "$state/env"
if [ -z "$pid" ] || [[ $(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline") != *krb5kdc* ]]; then
  rm -f "$state/kdc.pid"
  echo "no kdc running (state: $state)"
  exit 0
fi
kill "$pid" 2>/dev/null
for _ in $(seq 1 50); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
  echo "kdc (pid $pid) still running after 5 s: SIGKILL"
  kill -9 "$pid"
fi
rm -f "$state/kdc.pid"
echo "kdc stopped"
