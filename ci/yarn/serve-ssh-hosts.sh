#!/usr/bin/env bash
# Let Spark drivers on the ssh hosts (client mode, inside their network namespaces)
# submit to the YARN of start.sh, which listens on 127.0.0.1 only: a socat forwarder
# on the hosts' bridge address passes the ResourceManager's client port through, and
# a Hadoop client conf dir names that address. Nothing listens beyond the bridge.
#
# Only the driver -> RM connection needs this: the ApplicationMaster and executors
# run in the root namespace, reach the RM on 127.0.0.1 and the driver through the
# bridge.
# Usage: bash ci/yarn/serve-ssh-hosts.sh     (after ci/ssh-hosts/start.sh and ci/yarn/start.sh)
# Writes $STATE/ssh-hosts.env: KY_YARN_SSH_HADOOP_CONF_DIR, KY_YARN_SSH_RM_ADDRESS.
# ci/yarn/stop.sh stops the forwarder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/lib.sh
. "$here/../lib.sh"
state=${KY_YARN_STATE:-/tmp/kernelyard-yarn}
ssh_state=${KY_SSH_STATE:-/tmp/kernelyard-ssh-hosts}

[ -f "$state/env" ] || { echo "yarn is not running ($state/env missing): run ci/yarn/start.sh" >&2; exit 1; }
[ -f "$ssh_state/env" ] || {
  echo "the ssh hosts are not running ($ssh_state/env missing): run ci/ssh-hosts/start.sh" >&2
  exit 1
}
if ! command -v socat >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends socat >/dev/null
fi
bridge_ip=$(sed -n 's/^KY_SSH_GATEWAY_IP=//p' "$ssh_state/env")
rm_address=$(sed -n 's/^KY_YARN_RM_ADDRESS=//p' "$state/env")
if [ -z "$bridge_ip" ] || [ -z "$rm_address" ]; then echo "bad env files in $state or $ssh_state" >&2; exit 1; fi

pid=$(cat "$state/forward.pid" 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
fi
read -r port < <(free_ports 1 "$bridge_ip")
# fork: one child per connection; the parent is the pid stop.sh kills.
setsid socat "TCP-LISTEN:$port,bind=$bridge_ip,reuseaddr,fork" "TCP:$rm_address" \
  > "$state/logs/forward.log" 2>&1 < /dev/null &
echo $! > "$state/forward.pid"

# The drivers' conf: the cluster's, with the RM's client address on the bridge.
# Drivers run as the hosts' user, so it must be world-readable.
conf=$state/conf-ssh-hosts
rm -rf "$conf"
cp -r "$state/conf" "$conf"
sed -i "s|<value>$rm_address</value>|<value>$bridge_ip:$port</value>|" "$conf/yarn-site.xml"
grep -qF "$bridge_ip:$port" "$conf/yarn-site.xml" || { echo "could not rewrite $conf/yarn-site.xml" >&2; exit 1; }
chmod -R a+rX "$conf"

listening=0
for _ in $(seq 1 40); do
  if (exec 3<>"/dev/tcp/$bridge_ip/$port") 2>/dev/null; then listening=1; break; fi
  sleep 0.25
done
if [ "$listening" != 1 ]; then
  echo "socat is not listening on $bridge_ip:$port after 10 s:" >&2
  cat "$state/logs/forward.log" >&2
  exit 1
fi
cat > "$state/ssh-hosts.env" <<ENV
KY_YARN_SSH_HADOOP_CONF_DIR=$conf
KY_YARN_SSH_RM_ADDRESS=$bridge_ip:$port
ENV
echo "yarn RM for the ssh hosts at $bridge_ip:$port (conf: $conf)"
