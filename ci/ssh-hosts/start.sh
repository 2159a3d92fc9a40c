#!/usr/bin/env bash
# Start N sshd hosts (default 2), each in its own network namespace with its own
# hostname, on a private bridge. Writes $STATE/env with what tests need.
# Usage: ci/ssh-hosts/start.sh [N]      State: ${KY_SSH_STATE:-/tmp/kernelyard-ssh-hosts}
set -euo pipefail
n=${1:-2}
state=${KY_SSH_STATE:-/tmp/kernelyard-ssh-hosts}
user=${KY_SSH_USER:-kyuser}
here=$(cd "$(dirname "$0")" && pwd)

if [ -f "$state/env" ]; then
  echo "ssh hosts already running (state in $state); run stop.sh first" >&2
  exit 1
fi
command -v sshd >/dev/null || { echo "sshd missing: run ci/ssh-hosts/install.sh" >&2; exit 1; }
mkdir -p "$state"
chmod 700 "$state"

# A random id keeps names and the subnet apart from other runs on this machine.
id=$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')
id=$(( id % 200 + 20 ))
net="10.$id.77"
bridge="kybr$id"
echo "$id" > "$state/id"
# Whatever fails half-way is torn down again.
trap 'bash "$here/stop.sh" >/dev/null 2>&1' ERR

id -u "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
# "*": no password, but not locked (sshd refuses locked accounts even with a key).
usermod -p "*" "$user"
home=$(getent passwd "$user" | cut -d: -f6)
install -d -m 700 -o "$user" -g "$user" "$home/.ssh"
[ -f "$state/client_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$state/client_key"
install -m 600 -o "$user" -g "$user" "$state/client_key.pub" "$home/.ssh/authorized_keys"
install -d -m 755 /run/sshd

ip link add "$bridge" type bridge
ip addr add "$net.1/24" dev "$bridge"
ip link set "$bridge" up

: > "$state/known_hosts"
hosts=()
for i in $(seq 1 "$n"); do
  ns="ky${id}h$i"
  addr="$net.$((10 + i))"
  ip netns add "$ns"
  ip link add "ky${id}v$i" type veth peer name "ky${id}p$i"
  ip link set "ky${id}p$i" netns "$ns"
  ip link set "ky${id}v$i" master "$bridge" up
  ip -n "$ns" addr add "$addr/24" dev "ky${id}p$i"
  ip -n "$ns" link set "ky${id}p$i" up
  ip -n "$ns" link set lo up
  rm -f "$state/host_key_h$i" "$state/host_key_h$i.pub"
  ssh-keygen -q -t ed25519 -N '' -f "$state/host_key_h$i"
  echo "$addr $(cut -d' ' -f1,2 "$state/host_key_h$i.pub")" >> "$state/known_hosts"
  ip netns exec "$ns" unshare --uts sh -c "hostname h$i; exec /usr/sbin/sshd -D -e \
    -f /dev/null -h '$state/host_key_h$i' -o PidFile='$state/sshd_h$i.pid' \
    -o ListenAddress=0.0.0.0 -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
    -o PermitRootLogin=no -o UsePAM=no -o AllowUsers='$user' -o MaxStartups=100:30:200 \
    -o MaxSessions=100 -o Subsystem='sftp internal-sftp'" \
    > "$state/sshd_h$i.log" 2>&1 &
  echo $! > "$state/launcher_h$i.pid"
  hosts+=("$addr")
done

for addr in "${hosts[@]}"; do
  for _ in $(seq 1 100); do
    if timeout 1 bash -c "exec 3<>/dev/tcp/$addr/22" 2>/dev/null; then break; fi
    sleep 0.05
  done
  timeout 1 bash -c "exec 3<>/dev/tcp/$addr/22" || { echo "sshd on $addr did not start" >&2; exit 1; }
done

cat > "$state/env" <<ENV
KY_SSH_HOSTS=$(IFS=,; echo "${hosts[*]}")
KY_SSH_USER=$user
KY_SSH_KEY=$state/client_key
KY_SSH_KNOWN_HOSTS=$state/known_hosts
KY_SSH_GATEWAY_IP=$net.1
KY_SSH_NAMESPACES=$(for i in $(seq 1 "$n"); do printf 'ky%sh%s,' "$id" "$i"; done | sed 's/,$//')
KY_SSH_BRIDGE=$bridge
ENV
echo "ssh hosts up: ${hosts[*]} (state: $state)"
