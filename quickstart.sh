#!/usr/bin/env bash
# Install kernelyard into ./.venv and start the gateway with the local python3 kernel.
# Usage: ./quickstart.sh [kernelyard serve options]   e.g. ./quickstart.sh --port 8888
set -euo pipefail
cd "$(dirname "$0")"
venv=${KERNELYARD_VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q .
exec "$venv/bin/kernelyard" serve "$@"
