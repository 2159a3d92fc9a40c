#!/usr/bin/env bash
# Start a JupyterHub on 127.0.0.1 for kernelyard's tests (config: jupyterhub_config.py
# beside this script): users alice and bob, kernelyard registered as a hub service,
# and single-user servers (jupyter_server, run as the Linux user) that use kernelyard
# as their kernel gateway. Writes $STATE/env with what tests and clients need.
# Usage: bash ci/jupyterhub/start.sh      (run ci/jupyterhub/install.sh first; as root)
# State: ${KY_HUB_STATE:-/tmp/kernelyard-jupyterhub}; every start makes a fresh hub
#        database and fresh secrets. Running it again while the hub runs is a no-op.
# Env:   KY_HUB_GATEWAY_URL  the kernelyard URL the users' servers use (--gateway-url).
#                            Default: http://127.0.0.1:<port>/ on a port reserved here,
#                            outside the ephemeral range, written to $STATE/env; the
#                            tests start their gateway on that port.
#        KY_HUB_VENV         the hub's venv (default /opt/kernelyard/jupyterhub-venv)
#
# The secrets (the users' shared password, the admin password, the service tokens) are
# random, kept in 0600 files in $STATE, and never printed or put on a command line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=${KY_HUB_STATE:-/tmp/kernelyard-jupyterhub}
venv=${KY_HUB_VENV:-/opt/kernelyard/jupyterhub-venv}
chp=$here/node_modules/.bin/configurable-http-proxy
users=(alice bob)
t_start=$(date +%s.%N)

# is_ours PID: the process is alive and is a JupyterHub (PIDs get reused).
is_ours() { [ -n "$1" ] && [[ $(tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline") == *bin/jupyterhub\ * ]]; }

pid=$(cat "$state/hub.pid" 2>/dev/null || true)
if is_ours "$pid" && [ -f "$state/env" ]; then
  echo "jupyterhub already running (pid $pid, state in $state)"
  exit 0
fi
for f in "$venv/bin/jupyterhub" "$venv/bin/jupyterhub-singleuser" "$chp"; do
  [ -x "$f" ] || { echo "$f missing: run bash ci/jupyterhub/install.sh" >&2; exit 1; }
done
bash "$here/stop.sh" >/dev/null

# Only our own files are wiped, never $state itself (it may be set to anything).
mkdir -p "$state"
chmod 755 "$state"
rm -f "$state"/{env,jupyterhub.sqlite,cookie_secret,hub.log,hub.pid,proxy.pid}
rm -f "$state"/{user.password,admin.password,service.token,ci.token}
set -E
trap 'bash "$here/stop.sh" >/dev/null 2>&1' ERR

fail() {  # message: say what failed with the tail of the hub's log, stop, exit 1
  echo "$1" >&2
  [ -s "$state/hub.log" ] && { echo "--- last lines of $state/hub.log" >&2; tail -n 30 "$state/hub.log" >&2; }
  trap - ERR
  bash "$here/stop.sh" >/dev/null 2>&1
  exit 1
}

# The Linux users whose servers the hub spawns (ci/yarn/start.sh may have made them).
for u in "${users[@]}"; do
  id -u "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u" || id -u "$u" >/dev/null
done

random_secret() { head -c 36 /dev/urandom | base64 | tr -d '/+=\n'; }
(
  umask 077
  random_secret > "$state/user.password"
  { random_secret; random_secret; } | tr -d '\n' > "$state/admin.password"  # >= 32 chars
  random_secret > "$state/service.token"
  random_secret > "$state/ci.token"
)

# Free ports on 127.0.0.1 from 20000-32767, below the ephemeral range, so that tests
# picking a port with bind(0) can't take the gateway port reserved here.
read -r hub_port api_port proxy_api_port gw_port < <(/usr/bin/python3 - <<'PY'
import random, socket
ports = []
while len(ports) < 4:
    port = random.randint(20000, 32767)
    if port in ports:
        continue
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    ports.append(port)
print(*ports)
PY
)
gateway_url=${KY_HUB_GATEWAY_URL:-http://127.0.0.1:$gw_port/}

# The hub runs in its own session, in $state (its sqlite file and cookie secret live
# there). Its config reads everything else from this environment.
(
  cd "$state"
  export KY_HUB_STATE=$state KY_HUB_PORT=$hub_port KY_HUB_API_PORT=$api_port \
    KY_HUB_PROXY_API_PORT=$proxy_api_port KY_HUB_CHP=$chp \
    KY_HUB_SINGLEUSER=$venv/bin/jupyterhub-singleuser KY_HUB_GATEWAY_URL=$gateway_url
  exec setsid "$venv/bin/jupyterhub" -f "$here/jupyterhub_config.py" \
    > "$state/hub.log" 2>&1 < /dev/null
) &
echo $! > "$state/hub.pid"

# Ready when the hub's API answers through the proxy and knows the CI service's token.
hub_url=http://127.0.0.1:$hub_port/
up=0
for _ in $(seq 1 600); do
  is_ours "$(cat "$state/hub.pid")" || fail "jupyterhub exited during start"
  # The token goes to curl on stdin (a config line), not on its command line.
  if printf 'header = "Authorization: token %s"\n' "$(cat "$state/ci.token")" \
       | curl -sf -o /dev/null --max-time 2 -K - "${hub_url}hub/api/user"; then
    up=1
    break
  fi
  sleep 0.1
done
[ "$up" = 1 ] || fail "jupyterhub did not answer on $hub_url within 60 s"

cat > "$state/env" <<ENV
KY_HUB_STATE=$state
KY_HUB_URL=$hub_url
KY_HUB_API_URL=http://127.0.0.1:$api_port/hub/api
KY_HUB_PUBLIC_API_URL=${hub_url}hub/api
KY_HUB_GATEWAY_URL=$gateway_url
KY_HUB_SERVICE_NAME=kernelyard
KY_HUB_SERVICE_TOKEN_FILE=$state/service.token
KY_HUB_CI_TOKEN_FILE=$state/ci.token
KY_HUB_PASSWORD_FILE=$state/user.password
KY_HUB_USERS=$(IFS=,; echo "${users[*]}")
KY_HUB_LOG=$state/hub.log
ENV
trap - ERR
awk -v t0="$t_start" -v t1="$(date +%s.%N)" -v u="$hub_url" -v g="$gateway_url" -v st="$state" \
  'BEGIN { printf "jupyterhub up in %.2f s at %s (gateway for users: %s; state: %s)\n", t1 - t0, u, g, st }'
