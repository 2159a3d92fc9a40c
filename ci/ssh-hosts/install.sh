#!/usr/bin/env bash
# Debian packages for the SSH hosts and their kernels (Python from /usr/bin, IRkernel).
set -euo pipefail
need=()
command -v sshd >/dev/null || need+=(openssh-server)
dpkg -s python3-ipykernel >/dev/null 2>&1 || need+=(python3-ipykernel)
dpkg -s r-cran-irkernel >/dev/null 2>&1 || need+=(r-cran-irkernel)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
