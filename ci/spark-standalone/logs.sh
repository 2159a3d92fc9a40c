#!/usr/bin/env bash
# Print the tails of the Master and Worker logs of the cluster started by start.sh
# and of each executor's stdout/stderr. Works after stop.sh too: logs stay until the
# next start.sh.
# Usage: bash ci/spark-standalone/logs.sh [LINES]     (default 200 per file)
set -euo pipefail
state=${KY_SPARK_STATE:-/tmp/kernelyard-spark}
lines=${1:-200}
show() { if [ -f "$1" ]; then echo "== $1"; tail -n "$lines" "$1"; fi; }
show "$state/logs/master.log"
show "$state/logs/worker.log"
# Executors: $state/work/<app id>/<executor id>/{stdout,stderr}
for f in "$state"/work/app-*/*/stderr "$state"/work/app-*/*/stdout; do
  show "$f"
done
