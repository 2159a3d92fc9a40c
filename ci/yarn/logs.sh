#!/usr/bin/env bash
# Print the daemon logs of the cluster started by start.sh and, per application,
# the logs of its containers (stdout/stderr: a cluster-mode driver's output is there).
# Works after stop.sh too: logs stay until the next start.sh.
# Usage: bash ci/yarn/logs.sh [APPLICATION_ID]     (default: daemons and all apps)
set -euo pipefail
state=${KY_YARN_STATE:-/tmp/kernelyard-yarn}
app=${1:-}
show() { if [ -f "$1" ]; then echo "== $1"; cat "$1"; fi; }
if [ -z "$app" ]; then
  show "$state/logs/rm.log"
  show "$state/logs/nm.log"
fi
pattern=${app:-application_*}
# shellcheck disable=SC2231  # $pattern is a glob on purpose
for d in "$state"/nm-logs/$pattern/container_*; do
  [ -d "$d" ] || continue
  for f in "$d"/*; do show "$f"; done
done
