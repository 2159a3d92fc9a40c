#!/usr/bin/env bash
# Stop the JupyterHub started by start.sh, by PID: the hub (SIGTERM makes it stop the
# users' servers and its proxy), then whatever of those is left, found from the PIDs
# the hub recorded (proxy.pid, the spawners' state in its database). Safe when nothing
# runs. The database and the log stay in $STATE until the next start.
set -uo pipefail
state=${KY_HUB_STATE:-/tmp/kernelyard-jupyterhub}
rm -f "$state/env"

# cmdline_has PID WORD: the process is alive and its command line contains WORD.
cmdline_has() { [ -n "$1" ] && [[ $(tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline") == *"$2"* ]]; }

stop_pid() {  # pid what word: SIGTERM, wait up to 10 s, then SIGKILL
  cmdline_has "$1" "$3" || return 0
  kill "$1" 2>/dev/null
  for _ in $(seq 1 100); do
    cmdline_has "$1" "$3" || return 0
    sleep 0.1
  done
  echo "$2 (pid $1) still running after 10 s: SIGKILL"
  kill -9 "$1" 2>/dev/null
}

hub=$(cat "$state/hub.pid" 2>/dev/null || true)
if cmdline_has "$hub" "bin/jupyterhub "; then
  stop_pid "$hub" jupyterhub "bin/jupyterhub "
  stopped=1
else
  stopped=0
fi
stop_pid "$(cat "$state/proxy.pid" 2>/dev/null || true)" configurable-http-proxy \
  configurable-http-proxy
if [ -f "$state/jupyterhub.sqlite" ]; then
  servers=$(/usr/bin/python3 - "$state/jupyterhub.sqlite" <<'PY' 2>/dev/null || true
import json, sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
for (state,) in db.execute("SELECT state FROM spawners WHERE state IS NOT NULL"):
    pid = (json.loads(state) or {}).get("pid")
    if pid:
        print(pid)
PY
)
  for pid in $servers; do
    stop_pid "$pid" "single-user server" jupyterhub-singleuser
  done
fi
rm -f "$state/hub.pid" "$state/proxy.pid"
if [ "$stopped" = 1 ]; then
  echo "jupyterhub stopped"
else
  echo "no jupyterhub running (state: $state)"
fi
