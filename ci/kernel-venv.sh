#!/usr/bin/env bash
# A kernel Python every user can run: a venv of Debian's python3 under /opt with a
# current ipykernel (>= 7.4 reads CurveZMQ keys from its connection file; Debian's
# python3-ipykernel is 6.x). The gateway's own venv may live under /root, which
# other users can't enter. Idempotent; wheels are cached by pip.
# Usage: bash ci/kernel-venv.sh      -> prints the venv's python
set -euo pipefail
venv=${KY_KERNEL_VENV:-/opt/kernelyard/kernel-venv}
want="ipykernel>=7.4"
if ! dpkg -s python3-venv >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
fi
if ! "$venv/bin/python" -c 'import ipykernel, sys; sys.exit(tuple(map(int, ipykernel.__version__.split(".")[:2])) < (7, 4))' 2>/dev/null; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "$want"
fi
chmod -R a+rX "$venv"
echo "$venv/bin/python"
