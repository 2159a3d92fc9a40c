#!/usr/bin/env bash
# Stop the ResourceManager and NodeManager started by start.sh (by PID), and the
# container processes they launched. Logs stay in $STATE for logs.sh.
set -uo pipefail
state=${KY_YARN_STATE:-/tmp/kernelyard-yarn}
# The ssh hosts' forwarder of serve-ssh-hosts.sh (it may outlive the daemons' state).
if pid=$(cat "$state/forward.pid" 2>/dev/null); then
  # Only while that PID is still a socat (PIDs get reused).
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = socat ] && kill "$pid"
  rm -f "$state/forward.pid" "$state/ssh-hosts.env"
fi
if [ ! -f "$state/rm.pid" ] && [ ! -f "$state/nm.pid" ]; then
  echo "no yarn state in $state"
  rm -f "$state/env"
  exit 0
fi

# Containers first. The DefaultContainerExecutor writes one pid file per container
# under nmPrivate, and each container runs in its own session (setsid), so its PID
# is also its process group. A process counts as ours only while its working dir
# is in our NM's local dirs (PIDs get reused).
kill_containers() {  # signal
  local f pid cwd
  [ -d "$state/nm-local/nmPrivate" ] || return 0
  while IFS= read -r f; do
    pid=$(cat "$f" 2>/dev/null) || continue
    [ -n "$pid" ] || continue
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || continue
    case "$cwd" in
      "$state"/nm-local/*) kill "-$1" -- "-$pid" 2>/dev/null || kill "-$1" "$pid" 2>/dev/null ;;
    esac
  done < <(find "$state/nm-local/nmPrivate" -name 'container_*.pid' 2>/dev/null)
}
kill_containers TERM

# Both daemons at once: a NodeManager with running applications takes ~20 s to
# stop gracefully (it waits for them, then for its monitor threads), so it gets
# 10 s and then SIGKILL; the RM stops in ~2 s.
declare -A pids=()
for name in nm rm; do
  pid=$(cat "$state/$name.pid" 2>/dev/null) || continue
  kill -0 "$pid" 2>/dev/null && kill "$pid" 2>/dev/null && pids[$name]=$pid
done
for _ in $(seq 1 20); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.5
done
for name in "${!pids[@]}"; do
  pid=${pids[$name]}
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name (pid $pid) still shutting down after 10 s (normal for the NM): SIGKILL"
    kill -9 "$pid"
  fi
done
kill_containers KILL
rm -f "$state/env" "$state/rm.pid" "$state/nm.pid"
echo "yarn stopped"
