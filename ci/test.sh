#!/usr/bin/env bash
# Install everything the tests need, start the real parts, and run the whole suite.
# Usage: bash ci/test.sh [pytest args]      (CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${KERNELYARD_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[test]'
bash ci/e2e/install.sh
bash ci/ssh-hosts/install.sh
bash ci/users.sh           # alice/bob, sudo + a rule for kyuser, per-user ssh keys
bash ci/kernel-venv.sh     # /opt/kernelyard/kernel-venv: a kernel Python every user can run
bash ci/yarn/install.sh    # pyspark into the venv and the kernel venv, the YARN daemon jars into ~/.m2
bash ci/kdc/install.sh     # MIT Kerberos (apt) and gssapi into the venv (wheel built once, cached)
bash ci/jupyterhub/install.sh  # JupyterHub in /opt/kernelyard/jupyterhub-venv, configurable-http-proxy (npm)
bash ci/eg-itests/install.sh >/dev/null  # EG's own itests from its PyPI wheel (unpacked once, cached)

echo "== real parts"
trap 'bash ci/jupyterhub/stop.sh; bash ci/spark-standalone/stop.sh; bash ci/ssh-hosts/stop.sh; bash ci/yarn/stop-kerberized-rm.sh; bash ci/yarn/stop.sh; bash ci/kdc/stop.sh' EXIT
# The Spark standalone cluster lives on the ssh hosts' bridge: stop it first, start it after.
bash ci/spark-standalone/stop.sh >/dev/null 2>&1 || true
bash ci/ssh-hosts/stop.sh >/dev/null 2>&1 || true
bash ci/ssh-hosts/start.sh 3
bash ci/spark-standalone/start.sh
bash ci/yarn/stop.sh >/dev/null 2>&1 || true
bash ci/yarn/start.sh
bash ci/yarn/serve-ssh-hosts.sh       # the RM's client port on the ssh hosts' bridge
bash ci/kdc/stop.sh >/dev/null 2>&1 || true
bash ci/kdc/start.sh
bash ci/yarn/stop-kerberized-rm.sh >/dev/null 2>&1 || true
bash ci/yarn/start-kerberized-rm.sh   # a second RM whose REST API needs SPNEGO
bash ci/jupyterhub/stop.sh >/dev/null 2>&1 || true
bash ci/jupyterhub/start.sh

echo "== lint and types"
ruff check kernelyard tests bench
mypy

echo "== tests"
set +e
python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
