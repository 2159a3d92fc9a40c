#!/usr/bin/env bash
# Install the JupyterHub that kernelyard's tests run, idempotently:
#   1. jupyterhub and jupyter_server from PyPI into their own venv, $KY_HUB_VENV,
#      made from Debian's /usr/bin/python3 (not kernelyard's .venv: see below);
#   2. configurable-http-proxy from npm into ci/jupyterhub/node_modules, pinned by
#      package-lock.json (npm keeps its download cache in ~/.npm).
# Usage: bash ci/jupyterhub/install.sh        (as root)
# Env:   KY_HUB_VENV  where the hub's venv goes (default /opt/kernelyard/jupyterhub-venv)
#
# Why a separate venv outside /root: the hub's LocalProcessSpawner runs each user's
# single-user server (jupyterhub-singleuser) as that Linux user (alice, bob). They
# can't enter /root (mode 700), where .venv and pyenv's Python live, so the hub's
# Python must be Debian's and its venv world-readable. It also keeps JupyterHub's
# dependencies (SQLAlchemy, alembic, ...) out of kernelyard's test environment: the
# tests talk to the hub over HTTP only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${KY_HUB_VENV:-/opt/kernelyard/jupyterhub-venv}
jupyterhub_version=6.1.1
server_spec='jupyter_server>=2.14,<3'

t0=$SECONDS
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv from /usr/bin/python3"
  mkdir -p "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv"
fi
have=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("jupyterhub"))' \
  2>/dev/null || true)
if [ "$have" != "$jupyterhub_version" ] || ! "$venv/bin/python" -c 'import jupyter_server' 2>/dev/null
then
  echo "pip install jupyterhub==$jupyterhub_version into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    "jupyterhub==$jupyterhub_version" "$server_spec"
fi
# Readable and runnable by the users whose servers the hub spawns.
chmod -R a+rX "$venv"
# Any unprivileged user must be able to start a single-user server from it.
runuser -u nobody -- "$venv/bin/jupyterhub-singleuser" --version >/dev/null \
  || { echo "an unprivileged user cannot run $venv/bin/jupyterhub-singleuser" >&2; exit 1; }
echo "jupyterhub $jupyterhub_version in $venv ($((SECONDS - t0)) s)"

t0=$SECONDS
command -v npm >/dev/null || { echo "npm (Node 20) is required and was not found" >&2; exit 1; }
wanted=$(cd "$here" && node -p \
  'require("./package-lock.json").packages["node_modules/configurable-http-proxy"].version')
have=$(cd "$here" && node -p \
  'try { require("./node_modules/configurable-http-proxy/package.json").version } catch (e) { "" }')
if [ "$have" != "$wanted" ]; then
  echo "npm ci (configurable-http-proxy $wanted)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
"$here/node_modules/.bin/configurable-http-proxy" --version >/dev/null
echo "configurable-http-proxy $wanted in $here/node_modules ($((SECONDS - t0)) s)"
