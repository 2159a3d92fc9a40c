#!/usr/bin/env bash
# Real users for the run-as-user tests (idempotent; run as root, any number of times):
#  - alice and bob, made as ci/yarn/start.sh makes them, unlocked for key logins;
#  - /usr/bin/python3 with ipykernel (Debian's python3-ipykernel): a Python every user
#    can run (the gateway's venv lives under /root, which only root may enter);
#  - sudo, and a rule that lets the SSH hosts' service user run python3 as alice or
#    bob and nothing else (SSHProvisioner.user_mode=sudo);
#  - one SSH key per user in $STATE/keys/<user>, authorized for that user
#    (SSHProvisioner.user_mode=login with user_keys_dir=$STATE/keys).
# Writes $STATE/env. State: ${KY_USERS_STATE:-/tmp/kernelyard-users}
set -euo pipefail
state=${KY_USERS_STATE:-/tmp/kernelyard-users}
service_user=${KY_SSH_USER:-kyuser}
users=(alice bob)

need=()
command -v sudo >/dev/null || need+=(sudo)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
dpkg -s python3-ipykernel >/dev/null 2>&1 || need+=(python3-ipykernel)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

for u in "${users[@]}" "$service_user"; do
  id -u "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u" || id -u "$u" >/dev/null
done

mkdir -p "$state/keys"
chmod 700 "$state" "$state/keys"
for u in "${users[@]}"; do
  # "*": no password, but not locked (sshd refuses locked accounts even with a key).
  [ "$(getent shadow "$u" | cut -d: -f2)" = "*" ] || usermod -p "*" "$u"
  home=$(getent passwd "$u" | cut -d: -f6)
  [ -d "$home" ] || install -d -m 755 -o "$u" -g "$u" "$home"
  [ -f "$state/keys/$u" ] || ssh-keygen -q -t ed25519 -N '' -C "kernelyard-ci-$u" -f "$state/keys/$u"
  install -d -m 700 -o "$u" -g "$u" "$home/.ssh"
  auth="$home/.ssh/authorized_keys"
  touch "$auth"
  grep -qxF "$(cat "$state/keys/$u.pub")" "$auth" || cat "$state/keys/$u.pub" >> "$auth"
  chown "$u:$u" "$auth"
  chmod 600 "$auth"
done

rule=/etc/sudoers.d/kernelyard-ci
tmp=$(mktemp)
{
  echo "# kernelyard CI: the SSH hosts' service user starts kernels as alice or bob."
  echo "$service_user ALL=($(IFS=,; echo "${users[*]}")) NOPASSWD: /usr/bin/python3"
} > "$tmp"
if ! cmp -s "$tmp" "$rule" 2>/dev/null; then
  visudo -cq -f "$tmp"
  install -m 440 -o root -g root "$tmp" "$rule"
fi
rm -f "$tmp"

cat > "$state/env" <<ENV
KY_USERS=$(IFS=,; echo "${users[*]}")
KY_USER_KEYS_DIR=$state/keys
KY_USER_PYTHON=/usr/bin/python3
KY_SUDO_SERVICE_USER=$service_user
ENV
echo "run-as users ready: ${users[*]} (state: $state)"
