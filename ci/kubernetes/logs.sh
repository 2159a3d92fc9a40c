#!/bin/bash
# Print the cluster's logs (the ends of each component's, the pods' and the audit log's size).
HERE=$(cd "$(dirname "$0")" && pwd); . "$HERE/common.sh"
for f in "$S"/logs/*.log; do
  [ "${f##*/}" = audit.log ] && { echo "== $f: $(wc -l < "$f") requests"; continue; }
  echo "== $f"; tail -n 60 "$f"
done
[ -x "$B/kubectl" ] && "$B/kubectl" get pods -A -o wide 2>&1 | tail -n 40
