#!/usr/bin/env bash
# Stop the sshd hosts started by start.sh and remove their namespaces and bridge.
set -uo pipefail
state=${KY_SSH_STATE:-/tmp/kernelyard-ssh-hosts}
[ -f "$state/id" ] || { echo "no ssh hosts state in $state"; exit 0; }
id=$(cat "$state/id")
for pidfile in "$state"/sshd_h*.pid; do
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
for ns in $(ip netns list | awk '{print $1}' | grep "^ky${id}h"); do
  # Kernels left in a namespace are killed with it.
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  ip netns del "$ns"
done
ip link del "kybr$id" 2>/dev/null
rm -f "$state/env" "$state/id" "$state"/sshd_h*.pid "$state"/launcher_h*.pid
echo "ssh hosts stopped"
