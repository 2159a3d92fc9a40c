#!/usr/bin/env bash
# Start a single-machine Hadoop YARN on 127.0.0.1: one ResourceManager (REST API on
# its webapp port) and one NodeManager that runs containers as real processes.
# Writes $STATE/env with what clients and tests need (KY_YARN_RM_URL, HADOOP_CONF_DIR...).
# Usage: bash ci/yarn/start.sh        (run ci/yarn/install.sh first)
# State: ${KY_YARN_STATE:-/tmp/kernelyard-yarn}
# Env:   KY_YARN_PYTHON   Python that has pyspark (default: python3 on PATH)
#        KY_YARN_NM_MB    NodeManager memory (default 8192)
#
# Containers run as the NodeManager's own user (root here): the cluster uses the
# DefaultContainerExecutor, which does not switch users. The YARN application user
# is still the --proxy-user (alice, bob), so RM state, queues and usercache dirs are
# per user, but files the containers write belong to root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/lib.sh
. "$here/../lib.sh"
state=${KY_YARN_STATE:-/tmp/kernelyard-yarn}
python=${KY_YARN_PYTHON:-python3}
nm_mb=${KY_YARN_NM_MB:-8192}
cp_file="$here/.cache/classpath.txt"
t_start=$(date +%s.%N)

fresh_state yarn "$state" "$here/stop.sh" rm nm
[ -s "$cp_file" ] || { echo "$cp_file missing: run ci/yarn/install.sh" >&2; exit 1; }
# The python that runs the Spark driver inside containers. Resolve pyenv shims to
# the real interpreter: containers get a minimal environment without pyenv's PATH.
py_exe=$("$python" -c 'import sys; print(sys.executable)')
spark_home=$("$py_exe" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null) \
  || { echo "pyspark missing for $py_exe: run ci/yarn/install.sh" >&2; exit 1; }
java_home=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}
gateway_user=$(id -un)

# Users the gateway submits as (--proxy-user). Only their names matter to YARN here,
# but the RM resolves their groups and the NM makes usercache dirs for them.
for u in alice bob; do
  id -u "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u" || id -u "$u" >/dev/null
done

# Only our own subdirs are wiped, never $state itself (it may be set to anything).
for d in conf logs nm-local nm-logs tmp staging; do rm -rf "${state:?}/$d"; done
mkdir -p "$state"/{conf,logs,nm-local,nm-logs,tmp,staging}
chmod 755 "$state"
# Whatever fails half-way is torn down again.
trap 'bash "$here/stop.sh" >/dev/null 2>&1' ERR

# Free ports on 127.0.0.1, all picked at once so they differ from each other; fixed
# ones (8032, 8088...) would collide with another run on this machine.
read -r p_rm p_sched p_track p_admin p_web p_webs p_nm p_loc p_nmweb < <(free_ports 9)

conf="$state/conf"
{
  echo '<?xml version="1.0"?>'
  echo '<configuration>'
  prop fs.defaultFS file:///
  prop hadoop.tmp.dir "$state/tmp"
  # The gateway's user may submit as anyone (spark-submit --proxy-user alice).
  prop "hadoop.proxyuser.$gateway_user.hosts" '*'
  prop "hadoop.proxyuser.$gateway_user.groups" '*'
  echo '</configuration>'
} > "$conf/core-site.xml"
{
  echo '<?xml version="1.0"?>'
  echo '<configuration>'
  rm_props "$p_rm" "$p_sched" "$p_track" "$p_admin" "$p_web" "$p_webs"
  prop yarn.scheduler.minimum-allocation-mb 256
  prop yarn.scheduler.maximum-allocation-mb "$nm_mb"
  prop yarn.scheduler.maximum-allocation-vcores 8
  prop yarn.nodemanager.hostname 127.0.0.1
  prop yarn.nodemanager.address "127.0.0.1:$p_nm"
  prop yarn.nodemanager.localizer.address "127.0.0.1:$p_loc"
  prop yarn.nodemanager.webapp.address "127.0.0.1:$p_nmweb"
  prop yarn.nodemanager.resource.memory-mb "$nm_mb"
  # 8 vcores on 2 real cores: the CapacityScheduler's default resource calculator
  # schedules by memory only, so this only matters with the DominantResourceCalculator.
  prop yarn.nodemanager.resource.cpu-vcores 8
  # Java reserves far more virtual memory than it uses: the NM would kill drivers.
  prop yarn.nodemanager.vmem-check-enabled false
  prop yarn.nodemanager.local-dirs "$state/nm-local"
  prop yarn.nodemanager.log-dirs "$state/nm-logs"
  # The NM marks its dirs bad (and itself UNHEALTHY) above 90% disk use by default.
  prop yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage 99
  prop yarn.nodemanager.container-executor.class \
    org.apache.hadoop.yarn.server.nodemanager.DefaultContainerExecutor
  # Container logs stay in nm-logs/<app>/<container>/ (no aggregation: no HDFS).
  prop yarn.log-aggregation-enable false
  echo '</configuration>'
} > "$conf/yarn-site.xml"
{
  echo '<?xml version="1.0"?>'
  echo '<configuration>'
  prop yarn.scheduler.capacity.root.queues default,analytics
  prop yarn.scheduler.capacity.root.default.capacity 50
  prop yarn.scheduler.capacity.root.analytics.capacity 50
  prop yarn.scheduler.capacity.root.default.maximum-capacity 100
  prop yarn.scheduler.capacity.root.analytics.maximum-capacity 100
  # The default (0.1) lets only one ~1 GB Spark driver (an AM in cluster mode) run
  # per queue; kernels are AMs, so most of a queue may go to them.
  prop yarn.scheduler.capacity.maximum-am-resource-percent 0.9
  # Let one user (alice with two kernels) grow past the queue's 50% share.
  prop yarn.scheduler.capacity.root.default.user-limit-factor 2
  prop yarn.scheduler.capacity.root.analytics.user-limit-factor 2
  echo '</configuration>'
} > "$conf/capacity-scheduler.xml"
cat > "$conf/log4j.properties" <<'LOG'
# Daemon logs go to stderr, which start.sh sends to $STATE/logs/{rm,nm}.log.
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{1}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
LOG

# The conf dir comes first so the daemons read these files, not defaults in jars.
classpath="$conf:$(cat "$cp_file")"
export JAVA_HOME=$java_home   # containers' launch scripts run {{JAVA_HOME}}/bin/java
export HADOOP_CONF_DIR=$conf
# C1 only (TieredStopAtLevel=1): the daemons start in ~5 s instead of ~11 s on two
# busy cores; peak speed doesn't matter here. Heaps stay small (RSS ~250-350 MB each).
jvm_opts=(-Xmx768m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.net.preferIPv4Stack=true
          -Dhadoop.log.dir="$state/logs" -Dyarn.log.dir="$state/logs")
start_daemon() {  # name class
  # setsid: a Ctrl-C in the calling shell doesn't reach the daemons.
  setsid "$JAVA_HOME/bin/java" "${jvm_opts[@]}" -Dproc_"$1" -cp "$classpath" "$2" \
    > "$state/logs/$1.log" 2>&1 < /dev/null &
  echo $! > "$state/$1.pid"
}
start_daemon rm org.apache.hadoop.yarn.server.resourcemanager.ResourceManager
start_daemon nm org.apache.hadoop.yarn.server.nodemanager.NodeManager

rm_url="http://127.0.0.1:$p_web"
# Ready when the RM lists our NodeManager as RUNNING (it registers after the RM is up).
ready=0
for _ in $(seq 1 240); do
  for name in rm nm; do
    if ! kill -0 "$(cat "$state/$name.pid")" 2>/dev/null; then
      echo "the $name died while starting; last lines of $state/logs/$name.log:" >&2
      tail -n 30 "$state/logs/$name.log" >&2
      false
    fi
  done
  nodes=$(curl -fsS --max-time 2 "$rm_url/ws/v1/cluster/nodes?states=RUNNING" 2>/dev/null || true)
  if [[ $nodes == *'"state":"RUNNING"'* ]]; then
    ready=1
    break
  fi
  sleep 0.5
done
if [ "$ready" != 1 ]; then
  echo "no RUNNING NodeManager after 120 s; see bash ci/yarn/logs.sh" >&2
  false
fi

cat > "$state/env" <<ENV
KY_YARN_STATE=$state
KY_YARN_RM_URL=$rm_url
KY_YARN_RM_ADDRESS=127.0.0.1:$p_rm
KY_YARN_NM_URL=http://127.0.0.1:$p_nmweb
KY_YARN_NM_LOG_DIR=$state/nm-logs
KY_YARN_STAGING_DIR=$state/staging
KY_YARN_QUEUES=default,analytics
KY_YARN_PYTHON=$py_exe
KY_YARN_SPARK_HOME=$spark_home
HADOOP_CONF_DIR=$conf
JAVA_HOME=$java_home
ENV
trap - ERR
awk -v t0="$t_start" -v t1="$(date +%s.%N)" -v rm="$rm_url" -v nm="127.0.0.1:$p_nm" -v st="$state" \
  'BEGIN { printf "yarn up in %.1f s: RM %s, NM %s (state: %s)\n", t1 - t0, rm, nm, st }'
