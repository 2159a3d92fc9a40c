#!/bin/bash
# Debian packages the cluster and the image builder need (install.sh runs it). Idempotent: apt runs only if something is missing.
set -euo pipefail
PKGS="etcd-server containerd runc containernetworking-plugins iptables openssl mmdebstrap curl python3-venv"
missing=$(for p in $PKGS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done)
if [ -z "$missing" ]; then echo "all packages present"; exit 0; fi
APT="apt-get -o DPkg::Lock::Timeout=900"
$APT update -q
DEBIAN_FRONTEND=noninteractive $APT install -y -q --no-install-recommends $missing
