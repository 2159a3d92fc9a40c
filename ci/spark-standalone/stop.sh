#!/usr/bin/env bash
# Stop the Spark Master and Worker started by start.sh (by PID), and the executors
# the Worker launched. Safe when nothing runs. Logs stay in $STATE for logs.sh.
set -euo pipefail
state=${KY_SPARK_STATE:-/tmp/kernelyard-spark}
if [ ! -f "$state/master.pid" ] && [ ! -f "$state/worker.pid" ]; then
  echo "no spark standalone state in $state"
  rm -f "$state/env"
  exit 0
fi

# A PID counts as ours only while the process still names our state dir (PIDs get
# reused): the daemons have $state/conf/ on their classpath, executors run in
# $state/work/<app>/<executor>.
ours() {  # pid
  local cwd
  cwd=$(readlink "/proc/$1/cwd" 2>/dev/null) || return 1
  if [[ $cwd == "$state"/work/* ]]; then return 0; fi
  tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qF "$state/"
}
executors() {  # the PIDs of processes whose working dir is in our work dir
  local p cwd
  for p in /proc/[0-9]*; do
    cwd=$(readlink "$p/cwd" 2>/dev/null) || continue
    if [[ $cwd == "$state"/work/* ]]; then echo "${p#/proc/}"; fi
  done
}

# The worker kills its executors when it stops; any left over are killed below.
declare -A pids=()
for name in worker master; do
  pid=$(cat "$state/$name.pid" 2>/dev/null) || continue
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ours "$pid"; then
    if kill "$pid" 2>/dev/null; then pids[$name]=$pid; fi
  fi
done
for _ in $(seq 1 20); do
  alive=0
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then alive=1; fi
  done
  if [ "$alive" = 0 ]; then break; fi
  sleep 0.25
done
for name in "${!pids[@]}"; do
  pid=${pids[$name]}
  if kill -0 "$pid" 2>/dev/null; then
    echo "spark $name (pid $pid) still running after 5 s: SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
  fi
done
for pid in $(executors); do kill -9 "$pid" 2>/dev/null || true; done
rm -f "$state/env" "$state/master.pid" "$state/worker.pid"
echo "spark standalone stopped"
