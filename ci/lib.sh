# shellcheck shell=bash
# Shell helpers shared by the ci/ start scripts (source it; it defines functions only).

# free_ports N [ADDR]: N distinct free TCP ports on ADDR (default 127.0.0.1),
# space-separated, all picked while held at once so they differ from each other
# (another process may still take one later).
free_ports() {
  /usr/bin/python3 - "$1" "${2:-127.0.0.1}" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind((sys.argv[2], 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# prop NAME VALUE: one Hadoop configuration property, for *-site.xml files.
prop() { printf '  <property><name>%s</name><value>%s</value></property>\n' "$1" "$2"; }

# rm_props RM SCHEDULER TRACKER ADMIN WEB WEBS: a ResourceManager on 127.0.0.1 with
# these ports and the CapacityScheduler, for yarn-site.xml.
rm_props() {
  prop yarn.resourcemanager.hostname 127.0.0.1
  prop yarn.resourcemanager.address "127.0.0.1:$1"
  prop yarn.resourcemanager.scheduler.address "127.0.0.1:$2"
  prop yarn.resourcemanager.resource-tracker.address "127.0.0.1:$3"
  prop yarn.resourcemanager.admin.address "127.0.0.1:$4"
  prop yarn.resourcemanager.webapp.address "127.0.0.1:$5"
  prop yarn.resourcemanager.webapp.https.address "127.0.0.1:$6"
  prop yarn.resourcemanager.scheduler.class \
    org.apache.hadoop.yarn.server.resourcemanager.scheduler.capacity.CapacityScheduler
}

# fresh_state WHAT STATE STOP NAME...: exit 1 while a daemon NAME of WHAT (its PID in
# STATE/NAME.pid) still runs; state left by daemons that died is cleaned up by STOP.
fresh_state() {
  local what=$1 state=$2 stop=$3 name pid stale=0
  shift 3
  [ -f "$state/env" ] && stale=1
  for name in "$@"; do
    [ -f "$state/$name.pid" ] && stale=1
    pid=$(cat "$state/$name.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      echo "$what already running (state in $state); run $stop first" >&2
      exit 1
    fi
  done
  if [ "$stale" = 1 ]; then
    echo "stale $what state in $state (daemons gone): cleaning up"
    bash "$stop" >/dev/null
  fi
}
