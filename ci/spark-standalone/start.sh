#!/usr/bin/env bash
# Start a Spark standalone cluster (one Master, one Worker) from the pyspark in the
# venv, bound on the ssh hosts' bridge address so that drivers inside the hosts'
# network namespaces (client-mode kernels) and in the root namespace both reach it.
# Writes $STATE/env with what clients and tests need (KY_SPARK_MASTER_URL...).
# Usage: bash ci/spark-standalone/start.sh   (after ci/ssh-hosts/start.sh and ci/yarn/install.sh)
# State: ${KY_SPARK_STATE:-/tmp/kernelyard-spark}
# Env:   KY_SPARK_PYTHON         Python that has pyspark (default: the kernel venv's,
#                                ${KY_KERNEL_VENV:-/opt/kernelyard/kernel-venv}/bin/python:
#                                its SPARK_HOME is readable by the ssh hosts' user,
#                                which runs client-mode drivers)
#        KY_SPARK_HOST           address to bind on (default: KY_SSH_GATEWAY_IP from
#                                ${KY_SSH_STATE:-/tmp/kernelyard-ssh-hosts}/env)
#        KY_SPARK_WORKER_CORES   (default 2)   KY_SPARK_WORKER_MEMORY (default 2g)
#        KY_SPARK_DEFAULT_CORES  cores an application gets when it sets no
#                                spark.cores.max (default 1, so two kernels fit at once)
#
# Executors run as the Worker's user (root here), in the root namespace.
# The cluster's address lives on the ssh hosts' bridge: stop this cluster before
# ci/ssh-hosts/stop.sh removes the bridge.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/lib.sh
. "$here/../lib.sh"
state=${KY_SPARK_STATE:-/tmp/kernelyard-spark}
ssh_state=${KY_SSH_STATE:-/tmp/kernelyard-ssh-hosts}
cores=${KY_SPARK_WORKER_CORES:-2}
memory=${KY_SPARK_WORKER_MEMORY:-2g}
default_cores=${KY_SPARK_DEFAULT_CORES:-1}
t_start=$(date +%s.%N)

fresh_state "spark standalone" "$state" "$here/stop.sh" master worker

# The address: the root namespace's end of the ssh hosts' bridge. 127.0.0.1 would
# not do: inside a namespace it is that namespace's own loopback.
host=${KY_SPARK_HOST:-}
if [ -z "$host" ]; then
  [ -f "$ssh_state/env" ] || {
    echo "the ssh hosts are not running ($ssh_state/env missing): run" \
         "ci/ssh-hosts/start.sh first (the Spark master binds on their bridge address)," \
         "or set KY_SPARK_HOST" >&2
    exit 1
  }
  host=$(sed -n 's/^KY_SSH_GATEWAY_IP=//p' "$ssh_state/env")
  [ -n "$host" ] || { echo "no KY_SSH_GATEWAY_IP in $ssh_state/env" >&2; exit 1; }
fi
if ! ip -4 -o addr show | awk '{print $4}' | cut -d/ -f1 | grep -qxF "$host"; then
  echo "$host is not an address of this machine (ssh hosts' bridge gone?): restart" \
       "the ssh hosts, or set KY_SPARK_HOST" >&2
  exit 1
fi

python=${KY_SPARK_PYTHON:-${KY_KERNEL_VENV:-/opt/kernelyard/kernel-venv}/bin/python}
spark_home=$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null) \
  || { echo "pyspark missing for $python: run ci/kernel-venv.sh, then ci/yarn/install.sh" \
            "(it installs pyspark into the kernel venv)" >&2; exit 1; }
spark_version=$("$python" -c 'import pyspark; print(pyspark.__version__)')
command -v java >/dev/null || { echo "java missing (Java 17 expected)" >&2; exit 1; }
java_home=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}
# What a driver run by /usr/bin/python3 (any user) puts on PYTHONPATH: the same zips
# Spark gives its Python workers, so the venv (whose python may be unreadable by
# other users) is not needed.
py4j_zip=$(cd "$spark_home/python/lib" && ls py4j-*-src.zip)
driver_pythonpath=$spark_home/python/lib/pyspark.zip:$spark_home/python/lib/$py4j_zip

# Only our own subdirs are wiped, never $state itself (it may be set to anything).
for d in conf logs work local; do rm -rf "${state:?}/$d"; done
mkdir -p "$state"/{conf,logs,work,local}
chmod 755 "$state"
# Whatever fails half-way is torn down again.
trap 'bash "$here/stop.sh" >/dev/null 2>&1' ERR

# Free ports on our address, all picked at once so they differ from each other
# (7077 and 8080 may be taken by someone else).
read -r p_master p_master_ui p_worker p_worker_ui < <(free_ports 4 "$host")

# An empty conf dir of our own: nothing from the pyspark install (spark-env.sh,
# spark-defaults.conf) leaks in. Daemons log INFO to stderr by default.
export SPARK_CONF_DIR=$state/conf
export SPARK_HOME=$spark_home
export JAVA_HOME=$java_home
# Bind everything (RPC, web UIs, executors the worker starts) on $host, not 0.0.0.0.
export SPARK_LOCAL_IP=$host
export SPARK_PUBLIC_DNS=$host
export SPARK_WORKER_DIR=$state/work      # default: inside site-packages
export SPARK_LOCAL_DIRS=$state/local     # executors' scratch space
export SPARK_LOG_DIR=$state/logs
# C1 only: the daemons start in about half the time; peak speed doesn't matter here.
export SPARK_DAEMON_MEMORY=256m
export SPARK_DAEMON_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true"
# spark-class first runs a small JVM (org.apache.spark.launcher.Main) that prints the
# daemon's command line: C1 for it too.
export SPARK_LAUNCHER_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
# No REST submission server (it would listen on 6066); an application that sets
# no spark.cores.max gets $default_cores cores, so one kernel can't take the worker.
export SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false -Dspark.deploy.defaultCores=$default_cores"
# Executors' dirs of finished applications are removed after an hour.
export SPARK_WORKER_OPTS="-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.appDataTtl=3600"

start_daemon() {  # name class args...
  local name=$1
  shift
  # setsid: a Ctrl-C in the calling shell doesn't reach the daemons. spark-class
  # execs the JVM, so $! is the JVM's PID.
  setsid "$spark_home/bin/spark-class" "$@" > "$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/$name.pid"
}
master_url=spark://$host:$p_master
start_daemon master org.apache.spark.deploy.master.Master \
  --host "$host" --port "$p_master" --webui-port "$p_master_ui"
start_daemon worker org.apache.spark.deploy.worker.Worker \
  --host "$host" --port "$p_worker" --webui-port "$p_worker_ui" \
  --cores "$cores" --memory "$memory" --work-dir "$state/work" "$master_url"

master_ui=http://$host:$p_master_ui
# Ready when the master's JSON lists an ALIVE worker (the worker retries its
# registration until the master is up).
ready=0
for _ in $(seq 1 240); do
  for name in master worker; do
    if ! kill -0 "$(cat "$state/$name.pid")" 2>/dev/null; then
      echo "the spark $name died while starting; last lines of $state/logs/$name.log:" >&2
      tail -n 30 "$state/logs/$name.log" >&2
      false
    fi
  done
  alive=$(curl -fsS --max-time 2 "$master_ui/json/" 2>/dev/null | "$python" -c '
import json, sys
print(sum(w.get("state") == "ALIVE" for w in json.load(sys.stdin).get("workers", [])))
' 2>/dev/null || true)
  if [ "${alive:-0}" -ge 1 ]; then
    ready=1
    break
  fi
  sleep 0.25
done
if [ "$ready" != 1 ]; then
  echo "no ALIVE worker after 60 s; see bash ci/spark-standalone/logs.sh" >&2
  false
fi

cat > "$state/env" <<ENV
KY_SPARK_STATE=$state
KY_SPARK_MASTER_URL=$master_url
KY_SPARK_MASTER_HOST=$host
KY_SPARK_MASTER_WEBUI_URL=$master_ui
KY_SPARK_WORKER_WEBUI_URL=http://$host:$p_worker_ui
KY_SPARK_WORKER_CORES=$cores
KY_SPARK_WORKER_MEMORY=$memory
KY_SPARK_VERSION=$spark_version
KY_SPARK_HOME=$spark_home
KY_SPARK_DRIVER_PYTHONPATH=$driver_pythonpath
KY_SPARK_PYTHON=$python
JAVA_HOME=$java_home
ENV
trap - ERR
awk -v t0="$t_start" -v t1="$(date +%s.%N)" -v m="$master_url" -v ui="$master_ui" -v st="$state" \
  'BEGIN { printf "spark standalone up in %.1f s: master %s, web UI %s (state: %s)\n", t1 - t0, m, ui, st }'
