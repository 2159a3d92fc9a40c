#!/usr/bin/env bash
# Install everything the tests need, start the real parts, and run the whole suite.
# Usage: bash ci/test.sh [pytest args]      (CI runs it through .ci/run)
#        bash ci/test.sh --dry-run [args]   print the steps, run none of them
#        bash ci/test.sh --list-parts       print the parts table below (tab-separated)
# Exports KERNELYARD_REAL_PARTS=required: a test whose real part is missing fails
# (run by hand without it, such a test skips; see docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export KERNELYARD_REAL_PARTS=required

# The real parts and what the tests need installed, in order: installed top to bottom,
# started top to bottom, stopped bottom to top (before the start, and at exit).
# A part that lives on another's network comes after it (spark-standalone is on the
# ssh hosts' bridge: stopped before them, started after them). "-": nothing to do.
# Adding a part: one line here, and its entry in tests/realparts.py (the test start
# commands; tests/unit/test_realparts.py checks that both agree).
#      name              install                                start                                  stop
PARTS=(
  "e2e              | bash ci/e2e/install.sh               | -                                    | -"
  "ssh-hosts        | bash ci/ssh-hosts/install.sh         | bash ci/ssh-hosts/start.sh 3         | bash ci/ssh-hosts/stop.sh"
  "users            | bash ci/users.sh                     | -                                    | -"
  "kernel-venv      | bash ci/kernel-venv.sh               | -                                    | -"
  "spark-standalone | -                                    | bash ci/spark-standalone/start.sh    | bash ci/spark-standalone/stop.sh"
  "yarn             | bash ci/yarn/install.sh              | bash ci/yarn/start.sh                | bash ci/yarn/stop.sh"
  "yarn-ssh-hosts   | -                                    | bash ci/yarn/serve-ssh-hosts.sh      | -"
  "kdc              | bash ci/kdc/install.sh               | bash ci/kdc/start.sh                 | bash ci/kdc/stop.sh"
  "kerberized-rm    | -                                    | bash ci/yarn/start-kerberized-rm.sh  | bash ci/yarn/stop-kerberized-rm.sh"
  "jupyterhub       | bash ci/jupyterhub/install.sh        | bash ci/jupyterhub/start.sh          | bash ci/jupyterhub/stop.sh"
  "eg-itests        | bash ci/eg-itests/install.sh >/dev/null | -                                 | -"
  "kubernetes       | bash ci/kubernetes/install.sh        | bash ci/kubernetes/start.sh          | bash ci/kubernetes/stop.sh"
)
# What the installs do: e2e: JupyterLab, Chromium, playwright-core; users: alice/bob,
# sudo + a rule for kyuser, per-user ssh keys; kernel-venv: /opt/kernelyard/kernel-venv,
# a kernel Python every user can run; yarn: pyspark into the venv and the kernel venv,
# the YARN daemon jars into ~/.m2 (spark-standalone and kerberized-rm use them too);
# kdc: MIT Kerberos (apt) and gssapi into the venv; jupyterhub: its own venv under
# /opt/kernelyard and configurable-http-proxy (npm); eg-itests: EG's own itests from
# its PyPI wheel; kubernetes: a real single-node cluster (binaries, etcd and helm built
# from the Go module proxy, the kernel and gateway images, all cached under ~/.cache;
# ci/kubernetes/README.md). yarn-ssh-hosts: the RM's client port on the ssh hosts' bridge
# (ci/yarn/stop.sh stops it). Fields are split at "|": a command here has no pipe.

dry=0
case "${1:-}" in
  --dry-run) dry=1; shift ;;
  --list-parts) dry=2 ;;
esac

# field LINE N: the Nth " | "-separated field of a PARTS line, trimmed.
field() {
  local fields value
  IFS='|' read -ra fields <<<"$1"
  value=${fields[$2]}
  value=${value#"${value%%[![:space:]]*}"}
  printf '%s' "${value%"${value##*[![:space:]]}"}"
}

# step CMD: run a shell command of the table (or print it in a dry run).
step() {
  if [ "$dry" -ne 0 ]; then
    printf '+ %s\n' "$1"
  else
    eval "$1"
  fi
}

# each COLUMN [reverse]: run that column of every part, top to bottom (or bottom to top).
each() {
  local i line cmd order
  order=$(seq 0 $((${#PARTS[@]} - 1)))
  [ "${2:-}" = reverse ] && order=$(seq $((${#PARTS[@]} - 1)) -1 0)
  for i in $order; do
    line=${PARTS[$i]}
    cmd=$(field "$line" "$1")
    [ "$cmd" = - ] && continue
    if [ "${3:-}" = quiet ]; then
      step "$cmd >/dev/null 2>&1 || true"
    else
      step "$cmd"
    fi
  done
}

if [ "$dry" -eq 2 ]; then
  for line in "${PARTS[@]}"; do
    printf '%s\t%s\t%s\t%s\n' "$(field "$line" 0)" "$(field "$line" 1)" \
      "$(field "$line" 2)" "$(field "$line" 3)"
  done
  exit 0
fi

venv=${KERNELYARD_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  step "python3 -m venv '$venv'"
fi
step ". '$venv/bin/activate'"
step "python -m pip install -q --upgrade pip"
step "python -m pip install -q -e '.[test]'"
each 1

echo "== real parts"
# shellcheck disable=SC2329  # called by the trap
stop_all() { each 3 reverse; }
[ "$dry" -eq 0 ] && trap stop_all EXIT
each 3 reverse quiet   # whatever a previous run left
each 2
if [ "$dry" -ne 0 ]; then
  echo "== at exit"
  each 3 reverse
fi

echo "== lint and types"
step "ruff check kernelyard tests bench"
step "mypy"

echo "== tests"
if [ "$dry" -ne 0 ]; then
  printf '+ KERNELYARD_REAL_PARTS=%s python -m pytest -p no:cacheprovider %s\n' \
    "$KERNELYARD_REAL_PARTS" "$*"
  exit 0
fi
set +e
python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
